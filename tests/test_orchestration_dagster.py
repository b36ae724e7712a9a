"""Dagster: `pipelines/dagster_definitions.py` (built by `makini_source.orchestration`),
materialized in-process per connection partition against the sandbox into one DuckDB file."""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dlt
import duckdb
import pytest
from conftest import ALL_TABLES, Sandbox, api_counts, duckdb_counts

from makini_source.exceptions import ConfigurationError

if os.environ.get("CI"):
    import dagster  # noqa: F401  (CI installs the extra: fail, don't skip)
else:
    pytest.importorskip("dagster")

from dagster import AssetKey, DagsterInstance, materialize

REPO = Path(__file__).resolve().parents[1]
MODULE = "pipelines.dagster_definitions"


@pytest.fixture
def configured(sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    monkeypatch.setenv("SOURCES__MAKINI__BASE_URL", sandbox.url)
    monkeypatch.setenv("SOURCES__MAKINI__DIALECT", "v1")
    monkeypatch.setenv("SOURCES__MAKINI__CONNECTIONS", json.dumps(sandbox.tokens))
    monkeypatch.setenv("MAKINI__DUCKDB_PATH", str(tmp_path / "makini.duckdb"))
    monkeypatch.setenv("MAKINI__PIPELINES_DIR", str(tmp_path / "pipelines"))
    monkeypatch.chdir(tmp_path)
    return sandbox


@pytest.fixture
def definitions(configured: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The code location the README starts, `pipelines/dagster_definitions.py`, imported."""
    monkeypatch.syspath_prepend(str(REPO))
    sys.modules.pop(MODULE, None)
    try:
        yield importlib.import_module(MODULE).defs
    finally:
        sys.modules.pop(MODULE, None)


def run_partition(defs: Any, instance: DagsterInstance, partition: str, **kwargs: Any) -> Any:
    return materialize(list(defs.assets), partition_key=partition, instance=instance, **kwargs)


def test_no_connections_is_an_error_when_the_definitions_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from makini_source.orchestration.dagster_definitions import build_definitions

    monkeypatch.setenv("SOURCES__MAKINI__CONNECTIONS", "{}")
    monkeypatch.delenv("SOURCES__MAKINI__API_TOKEN", raising=False)
    with pytest.raises(ConfigurationError, match="no Makini connections configured"):
        build_definitions()


def test_partitions_are_connections_and_names_must_not_collide(
    definitions: Any, configured: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    from makini_source.orchestration.dagster_definitions import build_definitions

    keys = {key.to_user_string() for key in definitions.resolve_all_asset_keys()}
    assert keys == {f"makini/{table}" for table in ALL_TABLES}
    job = definitions.resolve_implicit_global_asset_job_def()
    assert sorted(job.partitions_def.get_partition_keys()) == sorted(configured.tokens)
    for spec in definitions.resolve_all_asset_specs():  # no token in the definitions
        for token in configured.tokens.values():
            assert token not in repr(spec)
    monkeypatch.setenv("SOURCES__MAKINI__CONNECTIONS", json.dumps({"north-1": "a", "north_1": "b"}))
    with pytest.raises(ConfigurationError, match="same pipeline name"):
        build_definitions()  # they would share one pipeline's state


def test_materialize_two_partitions_into_one_dataset(
    definitions: Any, configured: Sandbox, tmp_path: Path
) -> None:
    sandbox = configured
    instance = DagsterInstance.ephemeral()
    # globex first: its integer "Cost Center" creates the column, acme's text values follow
    for partition in ("globex", "acme"):
        result = run_partition(definitions, instance, partition)
        assert result.success
        materialized = {
            event.asset_key.to_user_string(): event.partition
            for event in result.get_asset_materialization_events()
        }
        assert materialized == {f"makini/{table}": partition for table in ALL_TABLES}
        for event in result.all_events:
            for token in sandbox.tokens.values():
                assert token not in str(event)

    counts = duckdb_counts(tmp_path / "makini.duckdb")
    for connection in ("acme", "globex"):
        expected = api_counts(sandbox, connection)
        assert {t: counts.get((t, connection), 0) for t in ALL_TABLES} == expected

    with duckdb.connect(str(tmp_path / "makini.duckdb"), read_only=True) as con:
        # acme's first run knew the column globex created: its text values went to a variant
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
        # each connection has its own pipeline (state) and staging dataset
        names = {
            r[0]
            for r in con.execute(
                "SELECT pipeline_name FROM makini_data._dlt_pipeline_state"
            ).fetchall()
        }
        schemas = {
            r[0]
            for r in con.execute(
                "SELECT schema_name FROM information_schema.schemata "
                "WHERE schema_name LIKE 'makini_data_staging%'"
            ).fetchall()
        }
    assert names == {"makini_acme", "makini_globex"}
    assert schemas == {"makini_data_staging_acme", "makini_data_staging_globex"}
    for connection in ("acme", "globex"):
        pipeline = dlt.attach(f"makini_{connection}", pipelines_dir=str(tmp_path / "pipelines"))
        watermarks = pipeline.state["sources"]["makini"]["resources"]["vendors"]["watermarks"]
        assert set(watermarks) == {connection}

    # an incremental run of one asset of one partition picks up that connection's change only
    sandbox.put_record("acme", "vendors", "V-000001", {"name": "Renamed by test"})
    result = run_partition(
        definitions, instance, "acme", selection=[AssetKey(["makini", "vendors"])]
    )
    assert result.success
    events = result.get_asset_materialization_events()
    assert [e.asset_key.to_user_string() for e in events] == ["makini/vendors"]
    metadata = events[0].materialization.metadata
    assert metadata["rows_loaded"].value == 1
    assert metadata["connection_rows"].value == counts[("vendors", "acme")]
    with duckdb.connect(str(tmp_path / "makini.duckdb"), read_only=True) as con:
        renamed = con.execute(
            "SELECT connection_id, name FROM makini_data.vendors WHERE key = 'V-000001' ORDER BY 1"
        ).fetchall()
    assert renamed[0] == ("acme", "Renamed by test")
    assert renamed[1][0] == "globex" and renamed[1][1] != "Renamed by test"
    assert duckdb_counts(tmp_path / "makini.duckdb") == counts


def test_failed_connection_fails_its_partition(definitions: Any, configured: Sandbox) -> None:
    configured.post("/_admin/connections/globex/token", {"revoked": True})
    instance = DagsterInstance.ephemeral()
    assert run_partition(definitions, instance, "acme").success
    result = run_partition(definitions, instance, "globex", raise_on_error=False)
    assert not result.success
