"""What every dialect offers the source: its sync point, its listings, its error bodies.

A dialect is one module (`v1.py`, `unified.py`) that knows its paths, paging walk, envelope,
filters, sync status and error shapes. The source and the read path only use this interface;
the client (`client.py`) only knows HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from makini_source.catalogue import Entity
from makini_source.client import MakiniClient
from makini_source.columnar import DecodedPage, PageDecoder
from makini_source.settings import MAX_EMPTY_PAGES
from makini_source.window import Window

# normalized sync states
COMPLETE = "complete"
SYNCING = "syncing"
ERROR = "error"
REAUTHORIZATION_REQUIRED = "reauthorization_required"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class SyncPoint:
    """A connection's sync status, read once per run.

    Attributes:
        state: `complete`, `syncing`, `error`, `reauthorization_required` or `unknown`.
        complete_until: The time up to which Makini's copy is complete (RFC 3339): the safe
            next watermark; None while the status guarantees nothing.
        reported: The server's own status word (`active`, `done`, `inprogress`...).
        reported_at: The time the server gave with it (`last_sync_at`, `sync_updated_at`).
        system: The connected system or provider, if the status names it.
    """

    state: str
    complete_until: str | None
    reported: str | None
    reported_at: str | None
    system: str | None = None


@dataclass
class Page:
    """One page of a listing, decoded, with where it came from.

    Attributes:
        decoded: Its records and envelope.
        request_id: The answer's `X-Request-Id`, if any.
        url: The request (method, path, query), for errors where there is no request id.
        total: Matching records when the listing began (or of this request), if told.
    """

    decoded: DecodedPage
    request_id: str | None
    url: str
    total: int | None


@dataclass(frozen=True)
class Probe:
    """What one record of a window tells: where the first record lies and how many there are."""

    first_time: str
    total: int


class Dialect(Protocol):
    """One of Makini's dialects, bound to one connection.

    Attributes:
        name: `v1` or `unified`.
        family: `erp` or `eam` (unified), None for v1.
        custom_fields_at_top_level: Custom fields come as extra top-level keys.
        has_tombstones: Deleted records are listed (v1); else they vanish and must be found.
        default_lookback_seconds: Margin re-read before the stored watermark by default.
    """

    name: str
    family: str | None
    custom_fields_at_top_level: bool
    has_tombstones: bool
    default_lookback_seconds: float

    def read_error(self, body: bytes) -> tuple[str | None, str | None, str | None]:
        """(error code, message, request id) of an error body."""
        ...

    def sync_point(self, client: MakiniClient) -> SyncPoint:
        """Reads the connection's sync status."""
        ...

    def serves(self, entity: Entity) -> bool:
        """Whether this connection's API lists `entity`."""
        ...

    def max_page_size(self, entity: Entity) -> int:
        """The largest page to ask for."""
        ...

    def pages(
        self,
        client: MakiniClient,
        entity: Entity,
        window: Window,
        page_size: int,
        decode: PageDecoder,
        max_empty_pages: int = MAX_EMPTY_PAGES,
    ) -> Iterator[Page]:
        """Every page of one listing of `window`, each record once in its newest version
        at the time it was read; a listing that keeps answering empty pages that promise
        more stops with an error after `max_empty_pages` of them in a row."""
        ...

    def probe(self, client: MakiniClient, entity: Entity, window: Window) -> Probe | None:
        """The first record's time and the record count of `window` (one small request)."""
        ...
