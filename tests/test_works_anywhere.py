"""The same result wherever a run starts, and failures that fail.

- The command line run from a directory outside the repository (no `.dlt/` there) and from the
  repository (its `.dlt/config.toml`) loads one dataset: the same tables, no constraint errors.
- dlt's own `dlt pipeline <name> drop --drop-all` and `sync` work from the repository root.
- The README's first Python snippet exits non-zero when a connection fails.
- A load package with failed jobs makes the command exit non-zero, naming the package and what
  to do; doing it and running again loads everything.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import dlt
import duckdb
import pytest
from conftest import ALL_TABLES, Loader, Sandbox, assert_destination_matches_api, run_captured
from test_resilience_process import dlt_command

from makini_source.cli import main

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "pipelines" / "makini_pipeline.py"


def environment(sandbox: Sandbox, tmp_path: Path, **extra: str) -> dict[str, str]:
    """A process environment configured the production way, with nothing of the caller's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOURCES__", "DESTINATION__"))}
    env.update(
        SOURCES__MAKINI__BASE_URL=sandbox.url,
        SOURCES__MAKINI__CONNECTIONS=json.dumps(sandbox.tokens),
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        DLT_DATA_DIR=str(tmp_path / "dlt-home"),  # not the ~/.dlt of whoever runs the tests
        **extra,
    )
    return env


def reader(sandbox: Sandbox, workdir: Path, database: Path) -> Loader:
    """Reads a DuckDB file some other process loaded (in the unified dialect, which `auto`
    finds on the sandbox: it serves both)."""
    return Loader(sandbox, workdir, dlt.destinations.duckdb(str(database)), dialect="unified")


def columns(database: Path) -> dict[str, list[tuple[str, str, str]]]:
    """table -> (column, type, nullable) of the loaded tables."""
    with duckdb.connect(str(database), read_only=True) as con:
        rows = con.execute(
            "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns "
            "WHERE table_schema = 'makini_data' ORDER BY table_name, ordinal_position"
        ).fetchall()
    result: dict[str, list[tuple[str, str, str]]] = {}
    for table, *column in rows:
        result.setdefault(table, []).append(tuple(column))  # type: ignore[arg-type]
    return result


def test_runs_from_the_repository_and_from_elsewhere_share_one_dataset(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    database = tmp_path / "shared.duckdb"
    pipelines = tmp_path / "pipelines"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = environment(sandbox, tmp_path)
    command = [
        sys.executable,
        str(SCRIPT),
        "--pipeline-name",
        "anywhere",
        "--pipelines-dir",
        str(pipelines),
        "--duckdb-path",
        str(database),
        "--no-progress",
    ]

    first = run_captured(command, REPO, env, timeout=180)
    assert first.returncode == 0, first.stderr[-3000:]
    shape = columns(database)
    for table in ALL_TABLES:
        assert ("_dlt_load_id", "VARCHAR", "YES") in shape[table], table

    # the next run, with new data, from a directory without .dlt/
    sandbox.put_record("acme", "vendors", "V-000001", {"name": "Renamed elsewhere"})
    sandbox.put_record("globex", "sites", "S-NEW", {"name": "New site"})
    sandbox.sync_all()
    second = run_captured(command, elsewhere, env, timeout=180)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "vendors" in second.stdout and "Renamed" not in second.stderr
    assert columns(database) == shape  # the same tables, the same columns

    check = reader(sandbox, tmp_path / "reader", database)
    assert_destination_matches_api(check, sandbox)
    unstamped = check.query(
        f"SELECT COUNT(*) FROM {check.table('vendors')} WHERE _dlt_load_id IS NULL"
    )
    assert unstamped == [(0,)]
    loads = {row[0] for row in check.query(f"SELECT load_id FROM {check.table('_dlt_loads')}")}
    stamped = {
        row[0] for row in check.query(f"SELECT DISTINCT _dlt_load_id FROM {check.table('vendors')}")
    }
    assert len(loads) == 2 and stamped == loads  # each row names the load that wrote it

    # dlt's own reset commands, from the repository root (its .dlt/config.toml is read)
    dlt_env = {**env, "DESTINATION__DUCKDB__CREDENTIALS": str(database)}
    dlt_cli = [dlt_command(), "-y", "pipeline", "--pipelines-dir", str(pipelines), "anywhere"]
    dropped = run_captured([*dlt_cli, "drop", "--drop-all"], REPO, dlt_env, timeout=180)
    assert dropped.returncode == 0, dropped.stdout[-2000:] + dropped.stderr[-2000:]
    synced = run_captured([*dlt_cli, "sync"], REPO, dlt_env, timeout=180)
    assert synced.returncode == 0, synced.stdout[-2000:] + synced.stderr[-2000:]
    with duckdb.connect(str(database), read_only=True) as con:
        left = con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'makini_data' "
            f"AND table_name IN ({', '.join(repr(t) for t in ALL_TABLES)})"
        ).fetchall()
    assert left == []
    state = dlt.attach("anywhere", pipelines_dir=str(pipelines)).state
    resources = state.get("sources", {}).get("makini", {}).get("resources", {})
    assert not any(r.get("watermarks") for r in resources.values())  # the next run: all


def test_readme_first_snippet_exits_non_zero_when_a_connection_fails(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    readme = (REPO / "README.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", readme, re.DOTALL)
    assert snippet, "the README has no Python snippet"
    script = tmp_path / "snippet.py"
    script.write_text(snippet.group(1))
    env = environment(sandbox, tmp_path)

    sandbox.post("/_admin/connections/globex/token", {"revoked": True})
    failed = run_captured([sys.executable, str(script)], tmp_path, env, timeout=180)
    assert failed.returncode != 0
    assert "ConnectionsFailed" in failed.stderr and "globex" in failed.stderr
    for token in sandbox.tokens.values():
        assert token not in failed.stdout + failed.stderr
    with duckdb.connect(str(tmp_path / "makini.duckdb"), read_only=True) as con:
        loaded = con.execute("SELECT DISTINCT connection_id FROM makini_data.vendors").fetchall()
    assert loaded == [("acme",)]  # the healthy connection was loaded all the same


@pytest.mark.parametrize("outcome", ["pending", "completed", "aborted", "aborted-raising"])
def test_a_package_with_failed_jobs_exits_non_zero_and_says_what_to_do(
    outcome: str,
    sandbox: Sandbox,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
) -> None:
    """A job that fails terminally: by default dlt keeps the package pending (and `load()`
    aborts it, so that it never blocks a later run); with `load.raise_on_failed_jobs = false`
    dlt completes the package without those rows, and with
    `load.auto_abort_on_terminal_error = true` as well it aborts the package, quietly."""
    monkeypatch.setenv("SOURCES__MAKINI__BASE_URL", sandbox.url)
    monkeypatch.setenv("SOURCES__MAKINI__CONNECTIONS", json.dumps(sandbox.tokens))
    if outcome in ("completed", "aborted"):
        monkeypatch.setenv("LOAD__RAISE_ON_FAILED_JOBS", "false")
    if outcome.startswith("aborted"):
        monkeypatch.setenv("LOAD__AUTO_ABORT_ON_TERMINAL_ERROR", "true")
    database = tmp_path / "blocked.duckdb"
    with duckdb.connect(str(database)) as con:  # a column the loaded rows cannot fill
        con.execute("CREATE SCHEMA makini_data")
        con.execute("CREATE TABLE makini_data.sites (blocker VARCHAR NOT NULL)")
    argv = [
        "--pipeline-name",
        "blocked",
        "--pipelines-dir",
        str(tmp_path / "p"),
        "--duckdb-path",
        str(database),
        "--entities",
        "sites,vendors",
        "--no-progress",
    ]

    assert main(argv) == 1
    err = capsys.readouterr().err  # dlt logs the job's traceback itself (runtime.log_level)
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    message = lines[0]
    assert re.search(r"package \d+\.\d+ of pipeline 'blocked'", message), message
    assert "NOT NULL constraint failed: sites.blocker" in message
    with duckdb.connect(str(database)) as con:
        con.execute("ALTER TABLE makini_data.sites DROP COLUMN blocker")
    if outcome == "completed":
        command = re.search(r"`(dlt pipeline .* drop sites)`", message)
        assert command and "moved on" in message, message
        dlt_env = {**os.environ, "DESTINATION__DUCKDB__CREDENTIALS": str(database)}
        reload = command.group(1).replace("dlt ", f"{dlt_command()} -y ", 1).split()
        done = run_captured(reload, tmp_path, dlt_env, timeout=180)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    elif outcome.startswith("aborted"):
        assert "was aborted" in message and "run again to read" in message
    else:  # dlt would keep it pending; `load()` aborts it (tests/test_hostile.py)
        assert "refused it for good" in message and "run again to read" in message
    assert main(argv) == 0, capsys.readouterr().err
    check = reader(sandbox, tmp_path / "reader", database)
    for table in ("sites", "vendors"):
        assert set(check.rows(table)) == set(sandbox.snapshot(table)), table


def test_duckdb_memory_limit_and_load_jobs_are_set_in_code(tmp_path: Path) -> None:
    """What kept a 100,000-PO first sync under 400 MB, whatever the working directory holds,
    DuckDB's own checkpoint threshold rather than dlt's 1gb (the file stays open for a
    whole run, see `load`), and DuckDB's threads leaving the load jobs' own threads a core
    each."""
    from makini_source.pipeline import (
        DUCKDB_LOAD_JOBS,
        duckdb_threads,
        make_destination,
        make_pipeline,
    )

    destination = make_destination("duckdb", duckdb_file=tmp_path / "limits.duckdb")
    assert destination.capabilities().max_parallel_load_jobs == DUCKDB_LOAD_JOBS == 2
    pipeline = make_pipeline("limits", destination, pipelines_dir=str(tmp_path / "p"))
    with pipeline.sql_client() as client:
        rows = client.execute_sql(
            "SELECT current_setting('memory_limit'), current_setting('checkpoint_threshold'), "
            "current_setting('threads')"
        )
    ((limit, threshold, threads),) = rows or []
    assert limit == "91.5 MiB", limit  # 96MB (10^6 bytes) as DuckDB prints it
    assert threshold == "15.2 MiB", threshold  # 16MB
    assert threads == duckdb_threads()
    # two jobs: one thread each of their own, the rest of the cores in DuckDB's pool
    assert [duckdb_threads(cores) for cores in (1, 2, 4, 16)] == [1, 1, 3, 15]


def test_a_run_keeps_the_collector_off_the_objects_alive_before_it(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`load()` freezes the heap it finds for the run (full collections would walk it again
    and again) and gives it back when it returns; a process that froze its own objects keeps
    them frozen, before, during and after a run."""
    import gc

    from makini_source import makini_source
    from makini_source.pipeline import load, make_destination, make_pipeline

    database = tmp_path / "frozen.duckdb"
    pipeline = make_pipeline(
        "frozen", make_destination("duckdb", duckdb_file=database), pipelines_dir=str(tmp_path)
    )
    frozen_during_run: list[int] = []
    run = pipeline.run

    def watched_run(*args: Any, **kwargs: Any) -> Any:
        frozen_during_run.append(gc.get_freeze_count())
        return run(*args, **kwargs)

    monkeypatch.setattr(pipeline, "run", watched_run)
    assert gc.get_freeze_count() == 0
    load(pipeline, makini_source(base_url=sandbox.url, connections=dict(sandbox.tokens)))
    assert frozen_during_run[-1] > 10_000  # the modules, dlt's and ours
    assert gc.get_freeze_count() == 0

    sandbox.put_record("acme", "vendors", "V-000001", {"name": "Renamed while frozen"})
    sandbox.sync_all()
    gc.freeze()  # as a forking server does before it forks
    try:
        host_frozen = gc.get_freeze_count()
        load(pipeline, makini_source(base_url=sandbox.url, connections=dict(sandbox.tokens)))
        # frozen objects can still be freed, so the count only goes down: nothing was added
        # (the run froze nothing of its own) and nothing was given back (it unfroze nothing)
        assert 0 < frozen_during_run[-1] <= host_frozen
        assert 0 < gc.get_freeze_count() <= host_frozen
    finally:
        gc.unfreeze()
    check = reader(sandbox, tmp_path / "reader", database)
    assert_destination_matches_api(check, sandbox)


def test_a_run_resolves_the_destinations_partial_configuration_once(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dlt asks for the destination's capabilities a dozen times per run, each time resolving
    its partial configuration anew (~8 ms); `load()` resolves it once per run, again when
    the credentials change, and leaves the destination as dlt made it."""
    from dlt.common.destination.reference import Destination

    from makini_source import makini_source
    from makini_source.pipeline import load, make_destination, make_pipeline

    database = tmp_path / "caps.duckdb"
    destination = make_destination("duckdb", duckdb_file=database)
    pipeline = make_pipeline("caps", destination, pipelines_dir=str(tmp_path))
    partial: list[bool] = []
    resolve = Destination.configuration

    def counted(self: Any, initial_config: Any, accept_partial: bool = False) -> Any:
        partial.append(accept_partial)
        return resolve(self, initial_config, accept_partial)

    monkeypatch.setattr(Destination, "configuration", counted)
    destination.capabilities()
    assert partial == [True]  # outside a run: dlt's own, once per call

    for _ in range(2):
        partial.clear()
        load(pipeline, makini_source(base_url=sandbox.url, connections=dict(sandbox.tokens)))
        assert partial.count(True) == 1, partial
        assert partial.count(False) >= 1  # clients still get dlt's full resolution
        assert "configuration" not in vars(pipeline.destination)
        sandbox.put_record("acme", "vendors", "V-000001", {"name": "Renamed between runs"})
        sandbox.sync_all()

    # other credentials for the run: resolved again for them
    partial.clear()
    load(
        pipeline,
        makini_source(base_url=sandbox.url, connections=dict(sandbox.tokens)),
        credentials=str(database),
    )
    assert partial.count(True) == 2, partial
    check = reader(sandbox, tmp_path / "reader", database)
    assert_destination_matches_api(check, sandbox)


def test_duckdb_stays_open_for_a_run_and_is_let_go_after_it(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`load()` holds a DuckDB destination open while it runs (dlt would reopen and
    checkpoint the file for every load job) and lets go of it when it returns; other
    destinations and a connection the user passed in are left alone."""
    import duckdb

    from makini_source import makini_source
    from makini_source.pipeline import _open_duckdb, load, make_destination, make_pipeline

    database = tmp_path / "held.duckdb"
    pipeline = make_pipeline(
        "held", make_destination("duckdb", duckdb_file=database), pipelines_dir=str(tmp_path / "p")
    )
    held = _open_duckdb(pipeline)
    assert held is not None
    held.close()
    # a DuckDB destination configured the dlt way (credentials not given in code) is held too
    configured = tmp_path / "configured.duckdb"
    monkeypatch.setenv("DESTINATION__DUCKDB__CREDENTIALS", str(configured))
    by_config = dlt.pipeline("configured", destination="duckdb", pipelines_dir=str(tmp_path / "p"))
    held = _open_duckdb(by_config)
    assert held is not None
    ((path,),) = held.execute(
        "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchall()
    held.close()
    assert Path(path) == configured
    load(pipeline, makini_source(base_url=sandbox.url, connections=dict(sandbox.tokens)))
    # nothing holds the file now: a read-only open (refused beside a live writer) works
    with duckdb.connect(str(database), read_only=True) as reader:
        ((count,),) = reader.execute("SELECT count(*) FROM makini_data.vendors").fetchall()
    assert count == len(sandbox.snapshot("vendors"))

    own = duckdb.connect(str(tmp_path / "own.duckdb"))
    passed_in = dlt.pipeline(
        "own", destination=dlt.destinations.duckdb(own), pipelines_dir=str(tmp_path / "p")
    )
    assert _open_duckdb(passed_in) is None
    own.close()
    elsewhere = dlt.pipeline(
        "pg", destination="postgres", pipelines_dir=str(tmp_path / "p"), dataset_name="d"
    )
    assert _open_duckdb(elsewhere) is None
