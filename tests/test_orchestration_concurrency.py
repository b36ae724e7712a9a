"""Airflow tasks and Dagster partitions of three connections, run at the same instant into one
real PostgreSQL dataset, twice (the second run incremental, after updates, deletes, removed lines
and a new custom field in every connection): the dataset equals the API for every connection.

Each connection runs in its own process, as on separate workers: the Airflow task's callable
taken from the DAG `build_dag()` makes, or Dagster's `materialize` of one partition of
`build_definitions()`. A worker process runs both rounds (a long-lived worker), releasing each
round when the test says so, so that all three hit the destination at the same moment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dlt
import pytest
from conftest import (
    Loader,
    PostgresServer,
    Sandbox,
    assert_destination_matches_api,
    small_connections,
)

from makini_sandbox import ConnectionConfig, SandboxConfig

REPO = Path(__file__).resolve().parents[1]
ROUNDS = 2
WORKER_TIMEOUT = 150

# common to both workers: wait for the round's `go` file, run, report, wait for the next round
HEADER = r"""
import faulthandler, json, os, sys, time
from pathlib import Path

faulthandler.dump_traceback_later(WORKER_TIMEOUT, exit=True)  # a stuck worker shows where

name, signals = sys.argv[1], Path(sys.argv[2])
"""

LOOP = r"""
def wait_for(path):
    deadline = time.monotonic() + 120
    while not path.exists():
        if time.monotonic() > deadline:
            sys.exit(f"{name}: {path} never appeared")
        time.sleep(0.005)


for round_no in range(1, ROUNDS + 1):
    (signals / f"ready-{round_no}-{name}").touch()
    wait_for(signals / f"go-{round_no}")
    loads = run_once()
    written = signals / f"done-{round_no}-{name}.tmp"
    written.write_text(json.dumps(loads))
    written.rename(signals / f"done-{round_no}-{name}")  # whole, or not there
"""

AIRFLOW = r"""
from makini_source.orchestration.airflow_dag import build_dag

task = build_dag().get_task(f"makini_{name}")


def run_once():
    return task.python_callable(*task.op_args, **task.op_kwargs)["load_ids"]
"""

DAGSTER = r"""
from dagster import DagsterInstance, materialize

from makini_source.orchestration.dagster_definitions import build_definitions

assets = list(build_definitions().assets)


def run_once():
    result = materialize(assets, partition_key=name, instance=DagsterInstance.ephemeral())
    assert result.success
    loads = set()
    for event in result.get_asset_materialization_events():
        metadata = event.materialization.metadata
        loads.update(metadata["load_ids"].value.split(", "))
    return sorted(loads)
"""


def three_connections() -> list[ConnectionConfig]:
    acme, globex = small_connections(12)
    initech = ConnectionConfig(
        name="initech",
        token="tok_initech",
        system="IFS Cloud",
        purchase_orders=12,
        vendors=9,
        materials=7,
        sites=2,
        assets=5,
        work_orders=6,
        custom_fields={"Cost Center": "integer", "TPS Report #": "string", "flagged": "boolean"},
    )
    return [acme, globex, initech]


def reader(sandbox: Sandbox, credentials: str, workdir: Path) -> Loader:
    """A Loader that only reads the shared dataset (loaded in the unified dialect: `auto`
    finds it on the sandbox, which serves both)."""
    return Loader(
        sandbox,
        workdir / "reader",
        dlt.destinations.postgres(credentials=credentials),
        dialect="unified",
    )


def change_every_connection(sandbox: Sandbox) -> None:
    """Updates, deletes, new records, removed lines and one new custom field per connection."""
    for name in sandbox.tokens:
        pos = sandbox.records("purchase_orders", name, include_deleted=False)
        changed = next(p for p in pos if len(p["lineItems"]) >= 2)
        sandbox.put_record(
            name,
            "purchase-orders",
            changed["key"],
            {
                "title": f"changed at {name}",
                "lineItems": changed["lineItems"][:1],
                "customFields": {**changed["customFields"], "Rollout Wave": 2},
            },
        )
        deleted = next(p for p in pos if p["key"] != changed["key"])
        sandbox.delete_record(name, "purchase-orders", deleted["key"])
        vendor = sandbox.records("vendors", name, include_deleted=False)[0]
        sandbox.delete_record(name, "vendors", vendor["key"])
        sandbox.put_record(name, "vendors", f"V-NEW-{name}", {"name": f"New {name}"})
    sandbox.sync_all()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("orchestrator", ["airflow", "dagster"])
def test_connections_load_concurrently_into_one_postgres_dataset(
    orchestrator: str, sandbox_factory: Any, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    pytest.importorskip(orchestrator)
    sandbox: Sandbox = sandbox_factory(SandboxConfig(connections=three_connections()))
    credentials = postgres_server.create_database()
    signals = tmp_path / "signals"
    signals.mkdir()
    script = tmp_path / "worker.py"
    worker = AIRFLOW if orchestrator == "airflow" else DAGSTER
    script.write_text(
        f"ROUNDS = {ROUNDS}\nWORKER_TIMEOUT = {WORKER_TIMEOUT}\n{HEADER}\n{worker}\n{LOOP}"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOURCES__", "MAKINI__"))}
    env.update(
        SOURCES__MAKINI__BASE_URL=sandbox.url,
        SOURCES__MAKINI__CONNECTIONS=json.dumps(sandbox.tokens),
        MAKINI__DESTINATION="postgres",
        DESTINATION__POSTGRES__CREDENTIALS=credentials,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        AIRFLOW_HOME=str(tmp_path / "airflow"),
        DAGSTER_HOME=str(tmp_path / "dagster"),
        PROVIDERS__ENABLE_AIRFLOW_SECRETS="false",
    )
    (tmp_path / "dagster").mkdir()
    logs = {name: tmp_path / f"{name}.log" for name in sandbox.tokens}
    workers = {  # output to files: a full pipe would block a chatty worker
        name: subprocess.Popen(
            [sys.executable, str(script), name, str(signals)],
            env=env,
            stdout=logs[name].open("w"),
            stderr=subprocess.STDOUT,
        )
        for name in sandbox.tokens
    }
    check = reader(sandbox, credentials, tmp_path)
    try:
        for round_no in range(1, ROUNDS + 1):
            if round_no > 1:
                change_every_connection(sandbox)
            _wait(workers, logs, signals, f"ready-{round_no}")
            (signals / f"go-{round_no}").touch()  # all three at once
            loads = _wait(workers, logs, signals, f"done-{round_no}")
            assert all(len(load_ids) == 1 for load_ids in loads.values()), loads
            assert_destination_matches_api(check, sandbox)
        rows = check.rows("purchase_orders")
        for name in sandbox.tokens:  # the custom field all three added at once has its column
            changed = [r for (c, _), r in rows.items() if r["title"] == f"changed at {name}"]
            assert len(changed) == 1 and changed[0]["custom_fields__rollout_wave"] == 2
    finally:
        for name, process in workers.items():
            if process.poll() is None and not (signals / f"done-{ROUNDS}-{name}").exists():
                process.kill()
            process.wait(timeout=60)
    for name, process in workers.items():
        output = logs[name].read_text()
        assert process.returncode == 0, f"--- {name}\n{output[-4000:]}"
        for token in sandbox.tokens.values():
            assert token not in output

    # every connection staged through its own dataset, and committed its own loads
    schemas = {
        row[0]
        for row in check.query(
            "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE "
            "'makini_data%'"
        )
    }
    assert schemas == {"makini_data"} | {f"makini_data_staging_{name}" for name in sandbox.tokens}
    statuses = check.query(f"SELECT status, COUNT(*) FROM {check.table('_dlt_loads')} GROUP BY 1")
    assert dict(statuses) == {0: ROUNDS * len(sandbox.tokens)}


def _wait(
    workers: dict[str, subprocess.Popen[bytes]], logs: dict[str, Path], signals: Path, stage: str
) -> dict[str, Any]:
    """Waits until every worker reached `stage` (fails early if one died)."""
    deadline = time.monotonic() + WORKER_TIMEOUT + 30
    results: dict[str, Any] = {}
    while len(results) < len(workers):
        for name, process in workers.items():
            marker = signals / f"{stage}-{name}"
            if name not in results and marker.exists():
                text = marker.read_text()
                results[name] = json.loads(text) if text else None
            elif name not in results and process.poll() is not None:
                output = logs[name].read_text()
                pytest.fail(f"worker {name} ended before {stage}:\n{output[-4000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"workers did not reach {stage}: {sorted(set(workers) - set(results))}")
        time.sleep(0.01)
    return results
