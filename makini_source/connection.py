"""One connection during one run: its client, dialect, sync point, counters and failure."""

from __future__ import annotations

import logging
import threading

from makini_source.accounts import DiscoveredConnection
from makini_source.client import MakiniClient
from makini_source.dialects import Dialect, SyncPoint, detect
from makini_source.dialects.base import ERROR, SYNCING
from makini_source.exceptions import MakiniError

logger = logging.getLogger("makini_source")


class Connection:
    """One connection (one customer's connected system) during one run.

    Its dialect and sync status are read once per run, on first use, and shared by every
    entity, so all entities of a connection read the same window. Once a connection fails
    (token revoked, retries exhausted, a contract violation), its remaining entities are
    skipped and the other connections go on.

    Args:
        name: The connection's name: its `connection_id` in every table.
        client: Its HTTP client.
        dialect: `auto`, `v1` or `unified`.
        family: `erp` or `eam`, or None to find out.
        profile: What account discovery said of it (name, status, tags...), if it was found
            that way.

    Attributes:
        failure: The error that stopped the connection in this run, if any.
        rows: Rows read this run, per table.
        notes: Lines for the run summary.
        deletes_found: Records found deleted this run (unified), per entity.
        delete_requests: Requests spent finding deleted records (unified).
    """

    def __init__(
        self,
        name: str,
        client: MakiniClient,
        dialect: str = "auto",
        family: str | None = None,
        profile: DiscoveredConnection | None = None,
    ) -> None:
        self.name = name
        self.client = client
        self.profile = profile
        self.failure: MakiniError | None = None
        self.rows: dict[str, int] = {}
        self.notes: list[str] = []
        self.deletes_found: dict[str, int] = {}
        self.delete_requests = 0
        self._skipped: dict[str, tuple[int, list[str]]] = {}  # reason -> (its note, entities)
        self._dialect_choice = dialect
        self._family = family
        self._resolved: tuple[Dialect, SyncPoint] | None = None
        self._lock = threading.RLock()

    @property
    def dialect(self) -> Dialect | None:
        """The dialect, once known."""
        return None if self._resolved is None else self._resolved[0]

    @property
    def sync(self) -> SyncPoint | None:
        """The sync point, once read."""
        return None if self._resolved is None else self._resolved[1]

    def resolve(self) -> tuple[Dialect, SyncPoint]:
        """The connection's dialect and sync point, found on first use (thread-safe).

        Raises:
            MakiniAPIError: The connection cannot be read (refused token, unreachable...).
        """
        with self._lock:
            if self._resolved is None:
                dialect, point = detect(self.client, self._dialect_choice, self._family)
                if point.state in (SYNCING, ERROR):
                    complete = point.complete_until or "none"
                    self.note(
                        f"sync status {point.reported!r}: loaded what Makini lists now; the "
                        f"watermark moves at most to the last complete sync point ({complete})"
                    )
                self._resolved = (dialect, point)
            return self._resolved

    def count_deletes(self, entity: str, found: int, requests: int) -> None:
        """Counts deleted records found for `entity`, and the requests that found them."""
        with self._lock:
            if found:
                self.deletes_found[entity] = self.deletes_found.get(entity, 0) + found
            self.delete_requests += requests

    def count_rows(self, table: str, rows: int) -> None:
        """Counts rows read for `table` (for progress and summaries)."""
        with self._lock:
            self.rows[table] = self.rows.get(table, 0) + rows

    def note(self, text: str) -> None:
        """Adds a line for the run summary (once, however many entities report it)."""
        with self._lock:
            if text not in self.notes:
                self.notes.append(text)
                logger.warning("connection %s: %s", self.name, text)

    def skip(self, entity: str, reason: str) -> None:
        """Notes that `entity` is not read for this connection. One note per reason lists
        every entity skipped for it (`--entities all` on a v1 connection: one line, not 49)."""
        with self._lock:
            index, entities = self._skipped.setdefault(reason, (len(self.notes), []))
            if entity in entities:
                return
            entities.append(entity)
            entities.sort()
            text = f"{', '.join(entities)} skipped: {reason}"
            if len(entities) > 1:
                text = f"{len(entities)} entities skipped ({reason}): {', '.join(entities)}"
            if index == len(self.notes):
                self.notes.append(text)
            else:
                self.notes[index] = text
            logger.info("connection %s: %s skipped: %s", self.name, entity, reason)

    def fail(self, error: MakiniError) -> None:
        """Marks the connection failed for the rest of the run (the first error is kept)."""
        with self._lock:
            if self.failure is None:
                self.failure = error
                logger.error("connection %s failed, skipping it for this run: %s", self.name, error)
