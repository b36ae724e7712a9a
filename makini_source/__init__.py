"""The Makini dlt source: purchase orders, their lines, vendors, materials, sites, assets, work
orders (and, on request, every other entity Makini publishes) from every configured Makini
connection, in either of Makini's dialects, merged incrementally.

Usage::

    import dlt
    from makini_source import makini_source, raise_on_connection_failures

    source = makini_source()
    pipeline = dlt.pipeline("makini", destination="duckdb", dataset_name="makini_data")
    pipeline.run(source, loader_file_format="parquet")
    raise_on_connection_failures(source)  # the healthy connections are loaded either way

Configuration (`.dlt/config.toml` / `.dlt/secrets.toml` or environment variables)::

    [sources.makini]
    base_url = "https://api.makini.io"        # SOURCES__MAKINI__BASE_URL
    [sources.makini.connections]              # SOURCES__MAKINI__CONNECTIONS='{"acme": "tok"}'
    acme = "token-of-acme"
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import dlt
import httpx
from dlt.common.typing import TSecretStrValue
from dlt.extract import DltResource

from makini_source.accounts import Account, ConnectionInactive, DiscoveredConnection
from makini_source.catalogue import Entity, select
from makini_source.client import MakiniClient, RetryPolicy, check_token
from makini_source.connection import Connection
from makini_source.dialects import DIALECTS, FAMILIES
from makini_source.exceptions import (
    ConfigurationError,
    ConnectionsFailed,
    ContractViolationError,
    MakiniAPIError,
    MakiniError,
    ReauthorizationRequired,
)
from makini_source.load_id import stamp_load_id
from makini_source.raw_tables import raw_table_selection, raw_tables_resource
from makini_source.reading import EntityRead, ReadOptions
from makini_source.report import RunReport
from makini_source.settings import (
    CUSTOM_FIELD_COLUMNS_TABLE,
    DEFAULT_BASE_URL,
    DEFAULT_CONNECTION_NAME,
    MAX_COLUMNS_PER_TABLE,
    MAX_EMPTY_PAGES,
)
from makini_source.window import format_timestamp, to_datetime

__all__ = [
    "ConfigurationError",
    "Connection",
    "ConnectionsFailed",
    "ContractViolationError",
    "MakiniAPIError",
    "MakiniClient",
    "MakiniError",
    "ReauthorizationRequired",
    "RetryPolicy",
    "connection_failures",
    "makini_source",
    "raise_on_connection_failures",
    "source_connections",
]


@dlt.source(name="makini", max_table_nesting=0)
def makini_source(
    base_url: str = DEFAULT_BASE_URL,
    connections: dict[str, Any] | None = dlt.secrets.value,
    api_token: TSecretStrValue | None = dlt.secrets.value,
    client_id: TSecretStrValue | None = dlt.secrets.value,
    client_secret: TSecretStrValue | None = dlt.secrets.value,
    connection_keys: list[str] | str | None = None,
    connection_tags: list[str] | str | None = None,
    entities: list[str] | str | None = None,
    dialect: str = "auto",
    family: str | None = None,
    start_date: str | None = None,
    end_date: str | None = None,
    page_size: int | None = None,
    hard_delete: bool = False,
    allow_insecure_http: bool = False,
    max_attempts: int = 8,
    max_elapsed_seconds: float = 300.0,
    backoff_base_seconds: float = 0.5,
    backoff_max_seconds: float = 30.0,
    timeout_seconds: float = 60.0,
    deadline_seconds: float = 180.0,
    max_response_bytes: int = 256 * 1024 * 1024,
    max_wait_seconds: float = 300.0,
    min_wait_seconds: float = 0.2,
    max_empty_pages: int = MAX_EMPTY_PAGES,
    max_columns_per_table: int = MAX_COLUMNS_PER_TABLE,
    on_permission_denied: str = "skip",
    max_slices: int = 2,
    stop_at_sync_point: bool = False,
    lookback_seconds: float | None = None,
    raw_tables: bool | str | list[str] | None = False,
    transport: Any | None = None,
) -> Sequence[DltResource]:
    """Reads every configured Makini connection.

    Args:
        base_url: Makini API root (`sources.makini.base_url`).
        connections: Connection name -> bearer token (`sources.makini.connections`, a secret),
            or name -> `{"token": ..., "dialect": ..., "family": ...}` to set those per
            connection. The name lands in every row's `connection_id`.
        api_token: A single token, read as connection `default` (`sources.makini.api_token`).
        client_id: The account's client id (`sources.makini.client_id`, a secret). With
            `client_secret`, every connection of the account is discovered and read with a
            token minted for it (its `connection_id` is its Makini key); configured
            `connections` are read with their own tokens under their names, and discovery
            adds every connection whose key is not one of those names.
        client_secret: The account's client secret (`sources.makini.client_secret`).
        connection_keys: Discovered connections to read, by key (default: all).
        connection_tags: Discovered connections to read: those with any of these tags.
        entities: What to load: entity names or paths (`purchase_orders`, `vendors`...),
            `default` (the six: purchase orders with their lines, vendors, materials, sites,
            assets, work orders), `all`, or a family (`erp:*`, `eam:*`). Default: `default`.
        dialect: `auto` (ask each connection), `v1` or `unified`, for every connection that
            does not set its own.
        family: `erp` or `eam` for unified connections that do not set their own; None finds
            it out (one request per connection and run).
        start_date: Lower bound of `updatedAt` for the first run (date or RFC 3339).
        end_date: Upper bound (exclusive) for a bounded backfill; the backfill reads
            `[start_date, end_date)` and leaves the incremental state alone.
        page_size: Records per request, capped at each entity's maximum (default: the maximum).
        hard_delete: Delete rows of deleted records instead of keeping them with `deleted_at`.
        allow_insecure_http: Accept plain `http://` to hosts other than loopback.
        max_attempts: Attempts per request for transient failures (429, 5xx, timeouts).
        max_elapsed_seconds: Time budget of one request's retries.
        backoff_base_seconds: First backoff of the exponential, jittered retry schedule.
        backoff_max_seconds: Longest single backoff.
        timeout_seconds: Longest silence while a request waits for bytes.
        deadline_seconds: Wall-clock limit of one request, body included (a trickling answer
            is cut off and retried).
        max_response_bytes: Largest answer read (a bigger one is cut off and retried).
        max_wait_seconds: Longest wait a server may ask for (`Retry-After`, a rate-limit hold
            from `X-RateLimit-Remaining: 0` and `X-RateLimit-Reset`); a longer one fails the
            connection at once, naming the wait.
        min_wait_seconds: Shortest wait before a retry the server asked for (a smaller
            `Retry-After` is raised to it; one of 0, negative or past backs off instead).
        max_empty_pages: Empty pages in a row (each promising more) after which a listing is
            taken for endless: its connection fails.
        max_columns_per_table: Columns a table may have (custom fields of every connection
            share a table); a connection whose records would exceed it fails before the load.
        on_permission_denied: `skip` (warn and skip the entity for that connection) or `fail`.
        max_slices: A first sync (or backfill) of an entity with many records reads its
            window in up to this many time slices at once; 1 reads one listing.
        stop_at_sync_point: Read only records changed before the connection's sync point
            (`last_sync_at`), so every table is consistent as of one point in time; the
            warehouse then lags the API by up to a sync. Default: read everything listed.
        lookback_seconds: Re-read this margin before the stored watermark on every run.
            Default: none for v1, 10 minutes for unified connections (whose sync point's
            meaning is not verified).
        raw_tables: Also load the connected systems' raw tables (unified connections only):
            True or `all` for every table each connection lists, or table names (`EKKO`,
            any case). Each lands in `raw__<table>` with `connection_id`, untyped (dlt infers
            the columns), every connection's rows replaced on every run. Default: none.
        transport: An httpx transport for every client (tests and proxies; not from config).

    Returns:
        One resource per selected entity; each also fills its child tables
        (`purchase_orders` fills `purchase_order_line_items`). With `raw_tables`, one more
        (`raw_tables`) fills a table per raw table.

    Raises:
        ConfigurationError: No connections, an unknown entity, dialect or family, bad dates.
    """
    selected = _select_entities(entities)
    raw_selection = raw_table_selection(raw_tables)
    specs = _connection_specs(connections, api_token, dialect, family, require=not client_id)
    if on_permission_denied not in ("skip", "fail"):
        raise ConfigurationError(
            f"on_permission_denied must be 'skip' or 'fail', got {on_permission_denied!r}"
        )
    # parse early so bad dates fail before any request
    if (
        start_date is not None
        and end_date is not None
        and to_datetime(end_date) <= to_datetime(start_date)
    ):
        raise ConfigurationError(f"end_date {end_date} is not after start_date {start_date}")
    format_timestamp(start_date)
    format_timestamp(end_date)
    if page_size is not None and page_size < 1:
        raise ConfigurationError("page_size must be at least 1")
    if max_slices < 1:
        raise ConfigurationError("max_slices must be at least 1")
    for setting, value, least in (
        ("max_empty_pages", max_empty_pages, 1),
        ("max_columns_per_table", max_columns_per_table, 10),
        ("max_response_bytes", max_response_bytes, 1),
    ):
        if value < least:
            raise ConfigurationError(f"{setting} must be at least {least}, got {value}")
    if transport is not None and not isinstance(transport, httpx.BaseTransport):
        raise ConfigurationError("transport must be an httpx.BaseTransport")

    retry = RetryPolicy(
        max_attempts=max_attempts,
        max_elapsed_seconds=max_elapsed_seconds,
        backoff_base_seconds=backoff_base_seconds,
        backoff_max_seconds=backoff_max_seconds,
        timeout_seconds=timeout_seconds,
        deadline_seconds=deadline_seconds,
        max_response_bytes=max_response_bytes,
        max_wait_seconds=max_wait_seconds,
        min_wait_seconds=min_wait_seconds,
    )
    if bool(client_id) != bool(client_secret):
        raise ConfigurationError(
            "account credentials need both sources.makini.client_id and client_secret"
        )
    if client_id and client_secret:
        account = Account(
            base_url,
            str(client_id),
            str(client_secret),
            retry=retry,
            transport=transport,
            allow_insecure_http=allow_insecure_http,
        )
        for found in account.connections(_names(connection_keys), _names(connection_tags)):
            if found.key not in specs:
                specs[found.key] = {
                    "token": account.token_for(found.key),
                    "dialect": dialect,
                    "family": family,
                    "profile": found,
                }
        if not specs:
            raise ConfigurationError(
                "account discovery found no connection (check connection_keys/connection_tags)"
            )
    open_connections = []
    for name, spec in specs.items():
        connection = Connection(
            name,
            MakiniClient(
                base_url,
                spec["token"],
                name,
                retry=retry,
                transport=transport,
                allow_insecure_http=allow_insecure_http,
            ),
            dialect=spec["dialect"],
            family=spec["family"],
            profile=spec.get("profile"),
        )
        profile = spec.get("profile")
        if profile is not None and not profile.active:
            # reported like any failed connection; it never blocks the others
            connection.fail(_not_active(profile))
        open_connections.append(connection)
    options = ReadOptions(
        start_date=start_date,
        end_date=end_date,
        page_size=page_size,
        hard_delete=hard_delete,
        on_permission_denied=on_permission_denied,
        max_slices=max_slices,
        stop_at_sync_point=stop_at_sync_point,
        lookback_seconds=lookback_seconds,
        max_columns_per_table=max_columns_per_table,
        max_empty_pages=max_empty_pages,
    )
    report = RunReport(open_connections)
    # asked by the first entity to start, before any resource of the run wrote to the table
    listing_table_existed = functools.cache(
        lambda: bool(_schema_column_types(CUSTOM_FIELD_COLUMNS_TABLE))
    )
    resources = [
        _entity_resource(entity, open_connections, options, report, listing_table_existed)
        for entity in selected
    ]
    if raw_selection is None or raw_selection:
        resources.append(
            raw_tables_resource(open_connections, raw_selection, on_permission_denied, report)
        )
    return resources


def _entity_resource(
    entity: Entity,
    connections: list[Connection],
    options: ReadOptions,
    report: RunReport,
    listing_table_existed: Callable[[], bool],
) -> DltResource:
    """The resource of one entity: its table and its child tables (and, from the last
    resource to finish, the run's `connections` and `connection_runs` rows)."""

    def read_entity() -> Iterator[Any]:
        state = dlt.current.resource_state()
        yield from EntityRead(
            entity,
            connections,
            options,
            state,
            _schema_column_types,
            report,
            listing_table_existed,
        )

    resource = dlt.resource(
        read_entity,
        name=entity.table,
        # keys and merge strategies are declared per table on every item (`hints.py`): a
        # resource-level primary key would be inherited by the child tables
        write_disposition={"disposition": "merge", "strategy": "delete-insert"},
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


def connection_failures(source: Any) -> dict[str, MakiniError]:
    """The connections that failed while `source` was extracted, with their errors.

    After `pipeline.run(source)`, the healthy connections are loaded and committed; call this
    (or `raise_on_connection_failures`) to learn which connections were skipped and why.
    """
    return {c.name: c.failure for c in source_connections(source) if c.failure is not None}


def raise_on_connection_failures(source: Any) -> None:
    """Raises `ConnectionsFailed` listing every connection that failed in the last run."""
    failures = connection_failures(source)
    if failures:
        raise ConnectionsFailed(failures)


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


def _connection_specs(
    connections: Mapping[str, Any] | None,
    api_token: str | None,
    dialect: str,
    family: str | None,
    require: bool = True,
) -> dict[str, dict[str, Any]]:
    """Connection name -> {token, dialect, family}, from `connections` and `api_token`.

    Raises:
        ConfigurationError: No connection, or one given in a shape that is not understood
            (the message shows the shape expected, never a token).
    """
    if dialect not in DIALECTS:
        raise ConfigurationError(f"dialect must be one of {', '.join(DIALECTS)}, got {dialect!r}")
    if family is not None and family not in FAMILIES:
        raise ConfigurationError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
    specs: dict[str, dict[str, Any]] = {}
    if connections:
        if not isinstance(connections, Mapping):
            raise ConfigurationError(
                "connections must map each connection's name to its token, e.g. "
                '{"acme": "<token>"}, or to {"token": "<token>", "dialect": "unified", '
                f'"family": "eam"}}; got a {type(connections).__name__}'
            )
        for name, value in connections.items():
            spec = dict(value) if isinstance(value, Mapping) else {"token": value}
            unknown = set(spec) - {"token", "dialect", "family"}
            if unknown:
                raise ConfigurationError(
                    f"connection {name!r}: unknown settings {sorted(unknown)}; use token, "
                    "dialect and family"
                )
            spec.setdefault("dialect", dialect)
            spec.setdefault("family", family)
            if spec["dialect"] not in DIALECTS:
                raise ConfigurationError(
                    f"connection {name!r}: dialect must be one of {', '.join(DIALECTS)}"
                )
            if spec["family"] is not None and spec["family"] not in FAMILIES:
                raise ConfigurationError(
                    f"connection {name!r}: family must be one of {', '.join(FAMILIES)}"
                )
            spec["token"] = check_token(spec.get("token"), str(name))
            specs[str(name)] = spec
    if api_token:
        specs.setdefault(
            DEFAULT_CONNECTION_NAME,
            {
                "token": check_token(str(api_token), DEFAULT_CONNECTION_NAME),
                "dialect": dialect,
                "family": family,
            },
        )
    if not specs and require:
        raise ConfigurationError(
            "no Makini connections configured: set sources.makini.connections (name -> token), "
            "sources.makini.api_token, or the account's sources.makini.client_id and "
            "client_secret in .dlt/secrets.toml or the environment"
        )
    return specs


def _names(value: list[str] | str | None) -> list[str] | None:
    """A list setting given as a list or as comma-separated text."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    return [item.strip() for item in items if str(item).strip()] or None


def _not_active(profile: DiscoveredConnection) -> MakiniError:
    if profile.status == "reauthorization_required":
        return ReauthorizationRequired(
            f"connection {profile.key!r} needs reauthorization in Makini (account discovery)",
            connection=profile.key,
            entity="system-connections",
        )
    return ConnectionInactive(
        f"connection {profile.key!r} is {profile.status} in Makini (account discovery)",
        connection=profile.key,
        entity="system-connections",
    )


def _select_entities(entities: Sequence[str] | str | None) -> list[Entity]:
    try:
        return select("default" if entities is None else entities)
    except ValueError as exc:
        hint = ""
        if "purchase_order_line_items" in str(exc):
            hint = " (purchase_order_line_items is filled by purchase_orders)"
        raise ConfigurationError(f"{exc}{hint}") from None
