"""Turns pages of Makini records into Arrow tables, one table per destination table.

Building Arrow tables per page (instead of yielding dicts through dlt's normalizer) is what
keeps large syncs fast, and it lets every money field travel as an exact decimal and every
timestamp as a timezone-aware timestamp. Column names follow dlt's snake_case convention
(`orderNo` -> `order_no`, `customFields.Cost Center` -> `custom_fields__cost_center`), so
the tables look exactly as dlt would have named them.

A page arrives either as Arrow records (`columnar.PageReader`, the fast path) or as parsed
JSON (the exact path, also taken whenever the fast path declines a page); both build the
same tables through `RecordConverter._table`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import (
    Any,
)

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from dlt.common.normalizers.naming.snake_case import NamingConvention

from makini_source import columnar
from makini_source.columnar import ArrowRecords, Declined
from makini_source.exceptions import ContractViolationError
from makini_source.settings import (
    BOOLEAN_FIELDS,
    CONNECTION_COLUMN,
    DECIMAL_FIELDS,
    DECIMAL_PRECISION,
    DECIMAL_SCALE,
    LINE_MARKER_COLUMN,
    PARENT_KEY_COLUMN,
    PARENT_VERSION_COLUMN,
    TIMESTAMP_FIELDS,
    EntitySpec,
)

DECIMAL_TYPE = pa.decimal128(DECIMAL_PRECISION, DECIMAL_SCALE)
TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")
CUSTOM_FIELDS = "customFields"
NOT_NULL_COLUMNS = frozenset({CONNECTION_COLUMN, "key", PARENT_KEY_COLUMN})

Path = tuple[str, ...]
_NONE_TYPE = type(None)
_MARKER_LINE: Mapping[str, Any] = {"key": ""}  # the one row a PO without lines sends

_CATALOGUE_TYPED = DECIMAL_FIELDS | TIMESTAMP_FIELDS | BOOLEAN_FIELDS
# the types an inferred column can take, by dlt data type and back
_ARROW_TYPES: dict[str, pa.DataType] = {
    "text": pa.string(),
    "bigint": pa.int64(),
    "double": pa.float64(),
    "bool": pa.bool_(),
}
_DLT_TYPES: dict[pa.DataType, str] = {arrow: dlt_type for dlt_type, arrow in _ARROW_TYPES.items()}


@dataclass
class PageTables:
    """The Arrow tables built from one page."""

    main: pa.Table | None
    children: pa.Table | None
    live_children: int = 0


class RecordConverter:
    """Converts one entity's records to Arrow, page by page.

    Args:
        spec: The entity being read.
        connection: The connection's configured name, stored in `connection_id`.
        hard_delete: Whether tombstones delete rows (otherwise they keep `deleted_at`).
        known_types: Column name -> dlt data type of a table, as the schema knows it.
        settled_types: The column types settled so far, shared by the converters of every
            connection of a run, so a column gets one type in a run whichever connection's
            page comes first (dlt cannot write two types of one column to one file).
    """

    def __init__(
        self,
        spec: EntitySpec,
        connection: str,
        hard_delete: bool = False,
        known_types: Callable[[str], Mapping[str, str]] | None = None,
        settled_types: dict[tuple[str, str], pa.DataType] | None = None,
    ) -> None:
        self.spec = spec
        self.connection = connection
        self.hard_delete = hard_delete
        self._naming = NamingConvention()
        self._names: dict[Path, str] = {}
        self._known_types = known_types
        self._types = {} if settled_types is None else settled_types
        self.declined_pages = 0

    def convert(
        self, records: Sequence[Any] | ArrowRecords, request_id: str | None = None
    ) -> PageTables:
        """Validates and converts one page.

        Args:
            records: The page's records: parsed JSON, or `ArrowRecords` from
                `columnar.PageReader` (converted column by column; a page the Arrow path
                declines is parsed again from its body and converted the exact way).
            request_id: The page's request id, for errors.

        Raises:
            ContractViolationError: A record is not an object, lacks `key` or `updatedAt`, or
                holds a value that cannot be read as its field's type.
        """
        if isinstance(records, ArrowRecords):
            try:
                return self._convert_arrow(records.records, request_id)
            except Declined:
                self.declined_pages += 1
                return self._convert_json(orjson.loads(records.body)["data"], request_id)
        return self._convert_json(records, request_id)

    def convert_pages(self, pages: Sequence[tuple[ArrowRecords, str | None]]) -> list[PageTables]:
        """Converts several pages of one record type (`ArrowRecords` with equal types) at once.

        The pages' records are converted as one page (one set of pyarrow calls per column
        instead of one per page). If the Arrow path declines them together, each page is
        converted on its own, so a bad value is still reported with its page's request id.

        Args:
            pages: (records, request id) of each page, in order.

        Returns:
            The tables: one `PageTables` for all pages, or one per page.
        """
        if len(pages) > 1:
            together = pa.concat_arrays([records.records for records, _ in pages])
            try:
                return [self._convert_arrow(together, None)]
            except Declined:
                pass
        return [self.convert(records, request_id) for records, request_id in pages]

    def _convert_json(self, records: Sequence[Any], request_id: str | None) -> PageTables:
        """`convert` for parsed JSON: the exact path."""
        if not records:
            return PageTables(None, None)
        for record in records:
            self._validate(record, request_id)
        skip = (self.spec.child_field,) if self.spec.child_field else ()
        main = self._table(
            _flat_columns(records, skip),
            {CONNECTION_COLUMN: [self.connection] * len(records)},
            request_id,
            self.spec.name,
            self.spec.table,
            self.spec.fields,
        )
        children = self._children(records, request_id) if self.spec.child_field else None
        markers = (
            0 if children is None else (pc.sum(children.column(LINE_MARKER_COLUMN)).as_py() or 0)
        )
        live = 0 if children is None else children.num_rows - markers
        return PageTables(main, children, live)

    def _convert_arrow(self, records: pa.StructArray, request_id: str | None) -> PageTables:
        """`convert` for a page read by `columnar.PageReader`; raises `Declined`."""
        if not len(records):
            return PageTables(None, None)
        columnar.check_records(records)
        child_field = self.spec.child_field
        main = self._table(
            columnar.flatten(records, (child_field,) if child_field else ()),
            {CONNECTION_COLUMN: [self.connection] * len(records)},
            request_id,
            self.spec.name,
            self.spec.table,
            self.spec.fields,
        )
        if child_field is None:
            return PageTables(main, None)
        parent_deleted = columnar.field_or_none(records, "deletedAt")
        rows = columnar.child_rows(
            columnar.field_or_none(records, child_field),
            pa.nulls(len(records)) if parent_deleted is None else parent_deleted,
            self.hard_delete,
        )
        if rows.lines is None:
            line_columns: dict[Path, pa.Array] = {("key",): pa.array([""] * len(rows.parent))}
        else:
            line_columns = columnar.flatten(rows.lines)
            line_columns[("key",)] = line_columns[("key",)].fill_null("")
            if pc.any(pc.invert(pc.is_valid(rows.is_marker))).as_py():
                # lines carry their own or their record's deletedAt (a copy of the exact
                # path's `_with_deleted_at`)
                line_columns[("deletedAt",)] = rows.deleted_at
        assert self.spec.child_table is not None
        table = self._table(
            line_columns,
            {
                CONNECTION_COLUMN: [self.connection] * len(rows.parent),
                PARENT_KEY_COLUMN: records.field("key").take(rows.parent),
            },
            request_id,
            f"{self.spec.name}.{child_field}",
            self.spec.child_table,
            self.spec.child_fields,
        )
        versions = self._typed(
            records.field("updatedAt").take(rows.parent), "updatedAt", request_id, ""
        )
        table = table.append_column(PARENT_VERSION_COLUMN, versions)
        table = table.append_column(LINE_MARKER_COLUMN, rows.is_marker)
        markers = len(rows.parent) - pc.sum(pc.is_null(rows.is_marker)).as_py()
        return PageTables(main, table, len(rows.parent) - markers)

    # --- validation -------------------------------------------------------------------

    def _validate(self, record: Any, request_id: str | None) -> None:
        context = {
            "connection": self.connection,
            "entity": self.spec.name,
            "request_id": request_id,
        }
        if not isinstance(record, dict):
            raise ContractViolationError("record is not a JSON object", **context)
        key = record.get("key")
        if not isinstance(key, str) or not key:
            raise ContractViolationError("record has no 'key'", field="key", **context)
        if not isinstance(record.get("updatedAt"), str):
            raise ContractViolationError(
                f"record {key!r} has no 'updatedAt'", field="updatedAt", **context
            )

    # --- child rows (purchase order lines) --------------------------------------------

    def _children(
        self, records: Sequence[Mapping[str, Any]], request_id: str | None
    ) -> pa.Table | None:
        """Rows of the child table: every current line of every PO on the page.

        Each PO on the page replaces all of its lines in the destination (the child table
        merges on the PO's key). A PO that has no line left still sends one marker row, so
        that its old lines are deleted; markers are never inserted.
        """
        child_field = self.spec.child_field
        assert child_field is not None
        rows: list[Mapping[str, Any]] = []
        parents: list[str] = []
        versions: list[str] = []
        markers: list[bool | None] = []
        for record in records:
            lines = record.get(child_field) or []
            if not isinstance(lines, list):
                raise ContractViolationError(
                    f"record {record['key']!r}: {child_field} is not an array",
                    field=child_field,
                    connection=self.connection,
                    entity=self.spec.name,
                    request_id=request_id,
                )
            parent_deleted_at = record.get("deletedAt")
            emitted = 0
            if not (self.hard_delete and parent_deleted_at):
                for line in lines:
                    if (
                        not isinstance(line, dict)
                        or not isinstance(line.get("key"), str)
                        or not line["key"]
                    ):
                        raise ContractViolationError(
                            f"record {record['key']!r}: a line has no 'key'",
                            field=f"{child_field}.key",
                            connection=self.connection,
                            entity=self.spec.name,
                            request_id=request_id,
                        )
                    own_deleted_at = line.get("deletedAt")
                    deleted_at = own_deleted_at or parent_deleted_at
                    if deleted_at and self.hard_delete:
                        continue
                    if isinstance(deleted_at, dict):
                        raise ContractViolationError(
                            f"value {deleted_at!r} is not a valid RFC 3339 timestamp",
                            field="deletedAt",
                            connection=self.connection,
                            entity=f"{self.spec.name}.{child_field}",
                            request_id=request_id,
                        )
                    if deleted_at is not own_deleted_at or "deletedAt" not in line:
                        # a line of a deleted PO is not live either (a copy: the page stays as read)
                        line = _with_deleted_at(line, deleted_at)
                    rows.append(line)
                    markers.append(None)
                    emitted += 1
            if emitted == 0:
                rows.append(_MARKER_LINE)
                markers.append(True)
                emitted = 1
            parents.extend([record["key"]] * emitted)
            versions.extend([record["updatedAt"]] * emitted)
        fixed = {
            CONNECTION_COLUMN: [self.connection] * len(rows),
            PARENT_KEY_COLUMN: parents,
        }
        assert self.spec.child_table is not None
        table = self._table(
            _flat_columns(rows, ()),
            fixed,
            request_id,
            f"{self.spec.name}.{child_field}",
            self.spec.child_table,
            self.spec.child_fields,
        )
        table = table.append_column(
            PARENT_VERSION_COLUMN,
            self._typed(versions, "updatedAt", request_id, PARENT_VERSION_COLUMN),
        )
        return table.append_column(LINE_MARKER_COLUMN, pa.array(markers, pa.bool_()))

    # --- column building ----------------------------------------------------------------

    def _table(
        self,
        flat_columns: Mapping[Path, list[Any] | pa.Array],
        fixed: Mapping[str, list[Any] | pa.Array],
        request_id: str | None,
        entity: str,
        table_name: str,
        fields: Sequence[str],
    ) -> pa.Table:
        """Builds one table: the fixed columns, then the record's columns.

        The record's columns come in the catalogue's order (`fields`), the rest after them in
        the order they first appear. A typed field of the catalogue (decimal, timestamp,
        boolean) no record carries still gets its null column: its type is known, and both
        conversion paths then make the same table.
        """
        columns: dict[str, pa.Array] = {
            name: values if isinstance(values, pa.Array) else pa.array(values, pa.string())
            for name, values in fixed.items()
        }
        rows = len(next(iter(fixed.values())))
        flat_columns = dict(flat_columns)
        for name in fields:
            if name in _CATALOGUE_TYPED:
                flat_columns.setdefault((name,), [None] * rows)
        position = {name: index for index, name in enumerate(fields)}
        last = len(fields)
        in_order = sorted(flat_columns.items(), key=lambda item: position.get(item[0][0], last))
        for path, values in in_order:
            name = self._column_name(path)
            typed_field = None if path[0] == CUSTOM_FIELDS else path[-1]
            array = self._typed(values, typed_field, request_id, ".".join(path), entity)
            if array is None:
                continue
            if typed_field not in _CATALOGUE_TYPED:
                name, array = self._settle_type(table_name, name, array)
            columns[name] = array
        # key columns are declared NOT NULL in the dlt schema; say so in the Arrow schema too
        schema = pa.schema(
            [
                pa.field(name, array.type, nullable=name not in NOT_NULL_COLUMNS)
                for name, array in columns.items()
            ]
        )
        return pa.Table.from_arrays(list(columns.values()), schema=schema)

    def _typed(
        self,
        values: list[Any] | pa.Array,
        field: str | None,
        request_id: str | None,
        label: str,
        entity: str | None = None,
    ) -> pa.Array | None:
        """Builds one column, typed from the catalogue or inferred from its values.

        An Arrow column (the Arrow path) is converted the same way; one it cannot convert
        exactly raises `Declined`.
        """
        if isinstance(values, pa.Array):
            return _typed_arrow(values, field)
        try:
            if field in DECIMAL_FIELDS:
                return pc.cast(pa.array(values, pa.string()), DECIMAL_TYPE)
            if field in TIMESTAMP_FIELDS:
                return _timestamps(pa.array(values, pa.string()))
            if field in BOOLEAN_FIELDS:
                return pa.array(values, pa.bool_())
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
            bad = _first_bad_value(values, field)
            raise ContractViolationError(
                f"value {bad!r} is not a valid {_kind(field)} ({exc})",
                field=label,
                connection=self.connection,
                entity=entity or self.spec.name,
                request_id=request_id,
            ) from None
        return _inferred(values)

    def _settle_type(self, table: str, name: str, array: pa.Array) -> tuple[str, pa.Array]:
        """Keeps an inferred column's type stable across pages, connections and runs.

        Custom fields differ per connection (`Cost Center` may be text in one and a number in
        another). A value that fits the column's established type losslessly is converted to
        it; otherwise it lands in a variant column `<name>__v_<type>`, as dlt does for dicts.
        """
        established = self._types.get((table, name))
        if established is None and self._known_types is not None:
            established = _ARROW_TYPES.get(self._known_types(table).get(name, ""))
        if established is None or established == array.type:
            self._types[(table, name)] = array.type
            return name, array
        self._types[(table, name)] = established
        if pa.types.is_string(established):
            return name, pa.array(
                [
                    None if v is None else (v if isinstance(v, str) else orjson.dumps(v).decode())
                    for v in array.to_pylist()
                ],
                pa.string(),
            )
        if pa.types.is_floating(established) and pa.types.is_integer(array.type):
            return name, array.cast(pa.float64())
        variant = f"{name}__v_{_DLT_TYPES[array.type]}"
        self._types[(table, variant)] = array.type
        return variant, array

    def _column_name(self, path: Path) -> str:
        name = self._names.get(path)
        if name is None:
            name = "__".join(self._naming.normalize_identifier(part) for part in path)
            self._names[path] = name
        return name


class SupersededChildren:
    """Finds child rows that a newer version of their parent replaced within one run.

    A record that changes while a run lists it is read twice: its old version, then (further
    on, or in a later time slice) its new one. The parent's merge keeps the newest version
    (`dedup_sort` on `updated_at`), and each loaded parent replaces all its children, but the
    children are deduplicated one by one: a line that only the old version had would survive
    in the load. For every such line this emits a marker row (never inserted) carrying the
    newest parent version, so that deduplication picks the marker and the line is dropped.

    Only the key and version columns of each page are kept (~20 MB at 500,000 lines), and the
    work at the end is one aggregation over the parents' keys.

    Args:
        connection: The connection's name, stored in `connection_id` of the markers.
    """

    def __init__(self, connection: str) -> None:
        self._connection = connection
        self._parents: list[tuple[pa.Array, pa.Array]] = []
        self._children: list[tuple[pa.Array, pa.Array, pa.Array]] = []

    def observe(self, tables: PageTables) -> None:
        """Remembers the parent versions and child keys of converted tables."""
        if tables.main is not None:
            main = tables.main
            self._parents.append((_column(main, "key"), _column(main, "updated_at")))
        if tables.children is not None:
            children = tables.children
            self._children.append(
                (
                    _column(children, PARENT_KEY_COLUMN),
                    _column(children, "key"),
                    _column(children, PARENT_VERSION_COLUMN),
                )
            )

    def markers(self) -> pa.Table | None:
        """Marker rows for child rows of superseded parent versions, or None if there are none."""
        if not self._parents or not self._children:
            return None
        parents = pa.table(
            {
                "parent": pa.concat_arrays([keys for keys, _ in self._parents]),
                "version": pa.concat_arrays([versions for _, versions in self._parents]),
            }
        )
        spans = parents.group_by("parent").aggregate([("version", "min"), ("version", "max")])
        changed = spans.filter(pc.not_equal(spans["version_min"], spans["version_max"]))
        if changed.num_rows == 0:
            return None
        children = pa.table(
            {
                "parent": pa.concat_arrays([p for p, _, _ in self._children]),
                "child": pa.concat_arrays([c for _, c, _ in self._children]),
                "version": pa.concat_arrays([v for _, _, v in self._children]),
            }
        )
        of_changed = pc.and_(
            pc.is_in(children["parent"], value_set=changed["parent"].combine_chunks()),
            pc.not_equal(children["child"], ""),  # a parent's "no lines" marker
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
        rows = stale.num_rows
        schema = pa.schema(
            [
                pa.field(CONNECTION_COLUMN, pa.string(), nullable=False),
                pa.field("key", pa.string(), nullable=False),
                pa.field(PARENT_KEY_COLUMN, pa.string(), nullable=False),
                pa.field(PARENT_VERSION_COLUMN, TIMESTAMP_TYPE),
                pa.field(LINE_MARKER_COLUMN, pa.bool_()),
            ]
        )
        return pa.Table.from_arrays(
            [
                pa.array([self._connection] * rows, pa.string()),
                stale["child"].combine_chunks(),
                stale["parent"].combine_chunks(),
                stale["version_max_max"].combine_chunks(),
                pa.array([True] * rows, pa.bool_()),
            ],
            schema=schema,
        )


def _column(table: pa.Table, name: str) -> pa.Array:
    return table.column(name).combine_chunks()


class PageBatcher:
    """Collects consecutive Arrow pages of one record type and converts them together.

    Args:
        converter: The entity's converter.
        max_records: Records collected before they are converted.
    """

    def __init__(self, converter: RecordConverter, max_records: int) -> None:
        self._converter = converter
        self._max_records = max_records
        self._pages: list[tuple[ArrowRecords, str | None]] = []
        self._records = 0

    def add(
        self, records: Sequence[Any] | ArrowRecords, request_id: str | None
    ) -> list[PageTables]:
        """Adds one page; returns whatever tables are ready (in page order).

        Raises:
            ContractViolationError: As `RecordConverter.convert`.
        """
        if not isinstance(records, ArrowRecords):
            # parsed JSON (the client's own parsing): the exact path, after the pages before it
            return [*self.flush(), self._converter.convert(records, request_id)]
        ready = []
        if self._pages and records.records.type != self._pages[0][0].records.type:
            ready = self.flush()
        self._pages.append((records, request_id))
        self._records += len(records)
        if self._records >= self._max_records:
            ready.extend(self.flush())
        return ready

    def flush(self) -> list[PageTables]:
        """Converts the pages collected so far."""
        pages, self._pages, self._records = self._pages, [], 0
        return self._converter.convert_pages(pages) if pages else []


def _flat_columns(
    records: Sequence[Mapping[str, Any]], skip: Iterable[str]
) -> dict[Path, list[Any]]:
    """Flattens records straight into columns, None where a record lacks a path.

    Columns come in first-seen order, level by level: a record's fields in the order they
    first appear on the page, each object's fields in its place (the order pyarrow's JSON
    reader gives, so both paths make the same tables). The columns are built a column at a
    time with list comprehensions, several times faster than one dict per record.
    """
    found: dict[Path, list[Any]] = {}
    _collect(records, None, len(records), (), frozenset(skip), found)
    return found


def _collect(
    records: Sequence[Mapping[str, Any]],
    rows: list[int] | None,
    total: int,
    prefix: Path,
    skip: frozenset[str],
    found: dict[Path, list[Any]],
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
        if not (dict in types or any(issubclass(t, dict) for t in types)):
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
        if scalar_rows:
            scalars = [None] * len(values)
            for i in scalar_rows:
                scalars[i] = values[i]
            _store(found, prefix + (name,), scalars, rows, total)
        if objects:
            sub_rows = object_rows if rows is None else [rows[i] for i in object_rows]
            _collect(objects, sub_rows, total, prefix + (name,), frozenset(), found)


def _fields(records: Sequence[Mapping[str, Any]]) -> Iterator[tuple[str, Sequence[Any], bool]]:
    """(name, values with None where absent, whether every record has the field) per field."""
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


def _with_deleted_at(line: Mapping[str, Any], deleted_at: Any) -> dict[str, Any]:
    copy = dict(line)
    copy["deletedAt"] = deleted_at
    return copy


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
    if kinds == {int}:
        return pa.array(values, pa.int64())
    if kinds <= {int, float}:
        return pa.array(values, pa.float64())
    # lists, objects in lists, or mixed types: keep the value whole, as JSON text
    return pa.array(
        [
            None if v is None else (v if isinstance(v, str) else orjson.dumps(v).decode())
            for v in values
        ],
        pa.string(),
    )


def _typed_arrow(values: pa.Array, field: str | None) -> pa.Array | None:
    """`RecordConverter._typed` for a column parsed by pyarrow's JSON reader."""
    kind = values.type
    if field in DECIMAL_FIELDS:
        target = DECIMAL_TYPE
    elif field in TIMESTAMP_FIELDS:
        target = TIMESTAMP_TYPE
    elif field in BOOLEAN_FIELDS:
        target = pa.bool_()
    else:
        return _inferred_arrow(values)
    if pa.types.is_null(kind):
        return pa.nulls(len(values), target)
    if target == pa.bool_():
        if pa.types.is_boolean(kind):
            return values
        raise Declined(f"{field} is {kind}")
    if not pa.types.is_string(kind):
        raise Declined(f"{field} is {kind}")
    try:
        return _timestamps(values) if target == TIMESTAMP_TYPE else pc.cast(values, target)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        raise Declined(f"{field} has an invalid value") from None


_JSON_TEXT_ITEMS = (pa.types.is_string, pa.types.is_boolean, pa.types.is_int64, pa.types.is_null)


def _inferred_arrow(values: pa.Array) -> pa.Array | None:
    """`_inferred` for a column parsed by pyarrow's JSON reader."""
    kind = values.type
    if pa.types.is_null(kind):
        return None
    if kind in (pa.string(), pa.int64(), pa.float64(), pa.bool_()):
        return values
    if pa.types.is_list(kind) and any(test(kind.value_type) for test in _JSON_TEXT_ITEMS):
        # a list of scalars lands as its JSON text, as the exact path writes it
        return pa.array(
            [None if v is None else orjson.dumps(v).decode() for v in values.to_pylist()],
            pa.string(),
        )
    # lists of objects or floats, and date-like strings (read as timestamps): their exact
    # JSON text is not recoverable from Arrow
    raise Declined(f"a column of {kind}")


def _timestamps(strings: pa.Array) -> pa.Array:
    """RFC 3339 text to UTC timestamps; date-only values are midnight UTC.

    Most columns hold only full timestamps, which cast as they are; only when that fails
    are date-only values completed (a zone-less time still fails: it is not RFC 3339).
    """
    try:
        return pc.cast(strings, TIMESTAMP_TYPE)
    except pa.ArrowInvalid:
        return pc.cast(_midnight(strings), TIMESTAMP_TYPE)


def _midnight(strings: pa.Array) -> pa.Array:
    """`_full_timestamp` of every value, vectorized."""
    date_only = pc.equal(pc.utf8_length(strings), 10)
    if not pc.any(date_only).as_py():
        return strings
    return pc.if_else(date_only, pc.binary_join_element_wise(strings, "T00:00:00Z", ""), strings)


def _full_timestamp(value: Any) -> Any:
    if isinstance(value, str) and len(value) == 10:
        return value + "T00:00:00Z"  # date-only: midnight UTC
    return value


def _kind(field: str | None) -> str:
    if field in DECIMAL_FIELDS:
        return "decimal"
    if field in TIMESTAMP_FIELDS:
        return "RFC 3339 timestamp"
    return "boolean"


def _first_bad_value(values: list[Any], field: str | None) -> Any:
    for value in values:
        if value is None:
            continue
        try:
            if field in DECIMAL_FIELDS:
                pc.cast(pa.array([value], pa.string()), DECIMAL_TYPE)
            elif field in TIMESTAMP_FIELDS:
                pc.cast(pa.array([_full_timestamp(value)], pa.string()), TIMESTAMP_TYPE)
            else:
                pa.array([value], pa.bool_())
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
            return value
    return None
