"""`makini-pipeline`: load Makini into a dlt destination, check connections, build views.

Commands::

    makini-pipeline [run] [--demo] [--destination NAME] [--entities a,b] ...
    makini-pipeline check [--demo]          # sync status of every configured connection
    makini-pipeline views [--destination]   # create the analytics views in the dataset

`python pipelines/makini_pipeline.py` is the same program.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import dlt
from typing_extensions import Self

from makini_source import connection_failures, makini_source, source_connections
from makini_source.analytics import MODELS, create_views, run_model
from makini_source.catalogue import default_entities, load_catalogue
from makini_source.exceptions import MakiniAPIError, ReauthorizationRequired

DEMO_DATABASE = "makini_demo.duckdb"  # not named like the dataset: DuckDB would clash
DEFAULT_DATABASE = "makini_warehouse.duckdb"
DEFAULT_DATASET = "makini_data"
TABLES = [table for entity in load_catalogue().values() for table in entity.tables]
UNHEALTHY = ("error", "reauthorization_required")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="makini-pipeline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", nargs="?", default="run", choices=("run", "check", "views"))
    parser.add_argument(
        "--demo", action="store_true", help="serve a local Makini sandbox (and load into DuckDB)"
    )
    parser.add_argument(
        "--destination", default="duckdb", help="any dlt destination name (default: duckdb)"
    )
    parser.add_argument(
        "--dataset-name", default=DEFAULT_DATASET, help="destination dataset/schema"
    )
    parser.add_argument(
        "--pipeline-name", default="makini", help="dlt pipeline name (holds incremental state)"
    )
    parser.add_argument(
        "--pipelines-dir",
        default=None,
        help="where dlt keeps pipeline state (default ~/.dlt/pipelines)",
    )
    parser.add_argument(
        "--duckdb-path",
        default=None,
        help=f"DuckDB file (default {DEFAULT_DATABASE}; {DEMO_DATABASE} with --demo)",
    )
    parser.add_argument(
        "--entities",
        default=None,
        help="comma-separated entities, 'all', or a family ('erp:*'); default: "
        + ", ".join(entity.name for entity in default_entities()),
    )
    parser.add_argument("--start-date", default=None, help="first run's lower bound of updatedAt")
    parser.add_argument(
        "--end-date", default=None, help="bounded backfill's upper bound; leaves state alone"
    )
    parser.add_argument("--hard-delete", action="store_true", help="delete rows of deleted records")
    parser.add_argument(
        "--page-size", type=int, default=None, help="records per request (capped per entity)"
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress lines while extracting"
    )
    parser.add_argument(
        "--views", action="store_true", help="after loading, create the analytics views"
    )
    parser.add_argument(
        "--chart",
        nargs="?",
        const="makini_spend_by_month.png",
        default=None,
        help="after loading, render spend by month as a PNG (default makini_spend_by_month.png)",
    )
    parser.add_argument(
        "--demo-purchase-orders", type=int, default=200, help="POs per demo connection"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = parse_args(argv)
    with ExitStack() as stack:
        source_kwargs = _source_kwargs(args)
        if args.demo:
            server = stack.enter_context(_demo_sandbox(args.demo_purchase_orders))
            source_kwargs.update(base_url=server.url, connections=server.tokens)
            print(f"Makini sandbox serving {len(server.tokens)} connections at {server.url}")
        if args.command == "check":
            return check(source_kwargs)
        pipeline = _pipeline(args)
        if args.command == "views":
            with pipeline.sql_client() as client:
                for view in create_views(client).values():
                    print(f"created view {view}")
            return 0
        return run(args, pipeline, source_kwargs)
    return 0


def run(args: argparse.Namespace, pipeline: dlt.Pipeline, source_kwargs: dict[str, Any]) -> int:
    """Loads once; prints progress, a summary, and (demo) the analytics. Returns the exit code."""
    started = time.monotonic()
    if pipeline.has_pending_data:
        # an earlier run was interrupted after extracting: finish its packages first, or
        # dlt would load only those and ignore this run's data
        print("Finishing load packages left by an interrupted run...")
        pipeline.run()
    source = makini_source(**source_kwargs)
    with Progress(source, enabled=not args.no_progress):
        info = pipeline.run(source, loader_file_format="parquet")
    elapsed = time.monotonic() - started
    print(info)
    print_run_summary(source, elapsed)
    print_destination_counts(pipeline)
    if args.views or args.demo:
        with pipeline.sql_client() as client:
            create_views(client)
        print(f"\nAnalytics views created in {args.dataset_name}: {', '.join(MODELS)}")
    if args.demo:
        print_analytics(pipeline)
    if args.chart:
        render_spend_chart(pipeline, args.chart)
    failures = connection_failures(source)
    if failures:
        print(f"\n{len(failures)} connection(s) failed; the others were loaded:", file=sys.stderr)
        for name, error in sorted(failures.items()):
            print(f"  {name}: {error}", file=sys.stderr)
        return 2
    return 0


def check(source_kwargs: dict[str, Any]) -> int:
    """Prints the sync status of every configured connection; 1 if any is unhealthy."""
    source = makini_source(**source_kwargs)
    unhealthy = 0
    print(
        f"{'connection':<14} {'dialect':<12} {'status':<24} {'system':<18} {'complete until':<28} "
        f"{'reauth':<6}"
    )
    for connection in source_connections(source):
        try:
            dialect, point = connection.resolve()
            reauth = point.state == "reauthorization_required"
            row = (
                dialect.name + (f"/{dialect.family}" if dialect.family else ""),
                point.reported or "?",
                point.system or "?",
                point.complete_until or "not complete",
                "yes" if reauth else "no",
            )
            unhealthy += point.state in UNHEALTHY
        except ReauthorizationRequired:
            row = ("?", "token rejected (401)", "?", "?", "yes")
            unhealthy += 1
        except MakiniAPIError as exc:
            row = ("?", f"unreachable ({exc.status or exc.code or 'network'})", "?", "?", "?")
            unhealthy += 1
        finally:
            connection.client.close()
        print(
            f"{connection.name:<14} {row[0]:<12} {row[1]:<24} {row[2]:<18} {row[3]:<28} {row[4]:<6}"
        )
    if unhealthy:
        print(f"\n{unhealthy} connection(s) unhealthy", file=sys.stderr)
        return 1
    return 0


class Progress:
    """Prints records per table, requests, retries and throttling while a run extracts."""

    def __init__(self, source: Any, enabled: bool = True, interval: float | None = None) -> None:
        self._connections = source_connections(source)
        self._enabled = enabled
        self._tty = sys.stderr.isatty()
        self._interval = interval or (1.0 if self._tty else 10.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="makini-progress", daemon=True)
        self._started = time.monotonic()

    def __enter__(self) -> Self:
        if self._enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
            if self._tty:
                sys.stderr.write("\n")

    def line(self) -> str:
        """One status line."""
        rows: dict[str, int] = {}
        requests = retries = limited = 0
        throttled = 0.0
        for connection in self._connections:
            for table, count in list(connection.rows.items()):
                rows[table] = rows.get(table, 0) + count
            stats = connection.client.stats
            requests += stats.requests
            retries += stats.retries
            limited += stats.rate_limited
            throttled += stats.throttle_seconds
        tables = " ".join(f"{table}={count:,}" for table, count in rows.items()) or "starting"
        return (
            f"[{time.monotonic() - self._started:6.1f}s] {tables} | requests={requests:,} "
            f"retries={retries} 429s={limited} throttled={throttled:.1f}s"
        )

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            if self._tty:
                sys.stderr.write("\r" + self.line()[:200].ljust(120))
            else:
                sys.stderr.write(self.line() + "\n")
            sys.stderr.flush()


def print_run_summary(source: Any, elapsed: float) -> None:
    """Rows read per table and connection in this run, with request figures."""
    connections = source_connections(source)
    print(f"\nRun finished in {elapsed:.1f}s. Rows read this run:")
    print(f"{'connection':<14} {'table':<28} {'rows':>10}")
    for connection in connections:
        for table in TABLES:
            if connection.rows.get(table):
                print(f"{connection.name:<14} {table:<28} {connection.rows[table]:>10,}")
    print(
        f"\n{'connection':<14} {'requests':>9} {'retries':>8} {'429s':>6} {'throttled':>10}  status"
    )
    for connection in connections:
        stats = connection.client.stats
        failure = "ok" if connection.failure is None else "FAILED (see below)"
        print(
            f"{connection.name:<14} {stats.requests:>9,} {stats.retries:>8} {stats.rate_limited:>6} "
            f"{stats.throttle_seconds:>9.1f}s  {failure}"
        )
    for connection in connections:
        for note in connection.notes:
            print(f"note: {connection.name}: {note}")


def print_destination_counts(pipeline: dlt.Pipeline) -> None:
    """Rows per table and connection as they now stand in the destination."""
    existing = set(pipeline.default_schema.data_table_names())
    with pipeline.sql_client() as client:
        print(f"\nIn the destination ({pipeline.dataset_name}):")
        print(f"{'table':<28} {'connection':<14} {'rows':>9} {'deleted':>8}")
        for table in TABLES:
            if table not in existing:
                continue
            rows = (
                client.execute_sql(
                    f"SELECT connection_id, COUNT(*), COUNT(deleted_at) FROM {client.make_qualified_table_name(table)} "
                    "GROUP BY connection_id ORDER BY connection_id"
                )
                or []
            )
            for connection_id, count, deleted in rows:
                print(f"{table:<28} {connection_id:<14} {count:>9,} {deleted:>8,}")


def print_analytics(pipeline: dlt.Pipeline) -> None:
    """Runs each analytics model and prints its top rows."""
    queries = {
        "open_order_value_by_vendor": ("open_value DESC", "Open order value by vendor (top 5)"),
        "late_deliveries_by_vendor": (
            "late_share DESC, lines_due DESC",
            "Late deliveries by vendor (top 5)",
        ),
        "spend_by_month": (
            "order_month DESC, net_spend DESC",
            "Spend by month and currency (latest 5)",
        ),
        "received_vs_ordered": ("ordered_quantity DESC", "Received vs ordered by material (top 5)"),
    }
    with pipeline.sql_client() as client:
        for name, (order_by, title) in queries.items():
            columns, rows = run_model(client, name, order_by=order_by, limit=5)
            print(f"\n{title}  [view {name}]")
            print("  " + " | ".join(columns))
            for row in rows:
                print("  " + " | ".join(_fmt(v) for v in row))


def render_spend_chart(pipeline: dlt.Pipeline, path: str) -> None:
    """Renders net spend by order month (one line per currency) to a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("--chart needs matplotlib: pip install -e '.[chart]'", file=sys.stderr)
        return
    with pipeline.sql_client() as client:
        _, rows = run_model(client, "spend_by_month")
    series: dict[str, dict[Any, float]] = {}
    for _, month, currency, _, spend in rows:
        by_month = series.setdefault(str(currency), {})
        by_month[month] = by_month.get(month, 0.0) + float(spend or 0)
    fig, ax = plt.subplots(figsize=(10, 5))
    for currency, by_month in sorted(series.items()):
        months = sorted(by_month)
        ax.plot(months, [by_month[m] / 1e6 for m in months], marker="o", label=currency)
    ax.set_title("Net purchase order spend by month (all connections)")
    ax.set_ylabel("net spend (millions, order currency)")
    ax.legend(title="currency")
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"\nChart written to {Path(path).resolve()}")


def _fmt(value: Any) -> str:
    if hasattr(value, "quantize"):
        return f"{value:,.2f}"
    if isinstance(value, float):
        return f"{value:.3f}"
    if hasattr(value, "strftime"):
        return value.strftime("%Y-%m")
    return str(value)


def _source_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kwargs = {
        "entities": args.entities.split(",") if args.entities else None,
        "start_date": args.start_date,
        "end_date": args.end_date,
        "hard_delete": True if args.hard_delete else None,
        "page_size": args.page_size,
    }
    return {k: v for k, v in kwargs.items() if v is not None}


def _pipeline(args: argparse.Namespace) -> dlt.Pipeline:
    destination: Any = args.destination
    if args.destination == "duckdb":
        path = args.duckdb_path or (DEMO_DATABASE if args.demo else DEFAULT_DATABASE)
        destination = dlt.destinations.duckdb(str(Path(path).resolve()))
    return dlt.pipeline(
        pipeline_name=args.pipeline_name + ("_demo" if args.demo else ""),
        destination=destination,
        dataset_name=args.dataset_name,
        pipelines_dir=args.pipelines_dir,
    )


def _demo_sandbox(purchase_orders: int) -> Any:
    try:
        from makini_sandbox import SandboxConfig, SandboxServer, default_connections
    except ImportError:
        sys.exit("--demo needs the sandbox: pip install -e '.[demo]'")
    connections = default_connections()
    for connection in connections:
        connection.purchase_orders = purchase_orders
    return SandboxServer(SandboxConfig(connections=connections))
