"""Finding the records a unified connection deleted: its listings have no tombstones.

A deleted record simply vanishes from the unified dialect's listings (and its
`GET .../{key}` answers 404). After an incremental run has read everything changed since its
watermark W, every live row of the destination that the run did not read is either unchanged
(its `updatedAt` is before W, and Makini still lists it there) or gone. So (with `createdAt`
for an entity whose only time it is):

* rows the destination holds with a time at or after W that the run did not read should
  have been listed: each is looked up (`GET .../{key}`);
* rows before W are compared by counting: Makini's count of records in a time range
  (`per_page=1`, `meta.total`) against the destination's live rows in it. A range whose
  counts agree holds no delete. One that differs is halved (at the destination's median
  time) and each half counted again, until a range holds at most a page of rows; its keys
  are then listed and compared, and each missing key is looked up.

A key that answers 404 is deleted: its row is kept with `deleted_at` = when the run found it
(and its children too), or removed with `hard_delete`. A key that answers a record changed
after the listing read past it: that version is loaded. With no deletes this costs one
request; each delete costs about two per halving (log2 of rows/page) plus a page and a
lookup. The requests are counted per connection for the run summary.
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from makini_source.catalogue import Entity
from makini_source.client import MakiniClient
from makini_source.columnar import DecodedPage, PageDecoder
from makini_source.dialects.base import Page
from makini_source.dialects.unified import UnifiedDialect
from makini_source.hints import cursor_column
from makini_source.paginator import time_order
from makini_source.records import ARROW_TYPES, DECIMAL_TYPE, TIMESTAMP_TYPE, PageTables
from makini_source.settings import CONNECTION_COLUMN, MARKER_COLUMN
from makini_source.window import Window, format_timestamp

logger = logging.getLogger("makini_source")

# a range with at most this many destination rows is listed instead of halved
LEAF_ROWS = 100
# one destination access at a time: DuckDB's file allows one writer, and the listings of
# several entities finish at the same moment
_DESTINATION_LOCK = threading.Lock()


class _SharedClients:
    """The destination's SQL client, opened once per run and shared by every delete finder.

    Opening one costs ~0.1 s with dozens of tables (dlt resolves the destination's
    configuration and hashes the schema each time): per query, an incremental run of every
    catalogue entity spent most of its time there. Each entity read holds a lease while it
    runs (`lease`); the client opens on the first query and closes when the last lease ends,
    before the load step needs the destination.
    """

    def __init__(self) -> None:
        self._leases: dict[int, int] = {}  # id(pipeline) -> reads running
        self._clients: dict[int, Any] = {}  # id(pipeline) -> its open client

    @contextmanager
    def lease(self, pipeline: Any) -> Iterator[None]:
        """Keeps the pipeline's client open (once opened) while the block runs."""
        key = id(pipeline)
        with _DESTINATION_LOCK:
            self._leases[key] = self._leases.get(key, 0) + 1
        try:
            yield
        finally:
            with _DESTINATION_LOCK:
                self._leases[key] -= 1
                if not self._leases[key]:
                    del self._leases[key]
                    client = self._clients.pop(key, None)
                    if client is not None:
                        client.close_connection()

    @contextmanager
    def client(self, pipeline: Any) -> Iterator[Any]:
        """The pipeline's open SQL client (call with `_DESTINATION_LOCK` held): the shared
        one under a lease, else one for this use only."""
        key = id(pipeline)
        if key not in self._leases:
            with pipeline.sql_client() as client:
                yield client
            return
        if key not in self._clients:
            client = pipeline.sql_client()
            client.open_connection()
            self._clients[key] = client
        yield self._clients[key]


SHARED_CLIENTS = _SharedClients()


@dataclass
class Found:
    """Rows to load for deleted records (their tables, ready), and how many records."""

    tables: PageTables
    deleted: int


class Destination:
    """What the destination holds of one connection: read through dlt's SQL client.

    Args:
        pipeline: The running pipeline (its destination and dataset).
        schema_columns: Table -> column -> dlt data type, as the source schema knows them.
    """

    def __init__(self, pipeline: Any, schema_columns: dict[str, dict[str, Any]]) -> None:
        self._pipeline = pipeline
        self._columns = schema_columns

    def live(self, table: str, connection: str, time_column: str) -> list[tuple[Any, str]]:
        """(time order, key) of every live row of `connection` in `table`, oldest first, by
        `time_column` (the entity's cursor: `updated_at`, or `created_at`)."""
        if time_column not in self._columns.get(table, {}):
            return []
        rows = self._query(
            f"SELECT key, {time_column} FROM {{table}}"
            f" WHERE {CONNECTION_COLUMN} = {_literal(connection)} AND deleted_at IS NULL",
            table,
        )
        return sorted((_order_of(when), key) for key, when in rows)

    def rows(self, table: str, column: str, connection: str, keys: list[str]) -> pa.Table | None:
        """Every column of the rows of `connection` whose `column` is one of `keys`, typed as
        the source types them."""
        columns = {
            name: kind
            for name, kind in self._columns.get(table, {}).items()
            if not name.startswith("_dlt")
        }
        if not columns or not keys:
            return None
        names = ", ".join(columns)
        wanted = ", ".join(_literal(key) for key in keys)
        result = self._query(
            f"SELECT {names} FROM {{table}} WHERE {CONNECTION_COLUMN} = {_literal(connection)}"
            f" AND {column} IN ({wanted})",
            table,
        )
        arrays = [
            pa.array([row[i] for row in result], _arrow_type(columns[name]))
            for i, name in enumerate(columns)
        ]
        return pa.Table.from_arrays(arrays, names=list(columns))

    def _query(self, sql: str, table: str) -> list[tuple[Any, ...]]:
        with _DESTINATION_LOCK, SHARED_CLIENTS.client(self._pipeline) as client:
            if not client.has_dataset():
                return []
            qualified = client.make_qualified_table_name(table)
            try:
                return list(client.execute_sql(sql.format(table=qualified)) or [])
            except Exception as exc:
                if "does not exist" in str(exc).lower() or "not found" in str(exc).lower():
                    return []
                raise


class DeleteFinder:
    """Finds the deletes of one connection and entity after its listing (see module doc).

    Args:
        dialect: The connection's unified dialect.
        client: Its client.
        entity: The entity.
        connection: The connection's name.
        window: The window the run listed (its lower bound is W).
        read: The keys the run read.
        destination: What the destination holds.
        hard_delete: Remove deleted rows instead of marking them.
    """

    def __init__(
        self,
        dialect: UnifiedDialect,
        client: MakiniClient,
        entity: Entity,
        connection: str,
        window: Window,
        read: set[str],
        destination: Destination,
        hard_delete: bool,
    ) -> None:
        self._dialect = dialect
        self._client = client
        self.entity = entity
        self._connection = connection
        self._lower = window.modified_after
        self._read = read
        self._destination = destination
        self._hard_delete = hard_delete
        self.requests = 0

    def __iter__(self) -> Iterator[Found | Page]:
        """Fresh pages to load, then the rows of the records found deleted."""
        started = self._client.stats.requests
        try:
            time_column = str(cursor_column(self.entity))
            live = [
                (order, key)
                for order, key in self._destination.live(
                    self.entity.table, self._connection, time_column
                )
                if key not in self._read
            ]
            if not live or self._lower is None:
                return
            boundary = time_order(self._lower)
            split = bisect.bisect_left(live, (boundary, ""))
            suspects = [key for _, key in live[split:]]  # at or after W: should have been read
            older = live[:split]
            if older and self._count(None, self._lower) != len(older):
                found, pages = self._compare(older, None, self._lower)
                suspects += found
                yield from pages
            gone: list[str] = []
            for key in suspects:
                record = self._dialect.get_record(self._client, self.entity, key)
                if record is None:
                    gone.append(key)
                else:
                    yield self._fresh(record)  # changed after the listing passed it
            if gone:
                yield Found(self._tables(gone), len(gone))
        finally:
            self.requests = self._client.stats.requests - started

    def _count(self, after: str | None, before: str | None) -> int:
        return self._dialect.count(self._client, self.entity, after, before)

    def _compare(
        self, rows: list[tuple[Any, str]], after: str | None, before: str
    ) -> tuple[list[str], list[Page]]:
        """The keys of `rows` (the destination's, in `[after, before)`) that Makini no longer
        lists there, and pages of records it lists there that the destination lacks."""
        if len(rows) <= LEAF_ROWS:
            return self._list_and_compare(rows, after, before)
        middle = rows[len(rows) // 2][0]
        cut = _text(middle)
        if rows[0][0] >= middle:  # one time holds most rows: cannot halve by time
            return self._list_and_compare(rows, after, before)
        low = [row for row in rows if row[0] < middle]
        high = [row for row in rows if row[0] >= middle]
        missing: list[str] = []
        pages: list[Page] = []
        for part, start, end in ((low, after, cut), (high, cut, before)):
            if part and self._count(start, end) != len(part):
                found, fresh = self._compare(part, start, end)
                missing += found
                pages += fresh
            elif not part and self._count(start, end):
                pages += self._list_and_compare(part, start, end)[1]
        return missing, pages

    def _list_and_compare(
        self, rows: list[tuple[Any, str]], after: str | None, before: str
    ) -> tuple[list[str], list[Page]]:
        window = Window(after, before, None)
        listed: set[str] = set()
        pages: list[Page] = []
        known = {key for _, key in rows}
        for page in self._dialect.pages(
            self._client, self.entity, window, 100, PageDecoder(self.entity)
        ):
            keys = [key for key, _ in page.decoded.keys_and_times(None)]
            listed.update(keys)
            new = [key not in known for key in keys]
            if any(new):
                page.decoded = page.decoded.only(new)  # in Makini, not in the destination
                pages.append(page)
        return [key for key in known if key not in listed], pages

    def _fresh(self, record: dict[str, Any]) -> Page:
        import orjson

        body = orjson.dumps({"data": [record]})
        decoded = DecodedPage([record], {}, body)
        return Page(decoded, None, f"GET {self.entity.path}/{record.get('key')}", 1)

    def _tables(self, keys: list[str]) -> PageTables:
        """The rows that record the deletes of `keys`."""
        entity, connection = self.entity, self._connection
        found_at = datetime.now(timezone.utc)
        if self._hard_delete:
            main = pa.table(
                {
                    CONNECTION_COLUMN: pa.array([connection] * len(keys), pa.string()),
                    "key": pa.array(keys, pa.string()),
                    "deleted_at": pa.array([found_at] * len(keys), TIMESTAMP_TYPE),
                }
            )
            children = {
                child.table: _child_markers(child, connection, keys) for child in entity.children
            }
            return PageTables(main, children)
        main = self._destination.rows(entity.table, "key", connection, keys)
        tables = PageTables(_mark_deleted(main, found_at) if main is not None else None)
        for child in entity.children:
            rows = self._destination.rows(child.table, child.parent_key_column, connection, keys)
            if rows is not None and rows.num_rows:
                tables.children[child.table] = _mark_deleted(rows, found_at)
            else:
                tables.children[child.table] = _child_markers(child, connection, keys)
        return tables


def _mark_deleted(rows: pa.Table, found_at: datetime) -> pa.Table:
    if "deleted_at" not in rows.column_names:
        return rows.append_column(
            "deleted_at", pa.array([found_at] * rows.num_rows, TIMESTAMP_TYPE)
        )
    index = rows.column_names.index("deleted_at")
    column = rows.column(index).cast(TIMESTAMP_TYPE)
    marked = pc.fill_null(column, pa.scalar(found_at, TIMESTAMP_TYPE))
    return rows.set_column(index, "deleted_at", marked)


def _child_markers(child: Any, connection: str, parents: list[str]) -> pa.Table:
    """One never-inserted row per parent: the merge then deletes all its children."""
    identity = pa.array(
        [""] * len(parents) if child.identity == "key" else [0] * len(parents),
        pa.string() if child.identity == "key" else pa.int64(),
    )
    columns: dict[str, pa.Array] = {
        CONNECTION_COLUMN: pa.array([connection] * len(parents), pa.string()),
        child.parent_key_column: pa.array(parents, pa.string()),
        child.identity_column: identity,
        MARKER_COLUMN: pa.array([True] * len(parents), pa.bool_()),
    }
    return pa.table(columns)


def _arrow_type(column: dict[str, Any]) -> pa.DataType:
    kind = column.get("data_type")
    if kind == "decimal":
        return DECIMAL_TYPE
    return {
        "text": pa.string(),
        "bigint": pa.int64(),
        "double": pa.float64(),
        "bool": pa.bool_(),
        "timestamp": TIMESTAMP_TYPE,
        "date": pa.date32(),
        "json": pa.string(),
    }.get(str(kind), ARROW_TYPES["text"])


def _order_of(when: Any) -> tuple[datetime, int]:
    """A destination's timestamp as `time_order` orders its text, without the round trip
    through text (18 us a row: most of an incremental run's delete finding at 100,000 rows)."""
    if not isinstance(when, datetime):
        return time_order(format_timestamp(when) or "")
    when = when.astimezone(timezone.utc) if when.tzinfo else when.replace(tzinfo=timezone.utc)
    return when.replace(microsecond=0), when.microsecond * 1000


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _text(order: tuple[Any, int]) -> str:
    """A time order back as RFC 3339 text, with its fraction to the nanosecond."""
    when, fraction = order
    return when.strftime("%Y-%m-%dT%H:%M:%S") + f".{fraction:09d}Z"
