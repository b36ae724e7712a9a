"""Dagster definitions for the Makini source: one asset per table, one partition per connection.

Run::

    pip install -e '.[dagster]'
    export SOURCES__MAKINI__CONNECTIONS='{"acme": "tok_acme", "globex": "tok_globex"}'
    dagster dev -m pipelines.dagster_definitions        # from the repository root

Every partition is one Makini connection and runs `makini_source` with that connection only,
in its own dlt pipeline `makini_<connection>`: its incremental state is kept apart from the
other connections' (locally and in the destination's `_dlt_pipeline_state`), so partitions can
run at the same time on different workers. All of them load into one dataset, where rows are
told apart by `connection_id`.

Configuration (dlt config: environment variables, or `.dlt/config.toml` / `.dlt/secrets.toml`
in the working directory):

- `SOURCES__MAKINI__CONNECTIONS` (secret, JSON `{name: token}`): the connections; their names
  are the partitions (`SOURCES__MAKINI__API_TOKEN` alone gives one partition, `default`).
  Tokens are read when a partition runs and are never put into asset metadata or logs.
- `SOURCES__MAKINI__BASE_URL` and every other `sources.makini` setting, as for the source.
- `MAKINI__DESTINATION` (default `duckdb`): any dlt destination name; its credentials the dlt
  way (`DESTINATION__POSTGRES__CREDENTIALS=...`).
- `MAKINI__DUCKDB_PATH` (default `makini.duckdb`): the shared DuckDB file, when DuckDB.
- `MAKINI__DATASET_NAME` (default `makini_data`): the shared dataset.
- `MAKINI__PIPELINES_DIR`: where dlt keeps the pipelines' local working state (default
  `~/.dlt/pipelines`). It is only a cache: each run restores its state from the destination.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dlt
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetSpec,
    Definitions,
    MaterializeResult,
    MetadataValue,
    StaticPartitionsDefinition,
)
from dagster_dlt import DagsterDltResource, DagsterDltTranslator, dlt_assets
from dagster_dlt.translator import DltResourceTranslatorData

from makini_source import ConfigurationError, makini_source, raise_on_connection_failures
from makini_source.settings import DEFAULT_BASE_URL
from makini_source.shared_dataset import (
    check_pipeline_names,
    configured_tokens,
    pipeline_name,
    seed_shared_schema,
)

ASSET_PREFIX = "makini"
GROUP_NAME = "makini"
LINE_ITEMS_TABLE = "purchase_order_line_items"
DEFAULT_DATASET = "makini_data"
DEFAULT_DUCKDB_PATH = "makini.duckdb"


def connection_names() -> list[str]:
    """The configured connection names (the partitions), sorted; no tokens."""
    names = sorted(configured_tokens())
    check_pipeline_names(names)
    return names


def destination() -> Any:
    """The shared destination from config (`makini.destination`, `makini.duckdb_path`)."""
    name = dlt.config.get("makini.destination", str) or "duckdb"
    if name == "duckdb":
        path = dlt.config.get("makini.duckdb_path", str) or DEFAULT_DUCKDB_PATH
        return dlt.destinations.duckdb(str(Path(path).resolve()))
    return name


def connection_pipeline(connection: str) -> dlt.Pipeline:
    """The dlt pipeline of one connection, loading into the shared dataset."""
    return dlt.pipeline(
        pipeline_name=pipeline_name(connection),
        destination=destination(),
        dataset_name=dlt.config.get("makini.dataset_name", str) or DEFAULT_DATASET,
        pipelines_dir=dlt.config.get("makini.pipelines_dir", str),
    )


def connection_source(connection: str) -> Any:
    """`makini_source` reading only `connection` (its token from config)."""
    tokens = configured_tokens()
    if connection not in tokens:
        raise ConfigurationError(
            f"connection {connection!r} is not configured in sources.makini.connections"
        )
    return makini_source(connections={connection: tokens[connection]})


class MakiniTranslator(DagsterDltTranslator):
    """Asset keys `makini/<table>` in group `makini`, no made-up upstream assets."""

    def get_asset_spec(self, data: DltResourceTranslatorData) -> AssetSpec:
        spec = super().get_asset_spec(data)
        return spec.replace_attributes(
            key=AssetKey([ASSET_PREFIX, data.resource.name]), deps=[], group_name=GROUP_NAME
        )


# Partitions = connection names, read from config when the code location loads (names only).
connections_partitions = StaticPartitionsDefinition(connection_names())

# The source and pipeline given to @dlt_assets only describe the assets (one per resource);
# each run builds its own source and pipeline for the partition's connection. The template
# source holds a placeholder token, never a real one.
_template_source = makini_source(base_url=DEFAULT_BASE_URL, connections={"template": "-"})
_template_pipeline = dlt.pipeline(
    pipeline_name="makini_dagster_template",
    destination="duckdb",
    dataset_name=DEFAULT_DATASET,
    pipelines_dir=dlt.config.get("makini.pipelines_dir", str),
)

line_items_key = AssetKey([ASSET_PREFIX, LINE_ITEMS_TABLE])
line_items = AssetSpec(
    line_items_key,
    deps=[AssetKey([ASSET_PREFIX, "purchase_orders"])],
    description=(
        "Lines of each purchase order; loaded by the purchase_orders asset (each loaded PO "
        "replaces all of its lines)."
    ),
    group_name=GROUP_NAME,
    partitions_def=connections_partitions,
    kinds={"dlt"},
)


@dlt_assets(
    dlt_source=_template_source,
    dlt_pipeline=_template_pipeline,
    name="makini",
    dagster_dlt_translator=MakiniTranslator(),
    partitions_def=connections_partitions,
    # limit concurrent loads with `dagster instance concurrency set makini N` (1 for DuckDB)
    pool="makini",
)
def makini_tables(context: AssetExecutionContext, dlt: DagsterDltResource) -> Iterator[Any]:
    """Loads the selected tables of one connection (the partition) into the shared dataset."""
    connection = context.partition_key
    source = connection_source(connection)
    pipeline = connection_pipeline(connection)
    seed_shared_schema(pipeline, source)
    context.log.info(
        f"connection {connection}: pipeline {pipeline.pipeline_name} -> "
        f"{pipeline.destination.destination_name} dataset {pipeline.dataset_name}"
    )
    for event in dlt.run(
        context=context, dlt_source=source, dlt_pipeline=pipeline, loader_file_format="parquet"
    ):
        yield _with_connection_rows(event, pipeline, connection)
        if event.asset_key == AssetKey([ASSET_PREFIX, "purchase_orders"]):
            yield _line_items_materialization(pipeline, connection)
    # a connection that failed (token revoked, retries exhausted) fails the partition's run
    raise_on_connection_failures(source)


def _with_connection_rows(event: Any, pipeline: dlt.Pipeline, connection: str) -> Any:
    """Adds the connection's row count in the destination to a materialization's metadata."""
    table = event.asset_key.path[-1]
    rows = _connection_rows(pipeline, table, connection)
    if rows is None or not isinstance(event, MaterializeResult):
        return event
    return MaterializeResult(
        asset_key=event.asset_key,
        metadata={**(event.metadata or {}), "connection_rows": MetadataValue.int(rows)},
    )


def _line_items_materialization(pipeline: dlt.Pipeline, connection: str) -> AssetMaterialization:
    metadata: dict[str, Any] = {"dlt_pipeline": pipeline.pipeline_name}
    trace = pipeline.last_trace
    normalized = trace.last_normalize_info if trace else None
    loaded = normalized.row_counts.get(LINE_ITEMS_TABLE) if normalized else None
    if loaded:
        metadata["rows_loaded"] = MetadataValue.int(loaded)
    rows = _connection_rows(pipeline, LINE_ITEMS_TABLE, connection)
    if rows is not None:
        metadata["connection_rows"] = MetadataValue.int(rows)
    return AssetMaterialization(asset_key=line_items_key, partition=connection, metadata=metadata)


def _connection_rows(pipeline: dlt.Pipeline, table: str, connection: str) -> int | None:
    """Rows of `connection` in `table` at the destination (None if the table isn't there)."""
    if table not in pipeline.default_schema.data_table_names():
        return None
    with pipeline.sql_client() as client:
        qualified = client.make_qualified_table_name(table)
        rows = client.execute_sql(
            f"SELECT COUNT(*) FROM {qualified} WHERE connection_id = %s", connection
        )
    return int(rows[0][0]) if rows else None


defs = Definitions(
    assets=[makini_tables, line_items],
    resources={"dlt": DagsterDltResource()},
)

__all__ = ["connections_partitions", "defs", "line_items", "makini_tables"]
