"""What `makini-pipeline run` prints after a load: rows read, requests per connection, rows in
the destination, the analytics of the demo and the spend chart."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import dlt

from makini_source.analytics import run_model
from makini_source.catalogue import load_catalogue
from makini_source.counters import connection_counters

TABLES = [table for entity in load_catalogue().values() for table in entity.tables]
# model -> (order, title) of the demo's printout
ANALYTICS = {
    "open_order_value_by_vendor": (["open_value DESC"], "Open order value by vendor (top 5)"),
    "late_deliveries_by_vendor": (
        ["late_share DESC", "lines_due DESC"],
        "Late deliveries by vendor (top 5)",
    ),
    "spend_by_month": (
        ["order_month DESC", "net_spend DESC"],
        "Spend by month and currency (latest 5)",
    ),
    "received_vs_ordered": (["ordered_quantity DESC"], "Received vs ordered by material (top 5)"),
}


def print_run_summary(source: Any, elapsed: float) -> None:
    """Rows read per table and connection in this run, with request figures."""
    counters = connection_counters(source)
    print(f"\nRun finished in {elapsed:.1f}s. Rows read this run:")
    print(f"{'connection':<14} {'table':<28} {'rows':>10}")
    for connection in counters:
        others = sorted(table for table in connection.rows if table not in TABLES)  # raw tables
        for table in [*TABLES, *others]:
            if connection.rows.get(table):
                print(f"{connection.name:<14} {table:<28} {connection.rows[table]:>10,}")
    print(
        f"\n{'connection':<14} {'requests':>9} {'retries':>8} {'429s':>6} {'throttled':>10} "
        f"{'backoff':>8}  status"
    )
    for connection in counters:
        status = "ok" if connection.failure is None else "FAILED (see below)"
        print(
            f"{connection.name:<14} {connection.requests:>9,} {connection.retries:>8} "
            f"{connection.rate_limited:>6} {connection.throttle_seconds:>9.1f}s "
            f"{connection.backoff_seconds:>7.1f}s  {status}"
        )
    for connection in counters:
        print(f"\n{connection.name}: {connection.dialect}")
        if connection.deletes_found or connection.delete_requests:
            found = ", ".join(f"{n:,} {e}" for e, n in connection.deletes_found.items())
            print(
                f"  deletes found: {found or 'none'} ({connection.delete_requests:,} requests "
                "to find them)"
            )
        for note in connection.notes:
            print(f"  note: {note}")


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
                    "SELECT connection_id, COUNT(*), COUNT(deleted_at) FROM "
                    f"{client.make_qualified_table_name(table)} "
                    "GROUP BY connection_id ORDER BY connection_id"
                )
                or []
            )
            for connection_id, count, deleted in rows:
                print(f"{table:<28} {connection_id:<14} {count:>9,} {deleted:>8,}")


def print_analytics(pipeline: dlt.Pipeline) -> None:
    """Runs each analytics model and prints its top rows."""
    for name, (order_by, title) in ANALYTICS.items():
        columns, rows = run_model(pipeline, name, order_by=order_by, limit=5)
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
        print("--chart needs matplotlib: pip install 'makini-source[chart]'", file=sys.stderr)
        return
    _, rows = run_model(pipeline, "spend_by_month")
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
