"""How each table merges: keys, write disposition and dlt hints, from the catalogue.

* An entity with a cursor field (`updatedAt`, or `createdAt`) merges on (`connection_id`,
  `key`), the newest version winning (`dedup_sort`); with `hard_delete`, a record carrying
  `deleted_at` deletes its row.
* An entity without one is replaced per connection on every run: the merge deletes every row
  of the connections in the load (`destination_scope`) and inserts the new ones. A marker row
  per connection (never inserted) makes a connection that now lists nothing lose its rows too.
  Raw tables (`raw_tables.py`) load the same way.
* A child table (a nested list) merges per parent: every loaded parent replaces all of its
  children (the destination scope is an equi-join on the parent key, which every destination
  can hash-join; dlt's `merge_key` would compile to `primary key OR merge key`, which DuckDB
  cannot: a minute per incremental run at 500k lines). Children are deduplicated on
  (`connection_id`, parent key, identity), the newest parent version winning; marker rows
  (a parent without children, children of a superseded version) are never inserted.
"""

from __future__ import annotations

from typing import Any

import dlt

from makini_source.catalogue import Child, Entity
from makini_source.settings import CONNECTION_COLUMN, CUSTOM_FIELD_COLUMNS_TABLE, MARKER_COLUMN


def _not_null_text() -> dict[str, Any]:
    # a new dict for every column: dlt writes the column's name into it
    return {"data_type": "text", "nullable": False}


def replaced_per_connection(entity: Entity) -> bool:
    """Whether the entity is reloaded whole on every run (it has no time to follow)."""
    return entity.cursor_field is None or entity.primary_key is None


def cursor_column(entity: Entity) -> str | None:
    """The column of the entity's cursor field (`updated_at`, `created_at`), if it has one."""
    if entity.cursor_field is None:
        return None
    return "updated_at" if entity.cursor_field == "updatedAt" else "created_at"


# the merge of a table replaced per connection deletes every row of the connections loaded
_CONNECTIONS_IN_LOAD = (
    f"{{table}}.{CONNECTION_COLUMN} IN (SELECT s.{CONNECTION_COLUMN} FROM {{staging_table}} AS s)"
)


def replaced_table_hints(table: str, columns: dict[str, Any] | None = None, **hints: Any) -> Any:
    """Hints of a table whose rows are replaced per connection on every run (an entity
    without a time, a raw table): a marker row per connection, never inserted, makes a
    connection that now has no rows lose its old ones too. `columns`: more column hints."""
    all_columns: dict[str, Any] = {
        CONNECTION_COLUMN: _not_null_text(),
        MARKER_COLUMN: {"data_type": "bool", "hard_delete": True},
        **(columns or {}),
    }
    return dlt.mark.make_hints(
        table_name=table,
        write_disposition={
            "disposition": "merge",
            "strategy": "delete-insert",
            "destination_scope": _CONNECTIONS_IN_LOAD,
        },
        columns=all_columns,
        **hints,
    )


def main_hints(entity: Entity, hard_delete: bool) -> Any:
    """Hints of an entity's own table."""
    if replaced_per_connection(entity):
        return replaced_table_hints(entity.table, file_format="parquet")
    columns: dict[str, Any] = {CONNECTION_COLUMN: _not_null_text()}
    columns["key"] = _not_null_text()
    columns[str(cursor_column(entity))] = {"dedup_sort": "desc"}
    if hard_delete:
        # tombstones (v1), soft deletes and deletes found by a run (unified) all set it
        columns["deleted_at"] = {"hard_delete": True}
    return dlt.mark.make_hints(
        table_name=entity.table,
        write_disposition={"disposition": "merge", "strategy": "delete-insert"},
        primary_key=(CONNECTION_COLUMN, "key"),
        columns=columns,
        file_format="parquet",
    )


def child_hints(entity: Entity, child: Child) -> Any:
    """Hints of a child table: each loaded parent replaces all of its children."""
    if replaced_per_connection(entity):
        scope = _CONNECTIONS_IN_LOAD
    else:
        scope = (
            f"EXISTS (SELECT 1 FROM {{staging_table}} AS s"
            f" WHERE s.{CONNECTION_COLUMN} = {{table}}.{CONNECTION_COLUMN}"
            f" AND s.{child.parent_key_column} = {{table}}.{child.parent_key_column})"
        )
    columns: dict[str, Any] = {
        CONNECTION_COLUMN: _not_null_text(),
        child.parent_key_column: _not_null_text(),
        MARKER_COLUMN: {"data_type": "bool", "hard_delete": True},
    }
    if child.identity == "key":
        columns["key"] = _not_null_text()
    if child.parent_version_column:
        columns[child.parent_version_column] = {"dedup_sort": "desc"}
    return dlt.mark.make_hints(
        table_name=child.table,
        write_disposition={
            "disposition": "merge",
            "strategy": "delete-insert",
            "destination_scope": scope,
        },
        primary_key=(CONNECTION_COLUMN, child.parent_key_column, child.identity_column),
        columns=columns,
        file_format="parquet",
    )


def custom_field_columns_hints() -> Any:
    """Hints of the table that says which column each custom field landed in, per connection:
    one row per (connection, table, custom field name), written by the run that first reads
    the field (`reading.listed_custom_fields`)."""
    columns: dict[str, Any] = {
        CONNECTION_COLUMN: _not_null_text(),
        "table_name": _not_null_text(),
        "name": _not_null_text(),
    }
    return dlt.mark.make_hints(
        table_name=CUSTOM_FIELD_COLUMNS_TABLE,
        write_disposition={"disposition": "merge", "strategy": "delete-insert"},
        primary_key=(CONNECTION_COLUMN, "table_name", "name"),
        columns=columns,
        file_format="parquet",
    )
