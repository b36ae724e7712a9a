"""``makini-sandbox``: run a Makini-compatible sandbox server until Ctrl-C.

Example::

    makini-sandbox --port 8765 --seed 42 --purchase-orders 1000 --connections 3
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from types import FrameType

from .config import (
    DIALECTS,
    EXPIRES_IN_FORMATS,
    ConnectionConfig,
    SandboxConfig,
    default_connections,
)
from .server import SandboxServer


def build_config(args: argparse.Namespace) -> SandboxConfig:
    """The :class:`SandboxConfig` described by the command-line arguments."""
    connections = default_connections()[: args.connections]
    for i in range(len(connections) + 1, args.connections + 1):
        connections.append(ConnectionConfig(name=f"conn{i}", token=f"mk_test_conn{i}"))
    for conn in connections:
        conn.purchase_orders = args.purchase_orders
        for name in ("vendors", "materials", "sites", "assets", "work_orders", "extra_count"):
            value = getattr(args, name)
            if value is not None:
                setattr(conn, name, value)
        conn.lines_per_po = (args.lines_per_po[0], args.lines_per_po[1])
        conn.rate_limit = args.rate_limit
        conn.rate_window_seconds = args.rate_window
        conn.retry_after_format = args.retry_after_format
        conn.__post_init__()
    return SandboxConfig(
        seed=args.seed,
        connections=connections,
        tie_group=args.tie_group,
        page_delay_seconds=args.page_delay,
        dialect=args.dialect,
        client_id=args.client_id,
        client_secret=args.client_secret,
        connection_token_ttl_seconds=args.connection_token_ttl,
        expires_in_format=args.expires_in_format,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(prog="makini-sandbox", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--purchase-orders", type=int, default=1000, help="POs per connection")
    p.add_argument("--vendors", type=int, default=None)
    p.add_argument("--materials", type=int, default=None)
    p.add_argument("--sites", type=int, default=None)
    p.add_argument("--assets", type=int, default=None)
    p.add_argument("--work-orders", dest="work_orders", type=int, default=None)
    p.add_argument(
        "--extra-count",
        type=int,
        default=None,
        help="records of every other catalogue entity (invoices, statuses...), default 5",
    )
    p.add_argument("--lines-per-po", type=int, nargs=2, default=[1, 9], metavar=("MIN", "MAX"))
    p.add_argument(
        "--connections",
        type=int,
        default=3,
        help="number of connections: acme, globex, initech, then conn4, conn5...",
    )
    p.add_argument("--rate-limit", type=int, default=0, help="requests per window; 0 = none")
    p.add_argument("--rate-window", type=float, default=60.0, help="window in seconds")
    p.add_argument("--retry-after-format", choices=("seconds", "http-date"), default="seconds")
    p.add_argument("--tie-group", type=int, default=3)
    p.add_argument("--page-delay", type=float, default=0.0, help="seconds before each page")
    p.add_argument(
        "--prewarm", action="store_true", help="build and cache every record before serving"
    )
    p.add_argument(
        "--dialect",
        choices=DIALECTS,
        default="both",
        help="API dialects served: v1 (/api/v1), unified (/api/{erp,eam}, account API), both",
    )
    p.add_argument("--client-id", default="mk_client_demo", help="account client id")
    p.add_argument("--client-secret", default="mk_secret_demo", help="account client secret")
    p.add_argument(
        "--connection-token-ttl", type=float, default=300.0, help="minted token lifetime (s)"
    )
    p.add_argument("--expires-in-format", choices=EXPIRES_IN_FORMATS, default="seconds")
    p.add_argument("--log-level", default="warning")
    args = p.parse_args(argv)
    if args.connections < 1:
        p.error("--connections must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``makini-sandbox`` console script."""
    args = parse_args(argv)
    config = build_config(args)
    started = time.perf_counter()
    server = SandboxServer(config, host=args.host, port=args.port, log_level=args.log_level)
    if args.prewarm:
        server.store.prewarm()
    server.start()
    print(
        f"Makini sandbox listening on {server.url}  (ready in {time.perf_counter() - started:.2f} s)"
    )
    print(f"seed={config.seed}, purchase orders per connection={args.purchase_orders}")
    for conn in config.connections:
        print(
            f"  {conn.name:<10} token={conn.token}  key={conn.key}  family={conn.family}  "
            f"({conn.system})"
        )
    if config.dialect != "v1":
        print(f"account: client_id={config.client_id} client_secret={config.client_secret}")
    print(f"dialects: {config.dialect}")
    print(f"admin: {server.url}/_admin/connections   stop with Ctrl-C")
    sys.stdout.flush()

    def _stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    server.serve_forever()
    print("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
