"""Airflow tasks and Dagster partitions from the account's connections (client credentials):
discovered, remembered, refreshed, and loaded with minted tokens.

Every load ends by comparing the dataset with what the API lists now.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import Sandbox, SqlDataset, assert_destination_matches_api
from test_accounts import CLIENT_ID, CLIENT_SECRET, account_config

from makini_sandbox import ConnectionConfig
from makini_source.exceptions import ConfigurationError, ConnectionsFailed

KEYS = ["conn_acme", "conn_globex", "conn_hooli", "conn_initech"]


@pytest.fixture
def account(sandbox_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    """A sandbox of four connections, reached with account credentials only."""
    sandbox = sandbox_factory(account_config())
    for name in ("CONNECTIONS", "API_TOKEN"):
        monkeypatch.delenv(f"SOURCES__MAKINI__{name}", raising=False)
    monkeypatch.setenv("SOURCES__MAKINI__BASE_URL", sandbox.url)
    monkeypatch.setenv("SOURCES__MAKINI__CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("SOURCES__MAKINI__CLIENT_SECRET", CLIENT_SECRET)
    monkeypatch.setenv("SOURCES__MAKINI__ENTITIES", '["vendors", "sites"]')
    monkeypatch.setenv("MAKINI__DUCKDB_PATH", str(tmp_path / "makini.duckdb"))
    monkeypatch.setenv("MAKINI__PIPELINES_DIR", str(tmp_path / "pipelines"))
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    (tmp_path / "dagster").mkdir()
    return sandbox


def check_dataset(sandbox: Sandbox, database: Path, loaded: list[str]) -> None:
    names = {key: key.removeprefix("conn_") for key in loaded}
    assert_destination_matches_api(
        SqlDataset.duckdb(database),
        sandbox,
        entities=["vendors", "sites"],
        connections=[],
        aliases=names,
        dialect="unified",
    )


def test_airflow_tasks_come_from_discovery_remembered_between_parses(
    account: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("airflow")
    from makini_source.orchestration.airflow_dag import build_dag

    dag = build_dag()
    assert sorted(dag.task_ids) == [f"makini_{key}" for key in KEYS]
    cache = tmp_path / "makini_connections.json"
    assert cache.exists()  # the next parse does not ask Makini again within the TTL
    # a connection that joins the account appears once the remembered list is older than
    # the TTL
    grown = account_config()
    grown.connections.append(ConnectionConfig(name="umbrella", token="tok_umbrella"))
    account.admin.post("/_admin/reset", json=grown.to_dict()).raise_for_status()
    assert "makini_conn_umbrella" not in build_dag().task_ids  # remembered, within the TTL
    monkeypatch.setenv("MAKINI__DISCOVERY_TTL_SECONDS", "0")
    assert "makini_conn_umbrella" in build_dag().task_ids
    account.admin.post("/_admin/reset", json=account_config().to_dict()).raise_for_status()
    dag = build_dag()

    task = dag.get_task("makini_conn_acme")
    result = task.python_callable(*task.op_args, **task.op_kwargs)
    assert result["load_ids"]
    with pytest.raises(ConnectionsFailed, match="inactive"):
        inactive = dag.get_task("makini_conn_initech")
        inactive.python_callable(*inactive.op_args, **inactive.op_kwargs)
    check_dataset(account, tmp_path / "makini.duckdb", ["conn_acme"])

    # Makini cannot be asked: the remembered list is used; with nothing remembered, a clear error
    monkeypatch.setenv("SOURCES__MAKINI__BASE_URL", "http://127.0.0.1:9")
    assert sorted(build_dag().task_ids) == [f"makini_{key}" for key in KEYS]
    cache.unlink()
    with pytest.raises(ConfigurationError, match="discovery failed and no connection list"):
        build_dag()


def test_dagster_partitions_are_added_by_the_discovery_sensor(
    account: Sandbox, tmp_path: Path
) -> None:
    pytest.importorskip("dagster")
    from dagster import DagsterInstance, build_sensor_context, materialize

    from makini_source.orchestration.dagster_definitions import (
        DYNAMIC_PARTITIONS,
        build_definitions,
    )

    definitions = build_definitions()
    sensor = definitions.resolve_sensor_def(DYNAMIC_PARTITIONS)
    with DagsterInstance.ephemeral() as instance:
        assert instance.get_dynamic_partitions(DYNAMIC_PARTITIONS) == []
        result = sensor(build_sensor_context(instance=instance))
        for request in result.dynamic_partitions_requests:
            instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
        assert sorted(instance.get_dynamic_partitions(DYNAMIC_PARTITIONS)) == KEYS
        # a second tick adds nothing new
        assert not sensor(build_sensor_context(instance=instance)).dynamic_partitions_requests
        for key in ("conn_acme", "conn_globex"):
            run = materialize(list(definitions.assets), partition_key=key, instance=instance)
            assert run.success
    check_dataset(account, tmp_path / "makini.duckdb", ["conn_acme", "conn_globex"])
