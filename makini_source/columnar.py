"""Reads page bodies straight into Arrow columns, without building Python objects.

pyarrow's JSON reader parses a page in C++ with the GIL released, so the listing threads parse
pages while the resource's thread converts earlier ones, and it skips the two slowest steps of
the exact path (`orjson.loads` to Python objects, then `pa.array` over them). The catalogue
tells it the types it cannot infer on its own: decimals are read as exact `decimal128(38, 9)`
whether they come as JSON strings or numbers, and timestamps and dates as text (a zone-less
time would otherwise pass for a UTC one).

Whenever a page holds something this path cannot represent exactly (a field whose JSON type
changes within the page, an invalid value, a missing key), it declines (`Declined`), and the
page goes through the exact Python path in `records.RecordConverter`, which also names the bad
value in its error. Both paths produce the same tables; `tests/test_columnar.py` compares them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from makini_source import jsonbody
from makini_source.catalogue import Entity, Field
from makini_source.settings import DECIMAL_PRECISION, DECIMAL_SCALE

Path = tuple[str, ...]
DECIMAL_TYPE = pa.decimal128(DECIMAL_PRECISION, DECIMAL_SCALE)


class Declined(Exception):
    """The page needs the exact Python path."""


class NotAListAnswer(Exception):
    """The body is not a JSON object with a `data` array of records."""


@dataclass
class DecodedPage:
    """One page's records and the rest of its envelope.

    Attributes:
        records: The records: Arrow (`ArrowRecords`) or parsed JSON (a list of dicts).
        envelope: Every top-level field of the answer but `data`, as Python values.
        body: The answer as received (the exact path parses it again when Arrow declines).
        keep: Which of the body's records `records` holds, when not all of them (a walk
            that read some of them before); None: all of them.
    """

    records: Any
    envelope: dict[str, Any]
    body: bytes
    keep: list[bool] | None = None

    def __len__(self) -> int:
        return len(self.records)

    def only(self, keep: list[bool]) -> DecodedPage:
        """The page with only the records flagged in `keep`."""
        if isinstance(self.records, ArrowRecords):
            table = self.records.records
            skipped = keep.index(True) if True in keep else len(keep)
            if all(keep[skipped:]):  # the usual case: the page repeats the last one's tail
                chosen = table.slice(skipped)
            else:
                chosen = table.filter(pa.array(keep, pa.bool_()))
            records: Any = ArrowRecords(chosen, self.records.body)  # type: ignore[arg-type]
        else:
            records = [record for record, kept in zip(self.records, keep) if kept]
        return DecodedPage(records, self.envelope, self.body, keep)

    def exact_records(self, exact_numbers: bool = False) -> list[Any]:
        """The records parsed again from the body as JSON (the exact path), the same ones
        `records` holds.

        Args:
            exact_numbers: Read JSON numbers with fractions as `Decimal`, not float.
        """
        records = exact_records(self.body) if exact_numbers else read_json_page(self.body).records
        if self.keep is not None:
            records = [record for record, kept in zip(records, self.keep) if kept]
        return records

    def keys_and_times(self, field: str | None) -> list[tuple[Any, Any]]:
        """(`key`, `field`) of every record, as Python values (the time None without a
        `field`)."""
        if isinstance(self.records, ArrowRecords):
            records = self.records.records
            keys = field_or_none(records, "key")
            times = field_or_none(records, field) if field is not None else None
            return list(
                zip(
                    keys.to_pylist() if keys is not None else [None] * len(records),
                    times.to_pylist() if times is not None else [None] * len(records),
                )
            )
        return [
            (r.get("key"), r.get(field) if field is not None else None)
            if isinstance(r, dict)
            else (None, None)
            for r in self.records
        ]


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


class PageDecoder:
    """Parses an entity's list answers into `DecodedPage`s.

    Args:
        entity: The entity whose pages are read.
        arrow: Read pages straight into Arrow (the catalogue's choice for the entity); False
            parses every page as JSON.
    """

    # after this many pages in a row that the Arrow reader could not take, a listing stops
    # trying it: each attempt costs a parse
    GIVE_UP_AFTER = 3

    def __init__(self, entity: Entity, arrow: bool = True) -> None:
        self._arrow = arrow
        self._declined_in_a_row = 0
        # decimals are read as text and cast when converted, as the exact path does (the
        # reader's own decimal parsing costs ~15% of a PO page); a server that sends them as
        # JSON numbers gets the reader's decimals from its first page on
        self._options = _parse_options(explicit_fields(entity, decimals_as_text=True))
        self._number_options: pj.ParseOptions | None = _parse_options(explicit_fields(entity))

    def __call__(self, body: bytes) -> DecodedPage:
        """The page.

        Raises:
            NotAListAnswer: The body is JSON but not a list answer.
            InvalidJSON: The body is not strict JSON.
        """
        if self._arrow:
            page = self._read_arrow(body)
            if page is not None:
                self._declined_in_a_row = 0
                return page
            self._declined_in_a_row += 1
            if self._declined_in_a_row >= self.GIVE_UP_AFTER:
                self._arrow = False
        return read_json_page(body)

    def _read_arrow(self, body: bytes) -> DecodedPage | None:
        table = _read_table(body, self._options)
        if table is None and self._number_options is not None:
            table = _read_table(body, self._number_options)
            if table is not None:  # decimals come as JSON numbers: read them so from now on
                self._options, self._number_options = self._number_options, None
        if table is None:
            return None
        if table.num_rows != 1 or any(map(_inexact_floats, table.columns)):
            # pyarrow's reader takes NaN and reads long integers as floats: such a page goes
            # to the exact path, which refuses the one and keeps the other whole (checked on
            # the parsed floats: scanning every body for them cost more than parsing it)
            return None
        data = table.column("data").combine_chunks()
        if not pa.types.is_list(data.type) or data.null_count:
            return None
        records = data.flatten()
        if pa.types.is_null(records.type):  # `"data": []`
            records = pa.array([], pa.struct([]))
        elif not pa.types.is_struct(records.type):
            return None
        envelope = {
            name: table.column(name)[0].as_py() for name in table.column_names if name != "data"
        }
        return DecodedPage(ArrowRecords(records, body), envelope, body)  # type: ignore[arg-type]


def _parse_options(fields: list[pa.Field]) -> pj.ParseOptions:
    return pj.ParseOptions(
        explicit_schema=pa.schema([pa.field("data", pa.list_(pa.struct(fields)))]),
        unexpected_field_behavior="infer",  # every other field is typed from its values
        newlines_in_values=True,
    )


def _read_table(body: bytes, options: pj.ParseOptions) -> pa.Table | None:
    """The body read by pyarrow's JSON reader, or None where it cannot read it."""
    try:
        table = pj.read_json(
            pa.BufferReader(body),
            # one block holds the whole body: a record never straddles blocks, and the
            # reader infers one type per field for the whole page
            read_options=pj.ReadOptions(use_threads=False, block_size=len(body) + 64),
            parse_options=options,
        )
        # the reader does not check UTF-8: invalid text goes to the exact path, which
        # refuses it (orjson)
        table.validate(full=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None
    return table


# a float beyond this magnitude may be an integer literal that lost digits
_EXACT_INTEGER_LIMIT = 2.0**53


def _inexact_floats(values: pa.Array | pa.ChunkedArray) -> bool:
    """Whether any float at any depth of `values` is NaN, infinite, or so large that it may
    stand for an integer literal read without all of its digits."""
    if isinstance(values, pa.ChunkedArray):
        return any(_inexact_floats(chunk) for chunk in values.chunks)
    return any(_inexact(_leaf(values, path)) for path in _float_paths(values.type))


@functools.lru_cache(maxsize=256)
def _float_paths(kind: pa.DataType) -> tuple[tuple[int | None, ...], ...]:
    """The ways down a value of `kind` to each of its float columns: a struct field's index,
    or None for a list's items, per level (`()` when `kind` is a float). Cached, because every
    page of a listing has the same type and walking it costs more than checking its floats."""
    if pa.types.is_floating(kind):
        return ((),)
    if pa.types.is_struct(kind):
        return tuple(
            (index, *path)
            for index in range(kind.num_fields)
            for path in _float_paths(kind.field(index).type)
        )
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return tuple((None, *path) for path in _float_paths(kind.value_type))
    return ()


def _leaf(values: pa.Array, path: tuple[int | None, ...]) -> pa.Array:
    for step in path:
        values = values.flatten() if step is None else values.field(step)
    return values


def _inexact(floats: pa.Array) -> bool:
    if floats.null_count == len(floats):
        return False
    # NaN and infinities fail the comparison too; nulls are skipped
    return not pc.all(pc.less(pc.abs(floats), _EXACT_INTEGER_LIMIT)).as_py()


def read_json_page(body: bytes) -> DecodedPage:
    """The exact path's parse of a list answer.

    Raises:
        NotAListAnswer: The body is JSON but not an object with a `data` array.
        InvalidJSON: The body is not strict JSON.
    """
    parsed = jsonbody.loads(body)
    if not isinstance(parsed, dict) or not isinstance(parsed.get("data"), list):
        raise NotAListAnswer("the answer is not a JSON object with a 'data' array")
    records = parsed.pop("data")
    return DecodedPage(records, parsed, body)


def exact_records(body: bytes) -> list[Any]:
    """The records of a body with every JSON number that has a fraction as a `Decimal`.

    orjson reads such numbers as floats; a decimal sent as a JSON number (some systems do)
    must land with exactly the digits sent.
    """
    parsed = jsonbody.loads(body, exact_numbers=True)
    records = parsed.get("data") if isinstance(parsed, dict) else None
    if not isinstance(records, list):
        raise NotAListAnswer("the answer is not a JSON object with a 'data' array")
    return records


def explicit_fields(entity: Entity, decimals_as_text: bool = False) -> list[pa.Field]:
    """The Arrow fields the reader must not infer, at every level of an entity's records.

    Args:
        entity: The entity.
        decimals_as_text: Read decimals as text (JSON strings only) instead of as decimals
            (JSON strings or numbers).
    """
    decimal = pa.string() if decimals_as_text else DECIMAL_TYPE
    fields = _typed_fields(entity.fields, decimal)
    for child in entity.children:
        child_fields = _typed_fields(child.fields, decimal)
        fields.append(pa.field(child.field, pa.list_(pa.struct(child_fields))))
    return fields


def _typed_fields(fields: Iterable[Field], decimal: pa.DataType) -> list[pa.Field]:
    typed = []
    for field in fields:
        if field.type == "decimal":
            typed.append(pa.field(field.name, decimal))
        elif field.type in ("timestamp", "date"):
            typed.append(pa.field(field.name, pa.string()))
        elif field.type == "object" and field.fields:
            sub = _typed_fields(field.fields, decimal)
            if sub:
                typed.append(pa.field(field.name, pa.struct(sub)))
    return typed


def check_records(records: pa.StructArray, key_required: bool, time_field: str | None) -> None:
    """Declines unless every record is an object with its key and cursor time."""
    if records.null_count:
        raise Declined("a record is not an object")
    if key_required:
        key = field_or_none(records, "key")
        if key is None or not pa.types.is_string(key.type) or key.null_count:
            raise Declined("a record has no key")
        if len(key) and pc.min(pc.utf8_length(key)).as_py() == 0:
            raise Declined("a record has an empty key")
    if time_field is not None:
        updated = field_or_none(records, time_field)
        if updated is None or updated.null_count or not pa.types.is_string(updated.type):
            raise Declined(f"a record has no {time_field} text")


def field_or_none(records: pa.StructArray, name: str) -> pa.Array | None:
    """A struct's child column by name (with the struct's nulls), or None if absent."""
    index = records.type.get_field_index(name)
    if index < 0:
        return None
    return records.flatten()[index] if records.null_count else records.field(index)


def without_fields(records: pa.StructArray, names: Sequence[str]) -> pa.StructArray:
    """The records without the given top-level fields."""
    keep = [i for i, field in enumerate(records.type) if field.name not in names]
    children = records.flatten()
    return pa.StructArray.from_arrays(
        [children[i] for i in keep],
        fields=[records.type.field(i) for i in keep],
        mask=records.is_null() if records.null_count else None,
    )


def nest_fields(records: pa.StructArray, known: frozenset[str], into: str) -> pa.StructArray:
    """Moves every top-level field not in `known` into one struct field `into`.

    The unified dialect sends a record's custom fields as extra top-level keys; nested like
    this they make the same columns as v1's `customFields` object.
    """
    extra = [i for i, field in enumerate(records.type) if field.name not in known]
    if not extra:
        return records
    children = records.flatten()
    kept = [i for i in range(records.type.num_fields) if i not in extra]
    nested = pa.StructArray.from_arrays(
        [children[i] for i in extra], fields=[records.type.field(i) for i in extra]
    )
    return pa.StructArray.from_arrays(
        [*(children[i] for i in kept), nested],
        fields=[*(records.type.field(i) for i in kept), pa.field(into, nested.type)],
    )


def flatten(
    records: pa.StructArray,
    skip: Sequence[str] = (),
    prefix: Path = (),
    leaves: frozenset[Path] = frozenset(),
) -> dict[Path, pa.Array]:
    """Flattens nested objects into one column per path, as the exact path does.

    A row whose object is null has nulls in every column below it. Lists stay whole. An
    object at a path in `leaves` (a declared value, e.g. `deletedAt`) declines: the exact
    path keeps it whole or refuses it.
    """
    columns: dict[Path, pa.Array] = {}
    children = records.flatten()  # merges the struct's own nulls into its children
    for field, child in zip(records.type, children):
        if field.name in skip:
            continue
        path = prefix + (field.name,)
        if pa.types.is_struct(field.type):
            if path in leaves:
                raise Declined(f"an object at {'.'.join(path)}")
            if field.type.num_fields == 0:
                continue  # `{}` everywhere: no column, as on the exact path
            columns.update(flatten(child, (), path, leaves))
        else:
            columns[path] = child
    return columns


@dataclass
class ChildRows:
    """The rows of a child table built from one page's nested lists.

    Attributes:
        items: One struct row per output row; null for a marker row. None when no record
            has an item at all (every row is a marker).
        parent: Index of each row's record on the page.
        position: Each row's 1-based place in its record's list (0 on a marker row).
        is_marker: True for a marker row (a record with no item left), else null.
        deleted_at: Each item's own `deletedAt`, else its record's (text; null on markers).
    """

    items: pa.StructArray | None
    parent: pa.Array
    position: pa.Array
    is_marker: pa.Array
    deleted_at: pa.Array


def child_rows(
    lists: pa.Array | None,
    parent_deleted: pa.Array,
    hard_delete: bool,
    key_required: bool,
) -> ChildRows:
    """Selects and orders the rows of a child table, record by record.

    Every record contributes its items in order; with `hard_delete`, deleted items and all
    items of a deleted record are left out. A record left with no item contributes one marker
    row instead.
    """
    records = len(parent_deleted)
    if lists is None or pa.types.is_null(lists.type):
        lists = pa.nulls(records, pa.list_(pa.null()))
    if not pa.types.is_list(lists.type):
        raise Declined("a child list is not an array")
    items = lists.flatten()
    if items.null_count:
        raise Declined("a child item is not an object")
    if pa.types.is_null(items.type):
        items_struct: pa.StructArray | None = None  # only empty lists
    elif pa.types.is_struct(items.type):
        items_struct = items
        if key_required and len(items):
            key = field_or_none(items, "key")
            if key is None or not pa.types.is_string(key.type) or key.null_count:
                raise Declined("a child item has no key")
            if len(key) and pc.min(pc.utf8_length(key)).as_py() == 0:
                raise Declined("a child item has an empty key")
    else:
        raise Declined("a child item is not an object")

    parent = pc.list_parent_indices(lists).cast(pa.int64())
    starts = pc.list_value_length(lists).fill_null(0)
    offsets = pc.subtract(pc.cumulative_sum(starts), starts).cast(pa.int64())
    position = pc.subtract(_counting(len(items), start=1), offsets.take(parent))
    own_deleted = _text_or_nulls(
        None if items_struct is None else field_or_none(items_struct, "deletedAt"), len(items)
    )
    deleted = pc.coalesce(own_deleted, _text_or_nulls(parent_deleted, records).take(parent))
    if pc.any(pc.equal(pc.utf8_length(deleted), 0)).as_py():
        raise Declined("an empty deletedAt")
    if not hard_delete and _every_list_has_items(lists):
        # the common page: every record keeps all of its items, in order, and needs no marker
        return ChildRows(
            items=items_struct,
            parent=parent,
            position=position,
            is_marker=pa.nulls(len(items), pa.bool_()),
            deleted_at=deleted,
        )
    kept = pc.indices_nonzero(pc.is_null(deleted)) if hard_delete else None
    kept_parent = parent if kept is None else parent.take(kept)
    kept_item = _counting(len(items)) if kept is None else kept.cast(pa.int64())

    everyone = _counting(records)
    markers = pc.indices_nonzero(pc.invert(pc.is_in(everyone, pc.unique(kept_parent))))
    markers = markers.cast(pa.int64())
    row_parent = pa.concat_arrays([kept_parent, markers])
    row_item = pa.concat_arrays([kept_item, pa.nulls(len(markers), pa.int64())])
    order = pc.sort_indices(row_parent)  # stable: a record's items keep their order
    row_parent = row_parent.take(order)
    row_item = row_item.take(order)
    is_marker = pc.if_else(pc.is_null(row_item), True, pa.scalar(None, pa.bool_()))
    return ChildRows(
        items=None if items_struct is None else items_struct.take(row_item),
        parent=row_parent,
        position=position.take(row_item).fill_null(0),
        is_marker=is_marker,
        deleted_at=deleted.take(row_item),
    )


def _counting(length: int, start: int = 0) -> pa.Array:
    """`start, start + 1, ...`: `length` int64 values, built in Arrow (`pa.array(range(n))`
    iterates in Python, ~0.1 µs a value, on the thread every page goes through)."""
    ones = pc.fill_null(pa.nulls(length, pa.int64()), 1)
    return pc.add(pc.cumulative_sum(ones), start - 1)


def _every_list_has_items(lists: pa.Array) -> bool:
    lengths = pc.list_value_length(lists)
    return lengths.null_count == 0 and (len(lengths) == 0 or pc.min(lengths).as_py() > 0)


def _text_or_nulls(values: pa.Array | None, length: int) -> pa.Array:
    if values is None or pa.types.is_null(values.type):
        return pa.nulls(length, pa.string())
    if not pa.types.is_string(values.type):
        raise Declined("deletedAt is not text")
    return values
