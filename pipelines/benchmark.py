"""Benchmark makini_source against the local sandbox, side by side with a floor and a peer.

One invocation starts the Makini sandbox in its own process (so the server never competes
with the measured client for the GIL), then runs each mode in its own subprocess (so peak RSS
is per mode):

- ``floor``: fetch every page of every entity with httpx and parse it with orjson, store nothing.
- ``peer``: ``dlt.sources.rest_api`` configured for this API (cursor paginator on
  ``next_cursor``/``cursor``, bearer auth, incremental on ``updatedAt`` via ``modified_after``,
  ``data_selector: data``, merge on ``key``, the entity's max page size), loaded into DuckDB with
  ``loader_file_format="parquet"``.
- ``makini``: ``pipeline.run(makini_source(...), loader_file_format="parquet")`` into DuckDB.
- ``incremental``: 1% of POs changed through the sandbox's bulk admin endpoint, a sync so
  ``last_sync_at`` advances, then another makini run on the same pipeline.
- ``ratelimited``: makini_source reading 3 connections limited to R requests/minute each
  (scaled to a short window); achieved request rate vs 3R and 429s, from the sandbox's stats.

Usage::

    python pipelines/benchmark.py                        # 100,000 POs, every mode, once
    python pipelines/benchmark.py --pos 200000 --repeat 3 --json bench.json
    python pipelines/benchmark.py --modes floor,makini --pos 20000

Wall seconds are measured inside each child around the work itself (interpreter start and
imports excluded, identically for every mode); peak RSS is the child's ``ru_maxrss``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODES = ("floor", "peer", "makini", "incremental", "ratelimited")
# the same for every mode: no telemetry, quiet logs, and no Airflow secrets provider (dlt
# probes Airflow Variables on every config lookup when Airflow is importable, which costs
# seconds per run and is not what a plain DuckDB user has)
CHILD_ENV = {
    "RUNTIME__DLTHUB_TELEMETRY": "false",
    "RUNTIME__LOG_LEVEL": "ERROR",
    "PROVIDERS__ENABLE_AIRFLOW_SECRETS": "false",
}
BENCH_CONNECTION = "bench"
BENCH_TOKEN = "mk_bench_token"
RATE_CONNECTIONS = ("rl1", "rl2", "rl3")
DATASET = "makini_data"
# entity path -> (destination table, max page size), as in the API contract
ENTITY_PAGES = {
    "purchase-orders": ("purchase_orders", 200),
    "vendors": ("vendors", 500),
    "materials": ("materials", 500),
    "sites": ("sites", 500),
    "assets": ("assets", 250),
    "work-orders": ("work_orders", 250),
}


# --- the sandbox process ----------------------------------------------------------------


def sandbox_config(pos: int, rate_pos: int) -> dict[str, Any]:
    """One big connection (N POs, other entities scaled to it) plus three small rate-limited ones."""
    from makini_sandbox import ConnectionConfig, SandboxConfig

    big = ConnectionConfig(
        name=BENCH_CONNECTION,
        token=BENCH_TOKEN,
        purchase_orders=pos,
        vendors=max(20, pos // 20),
        materials=max(30, pos // 10),
        sites=max(5, pos // 2000),
        assets=max(20, pos // 20),
        work_orders=max(30, pos // 10),
        custom_fields={
            "Cost Center": "string",
            "projectCode": "integer",
            "Budget": "number",
            "approved": "boolean",
        },
    )
    small = [
        ConnectionConfig(
            name=name,
            token=f"mk_bench_{name}",
            purchase_orders=rate_pos,
            vendors=rate_pos // 10,
            materials=rate_pos // 10,
            sites=rate_pos // 100 or 1,
            assets=rate_pos // 10,
            work_orders=rate_pos // 10,
            lines_per_po=(1, 3),
        )
        for name in RATE_CONNECTIONS
    ]
    # cache_mb large enough that every record stays cached after prewarm (the sandbox is
    # then never the bottleneck: serving a cached page costs ~1 ms)
    return SandboxConfig(seed=7, connections=[big, *small], cache_mb=max(2048, pos // 50)).to_dict()


def serve_sandbox(config_path: str) -> None:
    """Child entry: run the sandbox until stdin closes or SIGTERM."""
    from makini_sandbox import SandboxConfig, SandboxServer

    cfg = SandboxConfig.from_dict(json.loads(Path(config_path).read_text()))
    started = time.perf_counter()
    server = SandboxServer(cfg)
    server.store.prewarm()
    server.start()
    print(
        json.dumps(
            {
                "url": server.url,
                "tokens": server.tokens,
                "ready_seconds": time.perf_counter() - started,
            }
        ),
        flush=True,
    )

    def _stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        sys.stdin.read()  # the parent closes our stdin (or dies) -> stop
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


class Sandbox:
    """The sandbox subprocess and an admin client for it."""

    def __init__(self, pos: int, rate_pos: int, workdir: Path) -> None:
        from makini_sandbox import SandboxAdmin

        cfg_path = workdir / "sandbox.json"
        cfg_path.write_text(json.dumps(sandbox_config(pos, rate_pos)))
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "_sandbox", str(cfg_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("sandbox process failed to start")
        info = json.loads(line)
        self.url: str = info["url"]
        self.tokens: dict[str, str] = info["tokens"]
        self.ready_seconds: float = info["ready_seconds"]
        self.admin = SandboxAdmin(self.url, timeout=300)

    def close(self) -> None:
        self.admin.close()
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                self.proc.wait(15)


# --- the modes (each runs in a child process) -------------------------------------------


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


class RssSampler:
    """Samples this process's RSS every 50 ms, to tell which pipeline step held the peak."""

    def __init__(self) -> None:
        import threading

        self.samples: list[tuple] = []
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with open("/proc/self/statm") as statm:
            while not self._stop.is_set():
                statm.seek(0)
                self.samples.append(
                    (time.time(), int(statm.read().split()[1]) * self._page / 2**20)
                )
                self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def peaks_by_step(self, pipeline: Any) -> dict[str, float]:
        """Peak RSS (MB) sampled during each step of the pipeline's last run."""
        peaks: dict[str, float] = {}
        for step in pipeline.last_trace.steps:
            if step.step == "run" or step.finished_at is None:
                continue
            start, end = step.started_at.timestamp(), step.finished_at.timestamp()
            inside = [rss for t, rss in self.samples if start <= t <= end]
            if inside:
                peaks[step.step] = max(inside)
        return peaks


def mode_floor(args: dict[str, Any]) -> dict[str, Any]:
    """Fetch and parse every page of every entity; store nothing."""
    import httpx
    import orjson

    records = pages = nbytes = 0
    started = time.perf_counter()
    with httpx.Client(
        base_url=args["url"], headers={"Authorization": f"Bearer {args['token']}"}, timeout=60
    ) as client:
        for path, (_, limit) in ENTITY_PAGES.items():
            params: dict[str, Any] = {"limit": limit, "include_deleted": "true"}
            while True:
                response = client.get(f"/api/v1/{path}", params=params)
                response.raise_for_status()
                body = orjson.loads(response.content)
                nbytes += len(response.content)
                records += len(body["data"])
                pages += 1
                if body["next_cursor"] is None:
                    break
                params = {"limit": limit, "cursor": body["next_cursor"]}
    wall = time.perf_counter() - started
    return {"wall": wall, "records": records, "pages": pages, "mib": nbytes / 2**20}


def _pipeline(args: dict[str, Any], name: str) -> Any:
    """The peer's pipeline: DuckDB with DuckDB's and dlt's defaults, as a `rest_api` user has
    (`--duckdb-memory-limit` applies to it too)."""
    import dlt
    from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials

    workdir = Path(args["workdir"])
    credentials = DuckDbCredentials(str(workdir / f"{name}.duckdb"))  # not named like the dataset
    if args.get("duckdb_memory_limit"):
        credentials.global_config = {"memory_limit": args["duckdb_memory_limit"]}
    return dlt.pipeline(
        pipeline_name=name,
        destination=dlt.destinations.duckdb(credentials),
        dataset_name=DATASET,
        pipelines_dir=str(workdir / "pipelines"),
    )


def _makini_pipeline(args: dict[str, Any], name: str) -> Any:
    """makini's pipeline as `makini-pipeline` builds it (DuckDB memory limit and load jobs)."""
    from makini_source.pipeline import DUCKDB_MEMORY_LIMIT, make_destination, make_pipeline

    workdir = Path(args["workdir"])
    destination = make_destination(
        "duckdb",
        duckdb_file=workdir / f"{name}.duckdb",
        duckdb_memory_limit=args.get("duckdb_memory_limit") or DUCKDB_MEMORY_LIMIT,
    )
    return make_pipeline(name, destination, DATASET, str(workdir / "pipelines"))


def _table_counts(pipeline: Any, tables: list[str]) -> dict[str, int]:
    with pipeline.sql_client() as client:
        return {t: client.execute_sql(f"SELECT count(*) FROM {t}")[0][0] for t in tables}


def _loaded_rows(pipeline: Any) -> dict[str, int]:
    counts = pipeline.last_trace.last_normalize_info.row_counts
    return {t: n for t, n in counts.items() if not t.startswith("_dlt")}


def mode_peer(args: dict[str, Any]) -> dict[str, Any]:
    """dlt's generic REST API source, configured as a user would for this API."""
    from dlt.sources.rest_api import rest_api_source

    source = rest_api_source(
        {
            "client": {
                "base_url": args["url"] + "/api/v1/",
                "auth": {"type": "bearer", "token": args["token"]},
                "paginator": {
                    "type": "cursor",
                    "cursor_path": "next_cursor",
                    "cursor_param": "cursor",
                },
            },
            "resource_defaults": {
                "primary_key": "key",
                "write_disposition": "merge",
                "endpoint": {
                    "data_selector": "data",
                    "params": {"include_deleted": "true"},
                    "incremental": {
                        "start_param": "modified_after",
                        "cursor_path": "updatedAt",
                        "initial_value": "2000-01-01T00:00:00Z",
                    },
                },
            },
            "resources": [
                {"name": table, "endpoint": {"path": path, "params": {"limit": limit}}}
                for path, (table, limit) in ENTITY_PAGES.items()
            ],
        },
        name="makini_rest_api",
    )
    pipeline = _pipeline(args, "bench_peer")
    sampler = RssSampler()
    started = time.perf_counter()
    pipeline.run(source, loader_file_format="parquet")
    wall = time.perf_counter() - started
    sampler.stop()
    rows = _loaded_rows(pipeline)
    records = sum(n for t, n in rows.items() if t in {v[0] for v in ENTITY_PAGES.values()})
    return {
        "wall": wall,
        "records": records,
        "rows": rows,
        "step_rss_mb": sampler.peaks_by_step(pipeline),
    }


def mode_makini(args: dict[str, Any]) -> dict[str, Any]:
    """makini_source into DuckDB (also the incremental and rate-limited runs)."""
    from makini_source import connection_failures, makini_source
    from makini_source.pipeline import load

    pipeline = _makini_pipeline(args, args.get("pipeline", "bench_makini"))
    source = makini_source(
        base_url=args["url"],
        connections=args["connections"],
        page_size=args.get("page_size"),
        max_elapsed_seconds=600.0,
        dialect=args.get("dialect", "v1"),
    )
    sampler = RssSampler()
    started = time.perf_counter()
    load(pipeline, source)
    wall = time.perf_counter() - started
    sampler.stop()
    failures = connection_failures(source)
    if failures:
        raise RuntimeError(f"connections failed: {failures}")
    rows = _loaded_rows(pipeline)
    records = sum(n for t, n in rows.items() if t in {v[0] for v in ENTITY_PAGES.values()})
    counts = _table_counts(pipeline, ["purchase_orders", "purchase_order_line_items"])
    steps = {
        step.step: (step.finished_at - step.started_at).total_seconds()
        for step in pipeline.last_trace.steps
        if step.step != "run" and step.finished_at is not None
    }
    return {
        "wall": wall,
        "records": records,
        "rows": rows,
        "destination": counts,
        "step_seconds": steps,
        "step_rss_mb": sampler.peaks_by_step(pipeline),
    }


CHILD_MODES = {"floor": mode_floor, "peer": mode_peer, "makini": mode_makini}


def child_main(mode: str, args_path: str) -> None:
    """Child entry: run one mode, print its result as JSON on the last line."""
    for name, value in CHILD_ENV.items():
        os.environ.setdefault(name, value)
    args = json.loads(Path(args_path).read_text())
    before = resource.getrusage(resource.RUSAGE_SELF)
    result = CHILD_MODES[mode](args)
    after = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_seconds"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result["peak_rss_mb"] = _peak_rss_mb()
    print(json.dumps(result), flush=True)


def run_child(mode: str, args: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Runs one mode in a child process, in the work directory. makini's modes load as
    `makini-pipeline` does (`makini_source.pipeline`: DuckDB's 96MB limit, two load jobs); the
    peer with dlt's and DuckDB's defaults, as a user of `rest_api` would (the 96MB limit is
    tuned for makini_source, and made the peer's nested merge run out of memory)."""
    args_path = workdir / f"args-{mode}.json"
    args_path.write_text(json.dumps(args))
    env = dict(os.environ, **CHILD_ENV)
    proc = subprocess.run(  # noqa: PLW1510 - the return code is asserted
        [sys.executable, str(Path(__file__).resolve()), "_child", mode, str(args_path)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=workdir,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"mode {mode} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- orchestration ------------------------------------------------------------------------


def run_once(
    sandbox: Sandbox, modes: list[str], opts: argparse.Namespace, workdir: Path
) -> dict[str, dict[str, Any]]:
    """One round of the selected modes; returns mode -> figures."""
    results: dict[str, dict[str, Any]] = {}
    big = {
        "url": sandbox.url,
        "workdir": str(workdir),
        "duckdb_memory_limit": opts.duckdb_memory_limit,
    }
    token = sandbox.tokens[BENCH_CONNECTION]
    for mode in ("floor", "peer"):
        if mode in modes:
            results[mode] = run_child(mode, {**big, "token": token}, workdir)
            _log(mode, results[mode])
    if "makini" in modes or "incremental" in modes:
        # a fresh full load (the incremental run continues this pipeline)
        shutil.rmtree(workdir / "pipelines", ignore_errors=True)
        for f in workdir.glob("bench_makini.duckdb*"):
            f.unlink()
        makini_args = {**big, "connections": {BENCH_CONNECTION: token}}
        full = run_child("makini", makini_args, workdir)
        expected = sandbox.admin.connections()
        visible = next(c for c in expected if c["name"] == BENCH_CONNECTION)["counts"][
            "purchase-orders"
        ]["visible"]
        if full["destination"]["purchase_orders"] != visible:
            raise RuntimeError(
                f"makini loaded {full['destination']} but the sandbox holds {visible} POs"
            )
        if "makini" in modes:
            results["makini"] = full
            _log("makini", full)
        if "incremental" in modes:
            changed = max(1, opts.pos // 100)
            sandbox.admin.bulk(
                BENCH_CONNECTION,
                "purchase-orders",
                count=changed,
                set={"notes": f"bench change {time.time()}"},
            )
            sandbox.admin.sync(BENCH_CONNECTION)
            inc = run_child("makini", makini_args, workdir)
            if inc["rows"].get("purchase_orders") != changed:
                raise RuntimeError(f"incremental run loaded {inc['rows']}, expected {changed} POs")
            inc["full_wall"] = full["wall"]
            results["incremental"] = inc
            _log("incremental", inc)
    if "ratelimited" in modes:
        results["ratelimited"] = run_ratelimited(sandbox, opts, workdir)
        _log("ratelimited", results["ratelimited"])
    return results


def run_ratelimited(sandbox: Sandbox, opts: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Three connections at R requests/minute each (scaled to a short window)."""
    per_window = max(1, round(opts.rate_limit * opts.rate_window / 60.0))
    for name in RATE_CONNECTIONS:
        sandbox.admin.set_rate_limit(name, per_window, window_seconds=opts.rate_window)
    sandbox.admin.clear_stats()
    shutil.rmtree(workdir / "pipelines" / "bench_rate", ignore_errors=True)
    for f in workdir.glob("bench_rate.duckdb*"):
        f.unlink()
    try:
        result = run_child(
            "makini",
            {
                "url": sandbox.url,
                "workdir": str(workdir),
                "pipeline": "bench_rate",
                "connections": {n: sandbox.tokens[n] for n in RATE_CONNECTIONS},
                "page_size": opts.rate_page_size,
            },
            workdir,
        )
        stats = sandbox.admin.stats()
    finally:
        for name in RATE_CONNECTIONS:
            sandbox.admin.set_rate_limit(name, 0)
    per = {n: stats["connections"].get(n, {}) for n in RATE_CONNECTIONS}
    requests = sum(s.get("requests", 0) for s in per.values())
    ok = sum(s.get("status", {}).get("200", 0) for s in per.values())
    throttled = sum(s.get("status", {}).get("429", 0) for s in per.values())
    first = min(s["first_request_ts"] for s in per.values() if s)
    last = max(s["last_request_ts"] for s in per.values() if s)
    span = last - first
    target = 3 * opts.rate_limit / 60.0
    achieved = (requests - 1) / span if span > 0 else 0.0
    result.update(
        requests=requests,
        ok=ok,
        status_429=throttled,
        span_seconds=span,
        achieved_rps=achieved,
        target_rps=target,
        pct_of_3r=100.0 * achieved / target,
        per_connection_rps={n: s.get("requests_per_second") for n, s in per.items()},
        limit_per_window=per_window,
        window_seconds=opts.rate_window,
    )
    return result


def _log(mode: str, result: dict[str, Any]) -> None:
    extra = (
        f", {result['pct_of_3r']:.1f}% of 3R, 429s={result['status_429']}"
        if mode == "ratelimited"
        else ""
    )
    print(
        f"  {mode:<12} {result['wall']:8.2f} s  {result['records']:>9} records  "
        f"{result['peak_rss_mb']:7.0f} MB  {result['cpu_seconds']:6.1f} CPU s{extra}",
        file=sys.stderr,
        flush=True,
    )


def summarize(rounds: list[dict[str, dict[str, Any]]], opts: argparse.Namespace) -> dict[str, Any]:
    """Medians over the rounds, per mode, plus the ratios."""
    modes = [m for m in MODES if any(m in r for r in rounds)]
    table: dict[str, dict[str, Any]] = {}
    for mode in modes:
        runs = [r[mode] for r in rounds if mode in r]
        walls = [x["wall"] for x in runs]
        row = {
            "wall_seconds": statistics.median(walls),
            "wall_seconds_runs": walls,
            "records": runs[0]["records"],
            "records_per_second": statistics.median(x["records"] / x["wall"] for x in runs),
            "peak_rss_mb": statistics.median(x["peak_rss_mb"] for x in runs),
            "cpu_seconds": statistics.median(x["cpu_seconds"] for x in runs),
        }
        steps = {k for x in runs for k in x.get("step_rss_mb", {})}
        if steps:
            row["step_peak_rss_mb"] = {
                k: statistics.median(
                    x["step_rss_mb"][k] for x in runs if k in x.get("step_rss_mb", {})
                )
                for k in steps
            }
        secs = {k for x in runs for k in x.get("step_seconds", {})}
        if secs:
            row["step_seconds"] = {
                k: statistics.median(
                    x["step_seconds"][k] for x in runs if k in x.get("step_seconds", {})
                )
                for k in secs
            }
        if mode == "ratelimited":
            row.update(
                pct_of_3r=statistics.median(x["pct_of_3r"] for x in runs),
                status_429=statistics.median(x["status_429"] for x in runs),
                achieved_rps=statistics.median(x["achieved_rps"] for x in runs),
                target_rps=runs[0]["target_rps"],
                requests=runs[0]["requests"],
            )
        table[mode] = row
    ratios: dict[str, float] = {}

    def med_ratio(a: str, b: str) -> float | None:
        pairs = [r[a]["wall"] / r[b]["wall"] for r in rounds if a in r and b in r]
        return statistics.median(pairs) if pairs else None

    for name, (a, b) in {
        "makini/floor": ("makini", "floor"),
        "makini/peer": ("makini", "peer"),
    }.items():
        value = med_ratio(a, b)
        if value is not None:
            ratios[name] = value
    incs = [
        r["incremental"]["wall"] / r["incremental"]["full_wall"]
        for r in rounds
        if "incremental" in r
    ]
    if incs:
        ratios["incremental/full"] = statistics.median(incs)
    return {"pos": opts.pos, "repeat": opts.repeat, "modes": table, "ratios": ratios}


def print_table(summary: dict[str, Any], opts: argparse.Namespace) -> None:
    print(
        f"\nmakini-source benchmark: {summary['pos']:,} POs, median of {summary['repeat']} run(s)"
    )
    print(
        f"{'mode':<12} {'wall s':>9} {'records':>10} {'records/s':>11} {'peak RSS MB':>12} {'CPU s':>7}  runs (wall s)"
    )
    for mode, row in summary["modes"].items():
        runs = " ".join(f"{w:.2f}" for w in row["wall_seconds_runs"])
        print(
            f"{mode:<12} {row['wall_seconds']:9.2f} {row['records']:>10,} {row['records_per_second']:>11,.0f} "
            f"{row['peak_rss_mb']:>12.0f} {row['cpu_seconds']:>7.1f}  {runs}"
        )
    for mode, row in summary["modes"].items():
        if "step_peak_rss_mb" in row:
            order = ("extract", "normalize", "load")
            parts = ", ".join(
                f"{k} {row.get('step_seconds', {}).get(k, float('nan')):.1f} s / {row['step_peak_rss_mb'][k]:.0f} MB"
                if k in row.get("step_seconds", {})
                else f"{k} {row['step_peak_rss_mb'][k]:.0f} MB"
                for k in order
                if k in row["step_peak_rss_mb"]
            )
            print(f"  {mode} by step: {parts}")
    for name, value in summary["ratios"].items():
        print(f"{name:<18} {value:.3f}")
    rl = summary["modes"].get("ratelimited")
    if rl:
        print(
            f"rate-limited: {rl['achieved_rps']:.2f} req/s of 3R = {rl['target_rps']:.2f} req/s "
            f"({opts.rate_limit}/min per connection in {opts.rate_window:g} s windows): "
            f"{rl['pct_of_3r']:.1f}%, 429s: {rl['status_429']:g}, {rl['requests']} requests"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pos", type=int, default=100_000, help="purchase orders (~5 lines each)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the table shows medians")
    parser.add_argument(
        "--modes", default=",".join(MODES), help=f"comma-separated subset of {','.join(MODES)}"
    )
    parser.add_argument(
        "--json", dest="json_path", default=None, help="write the summary (and every run) here"
    )
    parser.add_argument(
        "--rate-limit", type=int, default=600, help="R: requests per minute per connection"
    )
    parser.add_argument(
        "--rate-window",
        type=float,
        default=10.0,
        help="rate-limit window in seconds (limit scaled to it)",
    )
    parser.add_argument(
        "--rate-pos", type=int, default=2000, help="POs per rate-limited connection"
    )
    parser.add_argument(
        "--rate-page-size", type=int, default=10, help="page size in the rate-limited run"
    )
    parser.add_argument(
        "--duckdb-memory-limit",
        default=None,
        help=(
            "DuckDB memory_limit for the peer and makini loads (e.g. 256MB), replacing the "
            "96MB makini-pipeline sets for makini"
        ),
    )
    parser.add_argument(
        "--workdir", default=None, help="keep DuckDB files and pipelines here (default: a temp dir)"
    )
    opts = parser.parse_args(argv)
    unknown = set(opts.modes.split(",")) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}")
    return opts


def main(argv: list[str] | None = None) -> dict[str, Any]:
    opts = parse_args(argv)
    modes = opts.modes.split(",")
    workdir = (
        Path(opts.workdir).resolve()
        if opts.workdir
        else Path(tempfile.mkdtemp(prefix="makini-bench-"))
    )
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"starting the sandbox ({opts.pos:,} POs, prewarmed) ...", file=sys.stderr, flush=True)
    sandbox = Sandbox(opts.pos, opts.rate_pos, workdir)
    rounds: list[dict[str, dict[str, Any]]] = []
    try:
        print(
            f"sandbox ready at {sandbox.url} in {sandbox.ready_seconds:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        for k in range(opts.repeat):
            print(f"round {k + 1}/{opts.repeat}", file=sys.stderr, flush=True)
            rounds.append(run_once(sandbox, modes, opts, workdir))
    finally:
        sandbox.close()
        if not opts.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    summary = summarize(rounds, opts)
    print_table(summary, opts)
    if opts.json_path:
        Path(opts.json_path).write_text(json.dumps({**summary, "rounds": rounds}, indent=2))
    return summary


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "_sandbox":
        serve_sandbox(sys.argv[2])
    elif len(sys.argv) >= 4 and sys.argv[1] == "_child":
        child_main(sys.argv[2], sys.argv[3])
    else:
        main()
