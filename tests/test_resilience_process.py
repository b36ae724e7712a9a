"""The pipeline script as a process: SIGKILLed at every stage, and run with failing connections.

Both run `pipelines/makini_pipeline.py` as a subprocess against the sandbox (configured through
the environment, as in production) into a DuckDB file in a temp dir.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dlt
import pendulum
import pytest
from conftest import (
    Loader,
    Sandbox,
    SqlDataset,
    assert_destination_matches_api,
    run_captured,
    small_connections,
)

from makini_sandbox import ConnectionConfig, SandboxConfig

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "pipelines" / "makini_pipeline.py"
PIPELINE = "crashy"


def pipeline_env(sandbox: Sandbox, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOURCES__MAKINI__")}
    env.update(
        SOURCES__MAKINI__BASE_URL=sandbox.url,
        SOURCES__MAKINI__DIALECT="v1",
        SOURCES__MAKINI__CONNECTIONS=json.dumps(sandbox.tokens),
        PYTHONUNBUFFERED="1",
        # this working tree's packages, whatever checkout the environment's install points to
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        # airflow may be installed (orchestration extra): don't let dlt ask its secrets backend
        PROVIDERS__ENABLE_AIRFLOW_SECRETS="false",
        **extra,
    )
    return env


def pipeline_command(workdir: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        str(SCRIPT),
        "--pipeline-name",
        PIPELINE,
        "--pipelines-dir",
        str(workdir / "pipelines"),
        "--duckdb-path",
        str(workdir / "crashy.duckdb"),
        *args,
    ]


def run_pipeline(workdir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """Runs the pipeline script to the end; its output captured as text."""
    return run_captured(pipeline_command(workdir, *args), ROOT, env)


def open_pipeline(workdir: Path) -> dlt.Pipeline:
    """The subprocess's pipeline, opened in this process (state from its working dir)."""
    return dlt.pipeline(
        pipeline_name=PIPELINE,
        pipelines_dir=str(workdir / "pipelines"),
        destination=dlt.destinations.duckdb(str((workdir / "crashy.duckdb").resolve())),
        dataset_name="makini_data",
    )


def entries(folder: Path) -> list[Path]:
    return list(folder.iterdir()) if folder.is_dir() else []


class Stage:
    """A point of the run to SIGKILL at, recognised from the sandbox or the working dir."""

    def __init__(self, name: str, reached: Callable[[Path], bool]) -> None:
        self.name = name
        self.reached = reached


def run_and_kill(sandbox: Sandbox, workdir: Path, stage: Stage, args: list[str]) -> str:
    """Starts the pipeline script and SIGKILLs it as soon as `stage` is reached."""
    work = workdir / "pipelines" / PIPELINE
    process = subprocess.Popen(
        pipeline_command(workdir, *args),
        env=pipeline_env(sandbox),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 90
    try:
        while not stage.reached(work):
            if process.poll() is not None:
                output = process.stdout.read().decode() if process.stdout else ""
                pytest.fail(
                    f"pipeline ended (exit {process.returncode}) before {stage.name}:\n{output}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"{stage.name} not reached in time")
            time.sleep(0.002)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
        if process.stdout:
            process.stdout.close()
    return stage.name


def watermarks(pipeline: dlt.Pipeline) -> dict[str, dict[str, str]]:
    resources = pipeline.state.get("sources", {}).get("makini", {}).get("resources", {})
    return {name: dict(state.get("watermarks", {})) for name, state in resources.items()}


def assert_state_not_ahead_of_loaded(
    workdir: Path, sandbox: Sandbox, loaded_before: dict[str, dict[str, str]]
) -> None:
    """Every stored watermark is covered: by data in the destination, or by a load package
    still pending (the next run finishes pending packages before it reads anything)."""
    pipeline = open_pipeline(workdir)
    marks = watermarks(pipeline)
    if pipeline.has_pending_data or marks == loaded_before:
        return
    # no pending package, yet the state moved: the destination must hold what it promises
    loader = Loader.__new__(Loader)
    loader.pipeline, loader.sandbox = pipeline, sandbox
    for table, per_connection in marks.items():
        rows = loader.rows(table)
        for connection, mark in per_connection.items():
            upper = pendulum.parse(mark)
            for record in sandbox.records(table, connection):
                if pendulum.parse(record["updatedAt"]) < upper:
                    assert (connection, record["key"]) in rows, (table, connection, record["key"])


def test_sigkill_at_every_stage_then_rerun_loads_exactly_the_api(
    sandbox_factory: Any, tmp_path: Path
) -> None:
    sandbox = sandbox_factory(
        SandboxConfig(connections=small_connections(), page_delay_seconds=0.05)
    )
    args = ["--page-size", "4", "--entities", "purchase_orders,vendors,sites"]
    stages = [
        # some pages served, the extract not yet committed
        Stage(
            "mid-extract",
            lambda work: (
                sandbox.admin.get("/_admin/stats").json()["data"]["total"]["requests"] >= 8
            ),
        ),
        # the extracted package is committed (with the new state): normalizing it
        Stage(
            "mid-normalize",
            lambda work: bool(
                entries(work / "normalize" / "extracted") or entries(work / "load" / "new")
            ),
        ),
        # some jobs of the package are in the destination, others not yet
        Stage(
            "mid-load",
            lambda work: any(
                entries(package / "completed_jobs")
                for package in entries(work / "load" / "normalized")
            ),
        ),
    ]
    seen: list[str] = []
    loaded_before: dict[str, dict[str, str]] = {}
    for number, stage in enumerate(stages):
        sandbox.admin.delete("/_admin/stats").raise_for_status()
        seen.append(run_and_kill(sandbox, tmp_path, stage, args))
        assert_state_not_ahead_of_loaded(tmp_path, sandbox, loaded_before)
        pipeline = open_pipeline(tmp_path)
        if stage.name == "mid-extract":
            assert not pipeline.has_pending_data and watermarks(pipeline) == {}
        else:
            assert pipeline.has_pending_data, f"killed {stage.name} but nothing is pending"
        loaded_before = watermarks(pipeline)
        # the API moves on between runs: a rerun that skipped new data would show it
        sandbox.put_record("acme", "vendors", f"V-CRASH-{number}", {"name": f"after {stage.name}"})
        po = sandbox.records("purchase_orders", "globex")[number]
        sandbox.put_record("globex", "purchase-orders", po["key"], {"title": f"after {stage.name}"})
        sandbox.sync_all()

    done = run_pipeline(tmp_path, pipeline_env(sandbox), *args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert seen == ["mid-extract", "mid-normalize", "mid-load"]
    pipeline = open_pipeline(tmp_path)
    assert not pipeline.has_pending_data
    loader = Loader.__new__(Loader)
    loader.pipeline, loader.sandbox = pipeline, sandbox
    # exactly the API: nothing lost, nothing duplicated (rows() fails on a duplicate key)
    for table in ("purchase_orders", "vendors", "sites"):
        assert set(loader.rows(table)) == set(sandbox.snapshot(table)), table
    for name in ("V-CRASH-0", "V-CRASH-1", "V-CRASH-2"):
        assert ("acme", name) in loader.rows("vendors")
    last_sync = {name: sandbox.sync_status(name)["last_sync_at"] for name in sandbox.tokens}
    for table, marks in watermarks(pipeline).items():
        for connection, mark in marks.items():
            assert pendulum.parse(mark) == pendulum.parse(last_sync[connection]), (
                table,
                connection,
            )
    # lines included: a resumed package that stages rows twice must not duplicate them
    assert_destination_matches_api(
        loader, sandbox, entities=["purchase_orders", "vendors", "sites"]
    )


def dlt_command() -> str:
    """dlt's own command line, from this interpreter's environment."""
    beside = Path(sys.executable).parent / "dlt"
    found = str(beside) if beside.exists() else shutil.which("dlt")
    assert found, "the dlt command is not installed"
    return found


def dlt_pipeline_command(
    pipelines_dir: Path, pipeline: str, *command: str, env: dict[str, str]
) -> str:
    """`dlt pipeline <pipeline> <command>` from the repository root; its stdout and stderr."""
    shown = run_captured(
        [dlt_command(), "pipeline", "--pipelines-dir", str(pipelines_dir), pipeline, *command],
        ROOT,
        env,
    )
    assert shown.returncode == 0, shown.stderr
    return shown.stdout + shown.stderr


# --- secrets ---------------------------------------------------------------------------------

TOKENS = {
    "acme": "mk_live_SECRET_acme_5e0c1d9b7a",
    "globex": "mk_live_SECRET_globex_8f2b44c1e3",
    "initech": "mk_live_SECRET_initech_17ad90f6b2",
}


def test_failing_connections_exit_2_and_the_token_is_never_written_or_printed(
    sandbox_factory: Any, tmp_path: Path
) -> None:
    connections = small_connections()
    connections.append(
        ConnectionConfig(name="initech", token="-", vendors=6, sites=2, purchase_orders=3)
    )
    for connection in connections:
        connection.token = TOKENS[connection.name]
    sandbox = sandbox_factory(SandboxConfig(connections=connections))
    sandbox.post("/_admin/connections/acme/token", {"revoked": True})  # 401
    sandbox.post(
        "/_admin/faults",
        {"rules": [{"kind": "status", "status": 503, "connection": "globex", "entity": "vendors"}]},
    )
    env = pipeline_env(
        sandbox,
        SOURCES__MAKINI__MAX_ATTEMPTS="3",
        SOURCES__MAKINI__BACKOFF_BASE_SECONDS="0.01",
        RUNTIME__LOG_LEVEL="INFO",
    )
    run = run_pipeline(tmp_path, env, "--entities", "vendors,sites")
    assert run.returncode == 2, run.stdout + run.stderr
    failed = run.stderr[run.stderr.index("connection(s) failed") :]
    lines = {line.split(":")[0].strip(): line for line in failed.splitlines()[1:] if ":" in line}
    assert set(lines) == {"acme", "globex"}, failed
    assert "needs reauthorization" in lines["acme"] and "status=401" in lines["acme"]
    assert "status=503" in lines["globex"] and "SERVICE_UNAVAILABLE" in lines["globex"]
    assert "gave up after 3 attempts" in lines["globex"] and "request_id=req_" in lines["globex"]

    pipeline = open_pipeline(tmp_path)
    with pipeline.sql_client() as client:
        loaded = client.execute_sql(
            f"SELECT DISTINCT connection_id FROM {client.make_qualified_table_name('vendors')}"
        )
    assert {row[0] for row in loaded} == {"initech"}  # the healthy connection committed
    assert_destination_matches_api(
        SqlDataset.duckdb(tmp_path / "crashy.duckdb"),
        sandbox,
        entities=["vendors", "sites"],
        connections=["initech"],
    )

    trace = dlt_pipeline_command(tmp_path / "pipelines", PIPELINE, "trace", env=env)
    assert "vendors" in trace  # the trace really was shown
    outputs = [run.stdout, run.stderr, trace]

    files = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert any(path.suffix == ".duckdb" for path in files)
    assert any(
        "load" in path.parts and "loaded" in path.parts for path in files
    )  # load packages kept
    for token in TOKENS.values():
        for text in outputs:
            assert token not in text
        for path in files:
            assert token.encode() not in path.read_bytes(), path
