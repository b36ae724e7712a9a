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

The same big connection, read in the unified dialect (``/api/eam/...``: an EAM connection
serves all six entities, so both dialects read the same entities and records):

- ``unified_floor``: an httpx ``page += 1`` loop over every entity's unified pages
  (``per_page=100``, sorted by ``updatedAt`` then ``key``), parsed with orjson, nothing stored.
- ``unified_peer``: ``dlt.sources.rest_api`` with its page-number paginator (``page``,
  ``total_path: meta.last_page``, ``per_page=100``, same sort), bearer auth, incremental on
  ``updatedAt`` via ``filter[updatedAt:gteq]``, merge on ``key``; dlt's and DuckDB's defaults.
- ``unified``: ``makini_source(dialect="unified")`` full sync into DuckDB, like ``makini``.
- ``unified_incremental``: 1% of POs changed and a few records deleted (POs, which vanish from
  unified listings, and vendors hard- and soft-deleted), a sync, then another unified run.

makini_source's unified requests are counted by kind (listing pages, tie walks, counts,
lookups...) against a ``page += 1`` walk of the same listings; the sandbox's own count of
requests is recorded for every unified mode. Before the unified modes (and at the start of
every round after the first) the sandbox goes back to its generated state when earlier modes
changed it: the unified dialect re-reads a 10 minute lookback, which would otherwise re-read
the v1 incremental's changes.

Usage::

    python pipelines/benchmark.py                        # 100,000 POs, every mode, once
    python pipelines/benchmark.py --pos 200000 --repeat 3 --json bench.json
    python pipelines/benchmark.py --modes floor,makini --pos 20000
    python pipelines/benchmark.py --modes unified_floor,unified,unified_peer,unified_incremental

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
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

V1_MODES = ("floor", "peer", "makini", "incremental", "ratelimited")
UNIFIED_MODES = ("unified_floor", "unified_peer", "unified", "unified_incremental")
MODES = V1_MODES + UNIFIED_MODES
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
# the unified dialect: the big connection is an EAM connection, whose family serves all six
# entities above (an ERP connection would serve four), so both dialects read the same records
UNIFIED_FAMILY = "eam"
UNIFIED_PER_PAGE = 100  # the unified dialect's maximum page size (the contract's)
# the order makini_source's walk asks for; the floor and the peer page through the same order
UNIFIED_ORDER = {"sort[updatedAt]": 0, "sort[key]": 0}
# the unified incremental run's deletes: (entity path, count, hard). Deleted POs vanish from
# unified listings either way; a soft-deleted vendor stays listed with `deletedAt` set, a
# hard-deleted one vanishes. makini_source must find the vanished ones itself.
UNIFIED_DELETES = (
    ("purchase-orders", 2, False),
    ("purchase-orders", 1, True),
    ("vendors", 2, True),
    ("vendors", 2, False),
)
# records the unified incremental run must find deleted (the vanished ones), per table
UNIFIED_VANISHED = {"purchase_orders": 3, "vendors": 2}


# --- the sandbox process ----------------------------------------------------------------


def sandbox_config(pos: int, rate_pos: int) -> dict[str, Any]:
    """One big connection (N POs, other entities scaled to it) plus three small rate-limited ones."""
    from makini_sandbox import ConnectionConfig, SandboxConfig

    big = ConnectionConfig(
        name=BENCH_CONNECTION,
        token=BENCH_TOKEN,
        family=UNIFIED_FAMILY,  # v1 has no families: this only decides the unified paths
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
        self.changed = False  # whether records were changed since the sandbox was generated

    def change(self, entity: str, **bulk: Any) -> dict[str, Any]:
        """One bulk change of the big connection's records (`SandboxAdmin.bulk`)."""
        self.changed = True
        return self.admin.bulk(BENCH_CONNECTION, entity, **bulk)

    def restore(self) -> None:
        """Back to the generated records (prewarmed), if anything changed them.

        The unified dialect's incremental run re-reads a lookback (10 minutes) before its
        watermark, so changes made by an earlier mode would be read again; and rounds then
        start from the same records.
        """
        if self.changed:
            self.admin.reset()
            self.admin.prewarm()
            self.changed = False

    def take_request_count(self) -> int:
        """Requests of the big connection since the last call (the sandbox's count)."""
        stats = self.admin.stats()["connections"].get(BENCH_CONNECTION, {})
        self.admin.clear_stats()
        return int(stats.get("requests", 0))

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
    """Fetch and parse every v1 page of every entity (following `next_cursor`); store nothing."""
    return _floor(args, _v1_pages)


def mode_unified_floor(args: dict[str, Any]) -> dict[str, Any]:
    """Fetch and parse every unified page of every entity (`page += 1`); store nothing."""
    return _floor(args, _unified_pages)


def _floor(args: dict[str, Any], pages: Any) -> dict[str, Any]:
    """Times `pages(client, path, limit)` (each page's body and its parsed JSON) over every
    entity."""
    records = count = nbytes = 0
    started = time.perf_counter()
    with httpx.Client(
        base_url=args["url"],
        headers={"Authorization": f"Bearer {args['token']}", "Accept": "application/json"},
        timeout=60,
    ) as client:
        for path, (_, limit) in ENTITY_PAGES.items():
            for content, body in pages(client, path, limit):
                nbytes += len(content)
                records += len(body["data"])
                count += 1
    wall = time.perf_counter() - started
    return {"wall": wall, "records": records, "pages": count, "mib": nbytes / 2**20}


def _v1_pages(client: Any, path: str, limit: int) -> Iterator[tuple[bytes, Any]]:
    import orjson

    params: dict[str, Any] = {"limit": limit, "include_deleted": "true"}
    while True:
        response = client.get(f"/api/v1/{path}", params=params)
        response.raise_for_status()
        body = orjson.loads(response.content)
        yield response.content, body
        if body["next_cursor"] is None:
            return
        params = {"limit": limit, "cursor": body["next_cursor"]}


def _unified_pages(client: Any, path: str, limit: int) -> Iterator[tuple[bytes, Any]]:
    import orjson

    page = 1
    while True:
        response = client.get(
            f"/api/{UNIFIED_FAMILY}/{path}",
            params={**UNIFIED_ORDER, "per_page": UNIFIED_PER_PAGE, "page": page},
        )
        response.raise_for_status()
        body = orjson.loads(response.content)
        yield response.content, body
        if not body["data"] or body["meta"]["current_page"] >= body["meta"]["last_page"]:
            return
        page += 1


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
    """dlt's generic REST API source, configured as a user would for the v1 dialect."""
    config = {
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
    }
    return _run_peer(args, config, "bench_peer")


def mode_unified_peer(args: dict[str, Any]) -> dict[str, Any]:
    """dlt's generic REST API source with its page-number paginator, configured as a user
    would for the unified dialect (the same pages and order as `unified_floor`)."""
    config = {
        "client": {
            "base_url": f"{args['url']}/api/{UNIFIED_FAMILY}/",
            "auth": {"type": "bearer", "token": args["token"]},
            "headers": {"Accept": "application/json"},
            "paginator": {
                "type": "page_number",
                "base_page": 1,
                "page_param": "page",
                "total_path": "meta.last_page",
            },
        },
        "resource_defaults": {
            "primary_key": "key",
            "write_disposition": "merge",
            "endpoint": {
                "data_selector": "data",
                "params": {**UNIFIED_ORDER, "per_page": UNIFIED_PER_PAGE},
                "incremental": {
                    "start_param": "filter[updatedAt:gteq]",
                    "cursor_path": "updatedAt",
                    "initial_value": "2000-01-01T00:00:00Z",
                },
            },
        },
        "resources": [
            {"name": table, "endpoint": {"path": path}} for path, (table, _) in ENTITY_PAGES.items()
        ],
    }
    return _run_peer(args, config, "bench_unified_peer")


def _run_peer(args: dict[str, Any], config: dict[str, Any], name: str) -> dict[str, Any]:
    """Loads `rest_api_source(config)` into DuckDB as parquet (dlt's and DuckDB's defaults)."""
    from dlt.sources.rest_api import rest_api_source

    source = rest_api_source(config, name="makini_rest_api")  # type: ignore[arg-type]
    pipeline = _pipeline(args, name)
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


# what makini_source's unified requests are for, grouped for the overheads
SETUP_KINDS = ("sync_status", "family_probe", "slice_probe")
LISTING_KINDS = ("listing_page", "tie_walk")
DELETE_KINDS = ("count", "lookup", "delete_listing_page", "delete_tie_walk")


def request_kind(path: str, params: dict[str, str], finding_deletes: bool) -> str:
    """What a unified request of makini_source is for, from its path and query.

    Args:
        path: The URL path (`/api/eam/purchase-orders`, `/api/eam/vendors/V-1`...).
        params: The query.
        finding_deletes: Sent by the delete finder (its listing thread ends in `-deletes`).

    Returns:
        `sync_status`; `family_probe` (one record, no filter or sort: which family answers);
        `slice_probe` (one record, sorted: sizes a first sync's time slices); `count` (one
        record, from the delete finder: `meta.total` of a time range); `lookup` (`GET .../{key}`);
        `tie_walk` (an equality filter on the time: records sharing one `updatedAt`);
        `listing_page` otherwise; the last two prefixed `delete_` when the delete finder
        lists a range.
    """
    if path.rstrip("/").endswith("/integrations/current"):
        return "sync_status"
    if len(path.strip("/").split("/")) > 3:  # api, family, entity, key
        return "lookup"
    filtered = any(name.startswith("filter[") for name in params)
    ordered = any(name.startswith("sort[") for name in params)
    if params.get("per_page") == "1":
        if finding_deletes:  # only the delete finder counts (sorted like its listings)
            return "count"
        if not filtered and not ordered:
            return "family_probe"
        return "slice_probe"
    equality = any(
        name.startswith("filter[") and ":" not in name and name != "filter[key]" for name in params
    )
    kind = "tie_walk" if equality else "listing_page"
    return f"delete_{kind}" if finding_deletes else kind


class RequestCounter(httpx.HTTPTransport):
    """httpx's default transport, counting each request by `request_kind` on the way.

    Attributes:
        kinds: Requests per kind.
        kinds_by_entity: Requests per entity path and kind (`integrations` for the status).
        listing_filters: Per entity path, the filters of its first listing page (an
            incremental run's window; a first sync's time slices start at different points).
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.kinds: dict[str, int] = {}
        self.kinds_by_entity: dict[str, dict[str, int]] = {}
        self.listing_filters: dict[str, dict[str, str]] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        params = dict(request.url.params)
        # the delete finder runs on a listing thread of its own, named "...-deletes"
        kind = request_kind(path, params, threading.current_thread().name.endswith("-deletes"))
        segments = path.strip("/").split("/")  # api, family, entity[, key]
        entity = "integrations" if kind == "sync_status" else segments[2]
        with self._lock:
            self.kinds[kind] = self.kinds.get(kind, 0) + 1
            per_entity = self.kinds_by_entity.setdefault(entity, {})
            per_entity[kind] = per_entity.get(kind, 0) + 1
            if kind == "listing_page":
                filters = {k: v for k, v in params.items() if k.startswith("filter[")}
                self.listing_filters.setdefault(entity, filters)
        return super().handle_request(request)


def mode_makini(args: dict[str, Any]) -> dict[str, Any]:
    """makini_source into DuckDB (also the incremental, rate-limited and unified runs).

    With `count_requests`, requests go through a `RequestCounter` and the result has their
    kinds and the source's own counters (requests, delete detection).
    """
    from makini_source import connection_failures, makini_source
    from makini_source.counters import connection_counters
    from makini_source.pipeline import load

    pipeline = _makini_pipeline(args, args.get("pipeline", "bench_makini"))
    counter = RequestCounter() if args.get("count_requests") else None
    source = makini_source(
        base_url=args["url"],
        connections=args["connections"],
        page_size=args.get("page_size"),
        max_elapsed_seconds=600.0,
        dialect=args.get("dialect", "v1"),
        transport=counter,
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
    result = {
        "wall": wall,
        "records": records,
        "rows": rows,
        "destination": counts,
        "step_seconds": steps,
        "step_rss_mb": sampler.peaks_by_step(pipeline),
    }
    if counter is not None:
        (ours,) = connection_counters(source)
        result.update(
            dialect=ours.dialect,
            requests=ours.requests,
            retries=ours.retries,
            delete_requests=ours.delete_requests,
            deletes_found=ours.deletes_found,
            notes=ours.notes,
            request_kinds=counter.kinds,
            request_kinds_by_entity=counter.kinds_by_entity,
            listing_filters=counter.listing_filters,
        )
    return result


CHILD_MODES = {
    "floor": mode_floor,
    "peer": mode_peer,
    "makini": mode_makini,
    "unified_floor": mode_unified_floor,
    "unified_peer": mode_unified_peer,
}


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
    """One round of the selected modes (v1's, then the unified ones); returns mode -> figures."""
    sandbox.restore()
    results = run_v1(sandbox, modes, opts, workdir)
    if any(mode in modes for mode in UNIFIED_MODES):
        sandbox.restore()  # the v1 incremental's changes would fall in the unified lookback
        results.update(run_unified(sandbox, modes, opts, workdir))
    return results


def _child_args(sandbox: Sandbox, opts: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    return {
        "url": sandbox.url,
        "workdir": str(workdir),
        "duckdb_memory_limit": opts.duckdb_memory_limit,
    }


def _fresh_pipeline(workdir: Path, name: str) -> None:
    """Removes a pipeline's working directory and DuckDB file: the next run is a full sync."""
    shutil.rmtree(workdir / "pipelines" / name, ignore_errors=True)
    for f in workdir.glob(f"{name}.duckdb*"):
        f.unlink()


def run_v1(
    sandbox: Sandbox, modes: list[str], opts: argparse.Namespace, workdir: Path
) -> dict[str, dict[str, Any]]:
    """The v1 modes of one round."""
    results: dict[str, dict[str, Any]] = {}
    big = _child_args(sandbox, opts, workdir)
    token = sandbox.tokens[BENCH_CONNECTION]
    for mode in ("floor", "peer"):
        if mode in modes:
            results[mode] = run_child(mode, {**big, "token": token}, workdir)
            _log(mode, results[mode])
    if "makini" in modes or "incremental" in modes:
        # a fresh full load (the incremental run continues this pipeline)
        _fresh_pipeline(workdir, "bench_makini")
        makini_args = {**big, "connections": {BENCH_CONNECTION: token}}
        full = run_child("makini", makini_args, workdir)
        visible = _sandbox_counts(sandbox)["purchase-orders"]["visible"]
        if full["destination"]["purchase_orders"] != visible:
            raise RuntimeError(
                f"makini loaded {full['destination']} but the sandbox holds {visible} POs"
            )
        if "makini" in modes:
            results["makini"] = full
            _log("makini", full)
        if "incremental" in modes:
            _, changed = incremental_changes(sandbox, opts.pos)
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


def run_unified(
    sandbox: Sandbox, modes: list[str], opts: argparse.Namespace, workdir: Path
) -> dict[str, dict[str, Any]]:
    """The unified modes of one round, on the generated records (see `Sandbox.restore`).

    Every run's requests are also counted by the sandbox (`sandbox_requests`); makini's are
    compared with a `page += 1` walk of the same listings (`page_walk_requests`).
    """
    results: dict[str, dict[str, Any]] = {}
    big = _child_args(sandbox, opts, workdir)
    token = sandbox.tokens[BENCH_CONNECTION]
    for mode in ("unified_floor", "unified_peer"):
        if mode in modes:
            sandbox.take_request_count()
            results[mode] = run_child(mode, {**big, "token": token}, workdir)
            results[mode]["sandbox_requests"] = sandbox.take_request_count()
            _log(mode, results[mode])
    if "unified" not in modes and "unified_incremental" not in modes:
        return results
    _fresh_pipeline(workdir, "bench_unified")
    makini_args = {
        **big,
        "pipeline": "bench_unified",
        "dialect": "unified",
        "count_requests": True,
        "connections": {BENCH_CONNECTION: token},
    }
    duckdb_file = workdir / "bench_unified.duckdb"
    sandbox.take_request_count()
    full = run_child("makini", makini_args, workdir)
    full["sandbox_requests"] = sandbox.take_request_count()
    full["page_walk_requests"] = page_walk_requests(sandbox.url, token, {})
    check_unified_destination(sandbox, duckdb_file)
    if "unified" in modes:
        results["unified"] = full
        _log("unified", full)
    if "unified_incremental" in modes:
        note, changed = incremental_changes(sandbox, opts.pos, deletes=True)
        sandbox.take_request_count()
        inc = run_child("makini", makini_args, workdir)
        inc["sandbox_requests"] = sandbox.take_request_count()
        inc["page_walk_requests"] = page_walk_requests(sandbox.url, token, inc["listing_filters"])
        check_unified_destination(sandbox, duckdb_file, note=(note, changed))
        found = {t: n for t, n in inc["deletes_found"].items() if n}
        if found != UNIFIED_VANISHED:
            raise RuntimeError(
                f"the unified run found {found} deleted, expected {UNIFIED_VANISHED}"
            )
        inc["full_wall"] = full["wall"]
        inc["changed"] = changed
        results["unified_incremental"] = inc
        _log("unified_incremental", inc)
    return results


def incremental_changes(sandbox: Sandbox, pos: int, deletes: bool = False) -> tuple[str, int]:
    """What an incremental run finds: 1% of the POs changed (at one shared `updatedAt`, so
    a unified walk meets a tie longer than a page), with `deletes` the `UNIFIED_DELETES`
    too, then a sync.

    Returns:
        The text written to the changed POs' `notes`, and how many POs were changed.
    """
    changed = max(1, pos // 100)
    note = f"bench change {time.time()}"
    sandbox.change("purchase-orders", count=changed, set={"notes": note})
    if deletes:
        for entity, count, hard in UNIFIED_DELETES:
            sandbox.change(entity, count=count, delete=True, hard=hard)
    sandbox.admin.sync(BENCH_CONNECTION)
    return note, changed


def _sandbox_counts(sandbox: Sandbox) -> dict[str, dict[str, int]]:
    """The big connection's record counts per entity path (`visible`: live records)."""
    connections = sandbox.admin.connections()
    return next(c for c in connections if c["name"] == BENCH_CONNECTION)["counts"]


def page_walk_requests(url: str, token: str, filters: dict[str, dict[str, str]]) -> int:
    """Requests a `page += 1` walk of `per_page=100` pages sends over every entity's unified
    listing (with the entity's `filters`, if any): the sum of their `meta.last_page`."""
    total = 0
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        for path in ENTITY_PAGES:
            params: dict[str, Any] = {
                **UNIFIED_ORDER,
                **filters.get(path, {}),
                "per_page": UNIFIED_PER_PAGE,
            }
            response = client.get(f"/api/{UNIFIED_FAMILY}/{path}", params=params)
            response.raise_for_status()
            total += int(response.json()["meta"]["last_page"])
    return total


def check_unified_destination(
    sandbox: Sandbox, duckdb_file: Path, note: tuple[str, int] | None = None
) -> None:
    """The destination holds what the sandbox lists: per entity, its live rows are the
    sandbox's live records (soft-deleted and vanished ones carry `deleted_at`), and `note`'s
    text is on exactly its count of POs.

    Raises:
        RuntimeError: A count differs.
    """
    import duckdb

    def count(db: Any, sql: str, *params: Any) -> int:
        row = db.execute(sql, list(params)).fetchone()
        return int(row[0]) if row else 0

    counts = _sandbox_counts(sandbox)
    with duckdb.connect(str(duckdb_file), read_only=True) as db:
        live = {
            table: count(db, f"SELECT count(*) FROM {DATASET}.{table} WHERE deleted_at IS NULL")
            for table, _ in ENTITY_PAGES.values()
        }
        noted = count(
            db,
            f"SELECT count(*) FROM {DATASET}.purchase_orders WHERE notes = ?",
            note[0] if note else "",
        )
    expected = {table: counts[path]["visible"] for path, (table, _) in ENTITY_PAGES.items()}
    if live != expected:
        raise RuntimeError(f"the unified run left live rows {live}, the sandbox lists {expected}")
    if note is not None and noted != note[1]:
        raise RuntimeError(f"{noted} POs carry the change, {note[1]} were changed")


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
    extra = ""
    if mode == "ratelimited":
        extra = f", {result['pct_of_3r']:.1f}% of 3R, 429s={result['status_429']}"
    elif "sandbox_requests" in result:
        extra = f", {result['sandbox_requests']} requests"
    print(
        f"  {mode:<19} {result['wall']:8.2f} s  {result['records']:>9} records  "
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
        elif "sandbox_requests" in runs[0]:
            row["requests"] = statistics.median(x["sandbox_requests"] for x in runs)
        table[mode] = row
    ratios: dict[str, float] = {}

    def med_ratio(a: str, b: str) -> float | None:
        pairs = [r[a]["wall"] / r[b]["wall"] for r in rounds if a in r and b in r]
        return statistics.median(pairs) if pairs else None

    for name, (a, b) in {
        "makini/floor": ("makini", "floor"),
        "makini/peer": ("makini", "peer"),
        "unified/unified_floor": ("unified", "unified_floor"),
        "unified/unified_peer": ("unified", "unified_peer"),
        "unified/makini": ("unified", "makini"),
    }.items():
        value = med_ratio(a, b)
        if value is not None:
            ratios[name] = value
    for name, mode in {
        "incremental/full": "incremental",
        "unified incremental/full": "unified_incremental",
    }.items():
        shares = [r[mode]["wall"] / r[mode]["full_wall"] for r in rounds if mode in r]
        if shares:
            ratios[name] = statistics.median(shares)
    requests = {
        mode: request_overheads(runs[0])
        for mode in ("unified", "unified_incremental")
        if (runs := [r[mode] for r in rounds if mode in r])
    }
    if "unified" in requests:
        ratios["unified requests/page walk"] = (
            requests["unified"]["counted"] / requests["unified"]["page_walk"]
        )
    summary = {"pos": opts.pos, "repeat": opts.repeat, "modes": table, "ratios": ratios}
    if requests:
        summary["unified_requests"] = requests
    if any(m in table for m in UNIFIED_MODES):
        summary["unified_connection"] = UNIFIED_CONNECTION_NOTE
    return summary


UNIFIED_CONNECTION_NOTE = (
    f"unified modes read connection {BENCH_CONNECTION!r} as an {UNIFIED_FAMILY.upper()} "
    f"connection (/api/{UNIFIED_FAMILY}/...: all six entities, the same records v1 reads), "
    f"per_page {UNIFIED_PER_PAGE}"
)


def request_overheads(run: dict[str, Any]) -> dict[str, Any]:
    """A unified makini run's requests by kind, against a `page += 1` walk of its listings.

    Returns:
        `counted` (every request, by `RequestCounter`), `sandbox_requests` (the sandbox's
        count), `page_walk` (what a `page += 1` walk of the same listings sends), `extra`
        (counted - page_walk), `listing_extra` (listing pages and tie walks beyond the page
        walk: what exactness costs), `delete_detection`, `setup`, `kinds` (also
        `kinds_by_entity`), and the source's own `delete_requests` and `deletes_found`.
    """
    kinds = run["request_kinds"]
    counted = sum(kinds.values())

    def total(names: tuple[str, ...]) -> int:
        return sum(kinds.get(name, 0) for name in names)

    return {
        "counted": counted,
        "source_requests": run["requests"],
        "sandbox_requests": run["sandbox_requests"],
        "page_walk": run["page_walk_requests"],
        "extra": counted - run["page_walk_requests"],
        "listing_extra": total(LISTING_KINDS) - run["page_walk_requests"],
        "delete_detection": total(DELETE_KINDS),
        "setup": total(SETUP_KINDS),
        "kinds": dict(sorted(kinds.items(), key=lambda kv: -kv[1])),
        "kinds_by_entity": run["request_kinds_by_entity"],
        "delete_requests": run["delete_requests"],
        "deletes_found": {t: n for t, n in run["deletes_found"].items() if n},
    }


def print_table(summary: dict[str, Any], opts: argparse.Namespace) -> None:
    print(
        f"\nmakini-source benchmark: {summary['pos']:,} POs, median of {summary['repeat']} run(s)"
    )
    print(
        f"{'mode':<19} {'wall s':>9} {'records':>10} {'records/s':>11} {'peak RSS MB':>12} "
        f"{'CPU s':>7} {'requests':>9}  runs (wall s)"
    )
    for mode, row in summary["modes"].items():
        runs = " ".join(f"{w:.2f}" for w in row["wall_seconds_runs"])
        requests = f"{row['requests']:>9,.0f}" if "requests" in row else f"{'':>9}"
        print(
            f"{mode:<19} {row['wall_seconds']:9.2f} {row['records']:>10,} "
            f"{row['records_per_second']:>11,.0f} {row['peak_rss_mb']:>12.0f} "
            f"{row['cpu_seconds']:>7.1f} {requests}  {runs}"
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
        print(f"{name:<26} {value:.3f}")
    if "unified_connection" in summary:
        print(summary["unified_connection"])
    for mode, label in (("unified", "full sync"), ("unified_incremental", "incremental")):
        req = summary.get("unified_requests", {}).get(mode)
        if req is None:
            continue
        kinds = ", ".join(f"{k} {n}" for k, n in req["kinds"].items())
        line = (
            f"unified {label} requests: {req['counted']:,} vs a page walk's {req['page_walk']:,} "
            f"({req['extra']:+,}; listing {req['listing_extra']:+,}, delete detection "
            f"{req['delete_detection']}, setup {req['setup']}): {kinds}"
        )
        if req["deletes_found"]:
            found = ", ".join(f"{t} {n}" for t, n in req["deletes_found"].items())
            line += f"; found deleted: {found}"
        print(line)
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
