"""Dagster: one asset per table, one partition per Makini connection.

In a code location (as `pipelines/dagster_definitions.py` does)::

    from makini_source.orchestration.dagster_definitions import build_definitions

    defs = build_definitions()

Install `makini-source[dagster]` and give the code location and the run workers the settings of
`makini_source.orchestration`. Partitions are the configured connection names, read when the
code location loads (reload it after adding a connection); each partition's run loads that
connection only, in its own pipeline and staging dataset, so runs of different partitions can
go at once (with DuckDB, a file with a single writer, one at a time:
`dagster instance concurrency set makini 1`). Assets: `makini/<table>` for the six entities;
`makini/purchase_order_line_items` is materialized by the `purchase_orders` asset's run.
"""

from collections.abc import Iterator
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetSpec,
    Definitions,
    MaterializeResult,
    MetadataValue,
    StaticPartitionsDefinition,
    multi_asset,
)

from makini_source.catalogue import default_entities
from makini_source.orchestration import (
    ConnectionLoad,
    OrchestrationSettings,
    load_connection,
)

ASSET_PREFIX = "makini"
GROUP_NAME = "makini"
POOL = "makini"
# table -> entity, of the entities loaded by default (the others: `entities` in config)
TABLE_ENTITIES = {entity.table: entity.name for entity in default_entities()}
# child table -> the table of the entity that loads it
CHILD_TABLES = {
    child.table: entity.table for entity in default_entities() for child in entity.children
}


def build_definitions(settings: OrchestrationSettings | None = None) -> Definitions:
    """The assets, partitioned by connection.

    Args:
        settings: Where to load; default `OrchestrationSettings.from_config()` (DuckDB file
            `makini.duckdb` in the working directory unless `makini.duckdb_path` is set).

    Raises:
        ConfigurationError: No connections are configured, or two map to one pipeline name.
    """
    settings = settings or OrchestrationSettings.from_config()
    settings.require_connections("partition of the Dagster assets")
    partitions = StaticPartitionsDefinition(list(settings.connections))

    @multi_asset(
        name="makini",
        specs=[
            AssetSpec(
                AssetKey([ASSET_PREFIX, table]),
                group_name=GROUP_NAME,
                kinds={"dlt"},
                description=f"Makini {entity}, every connection's rows told apart by connection_id",
            )
            for table, entity in TABLE_ENTITIES.items()
        ],
        partitions_def=partitions,
        can_subset=True,
        pool=POOL,
    )
    def makini_tables(context: AssetExecutionContext) -> Iterator[Any]:
        """Loads the selected tables of one connection (the partition) into the dataset."""
        connection = context.partition_key
        tables = [key.path[-1] for key in sorted(context.selected_asset_keys)]
        context.log.info(
            f"connection {connection}: {', '.join(tables)} -> {settings.destination} dataset "
            f"{settings.dataset_name}"
        )
        result = load_connection(connection, settings, [TABLE_ENTITIES[t] for t in tables])
        for table in tables:
            yield MaterializeResult(
                asset_key=AssetKey([ASSET_PREFIX, table]), metadata=_metadata(result, table)
            )
        for child, parent in CHILD_TABLES.items():
            if parent in tables:
                yield AssetMaterialization(
                    asset_key=AssetKey([ASSET_PREFIX, child]),
                    partition=connection,
                    metadata=_metadata(result, child),
                )

    children = [
        AssetSpec(
            AssetKey([ASSET_PREFIX, child]),
            deps=[AssetKey([ASSET_PREFIX, parent])],
            description=(
                f"A nested list of {parent}; loaded by the {parent} asset (each loaded record "
                "replaces all of its items)."
            ),
            group_name=GROUP_NAME,
            partitions_def=partitions,
            kinds={"dlt"},
        )
        for child, parent in CHILD_TABLES.items()
    ]
    return Definitions(assets=[makini_tables, *children])


def _metadata(result: ConnectionLoad, table: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "dlt_pipeline": result.pipeline_name,
        "load_ids": ", ".join(result.load_ids),
        "rows_loaded": MetadataValue.int(result.rows_loaded.get(table, 0)),
    }
    if table in result.rows_in_destination:
        metadata["connection_rows"] = MetadataValue.int(result.rows_in_destination[table])
    return metadata
