"""Analytics SQL over the loaded tables: the questions people ask of purchase orders.

Each `.sql` file beside this module is one model, a SELECT written once in DuckDB's SQL over the
bare table names. sqlglot (which dlt depends on) renders it for the destination's dialect
(`DATE_TRUNC('month', d)` becomes BigQuery's `DATE_TRUNC(d, MONTH)`, and so on) with the tables
qualified by the destination's dataset, so the models can be created as views in any dataset.

Months are those of the calendar dates Makini gives (`orderDate`), in any session time zone:
a date-only column is DATE, or, in datasets loaded before it was, a timestamp at midnight UTC;
such a timestamp is read in UTC (`AT TIME ZONE 'UTC'`) before it becomes a date, because the
session zone (New York, or Snowflake's default) would otherwise move it to the previous day.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from importlib import resources
from typing import Any

import dlt
import sqlglot
from sqlglot import exp

MODELS = (
    "open_order_value_by_vendor",
    "late_deliveries_by_vendor",
    "spend_by_month",
    "received_vs_ordered",
)
TABLES = ("purchase_orders", "purchase_order_line_items", "vendors", "materials")
SOURCE_DIALECT = "duckdb"  # the dialect the .sql files are written in
DATE_ONLY_COLUMNS = frozenset({("purchase_orders", "order_date")})


def model_select(
    name: str,
    qualify: Callable[[str], exp.Table] = exp.to_table,
    utc_timestamp_columns: Collection[tuple[str, str]] = (),
) -> exp.Select:
    """The SELECT of model `name` as a sqlglot expression.

    Args:
        name: One of `MODELS`.
        qualify: Table name -> the table as the destination names it (dataset, catalog).
        utc_timestamp_columns: (table, column) pairs of date-only fields stored as timestamps;
            they are read in UTC (see the module docstring).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    text = resources.files(__package__).joinpath(f"{name}.sql").read_text()
    select = sqlglot.parse_one(text, read=SOURCE_DIALECT)
    assert isinstance(select, exp.Select)
    aliases = {}
    for table in list(select.find_all(exp.Table)):
        if table.name in TABLES and not table.args.get("db"):
            aliases[table.alias_or_name] = table.name
            qualified = qualify(table.name)
            qualified.set("alias", table.args.get("alias"))
            table.replace(qualified)
    for column in list(select.find_all(exp.Column)):
        if (aliases.get(column.table), column.name) in utc_timestamp_columns:
            column.replace(exp.AtTimeZone(this=column.copy(), zone=exp.Literal.string("UTC")))
    return select


def model_sql(
    name: str,
    dialect: str,
    qualify: Callable[[str], exp.Table] = exp.to_table,
    utc_timestamp_columns: Collection[tuple[str, str]] = (),
) -> str:
    """The SELECT of model `name` rendered for a sqlglot `dialect` (see `model_select`)."""
    return model_select(name, qualify, utc_timestamp_columns).sql(dialect=dialect, pretty=True)


def view_sql(
    name: str,
    dialect: str,
    qualify: Callable[[str], exp.Table] = exp.to_table,
    utc_timestamp_columns: Collection[tuple[str, str]] = (),
) -> str:
    """`CREATE OR REPLACE VIEW <dataset>.<name> AS <model>` for a sqlglot `dialect`."""
    create = exp.Create(
        this=qualify(name),
        kind="VIEW",
        replace=True,
        expression=model_select(name, qualify, utc_timestamp_columns),
    )
    return create.sql(dialect=dialect, pretty=True)


def create_views(pipeline: dlt.Pipeline) -> dict[str, str]:
    """Creates (or replaces) one view per model in the pipeline's dataset.

    Returns:
        Model name -> qualified view name.
    """
    dialect, utc_columns = _destination_dialect(pipeline), utc_timestamp_columns(pipeline)
    created = {}
    with pipeline.sql_client() as client:
        qualify = _qualifier(client, dialect)
        for name in MODELS:
            sql = view_sql(name, dialect, qualify, utc_columns)
            try:
                client.execute_sql(sql)
            except Exception:  # noqa: BLE001 - e.g. Postgres: a column of the old view changed type
                drop = exp.Drop(this=qualify(name), kind="VIEW", exists=True)
                client.execute_sql(drop.sql(dialect=dialect))
                client.execute_sql(sql)
            created[name] = client.make_qualified_table_name(name)
    return created


def run_model(
    pipeline: dlt.Pipeline, name: str, order_by: Sequence[str] = (), limit: int = 0
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Runs one model against the pipeline's dataset; returns column names and rows."""
    dialect = _destination_dialect(pipeline)
    with pipeline.sql_client() as client:
        select = model_select(name, _qualifier(client, dialect), utc_timestamp_columns(pipeline))
        query = exp.select("*").from_(select.subquery("model"))
        if order_by:
            query = query.order_by(*order_by, dialect=SOURCE_DIALECT)
        if limit:
            query = query.limit(limit)
        with client.execute_query(query.sql(dialect=dialect)) as cursor:
            columns = [d[0] for d in cursor.description]
            return columns, [tuple(row) for row in cursor.fetchall()]


def utc_timestamp_columns(pipeline: dlt.Pipeline) -> set[tuple[str, str]]:
    """The date-only columns that the pipeline's schema holds as timestamps."""
    if not pipeline.default_schema_name:
        return set()
    tables = pipeline.default_schema.tables
    return {
        (table, column)
        for table, column in DATE_ONLY_COLUMNS
        if tables.get(table, {}).get("columns", {}).get(column, {}).get("data_type") == "timestamp"
    }


def _destination_dialect(pipeline: dlt.Pipeline) -> str:
    return pipeline.destination.capabilities().sqlglot_dialect or SOURCE_DIALECT


def _qualifier(client: Any, dialect: str) -> Callable[[str], exp.Table]:
    def qualify(table: str) -> exp.Table:
        return exp.to_table(client.make_qualified_table_name(table), dialect=dialect)

    return qualify
