"""Who is who, and who is healthy: the `connections` and `connection_runs` tables.

* `connections`: one row per connection seen by the latest run (merged on `connection_id`):
  its name, Makini key, provider, family, dialect, status in Makini, sync status and its
  time, and the outcome of the latest run with the rows it read. Analysts join any table's
  `connection_id` to it.
* `connection_runs`: one row per connection and run (appended): the same outcome figures,
  so health can be followed over time.

Both are written once per run, by the entity resource that finishes last (the run report
counts the selected resources as they end), so they hold every entity's figures.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from typing import Any

import dlt
import orjson
import pyarrow as pa

from makini_source.connection import Connection
from makini_source.redact import scrub
from makini_source.settings import CONNECTION_COLUMN

CONNECTIONS_TABLE = "connections"
RUNS_TABLE = "connection_runs"


class RunReport:
    """What one run did, per connection; hands the last finishing resource its rows.

    Args:
        connections: Every connection of the run (failed ones included).
    """

    def __init__(self, connections: list[Connection]) -> None:
        self._connections = connections
        self._lock = threading.Lock()
        self._finished: set[str] = set()
        self.started_at = datetime.now(timezone.utc)

    def finished(self, resource: str) -> list[Any]:
        """`resource` has read everything: the report's rows if it is the last to finish
        of the source's selected resources, else nothing."""
        try:
            selected = set(dlt.current.source().selected_resources)
        except Exception:  # noqa: BLE001 - not extracting through a source: report now
            selected = {resource}
        with self._lock:
            self._finished.add(resource)
            if not selected <= self._finished:
                return []
        return self.items()

    def items(self) -> list[Any]:
        """The dlt items of both tables, for every connection."""
        rows = [self._row(connection) for connection in self._connections]
        if not rows:
            return []
        table = pa.Table.from_pylist(rows, schema=_SCHEMA)
        connections = dlt.mark.make_hints(
            table_name=CONNECTIONS_TABLE,
            write_disposition={"disposition": "merge", "strategy": "delete-insert"},
            primary_key=CONNECTION_COLUMN,
            file_format="parquet",
        )
        runs = dlt.mark.make_hints(
            table_name=RUNS_TABLE, write_disposition="append", file_format="parquet"
        )
        return [
            dlt.mark.with_hints(table, connections, create_table_variant=True),
            dlt.mark.with_hints(table, runs, create_table_variant=True),
        ]

    def _row(self, connection: Connection) -> dict[str, Any]:
        profile, dialect, point = connection.profile, connection.dialect, connection.sync
        failure = connection.failure
        return {
            CONNECTION_COLUMN: connection.name,
            "name": profile.name if profile else connection.name,
            "makini_key": profile.key if profile else None,
            "email": profile.email if profile else None,
            "provider": (profile.integration_name if profile else None)
            or (point.system if point else None),
            "tags": orjson.dumps(list(profile.tags)).decode() if profile else None,
            "status": profile.status if profile else None,
            "dialect": dialect.name if dialect else None,
            "family": dialect.family if dialect else None,
            "sync_status": point.reported if point else None,
            "sync_status_at": _time(point.reported_at) if point else None,
            "complete_until": _time(point.complete_until) if point else None,
            "run_started_at": self.started_at,
            "run_outcome": "ok" if failure is None else "failed",
            "run_error": None if failure is None else scrub(str(failure)),
            "rows_read": sum(connection.rows.values()),
            "rows_read_by_table": orjson.dumps(dict(sorted(connection.rows.items()))).decode(),
            "deletes_found": sum(connection.deletes_found.values()),
            "requests": connection.client.stats.requests,
        }


def _time(value: str | None) -> datetime | None:
    if value is None:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


_TIMESTAMP = pa.timestamp("us", tz="UTC")
_SCHEMA = pa.schema(
    [
        pa.field(CONNECTION_COLUMN, pa.string(), nullable=False),
        pa.field("name", pa.string()),
        pa.field("makini_key", pa.string()),
        pa.field("email", pa.string()),
        pa.field("provider", pa.string()),
        pa.field("tags", pa.string()),
        pa.field("status", pa.string()),
        pa.field("dialect", pa.string()),
        pa.field("family", pa.string()),
        pa.field("sync_status", pa.string()),
        pa.field("sync_status_at", _TIMESTAMP),
        pa.field("complete_until", _TIMESTAMP),
        pa.field("run_started_at", _TIMESTAMP, nullable=False),
        pa.field("run_outcome", pa.string(), nullable=False),
        pa.field("run_error", pa.string()),
        pa.field("rows_read", pa.int64()),
        pa.field("rows_read_by_table", pa.string()),
        pa.field("deletes_found", pa.int64()),
        pa.field("requests", pa.int64()),
    ]
)
