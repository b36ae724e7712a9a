"""Reads a page body straight into Arrow columns, without building Python objects.

pyarrow's JSON reader parses a page in C++ with the GIL released, so the read-ahead thread
parses the next page while the main thread converts this one, and it skips the two slowest
steps of the exact path (`orjson.loads` to Python objects, then `pa.array` over them).

It reads the common page exactly: records of scalars, nested objects and lists of scalars.
Whenever a page holds something it cannot represent exactly (a field whose JSON type changes
within the page, lists of objects, a date-like string in an untyped field, an invalid value,
a missing key) it declines, and the page goes through the exact Python path in
`records.RecordConverter`, which also names the bad value in its error. Both paths produce
the same tables; `tests/test_units.py` compares them page by page.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from makini_source.client import Page
from makini_source.settings import TIMESTAMP_FIELDS, EntitySpec

Path = tuple[str, ...]


class Declined(Exception):
    """The page needs the exact Python path."""


@dataclass
class ArrowRecords:
    """The records of one page as Arrow, with the body they came from.

    Attributes:
        records: One struct row per record.
        body: The page as received, for the exact path when the Arrow path declines.
    """

    records: pa.StructArray
    body: bytes

    def __len__(self) -> int:
        return len(self.records)


class PageReader:
    """Parses an entity's list answers into `Page`s whose records are `ArrowRecords`.

    Use it as the client's page decoder: `client.iter_pages(..., decode=PageReader(spec))`.
    The entity's timestamp fields are read as text (converted later, exactly like the exact
    path does): left to inference, the reader would take `...T10:00:00Z` and a zone-less
    `...T10:00:00` alike for naive timestamps, and the second is not RFC 3339.

    Args:
        spec: The entity whose pages are read.
    """

    def __init__(self, spec: EntitySpec) -> None:
        fields = [pa.field(name, pa.string()) for name in spec.fields if name in TIMESTAMP_FIELDS]
        if spec.child_field:
            line_fields = [
                pa.field(name, pa.string())
                for name in spec.child_fields
                if name in TIMESTAMP_FIELDS
            ]
            fields.append(pa.field(spec.child_field, pa.list_(pa.struct(line_fields))))
        self._options = pj.ParseOptions(
            explicit_schema=pa.schema([pa.field("data", pa.list_(pa.struct(fields)))]),
            unexpected_field_behavior="infer",  # every other field is typed from its values
            newlines_in_values=True,
        )

    def __call__(self, body: bytes) -> Page | None:
        """The page, or None when the body is not a well-formed list answer this reader can
        type (the client's JSON path then parses it and reports what is wrong with it)."""
        try:
            table = pj.read_json(
                pa.BufferReader(body),
                # one block holds the whole body: a record never straddles blocks, and the
                # reader infers one type per field for the whole page
                read_options=pj.ReadOptions(use_threads=False, block_size=len(body) + 64),
                parse_options=self._options,
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return None
        return _page(table, body)


def _page(table: pa.Table, body: bytes) -> Page | None:
    names = table.column_names
    if table.num_rows != 1 or "data" not in names or "next_cursor" not in names:
        return None
    data = table.column("data").combine_chunks()
    if not pa.types.is_list(data.type) or data.null_count:
        return None
    records = data.flatten()
    if pa.types.is_null(records.type):  # `"data": []`
        records = pa.array([], pa.struct([]))
    elif not pa.types.is_struct(records.type):
        return None
    next_cursor = table.column("next_cursor")[0].as_py()
    if next_cursor is not None and not isinstance(next_cursor, str):
        return None
    total = table.column("total_count")[0].as_py() if "total_count" in names else None
    return Page(
        records=ArrowRecords(records, body),  # type: ignore[arg-type]
        next_cursor=next_cursor,
        total_count=total if isinstance(total, int) and not isinstance(total, bool) else None,
        request_id=None,
    )


def check_records(records: pa.StructArray) -> None:
    """Declines unless every record is an object with a non-empty `key` and an `updatedAt`."""
    if records.null_count:
        raise Declined("a record is not an object")
    key = field_or_none(records, "key")
    if key is None or not pa.types.is_string(key.type) or key.null_count:
        raise Declined("a record has no key")
    if len(key) and pc.min(pc.utf8_length(key)).as_py() == 0:
        raise Declined("a record has an empty key")
    updated = field_or_none(records, "updatedAt")
    if updated is None or updated.null_count or not pa.types.is_string(updated.type):
        raise Declined("a record has no updatedAt text")


def field_or_none(records: pa.StructArray, name: str) -> pa.Array | None:
    """A struct's child column by name (with the struct's nulls), or None if absent."""
    index = records.type.get_field_index(name)
    if index < 0:
        return None
    return records.flatten()[index] if records.null_count else records.field(index)


def flatten(
    records: pa.StructArray, skip: tuple[str, ...] = (), prefix: Path = ()
) -> dict[Path, pa.Array]:
    """Flattens nested objects into one column per path, as the exact path does.

    A row whose object is null has nulls in every column below it. Lists stay whole.
    """
    columns: dict[Path, pa.Array] = {}
    children = records.flatten()  # merges the struct's own nulls into its children
    for field, child in zip(records.type, children):
        if field.name in skip:
            continue
        path = prefix + (field.name,)
        if pa.types.is_struct(field.type):
            columns.update(flatten(child, (), path))
        else:
            columns[path] = child
    return columns


@dataclass
class ChildRows:
    """The rows of a child table built from one page's nested lists.

    Attributes:
        lines: One struct row per output row; null for a marker row. None when no record
            has a line at all (every row is a marker).
        parent: Index of each row's record on the page.
        is_marker: True for a marker row (a record with no line left), else null.
        deleted_at: Each line's own `deletedAt`, else its record's (text; null on markers).
    """

    lines: pa.StructArray | None
    parent: pa.Array
    is_marker: pa.Array
    deleted_at: pa.Array


def child_rows(lists: pa.Array | None, parent_deleted: pa.Array, hard_delete: bool) -> ChildRows:
    """Selects and orders the rows of the child table, record by record.

    Every record contributes its lines in order; with `hard_delete`, deleted lines and all
    lines of a deleted record are left out. A record left with no line contributes one
    marker row instead.
    """
    records = len(parent_deleted)
    if lists is None or pa.types.is_null(lists.type):
        lists = pa.nulls(records, pa.list_(pa.null()))
    if not pa.types.is_list(lists.type):
        raise Declined("lines are not an array")
    lines = lists.flatten()
    if lines.null_count:
        raise Declined("a line is not an object")
    if pa.types.is_null(lines.type):
        lines_struct: pa.StructArray | None = None  # only empty lists
    elif pa.types.is_struct(lines.type):
        lines_struct = lines
        key = field_or_none(lines, "key")
        if key is None or not pa.types.is_string(key.type) or key.null_count:
            raise Declined("a line has no key")
        if len(key) and pc.min(pc.utf8_length(key)).as_py() == 0:
            raise Declined("a line has an empty key")
    else:
        raise Declined("a line is not an object")

    parent = pc.list_parent_indices(lists).cast(pa.int64())
    own_deleted = _text_or_nulls(
        None if lines_struct is None else field_or_none(lines_struct, "deletedAt"), len(lines)
    )
    deleted = pc.coalesce(own_deleted, _text_or_nulls(parent_deleted, records).take(parent))
    if pc.any(pc.equal(pc.utf8_length(deleted), 0)).as_py():
        raise Declined("an empty deletedAt")
    if not hard_delete and _every_list_has_items(lists):
        # the common page: every record keeps all of its lines, in order, and needs no marker
        return ChildRows(
            lines=lines_struct,
            parent=parent,
            is_marker=pa.nulls(len(lines), pa.bool_()),
            deleted_at=deleted,
        )
    kept = pc.indices_nonzero(pc.is_null(deleted)) if hard_delete else None
    kept_parent = parent if kept is None else parent.take(kept)
    kept_line = pa.array(range(len(lines)), pa.int64()) if kept is None else kept.cast(pa.int64())

    everyone = pa.array(range(records), pa.int64())
    markers = pc.indices_nonzero(pc.invert(pc.is_in(everyone, pc.unique(kept_parent))))
    markers = markers.cast(pa.int64())
    row_parent = pa.concat_arrays([kept_parent, markers])
    row_line = pa.concat_arrays([kept_line, pa.nulls(len(markers), pa.int64())])
    order = pc.sort_indices(row_parent)  # stable: a record's lines keep their order
    row_parent = row_parent.take(order)
    row_line = row_line.take(order)
    is_marker = pc.if_else(pc.is_null(row_line), True, pa.scalar(None, pa.bool_()))
    return ChildRows(
        lines=None if lines_struct is None else lines_struct.take(row_line),
        parent=row_parent,
        is_marker=is_marker,
        deleted_at=deleted.take(row_line),
    )


def _every_list_has_items(lists: pa.Array) -> bool:
    lengths = pc.list_value_length(lists)
    return lengths.null_count == 0 and (len(lengths) == 0 or pc.min(lengths).as_py() > 0)


def _text_or_nulls(values: pa.Array | None, length: int) -> pa.Array:
    if values is None or pa.types.is_null(values.type):
        return pa.nulls(length, pa.string())
    if not pa.types.is_string(values.type):
        raise Declined("deletedAt is not text")
    return values
