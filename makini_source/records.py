"""Turns pages of Makini records into Arrow tables, one table per destination table.

Building Arrow tables per page (instead of yielding dicts through dlt's normalizer) is what
keeps large syncs fast, and it lets every field land with the type the catalogue gives it:
money as exact decimals, timestamps in UTC, date-only fields as dates. Column names follow
dlt's snake_case convention (`orderNo` -> `order_no`, `customFields.Cost Center` ->
`custom_fields__cost_center`), so the tables look exactly as dlt would have named them.

A page arrives either as Arrow records (`columnar.PageDecoder`, the fast path) or as parsed
JSON (the exact path, also taken whenever the fast path declines a page); both build the same
tables through `RecordConverter._table`. Both dialects feed this one converter: the unified
dialect's custom fields (extra top-level keys) are nested under `customFields` first, so they
make the same columns as v1's `customFields` object.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from makini_source import columnar
from makini_source.catalogue import POSITION_COLUMN, Child, Entity, Field, FieldType
from makini_source.columnar import ArrowRecords, Declined, DecodedPage
from makini_source.columns import ColumnNames
from makini_source.exceptions import ContractViolationError
from makini_source.redact import server_text, shown
from makini_source.settings import (
    CONNECTION_COLUMN,
    CUSTOM_FIELDS,
    DECIMAL_PRECISION,
    DECIMAL_SCALE,
    MARKER_COLUMN,
)

DECIMAL_TYPE = pa.decimal128(DECIMAL_PRECISION, DECIMAL_SCALE)
TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")

Path = tuple[str, ...]
_NONE_TYPE = type(None)
_INTEGER_TEXT = re.compile(r"-?\d+")
_NUMBER_TEXT = re.compile(r"-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")

# the Arrow type of each catalogue type (object and json are not columns of their own type)
ARROW_TYPES: dict[str, pa.DataType] = {
    "text": pa.string(),
    "json": pa.string(),
    "bigint": pa.int64(),
    "double": pa.float64(),
    "bool": pa.bool_(),
    "decimal": DECIMAL_TYPE,
    "timestamp": TIMESTAMP_TYPE,
    "date": pa.date32(),
}
# types whose values must be valid: an invalid one is a contract violation, never a variant
STRICT_TYPES = frozenset({"decimal", "timestamp", "date"})
# inferred columns (custom fields, fields the catalogue does not know), by dlt type and back
_INFERRED_TYPES: dict[str, pa.DataType] = {
    "text": pa.string(),
    "bigint": pa.int64(),
    "double": pa.float64(),
    "bool": pa.bool_(),
}
_DLT_TYPES: dict[pa.DataType, str] = {arrow: name for name, arrow in _INFERRED_TYPES.items()}


@dataclass
class PageTables:
    """The Arrow tables built from one page (or from pages converted together).

    Attributes:
        main: The entity's table, or None for a page without records.
        children: Child table -> its rows (marker rows included).
        live_children: Child table -> rows that are real children (not markers).
    """

    main: pa.Table | None
    children: dict[str, pa.Table] = field(default_factory=dict)
    live_children: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class TablePlan:
    """How one destination table is built from records: its declared columns and their types.

    Attributes:
        table: The destination table.
        label: The entity (or `entity.field` of a child) named in errors.
        types: Declared leaf path -> catalogue type, in column order.
        fixed: The source's own columns, which record data may never set.
    """

    table: str
    label: str
    types: dict[Path, FieldType]
    fixed: frozenset[str]

    @classmethod
    def of(cls, table: str, label: str, fields: Iterable[Field], fixed: Iterable[str]) -> TablePlan:
        # record data never sets the row marker, whatever the table
        types: dict[Path, FieldType] = {}
        _declare(fields, (), types)
        return cls(table, label, types, frozenset([*fixed, MARKER_COLUMN]))

    @property
    def leaves(self) -> frozenset[Path]:
        """The declared paths that hold a value, not an object: an object sent there is the
        value itself (kept whole, or refused), never flattened into columns of its own."""
        return frozenset(path for path, kind in self.types.items() if kind != "object")


def _declare(fields: Iterable[Field], prefix: Path, types: dict[Path, FieldType]) -> None:
    for item in fields:
        path = prefix + (item.name,)
        if item.type == "object":
            if item.open or not item.fields:
                types[path] = "object"  # its keys come from the data, at this place
            else:
                _declare(item.fields, path, types)
        else:
            types[path] = item.type


def main_plan(entity: Entity) -> TablePlan:
    """The plan of an entity's own table: `connection_id`, then the record's fields.

    Every table has `deleted_at`, also where the entity has no `deletedAt` (unified POs): the
    records a run finds deleted carry it there.
    """
    fields = list(entity.fields)
    if not any(item.name == "deletedAt" for item in fields):
        fields.append(Field("deletedAt", "timestamp"))
    return TablePlan.of(entity.table, entity.name, fields, [CONNECTION_COLUMN])


def child_plan(entity: Entity, child: Child) -> TablePlan:
    """The plan of a child table: its parent's key (and version), then the item's fields."""
    fixed = [CONNECTION_COLUMN, child.parent_key_column, MARKER_COLUMN]
    if child.identity == "position":
        fixed.append(POSITION_COLUMN)
    if child.parent_version_column:
        fixed.append(child.parent_version_column)
    fields = list(child.fields)
    if not any(item.name == "deletedAt" for item in fields):
        # children of a deleted parent carry its deletedAt, whether or not they have their own
        fields.append(Field("deletedAt", "timestamp"))
    return TablePlan.of(child.table, f"{entity.name}.{child.field}", fields, fixed)


class RecordConverter:
    """Converts one entity's records to Arrow, page by page.

    Args:
        entity: The entity being read (its catalogue entry).
        connection: The connection's name, stored in `connection_id`.
        hard_delete: Whether deleted records and children are left out (their rows are then
            deleted in the destination) instead of kept with `deleted_at`.
        custom_fields_at_top_level: The dialect sends custom fields as extra top-level keys
            (unified), not in a `customFields` object (v1).
        known_types: Column name -> dlt data type of a table, as the schema knows it.
        settled_types: The inferred column types settled so far, shared by the converters of
            every connection of a run, so a custom field gets one type in a run whichever
            connection's page comes first (dlt cannot write two types of one column to one file).
        column_names: The columns of the entity's tables, shared by the converters of every
            connection of a run (`columns.ColumnNames`).

    Attributes:
        notes: Lines for the run summary not yet taken (NUL characters removed...).
        custom_columns: (table, custom field name) -> column, of every custom field this
            connection sent, for the `custom_field_columns` table; `new_custom_columns` lists
            the ones not yet taken.
    """

    def __init__(
        self,
        entity: Entity,
        connection: str,
        hard_delete: bool = False,
        custom_fields_at_top_level: bool = False,
        known_types: Callable[[str], Mapping[str, str]] | None = None,
        settled_types: dict[tuple[str, str], pa.DataType] | None = None,
        column_names: ColumnNames | None = None,
    ) -> None:
        self.entity = entity
        self.connection = connection
        self.hard_delete = hard_delete
        self.declined_pages = 0
        self.custom_fields_at_top_level = custom_fields_at_top_level
        self._known_fields = frozenset(
            [item.name for item in entity.fields] + [c.field for c in entity.children]
        )
        self._children = {child.field for child in entity.children}
        self._plan = main_plan(entity)
        self._child_plans = [(child, child_plan(entity, child)) for child in entity.children]
        self._key_required = entity.primary_key == "key"
        self._time_field = entity.cursor_field
        self._version_field = "updatedAt" if entity.cursor_field == "updatedAt" else None
        self._names = ColumnNames() if column_names is None else column_names
        for plan in [self._plan, *(plan for _, plan in self._child_plans)]:
            self._names.declare(plan.table, plan.leaves, plan.fixed)
        self._known_types = known_types
        self._types = {} if settled_types is None else settled_types
        self.notes: list[str] = []
        self._nul_columns: set[tuple[str, str]] = set()
        self.custom_columns: dict[tuple[str, str], str] = {}
        self.new_custom_columns: list[tuple[str, str, str]] = []

    # --- pages ----------------------------------------------------------------------------

    def convert(
        self, page: DecodedPage | Sequence[Any], request_id: str | None = None
    ) -> PageTables:
        """Validates and converts one page.

        Args:
            page: The page (`DecodedPage`), or its records as parsed JSON.
            request_id: The page's request id, for errors.

        Raises:
            ContractViolationError: A record is not an object, lacks its key or cursor time,
                or holds a value that cannot be read as its field's type.
        """
        if not isinstance(page, DecodedPage):
            return self._convert_json(page, request_id)
        records = page.records
        if isinstance(records, ArrowRecords):
            try:
                return self._convert_arrow(records.records, request_id)
            except Declined:
                self.declined_pages += 1
                records = page.exact_records()
        return self._convert_json(records, request_id, page)

    def convert_pages(self, pages: Sequence[tuple[DecodedPage, str | None]]) -> list[PageTables]:
        """Converts several Arrow pages of one record type (equal struct types) at once.

        The pages' records are converted as one page (one set of pyarrow calls per column
        instead of one per page). If the Arrow path declines them together, each page is
        converted on its own, so a bad value is still reported with its page's request id.

        Returns:
            The tables: one `PageTables` for all pages, or one per page.
        """
        if len(pages) > 1:
            together = pa.concat_arrays([page.records.records for page, _ in pages])
            try:
                return [self._convert_arrow(together, None)]
            except Declined:
                pass
        return [self.convert(page, request_id) for page, request_id in pages]

    def _convert_json(
        self, records: Sequence[Any], request_id: str | None, page: DecodedPage | None = None
    ) -> PageTables:
        """`convert` for parsed JSON: the exact path."""
        if not records:
            return PageTables(None)
        for record in records:
            self._validate(record, request_id)
        try:
            return self._tables_json(records, request_id)
        except _InexactNumber:
            if page is None:
                raise ContractViolationError(
                    "a decimal came as a JSON number read as a float; its exact digits are lost",
                    **self._context(request_id),
                ) from None
            # a decimal came as a JSON number: read the page again keeping every digit
            return self._tables_json(page.exact_records(exact_numbers=True), request_id)

    def _tables_json(self, records: Sequence[dict[str, Any]], request_id: str | None) -> PageTables:
        if self.custom_fields_at_top_level:
            records = [self._nest_custom_fields(record) for record in records]
        main = self._table(
            self._plan,
            _flat_columns(records, self._children, self._plan.leaves),
            {CONNECTION_COLUMN: self._connection_column(len(records))},
            request_id,
        )
        tables = PageTables(main)
        for child, plan in self._child_plans:
            table, live = self._children_json(child, plan, records, request_id)
            tables.children[child.table] = table
            tables.live_children[child.table] = live
        return tables

    def _convert_arrow(self, records: pa.StructArray, request_id: str | None) -> PageTables:
        """`convert` for records read by `columnar.PageDecoder`; raises `Declined`."""
        if not len(records):
            return PageTables(None)
        columnar.check_records(records, self._key_required, self._time_field)
        if self.custom_fields_at_top_level:
            records = columnar.nest_fields(records, self._known_fields, CUSTOM_FIELDS)
        main = self._table(
            self._plan,
            columnar.flatten(records, tuple(self._children), leaves=self._plan.leaves),
            {CONNECTION_COLUMN: self._connection_column(len(records))},
            request_id,
        )
        tables = PageTables(main)
        parent_deleted = columnar.field_or_none(records, "deletedAt")
        if parent_deleted is None:
            parent_deleted = pa.nulls(len(records), pa.string())
        for child, plan in self._child_plans:
            rows = columnar.child_rows(
                columnar.field_or_none(records, child.field),
                parent_deleted,
                self.hard_delete,
                key_required=child.identity == "key",
            )
            columns = {} if rows.items is None else columnar.flatten(rows.items, leaves=plan.leaves)
            if child.identity == "key":
                keys = columns.get(("key",), pa.nulls(len(rows.parent), pa.string()))
                columns[("key",)] = keys.fill_null("")
            columns[("deletedAt",)] = rows.deleted_at
            fixed: dict[str, pa.Array | list[Any]] = {
                CONNECTION_COLUMN: self._connection_column(len(rows.parent)),
                child.parent_key_column: records.field("key").take(rows.parent),
            }
            if child.identity == "position":
                fixed[POSITION_COLUMN] = rows.position
            table = self._table(plan, columns, fixed, request_id)
            table = self._append_version_and_marker(
                table, child, plan, records, rows.parent, rows.is_marker, request_id
            )
            markers = pc.sum(pc.fill_null(rows.is_marker, False)).as_py() or 0
            tables.children[child.table] = table
            tables.live_children[child.table] = len(rows.parent) - markers
        return tables

    # --- validation -------------------------------------------------------------------------

    def _connection_column(self, rows: int) -> pa.Array:
        """The connection's name, `rows` times (built in Arrow: a Python list of it costs
        ~0.05 µs a row on the thread every page goes through)."""
        return pa.repeat(pa.scalar(self.connection, pa.string()), rows)

    def _context(self, request_id: str | None, entity: str | None = None) -> dict[str, Any]:
        return {
            "connection": self.connection,
            "entity": entity or self.entity.name,
            "request_id": request_id,
        }

    def _validate(self, record: Any, request_id: str | None) -> None:
        context = self._context(request_id)
        if not isinstance(record, dict):
            raise ContractViolationError("record is not a JSON object", **context)
        key = record.get("key")
        if self._key_required and (not isinstance(key, str) or not key):
            raise ContractViolationError("record has no 'key'", field="key", **context)
        time_field = self._time_field
        if time_field is not None and not isinstance(record.get(time_field), str):
            raise ContractViolationError(
                f"record {shown(key)} has no '{time_field}'", field=time_field, **context
            )

    def _nest_custom_fields(self, record: dict[str, Any]) -> dict[str, Any]:
        extra = {k: v for k, v in record.items() if k not in self._known_fields}
        if not extra:
            return record
        nested = {k: v for k, v in record.items() if k in self._known_fields}
        nested[CUSTOM_FIELDS] = {**(record.get(CUSTOM_FIELDS) or {}), **extra}
        return nested

    # --- children -----------------------------------------------------------------------------

    def _children_json(
        self,
        child: Child,
        plan: TablePlan,
        records: Sequence[Mapping[str, Any]],
        request_id: str | None,
    ) -> tuple[pa.Table, int]:
        """Rows of a child table: every current item of every record on the page.

        Each record on the page replaces all of its children in the destination (the child
        table merges on the parent's key). A record with no child left still sends one marker
        row, so that its old children are deleted; markers are never inserted.
        """
        context = self._context(request_id, plan.label)
        key_identity = child.identity == "key"
        items_out: list[Mapping[str, Any]] = []
        parents: list[int] = []
        positions: list[int] = []
        markers: list[bool | None] = []
        for index, record in enumerate(records):
            items = record.get(child.field)
            if items is None:
                items = []
            if not isinstance(items, list):
                raise ContractViolationError(
                    f"record {shown(record.get('key'))}: {child.field} is not an array",
                    field=child.field,
                    **context,
                )
            parent_deleted = record.get("deletedAt")
            emitted = 0
            if not (self.hard_delete and parent_deleted):
                for position, item in enumerate(items, start=1):
                    if not isinstance(item, dict) or (
                        key_identity and (not isinstance(item.get("key"), str) or not item["key"])
                    ):
                        what = "has no 'key'" if isinstance(item, dict) else "is not an object"
                        raise ContractViolationError(
                            f"record {shown(record.get('key'))}: an item of {child.field} {what}",
                            field=f"{child.field}.key" if isinstance(item, dict) else child.field,
                            **context,
                        )
                    own_deleted = item.get("deletedAt")
                    deleted = own_deleted or parent_deleted
                    if deleted and self.hard_delete:
                        continue
                    if deleted is not own_deleted or "deletedAt" not in item:
                        item = {**item, "deletedAt": deleted}  # a copy: the page stays as read
                    items_out.append(item)
                    positions.append(position)
                    markers.append(None)
                    emitted += 1
            if emitted == 0:
                items_out.append({"key": ""} if key_identity else {})
                positions.append(0)
                markers.append(True)
                emitted = 1
            parents.extend([index] * emitted)
        columns = _flat_columns(items_out, (), plan.leaves)
        if ("deletedAt",) not in columns:
            columns[("deletedAt",)] = [None] * len(items_out)
        parent_keys = [records[i].get("key") for i in parents]
        fixed: dict[str, list[Any] | pa.Array] = {
            CONNECTION_COLUMN: [self.connection] * len(items_out),
            child.parent_key_column: parent_keys,
        }
        if child.identity == "position":
            fixed[POSITION_COLUMN] = pa.array(positions, pa.int64())
        table = self._table(plan, columns, fixed, request_id)
        is_marker = pa.array(markers, pa.bool_())
        versions = [records[i].get("updatedAt") for i in parents]
        table = self._append_version_and_marker(
            table, child, plan, versions, None, is_marker, request_id
        )
        return table, len(items_out) - sum(1 for m in markers if m)

    def _append_version_and_marker(
        self,
        table: pa.Table,
        child: Child,
        plan: TablePlan,
        records: pa.StructArray | list[Any],
        parent: pa.Array | None,
        is_marker: pa.Array,
        request_id: str | None,
    ) -> pa.Table:
        """Adds the parent's version (the child rows' dedup order) and the marker flag."""
        if child.parent_version_column:
            if isinstance(records, pa.StructArray):
                assert parent is not None
                # the parents' versions, converted once each, then one per child row
                parents = records.field("updatedAt")
                typed = self._typed(parents, "timestamp", request_id, "updatedAt", plan.label)
                versions = typed.take(parent)
            else:
                versions = self._typed(records, "timestamp", request_id, "updatedAt", plan.label)
            table = table.append_column(child.parent_version_column, versions)
        return table.append_column(pa.field(MARKER_COLUMN, pa.bool_()), is_marker)

    # --- column building ------------------------------------------------------------------------

    def _table(
        self,
        plan: TablePlan,
        flat_columns: Mapping[Path, list[Any] | pa.Array],
        fixed: Mapping[str, list[Any] | pa.Array],
        request_id: str | None,
    ) -> pa.Table:
        """Builds one table: the fixed columns, then every declared column, then the rest.

        Declared columns come in the catalogue's order and exist even while no record carries
        a value (their type is known, and both conversion paths then make the same table);
        columns the catalogue does not know (custom fields, new fields) follow, sorted by
        name (so a table's columns do not depend on which connection's page came first).
        """
        rows = len(next(iter(fixed.values())))
        columns: dict[str, pa.Array] = {
            name: values if isinstance(values, pa.Array) else pa.array(values, pa.string())
            for name, values in fixed.items()
        }
        undeclared = sorted(path for path in flat_columns if path not in plan.types)
        for path, kind in plan.types.items():
            if kind == "object":
                # an open object: its keys become columns where it stands
                for sub in [p for p in undeclared if p[: len(path)] == path]:
                    self._add_inferred(plan, columns, sub, flat_columns[sub])
                    undeclared.remove(sub)
                if path in flat_columns:  # a scalar where an object belongs
                    self._add_inferred(plan, columns, path, flat_columns[path])
                continue
            values = flat_columns.get(path)
            if values is None:  # no record carries it: its column all the same
                columns[self._column_name(plan, path)] = pa.nulls(rows, ARROW_TYPES[kind])
                continue
            for suffix, array in self._declared(values, kind, request_id, path, plan.label):
                columns[self._column_name(plan, path) + suffix] = array
        for path in undeclared:
            self._add_inferred(plan, columns, path, flat_columns[path])
        self._remove_nul(plan, columns, request_id)
        # key columns (and a child's position, part of its primary key) are NOT NULL in the
        # dlt schema; say so in the Arrow schema too
        not_null = {CONNECTION_COLUMN, "key", POSITION_COLUMN} | {
            name for name in plan.fixed if name.endswith("_key")
        }
        schema = pa.schema(
            [
                pa.field(name, array.type, nullable=name not in not_null)
                for name, array in columns.items()
            ]
        )
        return pa.Table.from_arrays(list(columns.values()), schema=schema)

    def _remove_nul(
        self, plan: TablePlan, columns: dict[str, pa.Array], request_id: str | None
    ) -> None:
        """Removes NUL characters (U+0000) from text: PostgreSQL cannot store them, and a
        value one destination refuses must not fail a load (the package would block every
        later run). Each column's first one is noted, naming the record, never the value.

        Raises:
            ContractViolationError: A key holds one (removing it could merge two records).
        """
        identity = [name for name in ("key", *sorted(plan.fixed)) if name.endswith("key")]
        identity = [name for name in identity if name in columns]
        for name, array in columns.items():
            if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
                continue
            if not _may_hold_nul(array):
                continue
            found = pc.match_substring(array, "\x00")
            if not pc.any(found).as_py():
                continue
            row = pc.index(found, True).as_py()
            key = columns[identity[0]][row].as_py() if identity else None
            if name in identity:
                raise ContractViolationError(
                    f"record key {shown(key)} holds a NUL character (U+0000), which "
                    "destinations such as PostgreSQL cannot store",
                    field=name,
                    **self._context(request_id, plan.label),
                )
            columns[name] = pc.replace_substring(array, "\x00", "")
            if (plan.table, name) not in self._nul_columns:
                self._nul_columns.add((plan.table, name))
                self.notes.append(
                    f"removed NUL characters (U+0000) from {plan.table}.{name}, first in "
                    f"record {shown(key)}: PostgreSQL and other destinations cannot store them"
                )

    def _add_inferred(
        self,
        plan: TablePlan,
        columns: dict[str, pa.Array],
        path: Path,
        values: list[Any] | pa.Array,
    ) -> None:
        array = _inferred_arrow(values) if isinstance(values, pa.Array) else _inferred(values)
        if array is None:
            return  # every value null: no column (dlt could not type it)
        name, array = self._settle_type(plan.table, self._column_name(plan, path), array)
        columns[name] = array

    def _declared(
        self,
        values: list[Any] | pa.Array,
        kind: FieldType,
        request_id: str | None,
        path: Path,
        label: str,
    ) -> list[tuple[str, pa.Array]]:
        """A declared column (and, on the exact path, its variant column for values that do
        not fit a lenient type: `<column>__v_text`, JSON text)."""
        if kind in STRICT_TYPES:
            return [("", self._typed(values, kind, request_id, ".".join(path), label))]
        if isinstance(values, pa.Array):
            return [("", _lenient_arrow(values, kind))]
        fitting, misfits = _lenient(values, kind)
        result = [("", fitting)]
        if misfits is not None:
            result.append(("__v_text", misfits))
        return result

    def _typed(
        self,
        values: list[Any] | pa.Array,
        kind: FieldType,
        request_id: str | None,
        label: str,
        entity: str,
    ) -> pa.Array:
        """A decimal, timestamp or date column; an invalid value is a contract violation.

        An Arrow column (the Arrow path) is converted the same way; one it cannot convert
        exactly raises `Declined`.
        """
        if isinstance(values, pa.Array):
            return _strict_arrow(values, kind)
        try:
            return _strict(values, kind)
        except _InexactNumber:
            raise
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
            bad = _first_bad_value(values, kind)
            raise ContractViolationError(
                f"value {shown(bad)} is not a valid {_KIND_NAMES[kind]} "
                f"({server_text(str(exc), 120)})",
                field=label,
                **self._context(request_id, entity),
            ) from None

    def _settle_type(self, table: str, name: str, array: pa.Array) -> tuple[str, pa.Array]:
        """Keeps an inferred column's type stable across pages, connections and runs.

        Custom fields differ per connection (`Cost Center` may be text in one and a number in
        another). A value that fits the column's established type losslessly is converted to
        it; otherwise it lands in a variant column `<name>__v_<type>`, as dlt does for dicts.
        """
        established = self._types.get((table, name))
        if established is None and self._known_types is not None:
            established = _INFERRED_TYPES.get(self._known_types(table).get(name, ""))
        if established is None or established == array.type:
            # not settled yet: the first batch settles it (`settle_batch_types`), whichever
            # connection's page came first
            return name, array
        return fit_inferred(array, established, name, self._types, table)

    def _column_name(self, plan: TablePlan, path: Path) -> str:
        column = self._names.column(plan.table, path, plan.fixed)
        if len(path) > 1 and path[0] == CUSTOM_FIELDS:
            name = ".".join(path[1:])  # a field of an object-valued custom field: "a.b"
            if (plan.table, name) not in self.custom_columns:
                self.custom_columns[(plan.table, name)] = column
                self.new_custom_columns.append((plan.table, name, column))
        return column


def fit_inferred(
    array: pa.Array,
    established: pa.DataType,
    name: str,
    settled: dict[tuple[str, str], pa.DataType],
    table: str,
) -> tuple[str, pa.Array]:
    """An inferred column made to fit its settled type: converted where that loses nothing
    (numbers and booleans to text, integers to floats), else moved to a variant column
    `<name>__v_<type>`, as dlt does."""
    if array.type == established:
        return name, array
    if pa.types.is_string(established):
        return name, _json_text(array.to_pylist())
    if pa.types.is_floating(established) and pa.types.is_integer(array.type):
        return name, array.cast(pa.float64())
    variant = f"{name}__v_{_DLT_TYPES[array.type]}"
    settled[(table, variant)] = array.type
    return variant, array


def settle_batch_types(
    table: str, tables: list[pa.Table], settled: dict[tuple[str, str], pa.DataType]
) -> list[pa.Table]:
    """Gives every column of a batch's tables of one destination table one type.

    Columns the catalogue types always agree; inferred ones (custom fields) may not: a field
    that is text in one connection and a number in another. The widest type that loses
    nothing wins (text over numbers and booleans, floats over integers), whichever
    connection's pages came first, and is remembered for the rest of the run.
    """
    found: dict[str, set[pa.DataType]] = {}
    for piece in tables:
        for column in piece.schema:
            if not pa.types.is_null(column.type):
                found.setdefault(column.name, set()).add(column.type)
    for name, kinds in found.items():
        if (table, name) in settled:
            continue
        if len(kinds) == 1:
            settled[(table, name)] = next(iter(kinds))
        elif kinds <= {pa.int64(), pa.float64()}:
            settled[(table, name)] = pa.float64()
        elif kinds <= set(_INFERRED_TYPES.values()):
            settled[(table, name)] = pa.string()
    result = []
    for piece in tables:
        for index, column in enumerate(piece.schema):
            target = settled.get((table, column.name))
            if target is None or column.type == target or pa.types.is_null(column.type):
                continue
            name, array = fit_inferred(
                piece.column(index).combine_chunks(), target, column.name, settled, table
            )
            piece = piece.set_column(index, pa.field(name, array.type), array)
        result.append(piece)
    return result


class _InexactNumber(Exception):
    """A decimal field holds a JSON number that orjson read as a float."""


_KIND_NAMES = {"decimal": "decimal", "timestamp": "RFC 3339 timestamp", "date": "date"}


def _strict(values: list[Any], kind: FieldType) -> pa.Array:
    if kind == "decimal":
        if any(isinstance(v, float) for v in values):
            raise _InexactNumber
        texts = [
            None if v is None else (v if isinstance(v, str) else _decimal_text(v)) for v in values
        ]
        return pc.cast(pa.array(texts, pa.string()), DECIMAL_TYPE)
    if kind == "timestamp":
        return _timestamps(pa.array(values, pa.string()))
    return _dates(pa.array(values, pa.string()))


def _decimal_text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        raise TypeError(f"{type(value).__name__} is not a number")
    return str(value)


def _strict_arrow(values: pa.Array, kind: FieldType) -> pa.Array:
    target = ARROW_TYPES[kind]
    if pa.types.is_null(values.type):
        return pa.nulls(len(values), target)
    if kind == "decimal":
        if values.type == DECIMAL_TYPE:
            return values
        if not pa.types.is_string(values.type):
            raise Declined(f"a decimal read as {values.type}")
        try:  # as the exact path converts a decimal sent as text
            return pc.cast(values, DECIMAL_TYPE)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            raise Declined("an invalid decimal") from None
    if not pa.types.is_string(values.type):
        raise Declined(f"a {kind} read as {values.type}")
    try:
        return _timestamps(values) if kind == "timestamp" else _dates(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        raise Declined(f"an invalid {kind}") from None


def _lenient(values: list[Any], kind: FieldType) -> tuple[pa.Array, pa.Array | None]:
    """A text, json, bigint, double or bool column from parsed JSON, and the values that did
    not fit it (as JSON text, in a column of their own), if any."""
    if kind in ("text", "json"):
        return _json_text(values, normalize=kind == "json"), None
    convert = _CONVERT[kind]
    fitting: list[Any] = []
    misfits: list[Any] = []
    for value in values:
        converted = None if value is None else convert(value)
        if value is not None and converted is None:
            fitting.append(None)
            misfits.append(value if isinstance(value, str) else orjson.dumps(value).decode())
        else:
            fitting.append(converted)
            misfits.append(None)
    array = pa.array(fitting, ARROW_TYPES[kind])
    if any(m is not None for m in misfits):
        return array, pa.array(misfits, pa.string())
    return array, None


def _to_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INTEGER_TEXT.fullmatch(value):
        return _to_int(int(value))
    return None


def _to_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float, Decimal)):
        return float(value)
    if isinstance(value, str) and _NUMBER_TEXT.fullmatch(value):
        return float(value)
    return None


def _to_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


_CONVERT: dict[str, Callable[[Any], Any]] = {
    "bigint": _to_int,
    "double": _to_float,
    "bool": _to_bool,
}


def _lenient_arrow(values: pa.Array, kind: FieldType) -> pa.Array:
    """`_lenient` for a column read by pyarrow; what it cannot convert exactly declines."""
    target = ARROW_TYPES[kind]
    kind_of = values.type
    if pa.types.is_null(kind_of):
        return pa.nulls(len(values), target)
    if kind in ("text", "json"):
        if pa.types.is_string(kind_of):
            return values
        if kind == "json" and kind_of == _TEXT_LIST:
            as_text = _text_lists_as_json(values)
            if as_text is not None:
                return as_text
        if kind == "json" and _json_exact(kind_of):
            return _json_text(values.to_pylist(), normalize=True)
        if kind == "text" and kind_of in (pa.int64(), pa.bool_()):
            return _json_text(values.to_pylist())
        raise Declined(f"{kind} read as {kind_of}")
    if kind_of == target:
        return values
    if kind == "double" and pa.types.is_integer(kind_of):
        return values.cast(pa.float64())
    if pa.types.is_string(kind_of):
        # numbers and booleans sent as text: converted where every value reads exactly as
        # the exact path reads it; anything else goes there (and into a variant column)
        if kind == "bool":
            lowered = pc.utf8_lower(values)
            if pc.all(pc.is_in(lowered, value_set=pa.array(["true", "false"]))).as_py():
                return pc.equal(lowered, "true")
        else:
            pattern = _INTEGER_TEXT if kind == "bigint" else _NUMBER_TEXT
            fits = pc.match_substring_regex(values, f"^(?:{pattern.pattern})$")
            if pc.all(pc.fill_null(fits, True)).as_py():
                try:
                    return pc.cast(values, target)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    pass  # out of range: the exact path puts it in the variant column
    raise Declined(f"{kind} read as {kind_of}")


_TEXT_LIST = pa.list_(pa.string())
# the bytes orjson leaves as they are inside a JSON string: all but controls, `"` and `\`
# (UTF-8 beyond ASCII is written unescaped)
_PLAIN_JSON_BYTES = bytes(b for b in range(256) if b >= 0x20 and b not in b'"\\')


def _text_lists_as_json(values: pa.Array) -> pa.Array | None:
    """Lists of text as the JSON text `_json_text` writes, built in Arrow (the most common
    list, e.g. tags, and ~0.6 s of Python a 100,000-PO sync); None when an item is null or
    needs escaping."""
    items = values.flatten()
    if items.null_count or _may_need_escape(items):
        return None
    joined = pc.binary_join(values, '","')  # null for a null list, "" for an empty one
    quoted = pc.binary_join_element_wise('["', joined, '"]', "")
    return pc.if_else(pc.equal(pc.list_value_length(values), 0), "[]", quoted)


def _json_exact(kind: pa.DataType) -> bool:
    """Whether values of this Arrow type turn back into the JSON the exact path writes.

    Floats do not (`1` and `1.0` both read as 1.0).
    """
    if pa.types.is_list(kind):
        return _json_exact(kind.value_type)
    if pa.types.is_struct(kind):
        return all(_json_exact(field.type) for field in kind)
    return kind in (pa.string(), pa.int64(), pa.bool_(), pa.null())


def _may_need_escape(text: pa.Array) -> bool:
    """Whether a text column may hold a byte JSON escapes: its data buffer has one (one
    C-level pass over the bytes, ~10 times faster than a regex value by value; the buffer
    may reach past a slice, which only sends more lists the exact way)."""
    data = text.buffers()[2]
    return data is not None and bool(data.to_pybytes().translate(None, _PLAIN_JSON_BYTES))


def _may_hold_nul(text: pa.Array) -> bool:
    """Whether a text column may hold a NUL: its data buffer has a zero byte (one memchr
    over the bytes, about 20 times faster than a substring search value by value)."""
    data = text.buffers()[2]
    return data is not None and b"\x00" in data.to_pybytes()


def _json_text(values: Iterable[Any], normalize: bool = False) -> pa.Array:
    """Values as JSON text (strings stay as they are). `normalize`: objects with sorted keys
    and without null members, so text read through Arrow (which fills absent members with
    null) and text read as JSON are the same."""
    out = []
    for value in values:
        if value is None or isinstance(value, str):
            out.append(value)
            continue
        if normalize:
            value = _without_nulls(value)
        try:
            text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str).decode()
        except TypeError:  # an integer beyond 64 bits: Python's json writes every digit
            text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
        out.append(text)
    return pa.array(out, pa.string())


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _flat_columns(
    records: Sequence[Mapping[str, Any]],
    skip: Iterable[str],
    leaves: frozenset[Path] = frozenset(),
) -> dict[Path, list[Any]]:
    """Flattens records straight into columns, None where a record lacks a path.

    An object at a path in `leaves` (a declared value, e.g. `deletedAt`) stays whole: it is
    that field's value, not fields of its own.

    Columns come in first-seen order, level by level: a record's fields in the order they
    first appear on the page, each object's fields in its place (the order pyarrow's JSON
    reader gives, so both paths make the same tables). The columns are built a column at a
    time with list comprehensions, several times faster than one dict per record.
    """
    found: dict[Path, list[Any]] = {}
    _collect(records, None, len(records), (), frozenset(skip), found, leaves)
    return found


def _collect(
    records: Sequence[Mapping[str, Any]],
    rows: list[int] | None,
    total: int,
    prefix: Path,
    skip: frozenset[str],
    found: dict[Path, list[Any]],
    leaves: frozenset[Path] = frozenset(),
) -> None:
    """Adds the columns of `records` (objects at `prefix`) to `found`.

    Args:
        records: The objects at this level.
        rows: Row number of each object in the whole table; None when `records` are the rows.
        total: Number of rows of the whole table.
        found: path -> full column.
    """
    for name, values, everywhere in _fields(records):
        if name in skip:
            continue
        types = set(map(type, values))
        if prefix + (name,) in leaves or not (
            dict in types or any(issubclass(t, dict) for t in types)
        ):
            _store(found, prefix + (name,), list(values), rows, total)
            continue
        # objects are flattened into their own paths; other values keep the path itself
        objects: list[Mapping[str, Any]] = []
        object_rows: list[int] = []
        scalar_rows: list[int] = []
        for i, value in enumerate(values):
            if isinstance(value, dict):
                objects.append(value)
                object_rows.append(i)
            elif everywhere or name in records[i]:
                scalar_rows.append(i)
        if any(v is not None for i in scalar_rows for v in (values[i],)):
            scalars: list[Any] = [None] * len(values)
            for i in scalar_rows:
                scalars[i] = values[i]
            _store(found, prefix + (name,), scalars, rows, total)
        objects_with_fields = [i for i, obj in enumerate(objects) if obj]
        if objects_with_fields:
            sub_rows = object_rows if rows is None else [rows[i] for i in object_rows]
            _collect(objects, sub_rows, total, prefix + (name,), frozenset(), found, leaves)


def _fields(records: Sequence[Mapping[str, Any]]) -> Iterator[tuple[str, Sequence[Any], bool]]:
    """(name, values with None where absent, whether every record has the field) per field."""
    import operator

    first = records[0]
    width = len(first)
    if width and set(map(len, records)) == {width}:
        # the common case, records with the same fields: transpose in C
        names = list(first)
        getter = operator.itemgetter(*names)
        try:
            if width == 1:
                columns: list[Sequence[Any]] = [list(map(getter, records))]
            else:
                columns = list(zip(*map(getter, records)))
        except KeyError:
            pass  # same sizes, other fields
        else:
            for name, values in zip(names, columns):
                yield name, values, True
            return
    names_seen: dict[str, None] = {}
    last_keys = None
    for record in records:
        keys = record.keys()
        if keys == last_keys:
            continue
        last_keys = keys
        for name in keys:
            names_seen[name] = None
    for name in names_seen:
        yield name, [record.get(name) for record in records], False


def _store(
    found: dict[Path, list[Any]],
    path: Path,
    values: list[Any],
    rows: list[int] | None,
    total: int,
) -> None:
    if rows is None or len(rows) == total:
        # every row has a value here (rows are increasing): no scattering needed
        found[path] = values
        return
    column: list[Any] = [None] * total
    for row, value in zip(rows, values):
        column[row] = value
    found[path] = column


def _inferred(values: list[Any]) -> pa.Array | None:
    """Types a column from its values; None when every value is null (column skipped)."""
    kinds = set(map(type, values))
    kinds.discard(_NONE_TYPE)
    if not kinds:
        return None
    if kinds == {str}:
        return pa.array(values, pa.string())
    if kinds == {bool}:
        return pa.array(values, pa.bool_())
    if kinds == {int} and all(-(2**63) <= v < 2**63 for v in values if v is not None):
        return pa.array(values, pa.int64())
    if kinds <= {int, float, Decimal} and kinds != {int}:
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    # lists, objects in lists, big integers or mixed types: the value whole, as JSON text
    return _json_text(values, normalize=True)


def _inferred_arrow(values: pa.Array) -> pa.Array | None:
    """`_inferred` for a column read by pyarrow's JSON reader."""
    kind = values.type
    if pa.types.is_null(kind):
        return None
    if kind in (pa.string(), pa.int64(), pa.float64(), pa.bool_()):
        return values
    if pa.types.is_list(kind) and _json_exact(kind):
        return _json_text(values.to_pylist(), normalize=True)
    # lists of floats, and date-like strings (read as timestamps): their JSON text is not
    # recoverable from Arrow
    raise Declined(f"a column of {kind}")


def _timestamps(strings: pa.Array) -> pa.Array:
    """RFC 3339 text to UTC timestamps; date-only values are midnight UTC.

    Most columns hold only full timestamps, which cast as they are; only when that fails
    are date-only values completed and fractions finer than a microsecond truncated to
    microseconds (`.1234567Z`, common from .NET, lands as `.123456`: truncated, never rounded,
    so a time never moves past the next second, day or year). A zone-less time still fails:
    it is not RFC 3339.
    """
    try:
        return pc.cast(strings, TIMESTAMP_TYPE)
    except pa.ArrowInvalid:
        microseconds = pc.replace_substring_regex(strings, r"(\.\d{6})\d+", r"\1")
        return pc.cast(_midnight(microseconds), TIMESTAMP_TYPE)


def _dates(strings: pa.Array) -> pa.Array:
    """Date-only text (`YYYY-MM-DD`) to dates; a full RFC 3339 timestamp gives its UTC date."""
    date_only = pc.equal(pc.utf8_length(strings), 10)
    if pc.all(pc.fill_null(date_only, True)).as_py():
        return pc.cast(strings, pa.date32())
    full = pc.cast(_midnight(strings), TIMESTAMP_TYPE)
    return pc.cast(full, pa.date32())


def _midnight(strings: pa.Array) -> pa.Array:
    """Date-only values completed to midnight UTC, vectorized."""
    date_only = pc.equal(pc.utf8_length(strings), 10)
    if not pc.any(date_only).as_py():
        return strings
    return pc.if_else(date_only, pc.binary_join_element_wise(strings, "T00:00:00Z", ""), strings)


def _first_bad_value(values: list[Any], kind: FieldType) -> Any:
    for value in values:
        if value is None:
            continue
        try:
            _strict([value], kind)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
            return value
    return None


def as_utc(value: datetime | date) -> datetime:
    """A date or datetime as an aware UTC datetime (for comparisons in tests and deletes)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)


class PageBatcher:
    """Collects consecutive Arrow pages of one record type and converts them together.

    Args:
        converter: The entity's converter.
        max_records: Records collected before they are converted.
    """

    def __init__(self, converter: RecordConverter, max_records: int) -> None:
        self._converter = converter
        self._max_records = max_records
        self._pages: list[tuple[DecodedPage, str | None]] = []
        self._records = 0

    def add(self, page: DecodedPage, request_id: str | None) -> list[PageTables]:
        """Adds one page; returns whatever tables are ready (in page order).

        Raises:
            ContractViolationError: As `RecordConverter.convert`.
        """
        if not isinstance(page.records, ArrowRecords):
            # parsed JSON: the exact path, after the pages before it
            return [*self.flush(), self._converter.convert(page, request_id)]
        ready = []
        if self._pages and page.records.records.type != self._pages[0][0].records.records.type:
            ready = self.flush()
        self._pages.append((page, request_id))
        self._records += len(page)
        if self._records >= self._max_records:
            ready.extend(self.flush())
        return ready

    def flush(self) -> list[PageTables]:
        """Converts the pages collected so far."""
        pages, self._pages, self._records = self._pages, [], 0
        return self._converter.convert_pages(pages) if pages else []


class SupersededChildren:
    """Finds child rows that a newer version of their parent replaced within one run.

    A record that changes while a run lists it is read twice: its old version, then (further
    on, or in a later time slice) its new one. The parent's merge keeps the newest version
    (`dedup_sort` on `updated_at`), and each loaded parent replaces all its children, but the
    children are deduplicated one by one: an item that only the old version had would survive
    in the load. For every such item this emits a marker row (never inserted) carrying the
    newest parent version, so that deduplication picks the marker and the item is dropped.

    Only the key and version columns of each page are kept (~20 MB at 500,000 lines), and the
    work at the end is one aggregation over the parents' keys.

    Args:
        entity: The entity whose children are watched.
        connection: The connection's name, stored in `connection_id` of the markers.
    """

    def __init__(self, entity: Entity, connection: str) -> None:
        self._connection = connection
        self._children = [
            child for child in entity.children if child.parent_version_column is not None
        ]
        self._parents: list[tuple[pa.Array, pa.Array]] = []
        self._rows: dict[str, list[tuple[pa.Array, pa.Array, pa.Array]]] = {
            child.table: [] for child in self._children
        }

    def observe(self, tables: PageTables) -> None:
        """Remembers the parent versions and child identities of converted tables."""
        if not self._children:
            return
        if tables.main is not None:
            main = tables.main
            self._parents.append((_column(main, "key"), _column(main, "updated_at")))
        for child in self._children:
            table = tables.children.get(child.table)
            if table is not None:
                assert child.parent_version_column is not None
                self._rows[child.table].append(
                    (
                        _column(table, child.parent_key_column),
                        _column(table, child.identity_column),
                        _column(table, child.parent_version_column),
                    )
                )

    def markers(self) -> dict[str, pa.Table]:
        """Child table -> marker rows for items of superseded parent versions (maybe none)."""
        if not self._parents:
            return {}
        keys = pa.concat_arrays([keys for keys, _ in self._parents])
        if len(pc.unique(keys)) == len(keys):
            # no parent read twice, the usual case: skip the grouping (measured: its first use
            # in a process 15-30 ms, 60 ms at 100,000 keys; this check 0.3 ms, 6 ms)
            return {}
        parents = pa.table(
            {
                "parent": keys,
                "version": pa.concat_arrays([versions for _, versions in self._parents]),
            }
        )
        spans = parents.group_by("parent").aggregate([("version", "min"), ("version", "max")])
        changed = spans.filter(pc.not_equal(spans["version_min"], spans["version_max"]))
        if changed.num_rows == 0:
            return {}
        result = {}
        for child in self._children:
            table = self._markers_of(child, changed)
            if table is not None:
                result[child.table] = table
        return result

    def _markers_of(self, child: Child, changed: pa.Table) -> pa.Table | None:
        rows = self._rows[child.table]
        if not rows:
            return None
        children = pa.table(
            {
                "parent": pa.concat_arrays([p for p, _, _ in rows]),
                "child": pa.concat_arrays([c for _, c, _ in rows]),
                "version": pa.concat_arrays([v for _, _, v in rows]),
            }
        )
        # a parent's "no children" marker has identity "" (key) or 0 (position)
        empty = pa.scalar("" if child.identity == "key" else 0, children["child"].type)
        of_changed = pc.and_(
            pc.is_in(children["parent"], value_set=changed["parent"].combine_chunks()),
            pc.not_equal(children["child"], empty),
        )
        children = children.filter(of_changed).join(
            changed.select(["parent", "version_max"]), keys="parent"
        )
        newest = children.filter(pc.equal(children["version"], children["version_max"]))
        older = children.filter(pc.less(children["version"], children["version_max"]))
        stale = older.join(
            newest.select(["parent", "child"]), keys=["parent", "child"], join_type="left anti"
        )
        stale = stale.group_by(["parent", "child"]).aggregate([("version_max", "max")])
        if stale.num_rows == 0:
            return None
        count = stale.num_rows
        assert child.parent_version_column is not None
        fields = [
            pa.field(CONNECTION_COLUMN, pa.string(), nullable=False),
            pa.field(child.parent_key_column, pa.string(), nullable=False),
            pa.field(child.identity_column, stale["child"].type, nullable=False),
            pa.field(child.parent_version_column, TIMESTAMP_TYPE),
            pa.field(MARKER_COLUMN, pa.bool_()),
        ]
        return pa.Table.from_arrays(
            [
                pa.array([self._connection] * count, pa.string()),
                stale["parent"].combine_chunks(),
                stale["child"].combine_chunks(),
                stale["version_max_max"].combine_chunks(),
                pa.array([True] * count, pa.bool_()),
            ],
            schema=pa.schema(fields),
        )


def _column(table: pa.Table, name: str) -> pa.Array:
    return table.column(name).combine_chunks()
