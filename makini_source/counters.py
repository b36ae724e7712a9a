"""What each connection of a running (or finished) source has done: one accessor for progress
lines and run summaries, so they need not know the source's internals."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from makini_source import source_connections


@dataclass(frozen=True)
class ConnectionCounters:
    """A snapshot of one connection's run so far.

    Attributes:
        name: The connection (its rows' `connection_id`).
        rows: Rows read per destination table.
        requests: HTTP requests sent, retries included.
        retries: Requests that were retries of a failed one.
        rate_limited: 429 answers.
        throttle_seconds: Time spent waiting for the rate limit.
        backoff_seconds: Time spent backing off before retries (not throttling).
        waiting_seconds: How much longer the request waiting now waits (0: none waits): a
            rate-limit hold or Retry-After shows here while it lasts.
        failure: The error that stopped the connection, if one did.
        dialect: How it is read (`v1`, `unified/erp`...), once known.
        deletes_found: Records found deleted this run, per entity (unified).
        delete_requests: Requests spent finding them.
        notes: Lines for the run summary (sync states, skipped entities...).
    """

    name: str
    rows: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    throttle_seconds: float = 0.0
    backoff_seconds: float = 0.0
    waiting_seconds: float = 0.0
    failure: BaseException | None = None
    dialect: str = "not read yet"
    deletes_found: dict[str, int] = field(default_factory=dict)
    delete_requests: int = 0
    notes: list[str] = field(default_factory=list)


def connection_counters(source: Any) -> list[ConnectionCounters]:
    """Counters of every connection of a source made by `makini_source` (safe while it runs)."""
    counters = []
    for connection in source_connections(source):
        stats = connection.client.stats
        dialect = connection.dialect
        counters.append(
            ConnectionCounters(
                name=connection.name,
                rows=dict(list(connection.rows.items())),  # list(): the dict grows meanwhile
                requests=stats.requests,
                retries=stats.retries,
                rate_limited=stats.rate_limited,
                throttle_seconds=stats.throttle_seconds,
                backoff_seconds=stats.backoff_seconds,
                waiting_seconds=stats.waiting_seconds(),
                failure=connection.failure,
                dialect="not read"
                if dialect is None
                else dialect.name + (f"/{dialect.family}" if dialect.family else ""),
                deletes_found=dict(connection.deletes_found),
                delete_requests=connection.delete_requests,
                notes=list(connection.notes),
            )
        )
    return counters
