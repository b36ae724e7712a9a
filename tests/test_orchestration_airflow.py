"""Airflow: the DAG of `makini_source.orchestration.airflow_dag`, through `pipelines/airflow_dag.py`
copied into a dags folder and run with `airflow dags test` (every task, in order, in one process)
against the sandbox into one DuckDB file; and what building the DAG must not do.

Airflow runs in a subprocess with its own AIRFLOW_HOME (a temporary SQLite metadata DB), so its
global configuration never leaks into the other tests.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest
from conftest import ALL_TABLES, Sandbox, api_counts, duckdb_counts, small_connections
from dlt.pipeline.state_sync import decompress_state

from makini_sandbox import ConnectionConfig, SandboxConfig
from makini_source.exceptions import ConfigurationError

if os.environ.get("CI"):
    import airflow  # noqa: F401  (CI installs the extra: fail, don't skip)
else:
    pytest.importorskip("airflow")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def airflow_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "airflow"
    monkeypatch.setenv("AIRFLOW_HOME", str(home))
    return home


def test_no_connections_is_an_error_when_the_dag_loads(
    airflow_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from makini_source.orchestration.airflow_dag import build_dag

    monkeypatch.setenv("SOURCES__MAKINI__CONNECTIONS", "{}")
    monkeypatch.delenv("SOURCES__MAKINI__API_TOKEN", raising=False)
    with pytest.raises(ConfigurationError, match="no Makini connections configured"):
        build_dag()


def test_building_the_dag_leaves_the_environment_alone(
    airflow_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from makini_source.orchestration.airflow_dag import build_dag

    tokens = {"acme": "mk_SECRET_acme_1", "north-1": "mk_SECRET_north_2"}
    monkeypatch.setenv("SOURCES__MAKINI__CONNECTIONS", json.dumps(tokens))
    monkeypatch.setenv("MAKINI__DESTINATION", "postgres")
    before = dict(os.environ)
    dag = build_dag()
    assert dict(os.environ) == before
    assert sorted(task.task_id for task in dag.tasks) == ["makini_acme", "makini_north_1"]
    assert dag.max_active_tasks == 16  # a server destination takes the loads at once
    assert not dag.task_dict["makini_acme"].upstream_task_ids  # the tasks are independent
    for token in tokens.values():  # only names travel with the DAG
        for task in dag.tasks:
            arguments = (getattr(task, "op_args", None), getattr(task, "op_kwargs", None))
            assert token not in repr(arguments)


def airflow_env(home: Path, sandbox: Sandbox, duckdb_path: Path) -> dict[str, str]:
    ours = ("AIRFLOW", "SOURCES__", "MAKINI__")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    (home / "dags").mkdir(parents=True, exist_ok=True)
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        SOURCES__MAKINI__BASE_URL=sandbox.url,
        SOURCES__MAKINI__DIALECT="v1",
        SOURCES__MAKINI__CONNECTIONS=json.dumps(sandbox.tokens),
        MAKINI__DUCKDB_PATH=str(duckdb_path),
        MAKINI__RETRIES="0",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    return env


# ~60 s on an idle 2-core machine (migrate ~13 s); allow for a loaded CI box
@pytest.mark.timeout(900)
def test_dag_loads_each_connection_in_its_own_pipeline(
    sandbox_factory: Any, tmp_path: Path
) -> None:
    config = SandboxConfig(
        connections=small_connections(purchase_orders=15)
        + [ConnectionConfig(name="initech", token="tok_initech", purchase_orders=5)]
    )
    sandbox: Sandbox = sandbox_factory(config)
    sandbox.post("/_admin/connections/initech/token", {"revoked": True})
    home = tmp_path / "airflow"
    duckdb_path = tmp_path / "makini.duckdb"
    env = airflow_env(home, sandbox, duckdb_path)
    shutil.copy(REPO / "pipelines" / "airflow_dag.py", home / "dags" / "makini_dag.py")
    airflow = [sys.executable, "-m", "airflow"]

    migrate = subprocess.run(  # noqa: PLW1510 - the return code is asserted
        airflow + ["db", "migrate"], env=env, capture_output=True, text=True, timeout=300
    )
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]

    run = subprocess.run(  # noqa: PLW1510 - the return code is asserted
        airflow + ["dags", "test", "makini"], env=env, capture_output=True, text=True, timeout=600
    )
    output = run.stdout + run.stderr
    # initech's token is revoked: its task fails, the DAG run fails, the others load
    assert run.returncode != 0, output[-5000:]
    for token in sandbox.tokens.values():
        assert token not in output

    with sqlite3.connect(home / "airflow.db") as db:
        states = dict(db.execute("SELECT task_id, state FROM task_instance").fetchall())
    assert states == {
        "makini_acme": "success",
        "makini_globex": "success",
        "makini_initech": "failed",
    }, output[-5000:]

    counts = duckdb_counts(duckdb_path)
    for connection in ("acme", "globex"):
        expected = api_counts(sandbox, connection)
        assert {t: counts.get((t, connection), 0) for t in ALL_TABLES} == expected
    assert not any(connection == "initech" for _, connection in counts)

    with duckdb.connect(str(duckdb_path), read_only=True) as con:
        rows = con.execute(
            "SELECT pipeline_name, state FROM makini_data._dlt_pipeline_state "
            "QUALIFY row_number() OVER (PARTITION BY pipeline_name ORDER BY version DESC) = 1"
        ).fetchall()
        schemas = {
            row[0]
            for row in con.execute(
                "SELECT schema_name FROM information_schema.schemata "
                "WHERE schema_name LIKE 'makini_data%'"
            ).fetchall()
        }
    # every connection staged through its own dataset
    assert {"makini_data_staging_acme", "makini_data_staging_globex"} <= schemas
    assert "makini_data_staging" not in schemas
    states_by_pipeline = {name: decompress_state(blob) for name, blob in rows}
    assert set(states_by_pipeline) <= {"makini_acme", "makini_globex", "makini_initech"}
    failed = states_by_pipeline.pop("makini_initech", {}).get("sources", {}).get("makini", {})
    assert not any(r.get("watermarks") for r in failed.get("resources", {}).values())
    for name, state in states_by_pipeline.items():
        resources = state["sources"]["makini"]["resources"]
        assert set(resources) == {
            "purchase_orders",
            "vendors",
            "materials",
            "sites",
            "assets",
            "work_orders",
        }
        for resource_state in resources.values():
            assert set(resource_state["watermarks"]) == {name.removeprefix("makini_")}
