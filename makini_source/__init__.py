"""The Makini dlt source: purchase orders, their lines, vendors, materials, sites, assets and
work orders from every configured Makini connection, merged incrementally.

Usage::

    import dlt
    from makini_source import makini_source

    pipeline = dlt.pipeline("makini", destination="duckdb", dataset_name="makini_data")
    pipeline.run(makini_source(), loader_file_format="parquet")

Configuration (`.dlt/config.toml` / `.dlt/secrets.toml` or environment variables)::

    [sources.makini]
    base_url = "https://api.makini.io"        # SOURCES__MAKINI__BASE_URL
    [sources.makini.connections]              # SOURCES__MAKINI__CONNECTIONS='{"acme": "tok"}'
    acme = "token-of-acme"
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import dlt
import httpx
import pyarrow as pa
from dlt.common.typing import TSecretStrValue
from dlt.extract import DltResource

from makini_source import columnar
from makini_source.client import MakiniClient, Page, RetryPolicy, SyncStatus
from makini_source.exceptions import (
    ConfigurationError,
    ConnectionsFailed,
    ContractViolationError,
    MakiniAPIError,
    MakiniError,
    PermissionDeniedError,
    ReauthorizationRequired,
    RetriableAPIError,
)
from makini_source.load_id import stamp_load_id
from makini_source.memory import release_unused_memory
from makini_source.readahead import DONE, ReadAhead, ReadAheadGroup, interleave
from makini_source.records import PageBatcher, PageTables, RecordConverter
from makini_source.settings import (
    BATCH_ROWS,
    CONNECTION_COLUMN,
    CONVERT_BATCH_RECORDS,
    DEFAULT_BASE_URL,
    DEFAULT_CONNECTION_NAME,
    ENTITIES,
    LINE_MARKER_COLUMN,
    PARENT_KEY_COLUMN,
    PARENT_VERSION_COLUMN,
    SLICE_MIN_RECORDS,
    EntitySpec,
)
from makini_source.window import TDateLike, Window, format_timestamp, plan_window, split_window

__all__ = [
    "ENTITIES",
    "MakiniClient",
    "RetryPolicy",
    "connection_failures",
    "makini_source",
    "raise_on_connection_failures",
]

logger = logging.getLogger("makini_source")


class Connection:
    """One configured connection during one run: its client, sync status and failure.

    The sync status is read once per run and shared by every entity, so all entities of a
    connection read the same window. Once a connection fails (token revoked, retries
    exhausted), its remaining entities are skipped and the other connections go on.
    """

    def __init__(self, name: str, client: MakiniClient) -> None:
        self.name = name
        self.client = client
        self.failure: MakiniAPIError | None = None
        self.rows: dict[str, int] = {}
        self._status: SyncStatus | None = None
        self._lock = threading.Lock()

    def count_rows(self, table: str, rows: int) -> None:
        """Counts rows read for `table` (for progress and summaries)."""
        with self._lock:
            self.rows[table] = self.rows.get(table, 0) + rows

    def sync_status(self) -> SyncStatus:
        """The connection's sync status, read on first use.

        Raises:
            ReauthorizationRequired: Makini says the connection must be reauthorized.
        """
        with self._lock:
            if self._status is None:
                status = self.client.sync_status()
                if status.status == "reauthorization_required":
                    raise ReauthorizationRequired(
                        f"connection {self.name!r} needs reauthorization (sync status)",
                        connection=self.name,
                        entity="sync-status",
                    )
                self._status = status
            return self._status


@dlt.source(name="makini", max_table_nesting=0)
def makini_source(
    base_url: str = DEFAULT_BASE_URL,
    connections: dict[str, TSecretStrValue] | None = dlt.secrets.value,
    api_token: TSecretStrValue | None = dlt.secrets.value,
    entities: list[str] | None = None,
    start_date: str | None = None,
    end_date: str | None = None,
    page_size: int | None = None,
    hard_delete: bool = False,
    allow_insecure_http: bool = False,
    max_attempts: int = 8,
    max_elapsed_seconds: float = 300.0,
    backoff_base_seconds: float = 0.5,
    timeout_seconds: float = 60.0,
    on_permission_denied: str = "skip",
    max_slices: int = 2,
    transport: Any | None = None,
) -> Sequence[DltResource]:
    """Reads every configured Makini connection.

    Args:
        base_url: Makini API root (`sources.makini.base_url`).
        connections: Connection name -> bearer token (`sources.makini.connections`, a secret).
            The name lands in every row's `connection_id`.
        api_token: A single token, read as connection `default` (`sources.makini.api_token`).
        entities: Entities to load (`purchase_orders`, `vendors`, `materials`, `sites`,
            `assets`, `work_orders`); all when None.
        start_date: Lower bound of `updatedAt` for the first run (date or RFC 3339).
        end_date: Upper bound (exclusive) for a bounded backfill; the backfill reads
            `[start_date, end_date)` and leaves the incremental state alone.
        page_size: Records per request, capped at each entity's maximum (default: the maximum).
        hard_delete: Delete rows of deleted records instead of keeping them with `deleted_at`.
        allow_insecure_http: Accept plain `http://` to hosts other than loopback.
        max_attempts: Attempts per request for transient failures (429, 5xx, timeouts).
        max_elapsed_seconds: Time budget of one request's retries.
        backoff_base_seconds: First backoff of the exponential, jittered retry schedule.
        timeout_seconds: Read timeout of one request.
        on_permission_denied: `skip` (warn and skip the entity for that connection) or `fail`.
        max_slices: A first sync (or backfill) of an entity with many records reads its
            window in up to this many time slices at once; 1 reads one listing.
        transport: An httpx transport for every client (tests and proxies; not from config).

    Returns:
        One resource per selected entity; `purchase_orders` also fills
        `purchase_order_line_items`.

    Raises:
        ConfigurationError: No connections, an unknown entity, or bad dates.
    """
    tokens = _connection_tokens(connections, api_token)
    specs = _select_entities(entities)
    if on_permission_denied not in ("skip", "fail"):
        raise ConfigurationError("on_permission_denied must be 'skip' or 'fail'")
    # parse early so bad dates fail before any request
    format_timestamp(start_date)
    format_timestamp(end_date)
    if page_size is not None and page_size < 1:
        raise ConfigurationError("page_size must be at least 1")
    if max_slices < 1:
        raise ConfigurationError("max_slices must be at least 1")
    if transport is not None and not isinstance(transport, httpx.BaseTransport):
        raise ConfigurationError("transport must be an httpx.BaseTransport")

    retry = RetryPolicy(
        max_attempts=max_attempts,
        max_elapsed_seconds=max_elapsed_seconds,
        backoff_base_seconds=backoff_base_seconds,
        timeout_seconds=timeout_seconds,
    )
    open_connections = [
        Connection(
            name,
            MakiniClient(
                base_url,
                token,
                name,
                retry=retry,
                transport=transport,
                allow_insecure_http=allow_insecure_http,
            ),
        )
        for name, token in tokens.items()
    ]
    options = _ReadOptions(
        start_date, end_date, page_size, hard_delete, on_permission_denied, max_slices
    )
    return [_entity_resource(spec, open_connections, options) for spec in specs]


class _ReadOptions:
    def __init__(
        self,
        start_date: TDateLike,
        end_date: TDateLike,
        page_size: int | None,
        hard_delete: bool,
        on_permission_denied: str,
        max_slices: int,
    ) -> None:
        self.start_date = start_date
        self.end_date = end_date
        self.page_size = page_size
        self.hard_delete = hard_delete
        self.on_permission_denied = on_permission_denied
        self.max_slices = max_slices


def _entity_resource(
    spec: EntitySpec, connections: list[Connection], options: _ReadOptions
) -> DltResource:
    """Builds the merge resource of one entity from its catalogue row."""

    def read_entity() -> Iterator[Any]:
        state = dlt.current.resource_state().setdefault("watermarks", {})
        # every connection's listing runs at once (pages fetched ahead on background
        # threads); connections take turns, page by page, among those whose page arrived
        ahead: dict[str, ReadAhead[Any]] = {}
        # one type per column for every connection's pages (custom fields differ per
        # connection): the first page converted settles it, see RecordConverter
        settled_types: dict[tuple[str, str], pa.DataType] = {}
        readers = [
            (connection, _read_connection(spec, connection, options, state, ahead, settled_types))
            for connection in connections
            if connection.failure is None
        ]

        def ready(connection: Connection) -> bool:
            pages = ahead.get(connection.name)
            return pages is None or pages.ready()

        def isolate(connection: Connection, exc: BaseException) -> bool:
            if not isinstance(exc, (ReauthorizationRequired, RetriableAPIError)):
                return False
            # this connection is broken for this run; the others still load and commit
            connection.failure = exc
            logger.error("connection %s failed, skipping it for this run: %s", connection.name, exc)
            return True

        for page_items in interleave(
            readers, isolate, skip=lambda c: c.failure is not None, ready=ready
        ):
            yield from page_items
        release_unused_memory()  # before the load step needs memory of its own

    resource = dlt.resource(
        read_entity,
        name=spec.table,
        write_disposition={"disposition": "merge", "strategy": "delete-insert"},
        # keys are declared per table (`_main_hints`, `_child_hints`): a resource-level
        # primary key would be inherited by the line-items table, which merges per PO
        file_format="parquet",
    )
    resource.add_map(stamp_load_id)  # `_dlt_load_id` on every row, from any cwd (load_id.py)
    resource.makini_connections = connections  # type: ignore[attr-defined]
    return resource


def source_connections(source: Any) -> list[Connection]:
    """The `Connection` objects behind a source made by `makini_source` (one per name)."""
    seen: dict[str, Connection] = {}
    for resource in source.resources.values():
        for connection in getattr(resource, "makini_connections", ()):
            seen.setdefault(connection.name, connection)
    return list(seen.values())


def connection_failures(source: Any) -> dict[str, MakiniAPIError]:
    """The connections that failed while `source` was extracted, with their errors.

    After `pipeline.run(source)`, the healthy connections are loaded and committed; call this
    (or `raise_on_connection_failures`) to learn which connections were skipped and why.
    """
    return {c.name: c.failure for c in source_connections(source) if c.failure is not None}


def raise_on_connection_failures(source: Any) -> None:
    """Raises `ConnectionsFailed` listing every connection that failed in the last run."""
    failures: dict[str, MakiniError] = dict(connection_failures(source))
    if failures:
        raise ConnectionsFailed(failures)


def _read_connection(
    spec: EntitySpec,
    connection: Connection,
    options: _ReadOptions,
    state: dict[str, str],
    ahead: dict[str, ReadAhead[Any]],
    settled_types: dict[tuple[str, str], pa.DataType],
) -> Iterator[list[Any]]:
    """Yields the Arrow tables of each page of one entity of one connection (a list per page),
    then advances its watermark. Its page fetcher is registered in `ahead`."""
    window = plan_window(
        state.get(connection.name),
        options.start_date,
        options.end_date,
        connection.sync_status().last_sync_at if options.end_date is None else None,
    )
    if window.is_empty:
        logger.info(
            "%s/%s: nothing new since %s", connection.name, spec.name, window.modified_after
        )
        return
    page_size = min(options.page_size or spec.max_page_size, spec.max_page_size)
    converter = RecordConverter(
        spec,
        connection.name,
        hard_delete=options.hard_delete,
        known_types=_schema_column_types,
        settled_types=settled_types,
    )
    main_hints = _main_hints(spec, options)
    child_hints = _child_hints(spec, options) if spec.child_table else None
    first_run = state.get(connection.name) is None or options.end_date is not None
    # pages are fetched ahead and parsed (straight into Arrow, see columnar.py) on
    # background threads while this thread converts; a wait on the connection's rate limit
    # never holds this thread, so other connections go on meanwhile
    pages = ReadAhead(
        _listing(spec, connection, window, options, page_size, probe=first_run),
        name=f"makini-{connection.name}-{spec.name}",
    )
    ahead[connection.name] = pages
    batch = _Batch(spec, main_hints, child_hints)
    pending = PageBatcher(converter, CONVERT_BATCH_RECORDS)

    def collect(converted: list[PageTables]) -> int:
        for tables in converted:
            if tables.main is not None:
                connection.count_rows(spec.table, tables.main.num_rows)
            if tables.children is not None:
                assert spec.child_table is not None
                connection.count_rows(spec.child_table, tables.live_children)
            batch.add(tables.main, tables.children)
        return batch.rows

    try:
        while (page := pages.next()) is not DONE:
            assert isinstance(page, Page)
            if collect(pending.add(page.records, page.request_id)) >= BATCH_ROWS:
                yield batch.flush()
            elif not pages.ready():
                yield []  # the next page is not here yet: other connections take turns
        if collect(pending.flush()):
            yield batch.flush()
    except PermissionDeniedError as exc:
        if options.on_permission_denied == "fail":
            raise
        logger.warning("skipping %s for connection %s: %s", spec.name, connection.name, exc)
        if collect(pending.flush()):
            yield batch.flush()  # what was read before the 403 still loads
        return
    finally:
        pages.close()
    if window.next_watermark is not None:
        state[connection.name] = window.next_watermark


class _Batch:
    """Collects the tables of several pages and hands them to dlt as one table each.

    dlt's per-item cost (schema inference, name normalization, one parquet row group per
    item) is paid per batch instead of per page: ~10x fewer items at the default size.
    """

    def __init__(self, spec: EntitySpec, main_hints: Any, child_hints: Any) -> None:
        self._spec = spec
        self._hints = (main_hints, child_hints)
        self._tables: tuple[list[pa.Table], list[pa.Table]] = ([], [])
        self.rows = 0

    def add(self, main: pa.Table | None, children: pa.Table | None) -> int:
        """Adds one page's tables; returns the rows collected so far."""
        for tables, table in zip(self._tables, (main, children)):
            if table is not None:
                tables.append(table)
                self.rows += table.num_rows
        return self.rows

    def flush(self) -> list[Any]:
        """The collected tables as dlt items (one per destination table), and a fresh batch."""
        items: list[Any] = []
        for tables, hints in zip(self._tables, self._hints):
            if not tables:
                continue
            try:
                # pages may differ in columns (a field null on one page is absent there)
                merged = [pa.concat_tables(tables, promote_options="default")]
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                merged = tables  # a type differs between pages: dlt reconciles them
            items.extend(
                dlt.mark.with_hints(table, hints, create_table_variant=True) for table in merged
            )
        self._tables = ([], [])
        self.rows = 0
        return items


def _listing_params(window: Window) -> dict[str, Any]:
    params: dict[str, Any] = {"include_deleted": "true"}
    if window.modified_after:
        params["modified_after"] = window.modified_after
    if window.modified_before:
        params["modified_before"] = window.modified_before
    return params


def _listing(
    spec: EntitySpec,
    connection: Connection,
    window: Window,
    options: _ReadOptions,
    page_size: int,
    probe: bool,
) -> Iterator[Page]:
    """Every page of the window: one listing, or its time slices read at once (see
    `_slices`), each slice on a read-ahead thread of its own. Runs on a read-ahead thread."""
    slices = _slices(spec, connection, window, options) if probe else [window]
    listings = [
        connection.client.iter_pages(
            spec.name,
            spec.path,
            _listing_params(piece),
            page_size,
            decode=columnar.PageReader(spec),
        )
        for piece in slices
    ]
    if len(listings) == 1:
        yield from listings[0]
        return
    group: ReadAheadGroup[Page] = ReadAheadGroup(
        [
            ReadAhead(listing, name=f"makini-{connection.name}-{spec.name}-{number}")
            for number, listing in enumerate(listings)
        ]
    )
    try:
        while isinstance(page := group.next(), Page):
            yield page
    finally:
        group.close()


def _slices(
    spec: EntitySpec, connection: Connection, window: Window, options: _ReadOptions
) -> list[Window]:
    """The window, or its time slices when the listing is long enough to read them at once.

    One request for a single record tells how many records the window holds and where the
    first one lies in time. Cursor pagination fetches one page after another; slices let a
    first sync of a big entity fetch and parse several pages at a time (within the
    connection's rate limit, which every slice shares).
    """
    if window.modified_before is None or options.max_slices < 2:
        return [window]
    probe = connection.client.iter_pages(spec.name, spec.path, _listing_params(window), 1)
    try:
        first = next(probe, None)
    finally:
        probe.close()
    if first is None or not first.records or first.total_count is None:
        return [window]
    updated_at = first.records[0].get("updatedAt") if isinstance(first.records[0], dict) else None
    parts = min(options.max_slices, first.total_count // SLICE_MIN_RECORDS)
    if not isinstance(updated_at, str) or parts < 2:
        return [window]
    try:
        return split_window(window, updated_at, parts)
    except ConfigurationError:  # not a timestamp: the listing itself will say so
        return [window]


def _schema_column_types(table: str) -> dict[str, str]:
    """Data types of a table's columns as the source schema knows them (empty if unknown)."""
    schema = dlt.current.source_schema()
    if table not in schema.tables:
        return {}
    return {
        name: str(column["data_type"])
        for name, column in schema.tables[table]["columns"].items()
        if column.get("data_type")
    }


def _main_hints(spec: EntitySpec, options: _ReadOptions) -> Any:
    """Hints of an entity's table: merge on (connection_id, key), newest version wins."""
    columns: dict[str, Any] = {
        CONNECTION_COLUMN: {"data_type": "text", "nullable": False},
        "key": {"data_type": "text", "nullable": False},
        "updated_at": {"dedup_sort": "desc"},
    }
    if options.hard_delete:
        columns["deleted_at"] = {"hard_delete": True}
    return dlt.mark.make_hints(
        table_name=spec.table,
        write_disposition={"disposition": "merge", "strategy": "delete-insert"},
        primary_key=(CONNECTION_COLUMN, "key"),
        columns=columns,
        file_format="parquet",
    )


def _child_hints(spec: EntitySpec, options: _ReadOptions) -> Any:
    """Hints of the child table: each loaded PO replaces all of its lines.

    The merge deletes every destination line of each PO in the load (the destination scope,
    an equi-join on the PO key) and inserts the loaded lines, deduplicated on the primary key
    (a package resumed after a crash may stage the same rows twice). dlt's `merge_key` would
    delete on `primary key OR merge key`, which DuckDB cannot hash-join: an incremental run
    at 500k lines spent a minute in that one statement.
    """
    scope = (
        f"EXISTS (SELECT 1 FROM {{staging_table}} AS s"
        f" WHERE s.{CONNECTION_COLUMN} = {{table}}.{CONNECTION_COLUMN}"
        f" AND s.{PARENT_KEY_COLUMN} = {{table}}.{PARENT_KEY_COLUMN})"
    )
    return dlt.mark.make_hints(
        table_name=spec.child_table,
        write_disposition={
            "disposition": "merge",
            "strategy": "delete-insert",
            "destination_scope": scope,
        },
        primary_key=(CONNECTION_COLUMN, "key"),
        columns={
            CONNECTION_COLUMN: {"data_type": "text", "nullable": False},
            "key": {"data_type": "text", "nullable": False},
            PARENT_KEY_COLUMN: {"data_type": "text", "nullable": False},
            PARENT_VERSION_COLUMN: {"dedup_sort": "desc"},
            LINE_MARKER_COLUMN: {"data_type": "bool", "hard_delete": True},
        },
        file_format="parquet",
    )


def _connection_tokens(connections: dict[str, Any] | None, api_token: str | None) -> dict[str, str]:
    """Merges `connections` and `api_token` into one name -> token mapping."""
    tokens: dict[str, str] = {}
    if connections:
        if not isinstance(connections, dict):
            raise ConfigurationError("connections must be a mapping of connection name to token")
        for name, token in connections.items():
            if not isinstance(token, str) or not token:
                raise ConfigurationError(f"connection {name!r} has an empty or non-string token")
            tokens[str(name)] = token
    if api_token:
        tokens.setdefault(DEFAULT_CONNECTION_NAME, str(api_token))
    if not tokens:
        raise ConfigurationError(
            "no Makini connections configured: set sources.makini.connections (name -> token) "
            "or sources.makini.api_token in .dlt/secrets.toml or the environment"
        )
    return tokens


def _select_entities(entities: Sequence[str] | None) -> list[EntitySpec]:
    if entities is None:
        return list(ENTITIES.values())
    if isinstance(entities, str):
        entities = [e.strip() for e in entities.split(",") if e.strip()]
    by_path = {spec.path: spec for spec in ENTITIES.values()}
    selected = []
    for name in entities:
        spec = ENTITIES.get(name) or by_path.get(name)
        if spec is None:
            raise ConfigurationError(f"unknown entity {name!r}; choose from {', '.join(ENTITIES)}")
        selected.append(spec)
    return selected


# re-exported for users catching errors
__all__ += [
    "ConfigurationError",
    "ConnectionsFailed",
    "ContractViolationError",
    "MakiniError",
    "ReauthorizationRequired",
]
