"""The read path of one entity, for every connection at once.

Data flows one way: per connection, listings (threads: one per connection and time slice)
put pages on one fan-in queue (`fanin.FanIn`); the resource's thread takes them off as they
arrive, converts them (`records.RecordConverter`, a few pages at a time), collects the rows
of many pages and hands dlt one Arrow table per destination table. Failures are isolated per
connection here, in one place (`_failed`): a connection that fails stops, its watermark stays,
and the other connections load.

When all listings of a connection have ended, its part is finished: marker rows for the
children of superseded versions, the deletes a unified connection must find itself
(`deletes.py`), then the watermark for the next run.

An entity replaced per connection (no time to follow: `uom`) holds each connection's rows
until its listing is complete: they replace all of that connection's rows, so a listing cut
short by a failure must load nothing rather than half.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import dlt
import pyarrow as pa
import pyarrow.compute as pc
from dlt.common.configuration.container import Container
from dlt.common.pipeline import PipelineContext

from makini_source.catalogue import Entity, load_catalogue
from makini_source.columnar import PageDecoder
from makini_source.columns import ColumnNames, assigned_state
from makini_source.connection import Connection
from makini_source.deletes import SHARED_CLIENTS, DeleteFinder, Destination, Found
from makini_source.dialects.base import Dialect, Page
from makini_source.dialects.unified import UnifiedDialect
from makini_source.exceptions import (
    ConfigurationError,
    ContractViolationError,
    MakiniAPIError,
    MakiniError,
    PermissionDeniedError,
    TooManyColumnsError,
)
from makini_source.fanin import Failure, FanIn, Finished, Item
from makini_source.hints import (
    child_hints,
    custom_field_columns_hints,
    main_hints,
    replaced_per_connection,
)
from makini_source.memory import release_unused_memory
from makini_source.records import (
    PageBatcher,
    PageTables,
    RecordConverter,
    SupersededChildren,
    settle_batch_types,
)
from makini_source.redact import server_text
from makini_source.report import RunReport
from makini_source.settings import (
    BATCH_ROWS,
    CONNECTION_COLUMN,
    CONVERT_BATCH_RECORDS,
    CUSTOM_FIELD_COLUMNS_TABLE,
    MARKER_COLUMN,
    MAX_COLUMNS_PER_TABLE,
    MAX_CONCURRENT_LISTINGS,
    MAX_EMPTY_PAGES,
    PAGES_AHEAD,
    SLICE_MIN_RECORDS,
)
from makini_source.window import TDateLike, Window, plan_window, split_window

logger = logging.getLogger("makini_source")


@dataclass(frozen=True)
class ReadOptions:
    """How a run reads (the source's settings that shape listings and rows)."""

    start_date: TDateLike = None
    end_date: TDateLike = None
    page_size: int | None = None
    hard_delete: bool = False
    on_permission_denied: str = "skip"
    max_slices: int = 2
    stop_at_sync_point: bool = False
    lookback_seconds: float | None = None
    max_columns_per_table: int = MAX_COLUMNS_PER_TABLE
    max_empty_pages: int = MAX_EMPTY_PAGES


# columns dlt adds to every table besides the source's own
_DLT_COLUMNS = frozenset({"_dlt_id", "_dlt_load_id"})
# errors a page's data can raise while it is converted: they fail its connection only
_DATA_ERRORS = (ValueError, TypeError, ArithmeticError)


@dataclass
class _Skipped:
    """A listing's note that the connection does not serve the entity, and why."""

    reason: str


@dataclass
class _ConnectionRead:
    """One connection's part of an entity read, on the resource's thread."""

    connection: Connection
    converter: RecordConverter
    batcher: PageBatcher
    superseded: SupersededChildren
    window: Window | None = None
    skipped: bool = False
    complete: bool = False  # every listing ended and the rows are final
    finding_deletes: bool = False
    tables: list[PageTables] = field(default_factory=list)
    keys: list[pa.Array] = field(default_factory=list)  # every key read (for deletes)


class EntityRead:
    """Reads one entity from every connection; iterate it for dlt items.

    Args:
        entity: The entity.
        connections: Every connection of the run (failed ones are skipped).
        options: How to read.
        state: The resource's state: `watermarks` per connection live here.
        known_types: Column name -> dlt data type of a table, as the schema knows it.
        report: The run's report, told when this entity is done.
        listing_table_existed: Whether `custom_field_columns` was in the schema when the
            run began (the same answer for every entity of the run; default: asked now).
    """

    def __init__(
        self,
        entity: Entity,
        connections: list[Connection],
        options: ReadOptions,
        state: dict[str, Any],
        known_types: Any,
        report: RunReport | None = None,
        listing_table_existed: Callable[[], bool] | None = None,
    ) -> None:
        self.entity = entity
        self._report = report
        self.options = options
        self._watermarks: dict[str, str] = state.setdefault("watermarks", {})
        self._connections = [c for c in connections if c.failure is None]
        self._replaced = replaced_per_connection(entity)
        self._known_types = known_types
        # one type per inferred column for every connection's pages (custom fields differ per
        # connection): the first page converted settles it, see RecordConverter
        self._settled: dict[tuple[str, str], pa.DataType] = {}
        # one column per field in every table, whichever connection sends it (columns.py)
        self._column_names = ColumnNames(assigned_state(state))
        self._columns: dict[str, set[str]] = {}  # each table's columns: the schema's, this run's
        self._hints = {entity.table: main_hints(entity, options.hard_delete)}
        self._hints.update({child.table: child_hints(entity, child) for child in entity.children})
        self._hints[CUSTOM_FIELD_COLUMNS_TABLE] = custom_field_columns_hints()
        existed = (
            listing_table_existed()
            if listing_table_existed is not None
            else bool(known_types(CUSTOM_FIELD_COLUMNS_TABLE))
        )
        self._listed = listed_custom_fields(state, existed)
        # None when extracted without a pipeline: deletes cannot be found then
        self._pipeline: Any = _running_pipeline()

    def __iter__(self) -> Iterator[Any]:
        fanin = FanIn(PAGES_AHEAD, MAX_CONCURRENT_LISTINGS)
        reads: dict[str, _ConnectionRead] = {}
        for connection in self._connections:
            reads[connection.name] = self._start(connection)
            fanin.add(
                connection.name,
                partial(self._listing, connection, dict(self._watermarks), fanin),
                name=f"makini-{connection.name}-{self.entity.name}",
            )
        batch = _Batch(self._hints, self._settled)
        with ExitStack() as stack:
            if self._pipeline is not None:
                # one destination client for every delete finder of the run
                stack.enter_context(SHARED_CLIENTS.lease(self._pipeline))
            yield from self._events(fanin, reads, batch)

    def _events(
        self, fanin: FanIn, reads: dict[str, _ConnectionRead], batch: _Batch
    ) -> Iterator[Any]:
        """Every listing's events, turned into dlt items."""
        try:
            for event in fanin.events():
                read = reads[str(event.owner)]
                try:
                    if isinstance(event, Item):
                        self._take(read, event.value)
                    elif isinstance(event, Failure):
                        self._failed(read, event.error, fanin)
                    elif isinstance(event, Finished):
                        self._finish(read, fanin)
                except (MakiniAPIError, ContractViolationError, TooManyColumnsError) as exc:
                    self._failed(read, exc, fanin)  # a page that does not convert
                except _DATA_ERRORS as exc:
                    # data this source did not foresee: its connection fails, named, and the
                    # others go on
                    logger.debug("converting %s failed", read.connection.name, exc_info=True)
                    error = ContractViolationError(
                        f"a page could not be converted ({type(exc).__name__}: "
                        f"{server_text(str(exc), 200)})",
                        connection=read.connection.name,
                        entity=self.entity.name,
                    )
                    self._failed(read, error, fanin)
                if self._replaced and not read.complete:
                    continue  # held until the connection's listing is complete
                for tables in read.tables:
                    batch.add(tables, read.connection, self.entity)
                    self._mark_listed(read.connection.name, tables)
                read.tables.clear()
                if batch.rows >= BATCH_ROWS:
                    yield from batch.flush()
            yield from batch.flush()
            if self._report is not None:
                yield from self._report.finished(self.entity.table)
        finally:
            fanin.close()
            release_unused_memory()  # before the load step needs memory of its own

    # --- one connection's listing (runs on a listing thread) --------------------------------

    def _listing(
        self, connection: Connection, watermarks: Mapping[str, str], fanin: FanIn
    ) -> Iterator[Any]:
        """The connection's pages of the entity: its window, then every page of every slice."""
        dialect, point = connection.resolve()
        entity = self.entity
        if not dialect.serves(entity):
            yield _Skipped(_not_served(dialect))
            return
        options = self.options
        if self._replaced:
            window = Window(None, None, None)  # read whole, every run
        else:
            lookback = options.lookback_seconds
            window = plan_window(
                watermarks.get(connection.name),
                options.start_date,
                options.end_date,
                point.complete_until if options.end_date is None else None,
                stop_at_sync_point=options.stop_at_sync_point,
                lookback_seconds=dialect.default_lookback_seconds if lookback is None else lookback,
            )
        yield window
        if window.is_empty:
            return
        largest = dialect.max_page_size(entity)
        page_size = min(options.page_size or largest, largest)
        first_run = watermarks.get(connection.name) is None or options.end_date is not None
        slices = self._slices(dialect, connection, window) if first_run else [window]
        for number, piece in enumerate(slices[1:], start=1):
            fanin.add(
                connection.name,
                partial(self._pages, dialect, connection, piece, page_size),
                name=f"makini-{connection.name}-{entity.name}-{number}",
            )
        yield from self._pages(dialect, connection, slices[0], page_size)

    def _pages(
        self, dialect: Dialect, connection: Connection, window: Window, page_size: int
    ) -> Iterator[Page]:
        decode = PageDecoder(self.entity)
        return dialect.pages(
            connection.client,
            self.entity,
            window,
            page_size,
            decode,
            max_empty_pages=self.options.max_empty_pages,
        )

    def _slices(self, dialect: Dialect, connection: Connection, window: Window) -> list[Window]:
        """The window, or its time slices when the listing is long enough to read them at once.

        One request for a single record tells how many records the window holds and where the
        first one lies in time. Slices let a first sync of a big entity fetch and parse several
        pages at a time (within the connection's rate limit, which every slice shares).
        """
        if self.options.max_slices < 2 or (
            window.sync_point is None and not window.modified_before
        ):
            return [window]
        probe = dialect.probe(connection.client, self.entity, window)
        if probe is None:
            return [window]
        parts = min(self.options.max_slices, probe.total // SLICE_MIN_RECORDS)
        if parts < 2:
            return [window]
        try:
            return split_window(window, probe.first_time, parts)
        except ConfigurationError:  # not a timestamp: the listing itself will say so
            return [window]

    # --- the resource's thread ----------------------------------------------------------------

    def _start(self, connection: Connection) -> _ConnectionRead:
        converter = RecordConverter(
            self.entity,
            connection.name,
            hard_delete=self.options.hard_delete,
            custom_fields_at_top_level=False,  # set when the dialect is known
            known_types=self._known_types,
            settled_types=self._settled,
            column_names=self._column_names,
        )
        return _ConnectionRead(
            connection,
            converter,
            PageBatcher(converter, CONVERT_BATCH_RECORDS),
            SupersededChildren(self.entity, connection.name),
        )

    def _take(self, read: _ConnectionRead, value: Any) -> None:
        """A listing's value: its window, a skip notice, or a page."""
        if isinstance(value, Window):
            read.window = value
            dialect = read.connection.dialect
            assert dialect is not None
            read.converter.custom_fields_at_top_level = dialect.custom_fields_at_top_level
            if value.note:
                read.connection.note(value.note)
            return
        if isinstance(value, _Skipped):
            read.skipped = True
            read.connection.skip(self.entity.name, value.reason)
            return
        if isinstance(value, Found):
            read.tables.append(value.tables)
            read.connection.count_deletes(self.entity.name, value.deleted, 0)
            return
        assert isinstance(value, Page)
        self._collect(read, read.batcher.add(value.decoded, value.request_id))

    def _collect(self, read: _ConnectionRead, converted: list[PageTables]) -> None:
        converter = read.converter
        for note in converter.notes:
            read.connection.note(note)
        converter.notes.clear()
        for tables in converted:
            self._check_columns(read, tables)
        mapping = self._mapping(read)
        if mapping is not None:
            read.tables.append(PageTables(None, {CUSTOM_FIELD_COLUMNS_TABLE: mapping}))
        for tables in converted:
            read.superseded.observe(tables)
            if tables.main is not None and not self._replaced:  # keys find deletes
                read.keys.append(tables.main.column("key").combine_chunks())
            read.tables.append(tables)

    def _check_columns(self, read: _ConnectionRead, tables: PageTables) -> None:
        """Keeps every table within `max_columns_per_table`, failing the connection whose
        records would take one past it (before the destination is asked to take them).

        Raises:
            TooManyColumnsError: This connection's tables would have too many columns.
        """
        limit = self.options.max_columns_per_table
        pieces = [(self.entity.table, tables.main), *tables.children.items()]
        added: dict[str, list[str]] = {}
        for name, table in pieces:
            if table is None:
                continue
            known = self._columns_of(name)
            new = [column for column in table.column_names if column not in known]
            if new and len(known) + len(new) > limit:
                raise TooManyColumnsError(
                    f"table {name} would have {len(known) + len(new):,} columns, more than "
                    f"max_columns_per_table={limit:,}: this connection's records bring "
                    f"{len(new):,} new ones (e.g. {', '.join(sorted(new)[:3])}). Raise "
                    "max_columns_per_table if the destination takes that many (PostgreSQL: "
                    "1,600 at most), or leave this connection out",
                    connection=read.connection.name,
                    entity=self.entity.name,
                )
            added[name] = new
        for name, new in added.items():
            self._columns_of(name).update(new)

    def _columns_of(self, table: str) -> set[str]:
        columns = self._columns.get(table)
        if columns is None:
            columns = self._columns[table] = set(_DLT_COLUMNS) | set(self._known_types(table))
        return columns

    def _mapping(self, read: _ConnectionRead) -> pa.Table | None:
        """Rows of `custom_field_columns` for the custom fields this connection sent for the
        first time in this run and that no earlier run listed; None if there are none."""
        listed = self._listed.get(read.connection.name, {})
        rows = [
            (table, name, column)
            for table, name, column in read.converter.new_custom_columns
            if name not in listed.get(table, ())
        ]
        read.converter.new_custom_columns.clear()
        if not rows:
            return None
        columns = {
            CONNECTION_COLUMN: [read.connection.name] * len(rows),
            "table_name": [table for table, _, _ in rows],
            "entity": [self.entity.name] * len(rows),
            "name": [name for _, name, _ in rows],
            "column_name": [column for _, _, column in rows],
        }
        keys = (CONNECTION_COLUMN, "table_name", "name")  # NOT NULL, as in the table's hints
        return pa.Table.from_arrays(
            [pa.array(values, pa.string()) for values in columns.values()],
            schema=pa.schema(
                [pa.field(name, pa.string(), nullable=name not in keys) for name in columns]
            ),
        )

    def _mark_listed(self, connection: str, tables: PageTables) -> None:
        """Records the custom fields of `tables`' `custom_field_columns` rows, on their way to
        dlt, as listed: the state goes with the load package, so it rewinds with an aborted
        package and they are written again."""
        mapping = tables.children.get(CUSTOM_FIELD_COLUMNS_TABLE)
        if mapping is None:
            return
        listed = self._listed.setdefault(connection, {})
        for table, name in zip(
            mapping.column("table_name").to_pylist(), mapping.column("name").to_pylist()
        ):
            listed.setdefault(table, []).append(name)

    def _finish(self, read: _ConnectionRead, fanin: FanIn) -> None:
        """Every listing of the connection ended: flush, add markers, find deletes (unified),
        then store the watermark."""
        connection = read.connection
        self._collect(read, read.batcher.flush())  # pages read before a failure still load
        if connection.failure is not None or read.skipped or read.window is None:
            if self._replaced:
                read.tables.clear()  # half a listing must not replace the connection's rows
                return
            self._add_markers(read)
            return
        if not read.finding_deletes and self._must_find_deletes(read):
            read.finding_deletes = True
            finder = self._delete_finder(read)
            fanin.add(
                connection.name,
                partial(self._find_deletes, finder, connection),
                name=f"makini-{connection.name}-{self.entity.name}-deletes",
            )
            return  # finished again once the deletes are found
        self._add_markers(read)
        if self._replaced:
            # the connection's rows are replaced even when it lists nothing now
            read.tables.append(PageTables(_replace_marker(connection.name, self.entity)))
            read.complete = True
        if read.window.next_watermark is not None:
            self._watermarks[connection.name] = read.window.next_watermark

    def _add_markers(self, read: _ConnectionRead) -> None:
        markers = read.superseded.markers()
        if markers:
            read.tables.append(PageTables(None, markers))

    def _must_find_deletes(self, read: _ConnectionRead) -> bool:
        """A unified connection's incremental run must look for records that vanished."""
        dialect = read.connection.dialect
        return (
            dialect is not None
            and not dialect.has_tombstones
            and isinstance(dialect, UnifiedDialect)
            and not self._replaced
            and self.options.end_date is None
            and read.window is not None
            and read.window.modified_after is not None
            and self._watermarks.get(read.connection.name) is not None
            and self._pipeline is not None
        )

    def _delete_finder(self, read: _ConnectionRead) -> DeleteFinder:
        schema = dlt.current.source_schema()
        columns = {
            table: dict(schema.tables[table]["columns"])
            for table in self.entity.tables
            if table in schema.tables
        }
        read_keys = set(pa.concat_arrays(read.keys).to_pylist()) if read.keys else set()
        dialect = read.connection.dialect
        assert isinstance(dialect, UnifiedDialect) and read.window is not None
        return DeleteFinder(
            dialect,
            read.connection.client,
            self.entity,
            read.connection.name,
            read.window,
            read_keys,
            Destination(self._pipeline, columns),
            self.options.hard_delete,
        )

    @staticmethod
    def _find_deletes(finder: DeleteFinder, connection: Connection) -> Iterator[Any]:
        try:
            yield from finder
        finally:
            connection.count_deletes(finder.entity.name, 0, finder.requests)

    def _failed(self, read: _ConnectionRead, error: BaseException, fanin: FanIn) -> None:
        """Isolates a connection's failure: it stops, the others go on."""
        connection = read.connection
        fanin.stop(connection.name)
        if isinstance(error, PermissionDeniedError) and connection.failure is None:
            if self.options.on_permission_denied == "fail":
                raise error
            logger.warning(
                "skipping %s for connection %s: %s", self.entity.name, connection.name, error
            )
            connection.note(f"{self.entity.name} skipped: permission denied")
            read.skipped = True
            return
        if not isinstance(error, MakiniError) or isinstance(error, ConfigurationError):
            raise error  # a bug or a mistake of ours: stop the run
        connection.fail(error)


class _Batch:
    """Collects the tables of many pages and hands them to dlt as one table each.

    dlt's per-item cost (schema inference, name normalization, one parquet row group per
    item) is paid per batch instead of per page: ~10x fewer items at the default size.
    """

    def __init__(
        self, hints: Mapping[str, Any], settled: dict[tuple[str, str], pa.DataType]
    ) -> None:
        self._hints = hints
        self._settled = settled
        self._tables: dict[str, list[pa.Table]] = {}
        self.rows = 0

    def add(self, tables: PageTables, connection: Connection, entity: Entity) -> None:
        """Adds one conversion's tables (and counts their rows for the connection)."""
        if tables.main is not None:
            self._tables.setdefault(entity.table, []).append(tables.main)
            self.rows += tables.main.num_rows
            if MARKER_COLUMN not in tables.main.column_names:
                connection.count_rows(entity.table, tables.main.num_rows)
        for table_name, table in tables.children.items():
            self._tables.setdefault(table_name, []).append(table)
            self.rows += table.num_rows
            connection.count_rows(table_name, tables.live_children.get(table_name, 0))

    def flush(self) -> list[Any]:
        """The collected tables as dlt items (one per destination table), and a fresh batch."""
        items: list[Any] = []
        for name, tables in self._tables.items():
            tables = settle_batch_types(name, tables, self._settled)
            try:
                # pages may differ in columns (a field null on one page is absent there)
                merged = [
                    _in_stable_order(pa.concat_tables(tables, promote_options="default"), tables)
                ]
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                merged = tables  # a type differs between pages: dlt reconciles them
            items.extend(
                dlt.mark.with_hints(table, self._hints[name], create_table_variant=True)
                for table in merged
            )
        self._tables = {}
        self.rows = 0
        return items


def listed_custom_fields(
    state: dict[str, Any], table_exists: bool
) -> dict[str, dict[str, list[str]]]:
    """The custom fields earlier runs wrote to `custom_field_columns`, per connection and
    table, in a resource's state (created if absent).

    A run writes rows only for the others: the table's merge costs an incremental run as
    much as an entity's. If the table was not in the schema when the run began (a first run,
    or dropped with `dlt pipeline drop` along with another entity's resource), nothing
    counts as listed and the run writes every field it sees.
    """
    if not table_exists:
        state["listed_custom_fields"] = {}
    return state.setdefault("listed_custom_fields", {})  # type: ignore[no-any-return]


def _in_stable_order(merged: pa.Table, pieces: list[pa.Table]) -> pa.Table:
    """The columns every piece has in their own order, then the others (custom fields of
    some connections only) sorted: the same whichever connection's page came first."""
    rows = [piece for piece in pieces if not _only_markers(piece)] or pieces
    common = set.intersection(*(set(piece.column_names) for piece in rows))
    first = [name for name in rows[0].column_names if name in common]
    rest = sorted(name for name in merged.column_names if name not in common)
    return merged.select(first + rest)


def _only_markers(table: pa.Table) -> bool:
    """A table of marker rows only (they carry just the columns they need)."""
    if MARKER_COLUMN not in table.column_names:
        return False
    return bool(pc.all(pc.fill_null(table.column(MARKER_COLUMN), False)).as_py())


def _not_served(dialect: Dialect) -> str:
    """Why a connection skips an entity its dialect (or family) does not serve: one reason
    per dialect and family, so one note lists every entity skipped for it."""
    if dialect.family:
        return f"not served by the {dialect.family} family"
    served = ", ".join(entity.name for entity in load_catalogue().values() if entity.in_v1)
    return f"not served by the {dialect.name} dialect, which serves only {served}"


def _replace_marker(connection: str, entity: Entity) -> pa.Table:
    """The never-inserted row that makes the merge replace every row of `connection`."""
    columns = {
        CONNECTION_COLUMN: pa.array([connection], pa.string()),
        MARKER_COLUMN: pa.array([True], pa.bool_()),
    }
    if entity.primary_key is not None:
        # `key` is NOT NULL in the record rows' schema: the marker fills it too
        columns[entity.primary_key] = pa.array([""], pa.string())
    schema = pa.schema(
        [
            pa.field(name, array.type, nullable=name == MARKER_COLUMN)
            for name, array in columns.items()
        ]
    )
    return pa.Table.from_arrays(list(columns.values()), schema=schema)


def _running_pipeline() -> Any:
    """The pipeline extracting the source, or None.

    Not `dlt.current.pipeline()`: that resolves dlt's pipeline configuration on every call
    (milliseconds, once per entity and run) and, with no pipeline active, creates one.
    """
    context = Container()[PipelineContext]
    return context.pipeline() if context.is_active() else None
