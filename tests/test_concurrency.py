"""One process per connection, all loading the same dataset of one real Postgres database.

A company with hundreds of Makini connections runs one pipeline process per connection (its own
pipeline name and state), all into one shared dataset. Here three such processes start at the
same instant, twice (the second run incremental, after changes that add a custom field column in
every connection at once), and the destination must equal the API for every connection: no row
lost or duplicated, the schema intact.
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
from conftest import (
    Loader,
    PostgresServer,
    Sandbox,
    assert_destination_matches_api,
    small_connections,
)

from makini_sandbox import ConnectionConfig, SandboxConfig

REPO_ROOT = Path(__file__).resolve().parent.parent

# The per-connection process: what a scheduler would run once per connection. It waits for the
# `go` file so that all processes hit the destination at the same moment.
WORKER = r"""
import json, os, sys, time
from pathlib import Path

import dlt
from makini_source import makini_source, raise_on_connection_failures
from makini_source.shared_dataset import run_connection, staging_layout

name, token, base_url, credentials, pipelines_dir, go = sys.argv[1:7]
sources = []


def make_pipeline():
    return dlt.pipeline(
        pipeline_name=f"makini_{name}",
        pipelines_dir=pipelines_dir,
        destination=dlt.destinations.postgres(
            credentials=credentials, staging_dataset_name_layout=staging_layout(name)
        ),
        dataset_name="makini_data",
    )


def make_source():
    sources.append(makini_source(base_url=base_url, connections={name: token}, dialect="v1"))
    return sources[-1]


Path(go + "." + name).touch()  # ready
deadline = time.monotonic() + 60
while not os.path.exists(go) and time.monotonic() < deadline:
    time.sleep(0.005)
info = run_connection(make_pipeline, make_source)
raise_on_connection_failures(sources[-1])
print(json.dumps({"connection": name, "loads": info.loads_ids, "attempts": len(sources)}))
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


def run_concurrently(
    sandbox: Sandbox, credentials: str, workdir: Path, round_no: int
) -> dict[str, dict[str, Any]]:
    """Starts one worker per connection, releases them together, and waits for all."""
    script = workdir / "worker.py"
    script.write_text(WORKER)
    go = workdir / f"go-{round_no}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DESTINATION__", "SOURCES__"))}
    env["PYTHONUNBUFFERED"] = "1"
    # the checkout under test, whatever the editable install points at
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    # dlt imports Airflow at start-up when it is installed (seconds per process); not needed here
    env.setdefault("PROVIDERS__ENABLE_AIRFLOW_SECRETS", "false")
    processes: dict[str, subprocess.Popen] = {}
    for name, token in sandbox.tokens.items():
        processes[name] = subprocess.Popen(
            [
                sys.executable,
                str(script),
                name,
                token,
                sandbox.url,
                credentials,
                str(workdir / f"pipelines-{name}"),
                str(go),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=dict(env),
        )
    deadline = time.monotonic() + 60
    while not all(Path(f"{go}.{name}").exists() for name in processes):
        if any(p.poll() is not None for p in processes.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    go.touch()
    failed, results = {}, {}
    for name, process in processes.items():
        output, _ = process.communicate(timeout=240)
        if process.returncode != 0:
            failed[name] = output[-4000:]
        else:
            results[name] = json.loads(output.strip().splitlines()[-1])
    assert not failed, "concurrent loads failed:\n" + "\n\n".join(
        f"--- {n}\n{o}" for n, o in failed.items()
    )
    return results


def reader(sandbox: Sandbox, credentials: str, workdir: Path) -> Loader:
    """A Loader that only reads the shared dataset."""
    return Loader(sandbox, workdir / "reader", dlt.destinations.postgres(credentials=credentials))


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


def test_one_process_per_connection_into_one_shared_dataset(
    sandbox_factory: Any, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    sandbox = sandbox_factory(SandboxConfig(connections=three_connections()))
    credentials = postgres_server.create_database()

    first = run_concurrently(sandbox, credentials, tmp_path, 1)
    assert sorted(first) == sorted(sandbox.tokens)
    check = reader(sandbox, credentials, tmp_path)
    assert_destination_matches_api(check, sandbox)

    change_every_connection(sandbox)
    second = run_concurrently(sandbox, credentials, tmp_path, 2)
    assert all(len(result["loads"]) == 1 for result in second.values())
    assert_destination_matches_api(check, sandbox)
    rows = check.rows("purchase_orders")
    for name in sandbox.tokens:
        changed = [
            r for (c, _), r in rows.items() if c == name and r["title"] == f"changed at {name}"
        ]
        assert len(changed) == 1 and changed[0]["custom_fields__rollout_wave"] == 2
    # every process committed its own state and loads; the schema is one table per entity
    loads = check.query(f"SELECT status, COUNT(*) FROM {check.table('_dlt_loads')} GROUP BY status")
    assert dict(loads) == {0: 6}
    tables = {
        r[0]
        for r in check.query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'makini_data'"
        )
    }
    assert {"purchase_orders", "purchase_order_line_items", "vendors", "work_orders"} <= tables
