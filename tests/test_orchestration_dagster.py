"""Dagster: the definitions in pipelines/dagster_definitions.py, materialized in-process per
connection partition against the sandbox into one DuckDB file."""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from conftest import ALL_TABLES, Sandbox, api_counts, duckdb_counts

if os.environ.get("CI"):
    import dagster  # noqa: F401  (CI installs the extra: fail, don't skip)
    import dagster_dlt  # noqa: F401
else:
    pytest.importorskip("dagster")
    pytest.importorskip("dagster_dlt")

from dagster import AssetKey, DagsterInstance, materialize

REPO = Path(__file__).resolve().parents[1]
TABLES = ALL_TABLES
MODULE = "pipelines.dagster_definitions"


@pytest.fixture
def definitions(sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The definitions module imported with the sandbox's connections configured."""
    monkeypatch.setenv("SOURCES__MAKINI__BASE_URL", sandbox.url)
    monkeypatch.setenv("SOURCES__MAKINI__DIALECT", "v1")
    monkeypatch.setenv("SOURCES__MAKINI__CONNECTIONS", json.dumps(sandbox.tokens))
    monkeypatch.setenv("MAKINI__DUCKDB_PATH", str(tmp_path / "makini.duckdb"))
    monkeypatch.setenv("MAKINI__PIPELINES_DIR", str(tmp_path / "pipelines"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(REPO))
    sys.modules.pop(MODULE, None)
    module = importlib.import_module(MODULE)
    try:
        yield module
    finally:
        sys.modules.pop(MODULE, None)


def run_partition(
    definitions: Any, instance: DagsterInstance, partition: str, **kwargs: Any
) -> Any:
    return materialize(
        [definitions.makini_tables, definitions.line_items],
        partition_key=partition,
        instance=instance,
        resources={"dlt": definitions.DagsterDltResource()},
        **kwargs,
    )


def test_definitions_partitions_are_connections(definitions: Any, sandbox: Sandbox) -> None:
    defs = definitions.defs
    assert definitions.connections_partitions.get_partition_keys() == sorted(sandbox.tokens)
    keys = {key.to_user_string() for key in defs.resolve_all_asset_keys()}
    assert keys == {f"makini/{table}" for table in TABLES}
    # no token anywhere in the definitions' metadata
    for spec in defs.resolve_all_asset_specs():
        for token in sandbox.tokens.values():
            assert token not in repr(spec.metadata)
    assert definitions.pipeline_name("acme") == "makini_acme"
    with pytest.raises(definitions.ConfigurationError):
        definitions.check_pipeline_names(["north-1", "north_1"])  # would share state


def test_materialize_two_partitions_into_one_dataset(
    definitions: Any, sandbox: Sandbox, tmp_path: Path
) -> None:
    instance = DagsterInstance.ephemeral()
    # globex first: its integer "Cost Center" creates the column, acme's text values follow
    for partition in ("globex", "acme"):
        result = run_partition(definitions, instance, partition)
        assert result.success
        materialized = {
            event.asset_key.to_user_string(): event.partition
            for event in result.get_asset_materialization_events()
        }
        assert materialized == {f"makini/{table}": partition for table in TABLES}
        for event in result.all_events:
            for token in sandbox.tokens.values():
                assert token not in str(event)

    counts = duckdb_counts(tmp_path / "makini.duckdb")
    for connection in ("acme", "globex"):
        expected = api_counts(sandbox, connection)
        assert {t: counts.get((t, connection), 0) for t in TABLES} == expected

    # acme's first run knew the column globex created: its text values went to a variant
    with duckdb.connect(str(tmp_path / "makini.duckdb"), read_only=True) as con:
        columns = dict(
            con.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'makini_data' AND table_name = 'purchase_orders' "
                "AND column_name LIKE 'custom_fields__cost_center%'"
            ).fetchall()
        )
        assert columns == {
            "custom_fields__cost_center": "BIGINT",
            "custom_fields__cost_center__v_text": "VARCHAR",
        }
        texts = con.execute(
            "SELECT DISTINCT connection_id FROM makini_data.purchase_orders "
            "WHERE custom_fields__cost_center__v_text IS NOT NULL"
        ).fetchall()
        assert texts == [("acme",)]

    # each connection has its own pipeline and state, in the shared dataset
    with duckdb.connect(str(tmp_path / "makini.duckdb"), read_only=True) as con:
        query = "SELECT pipeline_name FROM makini_data._dlt_pipeline_state"
        names = {row[0] for row in con.execute(query).fetchall()}
    assert names == {"makini_acme", "makini_globex"}
    for connection in ("acme", "globex"):
        import dlt

        pipeline = dlt.attach(
            definitions.pipeline_name(connection), pipelines_dir=str(tmp_path / "pipelines")
        )
        watermarks = pipeline.state["sources"]["makini"]["resources"]["vendors"]["watermarks"]
        assert set(watermarks) == {connection}

    # an incremental run of one partition picks up a change of that connection only
    sandbox.put_record("acme", "vendors", "V-000001", {"name": "Renamed by test"})
    result = run_partition(
        definitions, instance, "acme", selection=[AssetKey(["makini", "vendors"])]
    )
    assert result.success
    assert [e.asset_key.to_user_string() for e in result.get_asset_materialization_events()] == [
        "makini/vendors"
    ]
    with duckdb.connect(str(tmp_path / "makini.duckdb"), read_only=True) as con:
        names = con.execute(
            "SELECT connection_id, name FROM makini_data.vendors WHERE key = 'V-000001' ORDER BY 1"
        ).fetchall()
    assert names[0] == ("acme", "Renamed by test")
    assert names[1][0] == "globex" and names[1][1] != "Renamed by test"
    assert duckdb_counts(tmp_path / "makini.duckdb") == counts


def test_failed_connection_fails_its_partition(definitions: Any, sandbox: Sandbox) -> None:
    sandbox.post("/_admin/connections/globex/token", {"revoked": True})
    instance = DagsterInstance.ephemeral()
    assert run_partition(definitions, instance, "acme").success
    result = run_partition(definitions, instance, "globex", raise_on_error=False)
    assert not result.success
