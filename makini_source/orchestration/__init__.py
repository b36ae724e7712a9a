"""Orchestrated loads: one dlt pipeline per Makini connection, all into one shared dataset.

`airflow_dag.build_dag()` (a task per connection) and `dagster_definitions.build_definitions()`
(a partition per connection) both run `load_connection` for one connection at a time, on any
worker, concurrently with the others:

- Each connection is its own pipeline, `makini_<connection>`, with only that connection's
  token: its incremental state is kept apart, locally and in the destination.
- Each connection loads through its own staging dataset (`<dataset>_staging_<connection>`):
  dlt truncates the staging tables before every merge, so a shared one would lose another
  connection's staged rows without an error.
- `shared_dataset.run_connection` takes over the column types other connections created and
  retries a load that raced another connection's CREATE/ALTER TABLE.
- Nothing is kept on the worker: each run restores the pipeline's state from the destination
  into a temporary folder (or `makini.pipelines_dir`), and the tokens are read when a
  connection runs, never put into the DAG, asset metadata or logs.

Settings come from dlt config (environment variables, `.dlt/*.toml` of the working directory or
`~/.dlt/`, Airflow Variables through dlt's Airflow provider): the connections as for the source
(`SOURCES__MAKINI__CONNECTIONS`), or the account's `SOURCES__MAKINI__CLIENT_ID` and
`SOURCES__MAKINI__CLIENT_SECRET` (every connection of the account is discovered: each
connection's key becomes a task or partition, and its token is minted when it runs), and
`MAKINI__DESTINATION`, `MAKINI__DATASET_NAME`, `MAKINI__DUCKDB_PATH`, `MAKINI__PIPELINES_DIR`
(see `OrchestrationSettings`). Building the DAG or the definitions with no connections
configured raises `ConfigurationError`.

Discovery is remembered in a small JSON file (`makini.discovery_cache`, default
`makini_connections.json` beside the DuckDB file or in the temp dir) for
`makini.discovery_ttl_seconds` (default 600): Airflow parses a DAG file often. When Makini
cannot be asked, the last list is used with a warning; with no list at all, building fails
with the reason.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dlt
from typing_extensions import Self

from makini_source import makini_source, raise_on_connection_failures
from makini_source.accounts import Account
from makini_source.catalogue import load_catalogue
from makini_source.exceptions import ConfigurationError, MakiniError
from makini_source.pipeline import DEFAULT_DATASET_NAME, make_destination, make_pipeline
from makini_source.settings import DEFAULT_BASE_URL, DEFAULT_CONNECTION_NAME
from makini_source.shared_dataset import run_connection, staging_layout

__all__ = [
    "ConnectionLoad",
    "OrchestrationSettings",
    "check_pipeline_names",
    "configured_tokens",
    "load_connection",
    "pipeline_name",
]

logger = logging.getLogger("makini_source")

DEFAULT_DUCKDB_FILE = "makini.duckdb"
DEFAULT_DISCOVERY_TTL_SECONDS = 600.0
CHILD_TABLE = "purchase_order_line_items"
NO_CONNECTIONS = (
    'no Makini connections configured: set SOURCES__MAKINI__CONNECTIONS=\'{"<name>": '
    "\"<token>\"}' (or [sources.makini.connections] in .dlt/secrets.toml), or the account's "
    "SOURCES__MAKINI__CLIENT_ID and SOURCES__MAKINI__CLIENT_SECRET, where the scheduler "
    "and the workers run; each connection becomes a "
)


@dataclass(frozen=True)
class OrchestrationSettings:
    """Where and what the orchestrated loads load (no secrets: safe to show).

    Attributes:
        connections: The connection names (tokens are read when a connection runs).
        destination: Any dlt destination name (`makini.destination`, default duckdb); its
            credentials the dlt way (`DESTINATION__POSTGRES__CREDENTIALS`).
        dataset_name: The shared dataset (`makini.dataset_name`, default makini_data).
        duckdb_path: The shared DuckDB file, absolute (`makini.duckdb_path`), for DuckDB.
        pipelines_dir: Where the pipelines' working folders live (`makini.pipelines_dir`);
            None: a temporary folder per run, removed afterwards.
    """

    connections: tuple[str, ...]
    destination: str = "duckdb"
    dataset_name: str = DEFAULT_DATASET_NAME
    duckdb_path: str | None = None
    pipelines_dir: str | None = None

    @classmethod
    def from_config(cls, default_duckdb_path: str | Path = DEFAULT_DUCKDB_FILE) -> Self:
        """The settings from dlt config; `default_duckdb_path` when `makini.duckdb_path` is unset.

        The connections are the configured ones and, with account credentials, the account's
        (discovered, or remembered from a recent discovery).
        """
        destination = dlt.config.get("makini.destination", str) or "duckdb"
        duckdb_path = dlt.config.get("makini.duckdb_path", str) or str(default_duckdb_path)
        names = set(configured_tokens())
        if account_configured():
            cache = dlt.config.get("makini.discovery_cache", str) or str(
                Path(duckdb_path).resolve().parent / "makini_connections.json"
                if destination == "duckdb"
                else Path(tempfile.gettempdir()) / "makini_connections.json"
            )
            ttl = dlt.config.get("makini.discovery_ttl_seconds", float)
            names.update(
                discovered_connections(
                    Path(cache), DEFAULT_DISCOVERY_TTL_SECONDS if ttl is None else ttl
                )
            )
        names_sorted = tuple(sorted(names))
        check_pipeline_names(names_sorted)
        return cls(
            connections=names_sorted,
            destination=destination,
            dataset_name=dlt.config.get("makini.dataset_name", str) or DEFAULT_DATASET_NAME,
            duckdb_path=str(Path(duckdb_path).resolve()) if destination == "duckdb" else None,
            pipelines_dir=dlt.config.get("makini.pipelines_dir", str),
        )

    def require_connections(self, unit: str) -> None:
        """Raises `ConfigurationError` when no connection is configured."""
        if not self.connections:
            raise ConfigurationError(NO_CONNECTIONS + unit)

    @property
    def concurrent(self) -> bool:
        """False for DuckDB: a file with a single writer takes one load at a time."""
        return self.destination != "duckdb"


@dataclass(frozen=True)
class ConnectionLoad:
    """What one connection's run loaded.

    Attributes:
        connection: The connection.
        pipeline_name: Its dlt pipeline.
        load_ids: The load packages it loaded.
        rows_loaded: Rows loaded per table in this run.
        rows_in_destination: The connection's rows per table in the dataset afterwards.
    """

    connection: str
    pipeline_name: str
    load_ids: list[str]
    rows_loaded: dict[str, int]
    rows_in_destination: dict[str, int]


def load_connection(
    connection: str, settings: OrchestrationSettings, entities: Sequence[str] | None = None
) -> ConnectionLoad:
    """Loads one connection into the shared dataset (see the module docstring).

    Args:
        connection: A configured connection name.
        settings: The destination and dataset.
        entities: The entities to load (all when None).

    Raises:
        ConfigurationError: The connection is not configured.
        ConnectionsFailed: The connection failed (token revoked, retries exhausted).
        LoadFailed: Its load package did not load.
    """
    tokens = configured_tokens()
    if connection in tokens:
        # a configured connection: its own token only
        read: dict[str, Any] = {"connections": {connection: tokens[connection]}}
    elif account_configured():
        # a discovered one: the account's credentials mint its token
        read = {"connections": None, "api_token": None, "connection_keys": [connection]}
    else:
        raise ConfigurationError(
            f"connection {connection!r} is not configured in sources.makini.connections "
            f"(configured: {', '.join(sorted(tokens)) or 'none'})"
        )
    name = pipeline_name(connection)
    sources: list[Any] = []
    pipelines: list[dlt.Pipeline] = []

    def make_source() -> Any:
        sources.append(makini_source(entities=list(entities) if entities else None, **read))
        return sources[-1]

    with _pipelines_dir(settings.pipelines_dir) as pipelines_dir:

        def connection_pipeline() -> dlt.Pipeline:
            destination = make_destination(
                settings.destination,
                pipeline_name=name,
                duckdb_file=settings.duckdb_path,
                staging_layout=staging_layout(connection),
            )
            pipelines.append(make_pipeline(name, destination, settings.dataset_name, pipelines_dir))
            return pipelines[-1]

        info = run_connection(connection_pipeline, make_source)
        raise_on_connection_failures(sources[-1])
        pipeline = pipelines[-1]
        trace = pipeline.last_trace
        normalized = trace.last_normalize_info if trace else None
        loaded = {
            table: count
            for table, count in (normalized.row_counts if normalized else {}).items()
            if not table.startswith("_dlt")
        }
        in_destination = _connection_rows(pipeline, connection)
    return ConnectionLoad(connection, name, list(info.loads_ids), loaded, in_destination)


def configured_tokens() -> dict[str, str]:
    """Connection name -> token (`sources.makini.connections`, `sources.makini.api_token`)."""
    tokens: dict[str, str] = {}
    connections = dlt.secrets.get("sources.makini.connections", dict)
    if connections:
        tokens.update({str(name): str(token) for name, token in connections.items()})
    api_token = dlt.secrets.get("sources.makini.api_token", str)
    if api_token:
        tokens.setdefault(DEFAULT_CONNECTION_NAME, str(api_token))
    return tokens


def account_configured() -> bool:
    """Whether the account's client credentials are configured (connections are discovered)."""
    return bool(
        dlt.secrets.get("sources.makini.client_id", str)
        and dlt.secrets.get("sources.makini.client_secret", str)
    )


def discovered_connections(cache: Path, ttl_seconds: float) -> list[str]:
    """The keys of the account's connections: from `cache` if younger than `ttl_seconds`,
    else discovered now (and remembered). When discovery fails, the remembered list is used
    (with a warning), however old.

    Raises:
        ConfigurationError: Discovery failed and nothing is remembered.
    """
    remembered = _read_cache(cache)
    if remembered is not None and time.time() - remembered[0] < ttl_seconds:
        return remembered[1]
    try:
        keys = _discover()
    except MakiniError as exc:
        if remembered is None:
            raise ConfigurationError(
                f"Makini account discovery failed and no connection list is remembered "
                f"({cache}): {exc}"
            ) from None
        logger.warning(
            "Makini account discovery failed; using the connections remembered at %s: %s",
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(remembered[0])),
            exc,
        )
        return remembered[1]
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"discovered_at": time.time(), "connections": keys}))
    except OSError as exc:
        logger.warning("could not remember the discovered connections in %s: %s", cache, exc)
    return keys


def _discover() -> list[str]:
    base_url = dlt.config.get("sources.makini.base_url", str) or DEFAULT_BASE_URL
    account = Account(
        base_url,
        str(dlt.secrets.get("sources.makini.client_id", str)),
        str(dlt.secrets.get("sources.makini.client_secret", str)),
        allow_insecure_http=bool(dlt.config.get("sources.makini.allow_insecure_http", bool)),
    )
    try:
        return sorted(connection.key for connection in account.connections())
    finally:
        account.close()


def _read_cache(cache: Path) -> tuple[float, list[str]] | None:
    try:
        remembered = json.loads(cache.read_text())
        return float(remembered["discovered_at"]), [str(k) for k in remembered["connections"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def pipeline_name(connection: str) -> str:
    """The dlt pipeline (and task) of one connection: `makini_<connection>`."""
    return "makini_" + re.sub(r"[^0-9A-Za-z_]", "_", connection)


def check_pipeline_names(connections: Iterable[str]) -> None:
    """Refuses connection names that would share a pipeline (and so its state)."""
    seen: dict[str, str] = {}
    for connection in connections:
        other = seen.setdefault(pipeline_name(connection), connection)
        if other != connection:
            raise ConfigurationError(
                f"connections {other!r} and {connection!r} map to the same pipeline name "
                f"{pipeline_name(connection)!r}; rename one"
            )


def _connection_rows(pipeline: dlt.Pipeline, connection: str) -> dict[str, int]:
    tables = [table for entity in load_catalogue().values() for table in entity.tables]
    existing = set(pipeline.default_schema.data_table_names())
    counts = {}
    with pipeline.sql_client() as client:
        for table in tables:
            if table in existing:
                rows = client.execute_sql(
                    f"SELECT COUNT(*) FROM {client.make_qualified_table_name(table)} "
                    "WHERE connection_id = %s",
                    connection,
                )
                counts[table] = int(rows[0][0]) if rows else 0
    return counts


@contextmanager
def _pipelines_dir(configured: str | None) -> Iterator[str]:
    if configured:
        yield configured
        return
    with tempfile.TemporaryDirectory(prefix="makini-pipelines-") as temporary:
        yield temporary
