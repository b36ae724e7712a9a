"""Analytics SQL over the loaded tables: the questions people ask of purchase orders.

Each `.sql` file beside this module is one model, written in SQL that DuckDB, Postgres and
Snowflake all run (BigQuery needs `DATE_TRUNC(order_date, MONTH)` in `spend_by_month`).
Table names are placeholders (`{purchase_orders}`) filled with the destination's qualified
names, so the models can be created as views in any dataset.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

MODELS = (
    "open_order_value_by_vendor",
    "late_deliveries_by_vendor",
    "spend_by_month",
    "received_vs_ordered",
)
TABLES = ("purchase_orders", "purchase_order_line_items", "vendors", "materials")


def model_sql(name: str, qualify: Any) -> str:
    """The SELECT of model `name`, with table names qualified by `qualify(table)`."""
    text = resources.files(__package__).joinpath(f"{name}.sql").read_text()
    return text.format(**{table: qualify(table) for table in TABLES})


def run_model(
    client: Any, name: str, order_by: str = "", limit: int = 0
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Runs one model through a dlt sql client; returns column names and rows."""
    sql = f"SELECT * FROM ({model_sql(name, client.make_qualified_table_name)}) AS model"
    if order_by:
        sql += f" ORDER BY {order_by}"
    if limit:
        sql += f" LIMIT {limit}"
    with client.execute_query(sql) as cursor:
        columns = [d[0] for d in cursor.description]
        return columns, [tuple(row) for row in cursor.fetchall()]


def create_views(client: Any) -> dict[str, str]:
    """Creates (or replaces) one view per model in the pipeline's dataset.

    Returns:
        Model name -> qualified view name.
    """
    created = {}
    for name in MODELS:
        view = client.make_qualified_table_name(name)
        client.execute_sql(
            f"CREATE OR REPLACE VIEW {view} AS {model_sql(name, client.make_qualified_table_name)}"
        )
        created[name] = view
    return created
