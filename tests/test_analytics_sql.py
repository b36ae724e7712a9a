"""The analytics views: written once, rendered per destination dialect with sqlglot.

Offline for BigQuery and Snowflake: every model renders, parses back in that dialect, and
references only columns the loaded schema has (from a load package normalized for that
destination). For real on DuckDB and Postgres: `spend_by_month` gives the API's months in any
session time zone, with `order_date` stored as a UTC timestamp (datasets loaded so far) or as a
DATE.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import dlt
import pytest
import sqlglot
from conftest import Loader, Sandbox, small_connections
from sqlglot import exp
from sqlglot.errors import ErrorLevel
from sqlglot.optimizer.qualify import qualify
from test_destinations import normalized_package

from makini_sandbox import SandboxConfig
from makini_source.analytics import MODELS, create_views, model_select, view_sql

UTC_ORDER_DATE = {("purchase_orders", "order_date")}
SESSION_ZONES = ("America/New_York", "Asia/Tokyo")


def dataset_table(table: str) -> exp.Table:
    return exp.to_table(f"makini_data.{table}")


@pytest.mark.parametrize("dialect", ["bigquery", "snowflake"])
def test_views_render_for_warehouses_and_use_only_loaded_columns(
    dialect: str, sandbox_factory: Any, tmp_path: Path
) -> None:
    sandbox = sandbox_factory(SandboxConfig(connections=small_connections(8)))
    pipeline, _ = normalized_package(getattr(dlt.destinations, dialect)(), sandbox, tmp_path)
    schema: dict[str, object] = {
        "makini_data": {
            name: {column: "TEXT" for column in table["columns"]}
            for name, table in pipeline.default_schema.tables.items()
        }
    }
    for name in MODELS:
        for utc_columns in (set(), UTC_ORDER_DATE):
            sql = view_sql(name, dialect, dataset_table, utc_columns)
            parsed = sqlglot.parse_one(sql, read=dialect, error_level=ErrorLevel.RAISE)
            assert isinstance(parsed, exp.Create) and parsed.kind == "VIEW"
            select = parsed.expression
            # every column exists in the tables as loaded (raises on an unknown one)
            qualify(select.copy(), schema=schema, dialect=dialect, validate_qualify_columns=True)
            if name == "spend_by_month":
                month = select.selects[1].unalias().sql(dialect=dialect)
                if dialect == "bigquery":
                    assert month.startswith("CAST(DATE_TRUNC(") and month.endswith(
                        ", MONTH) AS DATE)"
                    ), month
                    assert "'month'" not in sql.lower() and "TIMESTAMP_TRUNC" not in sql
                else:
                    assert "DATE_TRUNC('MONTH', " in month, month
                if utc_columns:  # a timestamp column is read in UTC before it becomes a date
                    assert (
                        "DATETIME(po.order_date, 'UTC')"
                        if dialect == "bigquery"
                        else "CONVERT_TIMEZONE('UTC', po.order_date)"
                    ) in month, month


def test_models_are_one_select_over_the_bare_tables() -> None:
    for name in MODELS:
        select = model_select(name)
        tables = {table.name for table in select.find_all(exp.Table)}
        assert tables <= {"purchase_orders", "purchase_order_line_items", "vendors", "materials"}
    with pytest.raises(ValueError, match="unknown model"):
        model_select("spend_by_week")


def expected_spend(sandbox: Sandbox) -> dict[tuple[str, str, str], tuple[int, Decimal]]:
    """(connection, YYYY-MM, currency) -> (orders, net spend), from the API's records."""
    spend: dict[tuple[str, str, str], list[Any]] = defaultdict(lambda: [0, Decimal(0)])
    for (connection, _), po in sandbox.snapshot("purchase_orders").items():
        if po["deletedAt"] or po["statusKey"] in ("cancelled", "draft") or not po["orderDate"]:
            continue
        bucket = spend[(connection, po["orderDate"][:7], po["currencyKey"])]
        bucket[0] += 1
        bucket[1] += Decimal(po["totalNetValue"] or 0)
    return {key: (orders, total) for key, (orders, total) in spend.items()}


@pytest.mark.postgres
def test_spend_by_month_is_the_same_in_every_session_time_zone(
    loader: Loader, sandbox: Sandbox
) -> None:
    # orders on the first and the last day of a month: a session zone west of UTC moves a
    # midnight-UTC timestamp to the previous day, one east of it leaves it; a date stays put
    live = [
        po
        for po in sandbox.records("purchase_orders", "acme", include_deleted=False)
        if po["statusKey"] not in ("cancelled", "draft")
    ]
    for po, day in zip(live, ("2024-12-01", "2024-11-30", "2025-01-01")):
        sandbox.put_record("acme", "purchase-orders", po["key"], {"orderDate": day})
    sandbox.sync_all()
    loader.run()
    expected = expected_spend(sandbox)
    assert ("acme", "2024-11", live[1]["currencyKey"]) in expected

    # order_date as loaded so far: a timestamp at midnight UTC
    create_views(loader.pipeline)
    assert_spend_in_every_zone(loader, expected)

    # order_date as a DATE (as the converter will store it), views rendered for it
    dialect = loader.pipeline.destination.capabilities().sqlglot_dialect or "duckdb"
    with loader.pipeline.sql_client() as client:
        for name in MODELS:  # Postgres alters no column a view depends on
            client.execute_sql(f"DROP VIEW {client.make_qualified_table_name(name)}")
        client.execute_sql(
            f"ALTER TABLE {client.make_qualified_table_name('purchase_orders')} ALTER COLUMN "
            "order_date TYPE DATE USING CAST(order_date AT TIME ZONE 'UTC' AS DATE)"
        )
        for name in MODELS:
            client.execute_sql(
                view_sql(
                    name,
                    dialect,
                    lambda t: exp.to_table(client.make_qualified_table_name(t), dialect=dialect),
                )
            )
    assert_spend_in_every_zone(loader, expected)


def assert_spend_in_every_zone(
    loader: Loader, expected: dict[tuple[str, str, str], tuple[int, Decimal]]
) -> None:
    view = loader.table("spend_by_month")
    for zone in ("UTC", *SESSION_ZONES):
        with loader.pipeline.sql_client() as client:
            client.execute_sql(f"SET TimeZone = '{zone}'")
            rows = (
                client.execute_sql(
                    f"SELECT connection_id, order_month, currency_key, orders, net_spend FROM {view}"
                )
                or []
            )
        got = {
            (connection, month.isoformat()[:7], currency): (orders, spend)
            for connection, month, currency, orders, spend in rows
        }
        assert got == expected, zone
        assert all(type(row[1]).__name__ == "date" for row in rows)  # a DATE, not a timestamp
