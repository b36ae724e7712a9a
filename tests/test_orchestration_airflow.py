"""Airflow: pipelines/airflow_dag.py run with `airflow dags test` (dag.test(): every task, in
order, in one process) against the sandbox into one DuckDB file.

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

import duckdb
import pytest
from conftest import ALL_TABLES, Sandbox, api_counts, duckdb_counts, small_connections
from dlt.pipeline.state_sync import decompress_state

from makini_sandbox import ConnectionConfig, SandboxConfig
from makini_source.catalogue import default_entities

if os.environ.get("CI"):
    import airflow  # noqa: F401  (CI installs the extra: fail, don't skip)
else:
    pytest.importorskip("airflow")

# ~75 s on an idle 2-core machine (migrate ~13 s, 13 tasks); allow for a loaded CI box
pytestmark = pytest.mark.timeout(900)

REPO = Path(__file__).resolve().parents[1]
TABLES = ALL_TABLES


def airflow_env(home: Path, sandbox: Sandbox, duckdb_path: Path) -> dict[str, str]:
    ours = ("AIRFLOW", "SOURCES__", "MAKINI__")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    (home / "dags").mkdir(parents=True, exist_ok=True)
    (home / "tmp").mkdir(exist_ok=True)
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        TMPDIR=str(home / "tmp"),  # dlt's per-task data folders
        SOURCES__MAKINI__BASE_URL=sandbox.url,
        SOURCES__MAKINI__DIALECT="v1",
        SOURCES__MAKINI__CONNECTIONS=json.dumps(sandbox.tokens),
        MAKINI__DUCKDB_PATH=str(duckdb_path),
        MAKINI__RETRIES="0",
    )
    return env


def test_dag_loads_each_connection_in_its_own_pipeline(sandbox_factory, tmp_path: Path) -> None:
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
    # initech's token is revoked: its group fails, the DAG run fails, the others load
    assert run.returncode != 0, output[-5000:]
    for token in sandbox.tokens.values():
        assert token not in output

    with sqlite3.connect(home / "airflow.db") as db:
        states = dict(db.execute("SELECT task_id, state FROM task_instance").fetchall())
    groups = {"acme": "makini_acme", "globex": "makini_globex", "initech": "makini_initech"}
    # the group runs the source's resources one after another, in the source's order
    resources = [entity.table for entity in default_entities()]
    for connection in ("acme", "globex"):
        for resource in resources:
            task = f"{groups[connection]}.makini_{resource}"
            assert states[task] == "success", (states, output[-5000:])
    assert states[f"makini_initech.makini_{resources[0]}"] == "failed"
    assert {states[f"makini_initech.makini_{r}"] for r in resources[1:]} == {"upstream_failed"}

    counts = duckdb_counts(duckdb_path)
    for connection in ("acme", "globex"):
        expected = api_counts(sandbox, connection)
        assert {t: counts.get((t, connection), 0) for t in TABLES} == expected
    assert not any(connection == "initech" for _, connection in counts)

    with duckdb.connect(str(duckdb_path), read_only=True) as con:
        rows = con.execute(
            "SELECT pipeline_name, state FROM makini_data._dlt_pipeline_state "
            "QUALIFY row_number() OVER (PARTITION BY pipeline_name ORDER BY version DESC) = 1"
        ).fetchall()
    states_by_pipeline = {name: decompress_state(blob) for name, blob in rows}
    assert set(states_by_pipeline) <= {"makini_acme", "makini_globex", "makini_initech"}
    for name in ("makini_acme", "makini_globex"):
        resources_state = states_by_pipeline[name]["sources"]["makini"]["resources"]
        # every resource ran in its own task and added its watermark to the restored state
        assert set(resources_state) == set(resources)
        for resource_state in resources_state.values():
            assert set(resource_state["watermarks"]) == {name.removeprefix("makini_")}
    # the failed connection advanced no watermark
    failed = states_by_pipeline.get("makini_initech", {}).get("sources", {}).get("makini", {})
    assert not any(r.get("watermarks") for r in failed.get("resources", {}).values())
