"""Dagster: one asset per table, one partition per Makini connection.

In a code location (as `pipelines/dagster_definitions.py` does)::

    from makini_source.orchestration.dagster_definitions import build_definitions

    defs = build_definitions()

Install `makini-source[dagster]` and give the code location and the run workers the settings of
`makini_source.orchestration`. Partitions are the configured connection names, read when the
code location loads (reload it after adding a connection). With the account's credentials
they are dynamic instead (`makini_connections`): the sensor `makini_connections` discovers the
account's connections (every `makini.discovery_interval_seconds`, default 600) and adds each
new one as a partition, so a customer who connects appears without a reload. Each partition's
run loads that
connection only, in its own pipeline and staging dataset, so runs of different partitions can
go at once (with DuckDB, a file with a single writer, one at a time:
`dagster instance concurrency set makini 1`). Assets: `makini/<table>` for the six entities;
`makini/purchase_order_line_items` is materialized by the `purchase_orders` asset's run.
"""

import tempfile
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
    DynamicPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    PartitionsDefinition,
    SensorEvaluationContext,
    SensorResult,
    StaticPartitionsDefinition,
    multi_asset,
    sensor,
)

from makini_source.catalogue import default_entities
from makini_source.orchestration import (
    ConnectionLoad,
    OrchestrationSettings,
    account_configured,
    configured_tokens,
    discovered_connections,
    load_connection,
)

ASSET_PREFIX = "makini"
DYNAMIC_PARTITIONS = "makini_connections"
DEFAULT_DISCOVERY_INTERVAL_SECONDS = 600
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
    discovered = account_configured()
    partitions: PartitionsDefinition = (
        DynamicPartitionsDefinition(name=DYNAMIC_PARTITIONS)
        if discovered
        else StaticPartitionsDefinition(list(settings.connections))
    )

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
    sensors = [_discovery_sensor(settings)] if discovered else []
    return Definitions(assets=[makini_tables, *children], sensors=sensors)


def _discovery_sensor(settings: OrchestrationSettings) -> Any:
    """Adds every connection of the account (and every configured one) as a partition."""
    interval = dlt.config.get("makini.discovery_interval_seconds", int)

    @sensor(
        name=DYNAMIC_PARTITIONS,
        minimum_interval_seconds=DEFAULT_DISCOVERY_INTERVAL_SECONDS
        if interval is None
        else interval,
        description="Discovers the Makini account's connections; each becomes a partition.",
    )
    def discover(context: SensorEvaluationContext) -> SensorResult:
        cache = Path(tempfile.gettempdir()) / "makini_connections_sensor.json"
        keys = set(discovered_connections(cache, ttl_seconds=0)) | set(configured_tokens())
        known = set(context.instance.get_dynamic_partitions(DYNAMIC_PARTITIONS))
        new = sorted(keys - known)
        if new:
            context.log.info(f"new Makini connections: {', '.join(new)}")
        return SensorResult(
            dynamic_partitions_requests=[
                DynamicPartitionsDefinition(name=DYNAMIC_PARTITIONS).build_add_request(new)
            ]
            if new
            else []
        )

    return discover


def _metadata(result: ConnectionLoad, table: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "dlt_pipeline": result.pipeline_name,
        "load_ids": ", ".join(result.load_ids),
        "rows_loaded": MetadataValue.int(result.rows_loaded.get(table, 0)),
    }
    if table in result.rows_in_destination:
        metadata["connection_rows"] = MetadataValue.int(result.rows_in_destination[table])
    return metadata
