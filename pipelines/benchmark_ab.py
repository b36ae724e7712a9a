"""Side-by-side benchmark of two (or more) checkouts of makini-source against one sandbox.

On a shared machine the floor alone can vary threefold within an hour, so a change is judged
by alternating full syncs of each checkout against the same prewarmed sandbox, round by round
(the order flips every round), with a floor run at the start of each round. Each makini run
is `benchmark.py`'s own `makini` mode, started from its checkout (its code and its
`.dlt/config.toml`).

With ``--dialect unified`` the checkouts read the sandbox's unified dialect (an EAM
connection, as ``benchmark.py``'s ``unified`` mode) and the floor is ``unified_floor``; its
incremental run also finds a few deleted records, and the sandbox goes back to its generated
records before each full sync (the unified lookback would re-read the previous run's changes).
A checkout reads the dialect only if its ``benchmark.py`` passes ``dialect`` to makini_source.

Usage::

    git worktree add /tmp/before HEAD~3
    python pipelines/benchmark_ab.py /tmp/before . --rounds 4 --incremental
    python pipelines/benchmark_ab.py /tmp/before . --rounds 4 --dialect unified
    python pipelines/benchmark_ab.py /tmp/before . --rounds 4 --incremental --replays 3

With ``--incremental`` every checkout first makes its full sync (each in its own pipeline and
DuckDB file), then the sandbox changes 1% of the POs once, and each checkout runs its
incremental run on top of its full sync: all of them read the same changes on the same data.
Whether a run pays one of DuckDB's occasional recompressing checkpoints (1-2 s) depends on
where the changed rows sit in the file; with the same history it falls on the same round for
every checkout (with separate changes per checkout, it fell on one of them at random).

With ``--replays K`` each round's incremental run is run K times from a copy of the pipeline
(its working directory and DuckDB file) taken before the first, and its figure is their
median: every replay does the same work on the same file, so they differ only by the
machine's noise (typically ±0.1 s).

It prints every run and then, per checkout, the median wall seconds, the median ratio to the
round's floor, the median CPU, extract and load seconds, and the largest peak RSS (and the
incremental run's median and its share of its full sync with ``--incremental``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import benchmark

HERE = Path(__file__).resolve().parent.parent


def run_mode(tree: Path, mode: str, args: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """One `benchmark.py` mode of checkout `tree`, in a child process started from it."""
    args_path = workdir / "args.json"
    args_path.write_text(json.dumps(args))
    env = dict(os.environ, **benchmark.CHILD_ENV, PYTHONPATH=str(tree))
    proc = subprocess.run(  # noqa: PLW1510 - the return code is checked
        [sys.executable, str(tree / "pipelines" / "benchmark.py"), "_child", mode, str(args_path)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tree,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{tree}: mode {mode} failed:\n{proc.stdout[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _wall(tree: Path, args: dict[str, Any], workdir: Path) -> float:
    return float(run_mode(tree, "makini", args, workdir)["wall"])


def _pipeline_files(workdir: Path, name: str) -> list[Path]:
    """Pipeline `name`'s working directory and DuckDB file(s) in `workdir`."""
    return [workdir / "pipelines" / name, *workdir.glob(f"{name}.duckdb*")]


def _remove(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def replayed(run: Callable[[], float], workdir: Path, name: str, times: int) -> list[float]:
    """`run` (a run of pipeline `name` in `workdir`) `times` times, each from the pipeline's
    working directory and DuckDB file as they were before the first; returns the walls.

    Every run starts with the files written so far on disk (`os.sync`), as a scheduled run
    finds them: the run before it checkpointed its DuckDB file, and DuckDB's checkpoint waits
    for the file to be on disk. A copy just made sits in the page cache instead, and the
    run's first checkpoint then paid for writing the whole ~120 MB file out: 0.03-0.07 s
    more at the close of a run at 100,000 POs, more on a busy disk.
    """
    if times <= 1:
        os.sync()
        return [run()]
    saved = workdir / "replay"
    shutil.rmtree(saved, ignore_errors=True)
    saved.mkdir()
    for path in _pipeline_files(workdir, name):
        (shutil.copytree if path.is_dir() else shutil.copy2)(path, saved / path.name)
    walls = []
    for number in range(times):
        if number:
            _remove(_pipeline_files(workdir, name))
            for path in saved.iterdir():
                target = workdir / "pipelines" / path.name if path.is_dir() else workdir / path.name
                (shutil.copytree if path.is_dir() else shutil.copy2)(path, target)
        os.sync()
        walls.append(run())
    shutil.rmtree(saved)
    return walls


def _step_median(results: list[dict[str, Any]], step: str) -> float:
    return statistics.median(r["step_seconds"].get(step, 0.0) for r in results)


def _pipeline_name(trees: list[Path], tree: Path) -> str:
    """Each checkout's own pipeline (and DuckDB file), so that all of them can run their
    incremental runs on top of their full syncs after one set of changes."""
    return f"bench_ab{trees.index(tree)}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("trees", nargs="+", type=Path, help="checkouts to compare")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pos", type=int, default=100_000, help="purchase orders")
    parser.add_argument(
        "--incremental", action="store_true", help="also an incremental run after each sync"
    )
    parser.add_argument(
        "--replays",
        type=int,
        default=1,
        help="run each incremental run this many times from a copy of the pipeline (median)",
    )
    parser.add_argument(
        "--dialect",
        choices=("v1", "unified"),
        default="v1",
        help="the API dialect the checkouts read (default v1)",
    )
    opts = parser.parse_args(argv)
    trees = [tree.resolve() for tree in opts.trees]
    unified = opts.dialect == "unified"
    floor_mode = "unified_floor" if unified else "floor"
    workdir = Path(tempfile.mkdtemp(prefix="makini-ab-"))
    sandbox = benchmark.Sandbox(opts.pos, 200, workdir)
    token = sandbox.tokens[benchmark.BENCH_CONNECTION]
    base = {"url": sandbox.url, "workdir": str(workdir)}
    makini_args = {
        **base,
        "connections": {benchmark.BENCH_CONNECTION: token},
        "dialect": opts.dialect,
    }
    floors: list[float] = []
    runs: dict[Path, list[dict[str, Any]]] = {tree: [] for tree in trees}
    try:
        for number in range(opts.rounds):
            floor = run_mode(HERE, floor_mode, {**base, "token": token}, workdir)["wall"]
            floors.append(floor)
            order = trees if number % 2 == 0 else trees[::-1]
            if unified:
                sandbox.restore()
            fulls: dict[Path, dict[str, Any]] = {}
            for tree in order:
                name = _pipeline_name(trees, tree)
                _remove(_pipeline_files(workdir, name))
                full = run_mode(tree, "makini", {**makini_args, "pipeline": name}, workdir)
                full["floor"] = floor
                fulls[tree] = full
                print(
                    f"round {number + 1} {tree.name or tree}: {full['wall']:.2f} s "
                    f"(floor {floor:.2f} s), {full['cpu_seconds']:.1f} CPU s, "
                    f"{full['peak_rss_mb']:.0f} MB, steps {full['step_seconds']}",
                    flush=True,
                )
            if opts.incremental:
                # one set of changes for every checkout: each reads the same records on top
                # of the same full sync, so DuckDB's recompressing checkpoints (which depend on
                # where the changed rows sit) fall on the same runs for all of them
                benchmark.incremental_changes(sandbox, opts.pos, deletes=unified)
                for tree in order:
                    name = _pipeline_name(trees, tree)
                    args = {**makini_args, "pipeline": name}
                    walls = replayed(
                        partial(_wall, tree, args, workdir), workdir, name, opts.replays
                    )
                    fulls[tree]["incremental"] = statistics.median(walls)
                    print(
                        f"round {number + 1} {tree.name or tree}: incremental "
                        f"{' '.join(f'{wall:.2f}' for wall in walls)} s",
                        flush=True,
                    )
            for tree in trees:
                runs[tree].append(fulls[tree])
    finally:
        sandbox.close()
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"\n{opts.dialect} dialect, {floor_mode}: median {statistics.median(floors):.2f} s "
        f"over {len(floors)} rounds"
    )
    for tree, results in runs.items():
        summary = (
            f"{tree}: makini median {statistics.median(r['wall'] for r in results):.2f} s, "
            f"makini/floor {statistics.median(r['wall'] / r['floor'] for r in results):.3f}, "
            f"CPU {statistics.median(r['cpu_seconds'] for r in results):.1f} s, "
            f"extract {_step_median(results, 'extract'):.2f} s, "
            f"load {_step_median(results, 'load'):.2f} s, "
            f"peak RSS max {max(r['peak_rss_mb'] for r in results):.0f} MB"
        )
        if opts.incremental:
            share = statistics.median(r["incremental"] / r["wall"] for r in results)
            incremental = statistics.median(r["incremental"] for r in results)
            summary += (
                f", incremental median {incremental:.2f} s, incremental/full {100 * share:.1f}%"
            )
        print(summary)


if __name__ == "__main__":
    main()
