"""Raw tables: the connected system's own tables (`EKKO`, `WORKORDER`...), rows as they come.

`GET /api/raw/tables` lists a unified connection's tables and `GET /api/raw/tables/{table}/data`
pages one's rows (`UnifiedDialect.raw_tables`, `raw_rows`). Each raw table lands in a table of
its own, `raw__<table>` (`raw__ekko`), with `connection_id`. Its rows are untyped, so they go
through dlt's normalizer as dicts and dlt infers their columns and types (ISO 8601 text with
an offset becomes a timestamp; a value that does not fit its column's type lands in a variant
column, `netwr__v_text`). A column the listing says is `mixed` (its type changes from row to
row) is text: dlt would otherwise coerce a value into the type of the first one it saw, and
some coercions lose it (an integer into a boolean column becomes `true`).

Every run replaces each connection's rows of every table it reads (`hints.replaced_table_hints`).
A table is read whole before any of its rows load (its rows have no key to read them again
by), so a connection that fails in the middle of a table keeps that table's previous rows, and
a table is held in memory while it is read. A table a connection no longer lists loses that
connection's rows (the resource's state remembers which tables each connection had); a table
merely left out of the selection keeps them. The v1 dialect has no raw tables: its
connections are skipped with a note.

One resource (`raw_tables`) fills all of them: which tables exist is only known once each
connection is asked, as an entity's resource fills its child tables.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import dlt
import orjson
from dlt.common.normalizers.naming.snake_case import NamingConvention
from dlt.extract import DltResource

from makini_source.connection import Connection
from makini_source.dialects.unified import UnifiedDialect
from makini_source.exceptions import ConfigurationError, MakiniError, PermissionDeniedError
from makini_source.fanin import Failure, FanIn, Finished, Item
from makini_source.hints import replaced_table_hints
from makini_source.report import RunReport
from makini_source.settings import (
    CONNECTION_COLUMN,
    MARKER_COLUMN,
    MAX_CONCURRENT_LISTINGS,
    RESERVED_PREFIX,
)

logger = logging.getLogger("makini_source")

RESOURCE_NAME = "raw_tables"
TABLE_PREFIX = "raw__"
_NAMING = NamingConvention()
# the source's own columns: a raw column of that name lands as `api_<name>` instead
_OWN_COLUMNS = frozenset({CONNECTION_COLUMN, MARKER_COLUMN})


def _json_text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def raw_table_name(table: str) -> str:
    """The destination table of a raw table: `EKKO` -> `raw__ekko`."""
    return TABLE_PREFIX + _NAMING.normalize_table_identifier(table)


def raw_table_selection(raw_tables: bool | str | Sequence[str] | None) -> frozenset[str] | None:
    """The raw tables an option selects, by upper-cased name; the empty set: none; None: all.

    Args:
        raw_tables: False or None (none), True or `all` (every table each connection
            lists), or table names (a list or comma-separated text, any case).

    Raises:
        ConfigurationError: Something else.
    """
    if raw_tables is None or raw_tables is False:
        return frozenset()
    if raw_tables is True:
        return None
    items = raw_tables.split(",") if isinstance(raw_tables, str) else raw_tables
    if not isinstance(items, (list, tuple, set, frozenset)) or not all(
        isinstance(item, str) for item in items
    ):
        raise ConfigurationError(
            f"raw_tables must be true, 'all' or table names, got {raw_tables!r}"
        )
    names = {item.strip().upper() for item in items if item.strip()}
    if "ALL" in names:
        return None
    return frozenset(names)


def raw_tables_resource(
    connections: list[Connection],
    selection: frozenset[str] | None,
    on_permission_denied: str,
    report: RunReport | None = None,
) -> DltResource:
    """The resource that fills a `raw__<table>` table per raw table of every connection.

    Args:
        connections: Every connection of the run.
        selection: Upper-cased names of the tables to read; None: every table listed.
        on_permission_denied: `skip` (note and go on) or `fail`.
        report: The run's report, told when the raw tables are read (it is written by
            whichever resource finishes last).
    """

    def read_raw_tables() -> Iterator[Any]:
        state = dlt.current.resource_state()
        yield from RawTablesRead(connections, selection, on_permission_denied, state)
        if report is not None:
            yield from report.finished(RESOURCE_NAME)

    resource = dlt.resource(
        read_raw_tables,
        name=RESOURCE_NAME,
        # the tables and their merge are declared per item (`replaced_table_hints`)
        write_disposition={"disposition": "merge", "strategy": "delete-insert"},
    )
    resource.makini_connections = connections  # type: ignore[attr-defined]
    return resource


@dataclass
class _Listed:
    """Every table a connection lists now."""

    names: list[str]


@dataclass
class _Rows:
    """Every row of one raw table, and the types its listing gives its columns."""

    table: str
    rows: list[dict[str, Any]]
    column_types: dict[str, str]


@dataclass
class _Note:
    """A line for the connection's run summary."""

    text: str


class RawTablesRead:
    """Reads the raw tables of every connection (one listing thread per connection);
    iterate it for dlt items.

    Args:
        connections: Every connection of the run (failed ones are skipped).
        selection: Upper-cased names of the tables to read; None: all.
        on_permission_denied: `skip` or `fail`.
        state: The resource's state: `tables` per connection (those it had last time).
    """

    def __init__(
        self,
        connections: list[Connection],
        selection: frozenset[str] | None,
        on_permission_denied: str,
        state: dict[str, Any],
    ) -> None:
        self._connections = {c.name: c for c in connections if c.failure is None}
        self._selection = selection
        self._fail_on_denied = on_permission_denied == "fail"
        self._had: dict[str, list[str]] = state.setdefault("tables", {})
        self._names: dict[str, str] = {}  # raw column -> its normalized name

    def __iter__(self) -> Iterator[Any]:
        fanin = FanIn(1, MAX_CONCURRENT_LISTINGS)
        for connection in self._connections.values():
            fanin.add(
                connection.name,
                partial(self._listing, connection),
                name=f"makini-{connection.name}-raw-tables",
            )
        listed: dict[str, list[str]] = {}
        try:
            for event in fanin.events():
                connection = self._connections[str(event.owner)]
                if isinstance(event, Item):
                    value = event.value
                    if isinstance(value, _Listed):
                        listed[connection.name] = value.names
                    elif isinstance(value, _Note):
                        connection.note(value.text)
                    else:
                        yield self._item(connection, value)
                elif isinstance(event, Failure):
                    self._failed(connection, event.error)
                elif isinstance(event, Finished) and self._complete(connection, listed):
                    yield from self._vanished(connection, listed[connection.name])
        finally:
            fanin.close()

    @staticmethod
    def _complete(connection: Connection, listed: dict[str, list[str]]) -> bool:
        """Whether the connection listed its tables and read them without failing."""
        return connection.name in listed and connection.failure is None

    def _listing(self, connection: Connection) -> Iterator[_Listed | _Rows | _Note]:
        """A connection's tables, one after the other (runs on a listing thread)."""
        dialect, _ = connection.resolve()
        if not isinstance(dialect, UnifiedDialect):
            yield _Note(f"raw tables skipped: the {dialect.name} dialect has none")
            return
        client = connection.client
        try:
            tables = dialect.raw_tables(client)
        except PermissionDeniedError:
            if self._fail_on_denied:
                raise
            yield _Note("raw tables skipped: permission denied")
            return
        names = list(tables)
        yield _Listed(names)
        if self._selection:
            unknown = self._selection - {name.upper() for name in names}
            if unknown:
                yield _Note(
                    f"raw tables not listed by this connection: {', '.join(sorted(unknown))}"
                )
        for name in names:
            if self._selection is not None and name.upper() not in self._selection:
                continue
            try:
                rows = dialect.raw_rows(client, name)
            except PermissionDeniedError:
                if self._fail_on_denied:
                    raise
                yield _Note(f"raw table {name} skipped: permission denied")
                continue
            yield _Rows(name, rows, tables[name])

    def _item(self, connection: Connection, table: _Rows) -> Any:
        """One table's rows of one connection, with the marker that replaces its old ones."""
        name = raw_table_name(table.table)
        mixed = frozenset(column for column, kind in table.column_types.items() if kind == "mixed")
        items = [self._row(connection.name, row, mixed) for row in table.rows]
        items.append({CONNECTION_COLUMN: connection.name, MARKER_COLUMN: True})
        connection.count_rows(name, len(table.rows))
        had = self._had.setdefault(connection.name, [])
        if table.table not in had:
            had.append(table.table)
            had.sort()
        text = {
            self._normalized(column): {"data_type": "text"}
            for column in mixed
            if self._normalized(column) not in _OWN_COLUMNS
        }
        hints = replaced_table_hints(name, columns=text)
        return dlt.mark.with_hints(items, hints, create_table_variant=True)

    def _row(self, connection: str, row: dict[str, Any], mixed: frozenset[str]) -> dict[str, Any]:
        """A raw row with `connection_id`: a value of a `mixed` column as JSON text (`true`,
        `21`, `2.5`; text as it is); a raw column named like one of the source's own columns
        keeps its value under `api_<name>`."""
        if mixed:
            row = {k: _json_text(v) if k in mixed and v is not None else v for k, v in row.items()}
        if any(self._normalized(column) in _OWN_COLUMNS for column in row):
            row = {
                (RESERVED_PREFIX if self._normalized(k) in _OWN_COLUMNS else "") + k: v
                for k, v in row.items()
            }
        return {**row, CONNECTION_COLUMN: connection}

    def _normalized(self, column: str) -> str:
        name = self._names.get(column)
        if name is None:
            name = self._names[column] = _NAMING.normalize_identifier(column)
        return name

    def _vanished(self, connection: Connection, names: list[str]) -> Iterator[Any]:
        """Marker rows that empty the connection's part of the selected tables it no longer
        lists."""
        listed = set(names)
        had = self._had.get(connection.name, [])
        gone = [
            table
            for table in had
            if table not in listed and (self._selection is None or table.upper() in self._selection)
        ]
        for table in gone:
            marker = {CONNECTION_COLUMN: connection.name, MARKER_COLUMN: True}
            hints = replaced_table_hints(raw_table_name(table))
            yield dlt.mark.with_hints([marker], hints, create_table_variant=True)
            connection.note(f"raw table {table} is no longer listed: its rows were removed")
        self._had[connection.name] = [table for table in had if table not in gone]

    def _failed(self, connection: Connection, error: BaseException) -> None:
        """A connection's failure: it stops; the tables it read completely still load."""
        if isinstance(error, PermissionDeniedError) and self._fail_on_denied:
            raise error
        if not isinstance(error, MakiniError) or isinstance(error, ConfigurationError):
            raise error  # a bug or a mistake of ours: stop the run
        connection.fail(error)
