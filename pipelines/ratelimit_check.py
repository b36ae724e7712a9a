"""Pacing check: how close to a connection's rate limit does a run go, and how many 429s?

Starts a Makini sandbox in-process with one rate-limited connection, loads enough pages of
vendors (small page size) into a throw-away DuckDB with the real source, and prints what the
sandbox saw: requests, 429 answers, and the request rate as a percentage of the limit.
Not a CI test: at the default 60 requests per minute and 200 pages it takes about 3.5 minutes.

    python pipelines/ratelimit_check.py                          # 60/min, >= 200 pages
    python pipelines/ratelimit_check.py --limit 10 --window 2    # any window length
    python pipelines/ratelimit_check.py --retry-after-format http-date

Exit code 0 when the run stays within the targets (at most --max-429 answers 429 and at least
--min-percent of the allowed rate), 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import dlt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's packages first

from makini_sandbox import ConnectionConfig, SandboxConfig, SandboxServer
from makini_source import makini_source


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--limit", type=int, default=60, help="requests per window (default 60)")
    parser.add_argument(
        "--window", type=float, default=60.0, help="window length in seconds (default 60)"
    )
    parser.add_argument(
        "--pages", type=int, default=200, help="vendor pages to read, at least (default 200)"
    )
    parser.add_argument("--page-size", type=int, default=2, help="records per page (default 2)")
    parser.add_argument("--retry-after-format", choices=("seconds", "http-date"), default="seconds")
    parser.add_argument(
        "--dialect",
        choices=("v1", "unified"),
        default="v1",
        help="v1 (X-RateLimit-Reset on every answer) or unified (a Unix reset on 429s only)",
    )
    parser.add_argument(
        "--max-429", type=int, default=3, help="most 429 answers accepted (default 3)"
    )
    parser.add_argument(
        "--min-percent",
        type=float,
        default=90.0,
        help="least %% of the limit accepted (default 90)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Runs the check; returns the exit code."""
    args = parse_args(argv)
    vendors = args.pages * args.page_size
    config = SandboxConfig(
        connections=[
            ConnectionConfig(
                name="paced",
                token="tok_paced",
                purchase_orders=1,
                vendors=vendors,
                materials=1,
                sites=1,
                assets=1,
                work_orders=1,
                rate_limit=args.limit,
                rate_window_seconds=args.window,
                retry_after_format=args.retry_after_format,
            )
        ]
    )
    allowed = args.limit / args.window
    print(
        f"limit {args.limit} requests per {args.window:g}s ({allowed:.3f}/s); "
        f"{vendors} vendors at {args.page_size} per page = {args.pages} pages "
        f"(expect ~{(args.pages + 2) / allowed:.0f}s)"
    )
    with SandboxServer(config) as server, tempfile.TemporaryDirectory() as workdir:
        pipeline = dlt.pipeline(
            pipeline_name="ratelimit_check",
            pipelines_dir=str(Path(workdir) / "pipelines"),
            destination=dlt.destinations.duckdb(str(Path(workdir) / "check.duckdb")),
            dataset_name="makini_data",
        )
        source = makini_source(
            base_url=server.url,
            connections=server.tokens,
            entities=["vendors"],
            page_size=args.page_size,
            dialect=args.dialect,
        )
        started = time.monotonic()
        pipeline.run(source, loader_file_format="parquet").raise_on_failed_jobs()
        elapsed = time.monotonic() - started
        stats = server.admin.stats()["connections"]["paced"]
        with pipeline.sql_client() as client:
            counted = client.execute_sql(
                f"SELECT COUNT(*) FROM {client.make_qualified_table_name('vendors')}"
            )
            rows = counted[0][0] if counted else 0
    requests = stats["requests"]
    rejected = stats["status"].get("429", 0)
    span = stats["last_request_ts"] - stats["first_request_ts"]
    # n requests span n - 1 intervals; the most a limiter can do is `limit` per window
    rate = (requests - 1) / span if span > 0 else float("inf")
    percent = 100.0 * rate / allowed
    print(f"vendors loaded:     {rows} of {vendors}")
    print(f"requests:           {requests} in {span:.1f}s (run took {elapsed:.1f}s)")
    print(f"429 answers:        {rejected}")
    print(f"request rate:       {rate:.3f}/s = {percent:.1f}% of the limit")
    ok = rows == vendors and rejected <= args.max_429 and percent >= args.min_percent
    print(
        "OK"
        if ok
        else f"FAILED: want <= {args.max_429} 429s and >= {args.min_percent:g}% of the limit"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
