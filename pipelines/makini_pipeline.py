"""Run the Makini source into a dlt destination.

Examples::

    python pipelines/makini_pipeline.py --demo            # local sandbox -> makini_demo.duckdb
    python pipelines/makini_pipeline.py                   # configured connections -> DuckDB
    python pipelines/makini_pipeline.py --destination postgres --dataset-name makini_data
    python pipelines/makini_pipeline.py --entities purchase_orders,vendors --start-date 2024-01-01

Without `--demo` the connections come from `.dlt/secrets.toml` or the environment
(`SOURCES__MAKINI__CONNECTIONS='{"acme": "token"}'`), the destination's credentials likewise.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Dict, List, Optional

import dlt

from makini_source import connection_failures, makini_source
from makini_source.settings import ENTITIES

DEMO_DATABASE = "makini_demo.duckdb"  # not named like the dataset: DuckDB would clash
DEFAULT_DATASET = "makini_data"


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", action="store_true", help="serve a local Makini sandbox and load it into DuckDB")
    parser.add_argument("--destination", default="duckdb", help="any dlt destination name (default: duckdb)")
    parser.add_argument("--dataset-name", default=DEFAULT_DATASET, help="destination dataset/schema")
    parser.add_argument("--pipeline-name", default="makini", help="dlt pipeline name (holds incremental state)")
    parser.add_argument("--pipelines-dir", default=None, help="where dlt keeps pipeline state (default ~/.dlt/pipelines)")
    parser.add_argument("--duckdb-path", default=None, help=f"DuckDB file (default: {DEMO_DATABASE} for --demo)")
    parser.add_argument("--entities", default=None, help=f"comma-separated subset of: {', '.join(ENTITIES)}")
    parser.add_argument("--start-date", default=None, help="first run's lower bound of updatedAt")
    parser.add_argument("--end-date", default=None, help="bounded backfill's upper bound; leaves state alone")
    parser.add_argument("--hard-delete", action="store_true", help="delete rows of deleted records")
    parser.add_argument("--page-size", type=int, default=None, help="records per request (capped per entity)")
    parser.add_argument("--demo-purchase-orders", type=int, default=200, help="POs per demo connection")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    """Runs one pipeline; returns the process exit code."""
    with ExitStack() as stack:
        source_kwargs: Dict[str, Any] = {
            "entities": args.entities.split(",") if args.entities else None,
            "start_date": args.start_date,
            "end_date": args.end_date,
            "hard_delete": args.hard_delete,
            "page_size": args.page_size,
        }
        duckdb_path = args.duckdb_path
        if args.demo:
            server = stack.enter_context(_demo_sandbox(args.demo_purchase_orders))
            source_kwargs.update(base_url=server.url, connections=server.tokens)
            duckdb_path = duckdb_path or DEMO_DATABASE
            print(f"Makini sandbox serving {len(server.tokens)} connections at {server.url}")
        source_kwargs = {k: v for k, v in source_kwargs.items() if v is not None}
        destination: Any = args.destination
        if args.destination == "duckdb" and duckdb_path:
            destination = dlt.destinations.duckdb(str(Path(duckdb_path).resolve()))
        pipeline = dlt.pipeline(
            pipeline_name=args.pipeline_name + ("_demo" if args.demo else ""),
            destination=destination,
            dataset_name=args.dataset_name,
            pipelines_dir=args.pipelines_dir,
        )
        started = time.monotonic()
        if pipeline.has_pending_data:
            # an earlier run was interrupted after extracting: finish its packages first, or
            # dlt would load only those and ignore this run's data
            print("Finishing load packages left by an interrupted run...")
            pipeline.run()
        source = makini_source(**source_kwargs)
        info = pipeline.run(source, loader_file_format="parquet")
        elapsed = time.monotonic() - started
        print(info)
        print(f"\nLoaded in {elapsed:.1f}s")
        print_summary(pipeline)
        if args.demo:
            print_sample(pipeline)
        failures = connection_failures(source)
        if failures:
            print(f"\n{len(failures)} connection(s) failed; the others were loaded:", file=sys.stderr)
            for name, error in sorted(failures.items()):
                print(f"  {name}: {error}", file=sys.stderr)
            return 2
    return 0


def _demo_sandbox(purchase_orders: int) -> Any:
    try:
        from makini_sandbox import SandboxConfig, SandboxServer, default_connections
    except ImportError:
        sys.exit("--demo needs the sandbox: pip install -e '.[demo]'")
    connections = default_connections()
    for connection in connections:
        connection.purchase_orders = purchase_orders
    return SandboxServer(SandboxConfig(connections=connections))


def print_summary(pipeline: dlt.Pipeline) -> None:
    """Prints rows per table and connection as they stand in the destination."""
    tables = [spec.table for spec in ENTITIES.values()] + ["purchase_order_line_items"]
    existing = set(pipeline.default_schema.data_table_names())
    with pipeline.sql_client() as client:
        print(f"\n{'table':<28} {'connection':<12} {'rows':>8} {'deleted':>8}")
        for table in tables:
            if table not in existing:
                continue
            qualified = client.make_qualified_table_name(table)
            rows = client.execute_sql(
                f"SELECT connection_id, COUNT(*), COUNT(deleted_at) FROM {qualified} "
                "GROUP BY connection_id ORDER BY connection_id"
            )
            for connection_id, count, deleted in rows:
                print(f"{table:<28} {connection_id:<12} {count:>8} {deleted:>8}")


def print_sample(pipeline: dlt.Pipeline) -> None:
    """Prints a sample query: open order value by vendor and currency."""
    with pipeline.sql_client() as client:
        po = client.make_qualified_table_name("purchase_orders")
        lines = client.make_qualified_table_name("purchase_order_line_items")
        rows = client.execute_sql(
            f"""
            SELECT po.connection_id, po.vendor_key, po.currency_key,
                   COUNT(DISTINCT po.key) AS orders,
                   SUM((li.quantity - COALESCE(li.received_quantity, 0)) * li.price) AS open_value
            FROM {po} po JOIN {lines} li
              ON li.connection_id = po.connection_id AND li.purchase_order_key = po.key
            WHERE po.deleted_at IS NULL AND li.deleted_at IS NULL
            GROUP BY 1, 2, 3 ORDER BY open_value DESC NULLS LAST LIMIT 5
            """
        )
        print("\nSample query: open (unreceived) order value by vendor, top 5")
        print(f"{'connection':<12} {'vendor':<16} {'currency':<8} {'orders':>7} {'open value':>18}")
        for connection_id, vendor, currency, orders, open_value in rows:
            print(f"{connection_id:<12} {str(vendor):<16} {str(currency):<8} {orders:>7} {open_value!s:>18}")


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point."""
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
