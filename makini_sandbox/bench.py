"""Measure sandbox start-up time and page latency (``python -m makini_sandbox.bench``).

Not a test: prints figures for a connection with many purchase orders, served over real
HTTP on loopback.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import httpx

from .config import ConnectionConfig, SandboxConfig
from .server import SandboxServer


def _fmt(values: list[float]) -> str:
    qs = statistics.quantiles(values, n=20) if len(values) > 1 else values * 19
    return (
        f"median {statistics.median(values) * 1000:.1f} ms, p95 {qs[18] * 1000:.1f} ms, "
        f"max {max(values) * 1000:.1f} ms"
    )


def main(argv: list[str] | None = None) -> None:
    """Run the measurement."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--purchase-orders", type=int, default=100_000)
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--pages", type=int, default=0, help="0 = the whole listing")
    parser.add_argument("--no-prefetch", action="store_true")
    parser.add_argument(
        "--client-pause", type=float, default=0.0, help="seconds the client 'works' between pages"
    )
    parser.add_argument("--url", help="measure an already running server instead")
    parser.add_argument("--token", default="mk_test_acme", help="token for --url")
    args = parser.parse_args(argv)
    if args.url:
        _listings(args, args.url, args.token)
        return

    cfg = SandboxConfig(
        connections=[
            ConnectionConfig(name="bench", token="tok_bench", purchase_orders=args.purchase_orders)
        ]
    )
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    server = SandboxServer(cfg, prefetch=not args.no_prefetch).start()
    startup = time.perf_counter() - t0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        f"start-up ({args.purchase_orders} POs): {startup:.2f} s, "
        f"max RSS {rss0 / 1024:.0f} -> {rss1 / 1024:.0f} MiB"
    )
    try:
        _listings(args, server.url, "tok_bench")
        _server_side(server, args.limit)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(f"max RSS now {rss / 1024:.0f} MiB")
    finally:
        server.stop()


def _server_side(server: SandboxServer, limit: int) -> None:
    """Time building pages in the store, without HTTP."""
    store = server.store
    conn = next(iter(store.connections.values()))
    for label in ("cached", "uncached"):
        if label == "uncached":
            es = conn.entities["purchase-orders"]
            es.budget.used -= sum(len(b) for b in es.cache if b is not None)
            es.cache = [None] * len(es.cache)
        times = []
        cursor = None
        for _ in range(50):
            t = time.perf_counter()
            page = store.list_page(conn, "purchase-orders", cursor=cursor, limit=limit)
            times.append(time.perf_counter() - t)
            cursor = page.next_cursor
        print(f"store.list_page ({label}, limit {limit}): {_fmt(times)}")


def _listings(args: argparse.Namespace, url: str, token: str) -> None:
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    try:
        for run in ("cold", "warm"):
            latencies: list[float] = []
            nbytes = 0
            records = 0
            cursor = None
            t_start = time.perf_counter()
            while True:
                params: dict[str, str | int] = {"limit": args.limit}
                if cursor:
                    params["cursor"] = cursor
                t = time.perf_counter()
                resp = client.get("/api/v1/purchase-orders", params=params)
                latencies.append(time.perf_counter() - t)
                resp.raise_for_status()
                nbytes += len(resp.content)
                body = resp.json()
                records += len(body["data"])
                cursor = body["next_cursor"]
                if not cursor or (args.pages and len(latencies) >= args.pages):
                    break
                if args.client_pause:
                    time.sleep(args.client_pause)
            total = time.perf_counter() - t_start
            print(
                f"{run}: {len(latencies)} pages, {records} POs, {nbytes / 2**20:.0f} MiB in "
                f"{total:.1f} s (incl. client JSON parsing); page latency {_fmt(latencies)}"
            )
    finally:
        client.close()


if __name__ == "__main__":
    main()
