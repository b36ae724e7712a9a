"""The unified API as the oracle of every catalogue entity, and a destination compared with it.

Every expectation comes from the catalogue (`makini_source/catalogue.json`): which tables an
entity fills, which columns they have, the type each column lands with, and the value each
record's field must have there. Nothing here repeats a list of entities, tables or columns.

The oracle reads the API with plain httpx, page by page, in the server's default order
(creation, then key: a total order, so the pages of a listing nobody changes meanwhile are
exact).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, Protocol

import dlt
import orjson
from conftest import Sandbox, parse_api_time
from dlt.common.normalizers.naming.snake_case import NamingConvention

from makini_source.catalogue import POSITION_COLUMN, Child, Entity, Field
from makini_source.hints import replaced_per_connection
from makini_source.settings import CONNECTION_COLUMN, CUSTOM_FIELDS, MARKER_COLUMN

# the DuckDB type each catalogue type lands as (decimal: settings.DECIMAL_PRECISION/SCALE)
DUCKDB_TYPES: dict[str, str] = {
    "text": "VARCHAR",
    "json": "VARCHAR",  # JSON text
    "bigint": "BIGINT",
    "double": "DOUBLE",
    "bool": "BOOLEAN",
    "decimal": "DECIMAL(38,9)",
    "timestamp": "TIMESTAMP WITH TIME ZONE",
    "date": "DATE",
}
_NAMING = NamingConvention()


def column_name(path: Iterable[str]) -> str:
    """A field's column: dlt's snake_case of each step, joined by `__`."""
    return "__".join(_NAMING.normalize_identifier(part) for part in path)


# --- declared columns and their types ------------------------------------------------------


def declared_columns(fields: Iterable[Field], prefix: tuple[str, ...] = ()) -> dict[str, str]:
    """Column -> catalogue type of every declared leaf (open objects have no declared columns:
    theirs come from the keys that arrive)."""
    columns: dict[str, str] = {}
    for item in fields:
        path = prefix + (item.name,)
        if item.type == "object":
            if item.fields and not item.open:
                columns.update(declared_columns(item.fields, path))
        else:
            columns[column_name(path)] = item.type
    return columns


def expected_table_types(entity: Entity) -> dict[str, dict[str, str]]:
    """Table -> column -> DuckDB type of every column the catalogue declares for `entity`,
    the source's own columns included."""
    main = {CONNECTION_COLUMN: "text", **declared_columns(entity.fields), "deleted_at": "timestamp"}
    tables = {entity.table: main}
    for child in entity.children:
        columns = {CONNECTION_COLUMN: "text", child.parent_key_column: "text"}
        if child.parent_version_column:
            columns[child.parent_version_column] = "timestamp"
        if child.identity == "position":
            columns[POSITION_COLUMN] = "bigint"
        columns.update(declared_columns(child.fields))
        columns["deleted_at"] = "timestamp"
        tables[child.table] = columns
    return {
        table: {name: DUCKDB_TYPES[kind] for name, kind in columns.items()}
        for table, columns in tables.items()
    }


# --- the oracle --------------------------------------------------------------------------------


def families(sandbox: Sandbox) -> dict[str, str]:
    """Connection name -> its family."""
    return {c["name"]: c["profile"]["family"] for c in sandbox.admin_connections()}


def unified_records(
    sandbox: Sandbox, connection: str, family: str, entity: Entity
) -> list[dict[str, Any]]:
    """Every record the unified dialect lists now for `entity`, read with plain httpx."""
    headers = {
        "Authorization": f"Bearer {sandbox.tokens[connection]}",
        "Accept": "application/json",
    }
    # no sort: the default order (creation, then key) is total, and the oracle must not
    # need what a server may refuse (a sandbox without key queries)
    params: dict[str, Any] = {"per_page": 100}
    records: list[dict[str, Any]] = []
    page = 1
    while True:
        response = sandbox.admin.get(
            f"/api/{family}/{entity.path}", params={**params, "page": page}, headers=headers
        )
        response.raise_for_status()
        body = response.json()
        records.extend(body["data"])
        if body["meta"]["current_page"] >= body["meta"]["last_page"]:
            return records
        page += 1


# --- expected rows -------------------------------------------------------------------------


@dataclass
class Expected:
    """One row as the API says it must be: exact columns, and open objects' keys."""

    columns: dict[str, tuple[str, Any]] = field(default_factory=dict)  # name -> (kind, value)
    open: dict[str, Any] = field(default_factory=dict)  # column prefix -> key -> value


def _expect_field(row: Expected, path: tuple[str, ...], item: Field, value: Any) -> None:
    if item.type == "object":
        if item.open or not item.fields:
            row.open[column_name(path)] = value if isinstance(value, dict) else {}
            return
        for sub in item.fields:
            sub_value = value.get(sub.name) if isinstance(value, dict) else None
            _expect_field(row, path + (sub.name,), sub, sub_value)
        return
    row.columns[column_name(path)] = (item.type, value)


def expected_record(entity: Entity, record: Mapping[str, Any]) -> Expected:
    """A record's row: every declared field, `deleted_at`, and its custom fields (the unified
    dialect's extra top-level keys, which land as `custom_fields__<name>`)."""
    row = Expected()
    for item in entity.fields:
        _expect_field(row, (item.name,), item, record.get(item.name))
    row.columns["deleted_at"] = ("timestamp", record.get("deletedAt"))
    known = {item.name for item in entity.fields} | {child.field for child in entity.children}
    extra = {k: v for k, v in record.items() if k not in known}
    if extra:
        row.open[column_name([CUSTOM_FIELDS])] = extra
    return row


def expected_item(
    child: Child, parent: Mapping[str, Any], item: Mapping[str, Any], position: int
) -> Expected:
    """A child row: the parent's key (and version), the position or key, the item's fields;
    `deleted_at` its own or else its parent's."""
    row = Expected()
    row.columns[child.parent_key_column] = ("text", parent["key"])
    if child.parent_version_column:
        row.columns[child.parent_version_column] = ("timestamp", parent.get("updatedAt"))
    if child.identity == "position":
        row.columns[POSITION_COLUMN] = ("bigint", position)
    for sub in child.fields:
        _expect_field(row, (sub.name,), sub, item.get(sub.name))
    row.columns["deleted_at"] = ("timestamp", item.get("deletedAt") or parent.get("deletedAt"))
    return row


def _typed(kind: str, value: Any) -> Any:
    """An API value as the destination must hold it."""
    if value is None:
        return None
    if kind == "text":
        return value if isinstance(value, str) else orjson.dumps(value).decode()
    if kind == "json":
        # JSON text, except a string, which lands as it is (`accountKeys` of assets: a key)
        return value if isinstance(value, str) else _without_nulls(value)
    if kind == "bigint":
        return int(value)
    if kind == "double":
        return float(value)
    if kind == "decimal":
        return Decimal(str(value))
    if kind == "timestamp":
        return parse_api_time(value)
    if kind == "date":
        return date.fromisoformat(value)
    return value  # bool


def _without_nulls(value: Any) -> Any:
    """JSON lands without null members of objects (the same text whichever path read it)."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def row_problems(label: str, expected: Expected, row: Mapping[str, Any]) -> list[str]:
    """How a destination row differs from its expectation (empty: it is exact). Every column
    not expected (besides dlt's and the source's own) must be null."""
    problems = []
    accounted = {CONNECTION_COLUMN, MARKER_COLUMN}
    for name, (kind, value) in expected.columns.items():
        accounted.add(name)
        want, got = _typed(kind, value), row.get(name)
        if kind == "json" and isinstance(got, str) and not isinstance(value, str):
            got = json.loads(got)
        if name not in row or got != want or (kind == "bool" and type(got) is not type(want)):
            problems.append(f"{label}: {name} is {row.get(name, '<no column>')!r}, API {value!r}")
    for prefix, values in expected.open.items():
        for key, value in values.items():
            name = f"{prefix}__{column_name([key])}"
            candidates = [c for c in row if c == name or c.startswith(f"{name}__v_")]
            accounted.update(candidates)
            held = [row[c] for c in candidates if row[c] is not None]
            if value is None and not held:
                continue
            if len(held) != 1 or not _same_inferred(held[0], value):
                problems.append(f"{label}: {name} holds {held!r}, API {value!r}")
    for name, value in row.items():
        if name not in accounted and not name.startswith("_dlt") and value is not None:
            problems.append(f"{label}: unexpected {name} = {value!r}")
    return problems


def _same_inferred(held: Any, value: Any) -> bool:
    """A value of a column dlt typed from the data: itself, or its JSON text in a text column
    (a column other connections made text)."""
    if isinstance(value, bool) or isinstance(held, bool):
        return held is value or held == json.dumps(value)
    if isinstance(value, (int, float)) and isinstance(held, (int, float, Decimal)):
        return float(held) == float(value)
    return bool(held == value or held == json.dumps(value, ensure_ascii=False))


# --- the comparison ------------------------------------------------------------------------


class HasPipeline(Protocol):
    """A `Loader`, or anything else that holds the pipeline to read."""

    @property
    def pipeline(self) -> dlt.Pipeline: ...


def table_rows(loader: HasPipeline, table: str) -> list[dict[str, Any]]:
    """Every row of a destination table (none if it was never created)."""
    return read_tables(loader, [table])[table]


def read_tables(loader: HasPipeline, tables: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """Every row of each table (none for a table never created), through one SQL client."""
    existing = set(loader.pipeline.default_schema.data_table_names())
    result: dict[str, list[dict[str, Any]]] = {table: [] for table in tables}
    with loader.pipeline.sql_client() as client:
        for table in result:
            if table not in existing:
                continue
            qualified = client.make_qualified_table_name(table)
            with client.execute_query(f"SELECT * FROM {qualified}") as cursor:
                names = [d[0] for d in cursor.description]
                result[table] = [dict(zip(names, values)) for values in cursor.fetchall()]
    return result


def assert_catalogue_matches_api(
    loader: HasPipeline,
    sandbox: Sandbox,
    entities: Iterable[Entity],
    *,
    connections: Iterable[str] | None = None,
    hard_delete: bool = False,
) -> int:
    """The destination equals what the unified API lists now, for every entity and
    connection (of the family serving it), in every table the entity fills.

    Records the API no longer lists (deleted, they vanished) were loaded before and found
    deleted: their rows keep `deleted_at` (or are gone with `hard_delete`, or for an entity
    replaced per connection). A soft-deleted record is listed with `deletedAt`: its row has it
    too (gone with `hard_delete`), and so do its children.

    Returns:
        How many rows were compared.
    """
    entities = list(entities)
    family_of = families(sandbox)
    names = list(connections if connections is not None else sandbox.tokens)
    all_rows = read_tables(loader, [table for entity in entities for table in entity.tables])
    problems: list[str] = []
    compared = 0
    for entity in entities:
        tables = {table: all_rows[table] for table in entity.tables}
        for connection in names:
            if family_of[connection] not in entity.families:
                problems += _absent(entity, tables, connection)
                continue
            records = unified_records(sandbox, connection, family_of[connection], entity)
            found, count = _entity_problems(entity, tables, connection, records, hard_delete)
            problems += found
            compared += count
    assert not problems, "destination differs from the API:\n  " + "\n  ".join(problems[:30])
    return compared


def _absent(
    entity: Entity, tables: Mapping[str, list[dict[str, Any]]], connection: str
) -> list[str]:
    return [
        f"{table}: rows of {connection}, whose family does not serve {entity.name}"
        for table, rows in tables.items()
        if any(row[CONNECTION_COLUMN] == connection for row in rows)
    ]


def _entity_problems(
    entity: Entity,
    tables: Mapping[str, list[dict[str, Any]]],
    connection: str,
    records: list[dict[str, Any]],
    hard_delete: bool,
) -> tuple[list[str], int]:
    """Problems of one entity and connection, and how many rows were compared."""
    mine = {
        table: [row for row in rows if row[CONNECTION_COLUMN] == connection]
        for table, rows in tables.items()
    }
    kept = [r for r in records if not (hard_delete and r.get("deletedAt"))]
    label = f"{entity.table} {connection}"
    if entity.primary_key is None:
        return _unkeyed_problems(label, entity, mine[entity.table], kept), len(kept)
    problems: list[str] = []
    rows = _unique(label, mine[entity.table], lambda row: row["key"], problems)
    expected = {record["key"]: record for record in kept}
    # rows of records that vanished: found deleted (kept with deleted_at) unless replaced
    vanished = {
        key
        for key, row in rows.items()
        if key not in expected and not replaced_per_connection(entity) and not hard_delete
    }
    for key in sorted(vanished):
        if rows[key]["deleted_at"] is None:
            problems.append(f"{label} {key}: no longer listed, but not marked deleted")
    for key in sorted(set(expected) - set(rows)):
        problems.append(f"{label} {key}: missing")
    for key in sorted(set(rows) - set(expected) - vanished):
        problems.append(f"{label} {key}: extra")
    compared = 0
    for key in sorted(set(expected) & set(rows)):
        problems += row_problems(
            f"{label} {key}", expected_record(entity, expected[key]), rows[key]
        )
        compared += 1
    for child in entity.children:
        found, count = _child_problems(child, mine[child.table], kept, vanished, hard_delete)
        problems += [f"{connection} {problem}" for problem in found]
        compared += count
    return problems, compared


def _child_problems(
    child: Child,
    rows: list[dict[str, Any]],
    parents: list[dict[str, Any]],
    vanished: set[str],
    hard_delete: bool,
) -> tuple[list[str], int]:
    problems: list[str] = []
    label = child.table

    def identity(row: Mapping[str, Any]) -> tuple[Any, Any]:
        return row[child.parent_key_column], row[child.identity_column]

    got = _unique(label, rows, identity, problems)
    expected: dict[tuple[Any, Any], Expected] = {}
    for parent in parents:
        for position, item in enumerate(parent.get(child.field) or [], start=1):
            if hard_delete and (item.get("deletedAt") or parent.get("deletedAt")):
                continue
            ident = item["key"] if child.identity == "key" else position
            expected[(parent["key"], ident)] = expected_item(child, parent, item, position)
    compared = 0
    for ident in sorted(set(got) | set(expected), key=str):
        if ident not in expected:
            if ident[0] in vanished and got[ident]["deleted_at"] is not None:
                continue  # the children of a record found deleted, marked with it
            problems.append(f"{label} {ident}: extra")
        elif ident not in got:
            problems.append(f"{label} {ident}: missing")
        else:
            problems += row_problems(f"{label} {ident}", expected[ident], got[ident])
            compared += 1
    return problems, compared


def _unkeyed_problems(
    label: str, entity: Entity, rows: list[dict[str, Any]], records: list[dict[str, Any]]
) -> list[str]:
    """Records without a key: the rows must be the records, as a multiset."""

    def as_tuple(expected: Expected, row: Mapping[str, Any] | None) -> tuple[Any, ...]:
        values = []
        for name, (kind, value) in sorted(expected.columns.items()):
            if row is None:
                values.append((name, repr(_typed(kind, value))))
            else:
                held = row.get(name)
                if kind == "json" and isinstance(held, str) and held[:1] in ("[", "{"):
                    held = json.loads(held)
                values.append((name, repr(held)))
        return tuple(values)

    shape = expected_record(entity, {})  # the columns every row has
    want = Counter(as_tuple(expected_record(entity, record), None) for record in records)
    got = Counter(as_tuple(shape, row) for row in rows)
    if want == got:
        return []
    missing = list((want - got).elements())[:3]
    extra = list((got - want).elements())[:3]
    return [f"{label}: missing {missing}, extra {extra}"]


def _unique(
    label: str, rows: list[dict[str, Any]], identity: Any, problems: list[str]
) -> dict[Any, dict[str, Any]]:
    result: dict[Any, dict[str, Any]] = {}
    for row in rows:
        key = identity(row)
        if key in result:
            problems.append(f"{label}: duplicate row {key}")
        result[key] = row
    return result
