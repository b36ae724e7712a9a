"""Progress of a run: one line of at most 80 columns naming the step (extract, normalize, load)
with that step's own counters; updated in place on a terminal (rich), log lines elsewhere."""

from __future__ import annotations

import io
import re
from pathlib import Path

from conftest import Sandbox

from makini_source import makini_source
from makini_source.counters import connection_counters
from makini_source.pipeline import load, make_destination, make_pipeline
from makini_source.progress import WIDTH, RunProgress

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_with(progress: RunProgress, sandbox: Sandbox, tmp_path: Path) -> object:
    source = makini_source(
        base_url=sandbox.url, connections=dict(sandbox.tokens), entities=["vendors", "sites"]
    )
    progress.watch(source)
    destination = make_destination("duckdb", duckdb_file=tmp_path / "p.duckdb")
    pipeline = make_pipeline(
        "progress", destination, pipelines_dir=str(tmp_path / "p"), progress=progress
    )
    load(pipeline, source)
    return source


def test_log_lines_name_each_step_with_its_own_counters(sandbox: Sandbox, tmp_path: Path) -> None:
    stream = io.StringIO()
    progress = RunProgress(stream=stream, terminal=False, log_every=0.02)
    source = run_with(progress, sandbox, tmp_path)
    lines = stream.getvalue().splitlines()
    assert lines and all(len(line) <= WIDTH for line in lines), lines
    steps = [line.split()[0] for line in lines]
    # in order, each step's lines together; the last line of each is its final figures
    assert [s for i, s in enumerate(steps) if i == 0 or steps[i - 1] != s] == [
        "extract",
        "normalize",
        "load",
    ]
    last = {step: line for step, line in zip(steps, lines)}
    counters = connection_counters(source)
    rows = sum(sum(c.rows.values()) for c in counters)
    requests = sum(c.requests for c in counters)
    assert f"rows {rows:,}" in last["extract"] and f"requests {requests:,}" in last["extract"]
    assert "429s 0" in last["extract"] and "throttled 0s" in last["extract"]
    files = re.search(r"files (\d+)/(\d+)", last["normalize"])
    assert files and files.group(1) == files.group(2) and int(files.group(1)) > 0
    jobs = re.search(r"jobs (\d+)/(\d+)", last["load"])
    assert jobs and jobs.group(1) == jobs.group(2) and int(jobs.group(1)) > 0
    assert "rows" not in last["load"] and "requests" not in last["normalize"]


def test_on_a_terminal_the_line_updates_in_place(sandbox: Sandbox, tmp_path: Path) -> None:
    stream = io.StringIO()
    run_with(RunProgress(stream=stream, terminal=True), sandbox, tmp_path)
    output = stream.getvalue()
    assert ANSI.search(output)  # rich's cursor movements: the line is redrawn, not appended
    finished = [ANSI.sub("", line).strip("\r") for line in output.splitlines()]
    finished = [line for line in finished if line.strip()]
    assert all(len(line) <= WIDTH for line in finished), finished
    for step in ("extract", "normalize", "load"):
        assert any(line.startswith(step) for line in finished), (step, finished)
