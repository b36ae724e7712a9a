"""Snowflake and BigQuery, offline: the source's schema normalizes into valid load packages.

Neither warehouse can be reached from here, so each test runs the source against the sandbox,
extracts and normalizes for that destination (dlt's own capabilities, no credentials) and then
does what dlt's loader checks before it connects: the schema against the destination's
capabilities, every table prepared for loading, the file formats and data types the destination
accepts, and each column's type as the destination's type mapper writes it in the DDL. The
parquet files are checked to hold exact decimals and UTC timestamps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dlt
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import Sandbox, small_connections

from makini_sandbox import SandboxConfig
from makini_source import makini_source
from makini_source.catalogue import default_entities

DATA_TABLES = {table for entity in default_entities() for table in entity.tables}

EXPECTED = {
    "snowflake": {
        "decimal": "NUMBER(38,9)",
        "timestamp": "TIMESTAMP_LTZ",
        "text": "VARCHAR",
        "bool": "BOOLEAN",
        "date": "DATE",
    },
    "bigquery": {
        "decimal": "NUMERIC(38,9)",
        "timestamp": "TIMESTAMP",
        "text": "STRING",
        "bool": "BOOL",
        "date": "DATE",
    },
}


def normalized_package(
    destination: Any, sandbox: Sandbox, workdir: Path, **source_kwargs: Any
) -> Any:
    """Extracts and normalizes the source for `destination`; returns (pipeline, package info)."""
    pipeline = dlt.pipeline(
        pipeline_name=f"makini_{destination.destination_name}",
        pipelines_dir=str(workdir / "pipelines"),
        destination=destination,
        dataset_name="makini_data",
    )
    source = makini_source(base_url=sandbox.url, connections=dict(sandbox.tokens), **source_kwargs)
    pipeline.extract(source, loader_file_format="parquet")
    pipeline.normalize()
    (load_id,) = pipeline.list_normalized_load_packages()
    return pipeline, pipeline.get_load_package_info(load_id)


@pytest.mark.parametrize(
    "name, hard_delete", [("snowflake", True), ("bigquery", False)], ids=["snowflake", "bigquery"]
)
def test_schema_normalizes_into_a_valid_load_package(
    name: str, hard_delete: bool, sandbox_factory: Any, tmp_path: Path
) -> None:
    sandbox = sandbox_factory(SandboxConfig(connections=small_connections(8)))
    from dlt.common.destination.utils import (
        prepare_load_table,
        verify_schema_capabilities,
        verify_supported_data_types,
    )

    destination = getattr(dlt.destinations, name)()
    pipeline, package = normalized_package(destination, sandbox, tmp_path, hard_delete=hard_delete)
    schema = pipeline.default_schema
    caps = pipeline.destination.capabilities()
    jobs = [job.job_file_info for job in package.jobs["new_jobs"]]

    # parquet for every data table, the destination accepts it
    formats = {job.table_name: job.file_format for job in jobs}
    assert DATA_TABLES <= set(formats)
    assert {formats[t] for t in DATA_TABLES} == {"parquet"}
    assert set(formats.values()) <= set(caps.supported_loader_file_formats)

    # what dlt's loader verifies before connecting: no errors
    assert verify_schema_capabilities(schema, caps, name, warnings=False) == []
    prepared = {t: prepare_load_table(schema.tables, schema.tables[t], caps) for t in DATA_TABLES}
    assert verify_supported_data_types(prepared.values(), jobs, caps, name, warnings=False) == []

    mapper = caps.get_type_mapper()
    ddl = {
        table: {c: mapper.to_destination_type(col, t) for c, col in t["columns"].items()}
        for table, t in prepared.items()
    }
    want = EXPECTED[name]
    for table, key in (
        ("purchase_orders", ["connection_id", "key"]),
        ("purchase_order_line_items", ["connection_id", "purchase_order_key", "key"]),
    ):
        assert prepared[table]["write_disposition"] == "merge"
        assert prepared[table]["x-merge-strategy"] == "delete-insert"  # type: ignore[typeddict-item]
        columns = prepared[table]["columns"]
        assert [c for c, col in columns.items() if col.get("primary_key")] == key
        assert ddl[table]["connection_id"] == ddl[table]["key"] == want["text"]
        assert ddl[table]["updated_at"] == ddl[table]["created_at"] == want["timestamp"]
    line_columns = prepared["purchase_order_line_items"]["columns"]
    for column in ("quantity", "received_quantity", "price", "discount", "line_total_value"):
        assert (line_columns[column]["precision"], line_columns[column]["scale"]) == (38, 9)
        assert ddl["purchase_order_line_items"][column] == want["decimal"]
    assert ddl["purchase_orders"]["total_net_value"] == want["decimal"]
    # date-only fields are dates: the same day in any session time zone
    assert ddl["purchase_orders"]["order_date"] == want["date"]
    # line items: each loaded PO replaces its lines (a destination scope joining on the PO
    # key), deduplicated on (connection_id, purchase_order_key, key); marker rows delete a PO's
    # last lines
    scope = prepared["purchase_order_line_items"]["x-merge-destination-scope"]  # type: ignore[typeddict-item]
    assert "purchase_order_key" in scope and "{staging_table}" in scope
    assert line_columns["_makini_marker"].get("hard_delete") is True
    assert ddl["purchase_order_line_items"]["_makini_marker"] == want["bool"]
    assert line_columns["purchase_order_updated_at"].get("dedup_sort") == "desc"
    po_deleted = prepared["purchase_orders"]["columns"]["deleted_at"]
    assert bool(po_deleted.get("hard_delete")) is hard_delete
    # nested objects flattened with __, custom fields per connection, lists as JSON text
    po_columns = prepared["purchase_orders"]["columns"]
    assert "shipment_address__city" in po_columns and "custom_fields__region" in po_columns
    assert ddl["purchase_orders"]["shipment_address__city"] == want["text"]
    assert ddl["purchase_orders"]["custom_fields__project_code"] in ("NUMBER(19,0)", "INT64")
    # every column of every table has a DDL type
    assert all(ddl[t][c] for t in ddl for c in ddl[t])

    # the files hold exact decimals and UTC timestamps
    for job in package.jobs["new_jobs"]:
        if job.job_file_info.table_name != "purchase_order_line_items":
            continue
        arrow = pq.read_schema(job.file_path)
        assert arrow.field("price").type == pa.decimal128(38, 9)
        updated = arrow.field("updated_at").type
        assert pa.types.is_timestamp(updated) and updated.tz in ("UTC", "+00:00")


def test_snowflake_timestamp_tz_option(sandbox: Sandbox, tmp_path: Path) -> None:
    """`use_timestamp_tz = true` ([destination.snowflake]) makes timestamps TIMESTAMP_TZ."""
    from dlt.common.destination.utils import prepare_load_table

    pipeline, _ = normalized_package(
        dlt.destinations.snowflake(), sandbox, tmp_path, entities=["vendors"]
    )
    caps = pipeline.destination.capabilities()
    schema = pipeline.default_schema
    table = prepare_load_table(schema.tables, schema.tables["vendors"], caps)
    # the Snowflake client builds its type mapper from this setting of its configuration
    mapper = caps.get_type_mapper(use_timestamp_tz=True)
    assert mapper.to_destination_type(table["columns"]["updated_at"], table) == "TIMESTAMP_TZ"
    assert mapper.to_destination_type(table["columns"]["created_at"], table) == "TIMESTAMP_TZ"
