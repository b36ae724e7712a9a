"""The Arrow path (`columnar.PageDecoder`) against the exact path (orjson + Python conversion).

Both must make the same tables from the same page: the same columns in the same order, the
same types and the same values. Pages come from the sandbox over HTTP, and hand-written
bodies cover the corners (missing fields, nulls, deleted records and lines, dates, lists).
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pyarrow as pa
import pytest

from makini_sandbox import ConnectionConfig, SandboxConfig
from makini_source.catalogue import default_entities, load_catalogue
from makini_source.client import MakiniClient
from makini_source.columnar import PageDecoder, read_json_page
from makini_source.dialects.v1 import V1Dialect
from makini_source.exceptions import ContractViolationError
from makini_source.records import PageBatcher, PageTables, RecordConverter
from makini_source.window import Window

ENTITIES = load_catalogue()


def assert_same_tables(exact: PageTables, arrow: PageTables, label: str) -> None:
    assert (exact.main is None) == (arrow.main is None), label
    pairs = [("main", exact.main, arrow.main)] if exact.main is not None else []
    assert set(exact.children) == set(arrow.children), label
    pairs += [(name, exact.children[name], arrow.children[name]) for name in exact.children]
    for part, want, got in pairs:
        assert got.schema == want.schema, f"{label} {part}:\n{got.schema}\n!=\n{want.schema}"
        assert got.equals(want), f"{label} {part}: values differ"
    assert arrow.live_children == exact.live_children, label


def convert_both(
    body: bytes,
    entity: str = "purchase_orders",
    hard_delete: bool = False,
    top_level_custom: bool = False,
) -> tuple[PageTables, PageTables, RecordConverter]:
    spec = ENTITIES[entity]
    exact = RecordConverter(
        spec, "acme", hard_delete=hard_delete, custom_fields_at_top_level=top_level_custom
    )
    arrow = RecordConverter(
        spec, "acme", hard_delete=hard_delete, custom_fields_at_top_level=top_level_custom
    )
    want = exact.convert(read_json_page(body))
    page = PageDecoder(spec)(body)
    if not hasattr(page.records, "records"):  # not read into Arrow at all
        arrow.declined_pages += 1
    return want, arrow.convert(page), arrow


@pytest.mark.parametrize(
    ("hard_delete", "lines_per_po"),
    [
        (False, (0, 4)),
        (True, (0, 4)),
        (False, (1, 4)),  # every PO has a line: no marker rows, lines taken as they are
    ],
)
def test_sandbox_pages_convert_the_same_on_both_paths(
    sandbox_factory: Any, hard_delete: bool, lines_per_po: tuple[int, int]
) -> None:
    config = SandboxConfig(
        seed=11,
        connections=[
            ConnectionConfig(
                name="acme",
                token="tok_acme",
                purchase_orders=120,
                lines_per_po=lines_per_po,  # (0, n): some POs have no lines
                custom_fields={
                    "Cost Center": "string",
                    "projectCode": "integer",
                    "Budget": "number",
                },
            )
        ],
    )
    sandbox = sandbox_factory(config)
    # tombstones: a deleted PO keeps its lines; a deleted line inside a live PO
    sandbox.delete_record("acme", "purchase-orders", "PO-000003")
    po = next(r for r in sandbox.records("purchase_orders", "acme") if len(r["lineItems"]) > 1)
    lines = po["lineItems"]
    lines[0]["deletedAt"] = "2031-01-01T00:00:00Z"
    sandbox.put_record("acme", "purchase-orders", po["key"], {"lineItems": lines})

    arrow_pages = 0
    with MakiniClient(sandbox.url, sandbox.tokens["acme"], "acme") as client:
        for spec in default_entities():
            window = Window(None, None, None)
            exact_pages = list(
                V1Dialect().pages(client, spec, window, 50, PageDecoder(spec, arrow=False))
            )
            fast_pages = list(V1Dialect().pages(client, spec, window, 50, PageDecoder(spec)))
            assert len(fast_pages) == len(exact_pages) > 0
            exact = RecordConverter(spec, "acme", hard_delete=hard_delete)
            fast = RecordConverter(spec, "acme", hard_delete=hard_delete)
            for number, (want, got) in enumerate(zip(exact_pages, fast_pages)):
                assert got.total == want.total and got.request_id
                assert_same_tables(
                    exact.convert(want.decoded, want.request_id),
                    fast.convert(got.decoded, got.request_id),
                    f"{spec.name} page {number}",
                )
            # the catalogue types every entity, so the Arrow path takes every page
            assert fast.declined_pages == 0, spec.name
            arrow_pages += len(fast_pages)
    assert arrow_pages > 0


def _po(po_key: str, **fields: Any) -> dict[str, Any]:
    key = po_key
    record: dict[str, Any] = {
        "key": key,
        "orderNo": f"45{key}",
        "totalNetValue": "10.5000",
        "orderDate": "2024-01-05",
        "createdAt": "2024-01-05T10:00:00Z",
        "updatedAt": "2024-01-06T10:00:00.123Z",
        "deletedAt": None,
        "customFields": {"Cost Center": "CC-1", "projectCode": 7},
        "lineItems": [
            {"key": f"{key}-1", "quantity": "2.0000", "price": "5.2500", "deletedAt": None},
        ],
    }
    record.update(fields)
    return record


def _body(records: list[Any], pretty: bool = False) -> bytes:
    envelope = {"data": records, "next_cursor": None, "total_count": len(records)}
    return orjson.dumps(envelope, option=orjson.OPT_INDENT_2 if pretty else 0)


CORNER_PAGES = {
    "plain": [_po("A"), _po("B")],
    "pretty-printed body": [_po("A"), _po("B")],
    "fields missing on some records": [
        _po("A", shipmentAddress={"city": "Oslo", "addressLines": ["1 Main St"]}),
        {k: v for k, v in _po("B").items() if k not in ("orderNo", "customFields")},
    ],
    "nested object null then set": [
        _po("A", deliveryAddress=None),
        _po("B", deliveryAddress={"city": "Lyon", "postCode": "69001"}),
    ],
    "no lines, null lines, missing lines": [
        _po("A", lineItems=[]),
        _po("B", lineItems=None),
        {k: v for k, v in _po("C").items() if k != "lineItems"},
        _po("D"),
    ],
    "deleted record and deleted line": [
        _po("A", deletedAt="2024-02-01T00:00:00Z"),
        _po(
            "B",
            lineItems=[
                {"key": "B-1", "quantity": "1", "deletedAt": "2024-02-02T00:00:00Z"},
                {"key": "B-2", "quantity": "3"},
            ],
        ),
    ],
    "every line deleted": [
        _po("A", lineItems=[{"key": "A-1", "deletedAt": "2024-02-02T00:00:00Z"}]),
    ],
    "lists of scalars become JSON text": [
        _po("A", tags=["x", "y"], codes=[1, 2], flags=[True], empty=[]),
        _po("B", tags=[], codes=None, flags=[False, None], empty=[]),
    ],
    "lists of text, some null or empty (built in Arrow)": [
        _po("A", tags=["é", "😀", "a b", "", "\u2028", "a/b"]),
        _po("B", tags=None),
        _po("C", tags=[]),
        {k: v for k, v in _po("D").items() if k != "tags"},
    ],
    "lists of text that JSON escapes": [
        _po("A", tags=['say "hi"', "back\\slash"]),
        _po("B", tags=["line\nbreak", "\u0001", None]),
    ],
    "declared lists of text (built in Arrow), some that JSON escapes": [
        _po("A", shipmentAddress={"addressLines": ["tab\there", "plain"], "city": "Oslo"}),
        _po("B", shipmentAddress={"addressLines": ['say "hi"', "back\\slash"]}),
        _po("C", shipmentAddress={"addressLines": ["\u001f"]}),
        _po("D", shipmentAddress={"addressLines": ["\u007f", "é", "😀", ""]}),
        _po("E", shipmentAddress={"addressLines": []}),
    ],
    "declared lists of text that need no escape": [
        _po("A", shipmentAddress={"addressLines": ["\u007f", "é", "😀", "", "a/b"]}),
        _po("B", shipmentAddress={"addressLines": []}),
        _po("C", shipmentAddress={"addressLines": None}),
    ],
    "custom field null on the whole page": [
        _po("A", customFields={"Budget": None}),
        _po("B", customFields={"Budget": None}),
    ],
    "ints and floats in a custom field": [
        _po("A", customFields={"Budget": 10}),
        _po("B", customFields={"Budget": 10.5}),
    ],
    "money as JSON numbers, exact digits": [
        _po("A", totalNetValue=1234567.8901, totalGrossValue=0.1),
        _po("B", totalNetValue=10, lineItems=[{"key": "B-1", "quantity": 2.5, "price": 3}]),
    ],
    "date-only field sent as a full timestamp": [
        _po("A", orderDate="2024-01-05T23:30:00Z"),
        _po("B", orderDate="2024-01-06"),
    ],
    "numbers and booleans sent as text in typed fields": [
        _po("A", shipmentAddress={"isActive": "true", "city": "Oslo"}),
        _po("B", shipmentAddress={"isActive": "FALSE", "city": "Rome"}),
    ],
    "empty page": [],
}


def _unified(po: dict[str, Any]) -> dict[str, Any]:
    """A v1 PO as the unified dialect sends it: custom fields as top-level keys, no
    createdAt/deletedAt."""
    record = {k: v for k, v in po.items() if k not in ("customFields", "createdAt", "deletedAt")}
    record.update(po.get("customFields") or {})
    return record


def _unified_body(records: list[dict[str, Any]]) -> bytes:
    meta = {"current_page": 1, "per_page": 100, "total": len(records), "last_page": 1}
    return orjson.dumps({"data": records, "links": {"next": None}, "meta": meta})


def test_unified_pages_make_the_same_tables_as_v1_pages() -> None:
    """Custom fields as top-level keys (unified) make the same columns as v1's object."""
    v1_records = [_po("A"), _po("B", customFields={"Cost Center": "CC-2", "Region": "EU"})]
    v1 = RecordConverter(ENTITIES["purchase_orders"], "acme").convert(
        read_json_page(_body(v1_records))
    )
    body = _unified_body([_unified(r) for r in v1_records])
    exact, arrow, converter = convert_both(body, top_level_custom=True)
    assert converter.declined_pages == 0
    assert_same_tables(exact, arrow, "unified")
    assert v1.main is not None and arrow.main is not None
    assert arrow.main.column_names == v1.main.column_names
    assert arrow.main.column("custom_fields__region").to_pylist() == [None, "EU"]
    assert arrow.main.column("created_at").null_count == 2  # unified POs have none


@pytest.mark.parametrize("hard_delete", [False, True])
@pytest.mark.parametrize("case", list(CORNER_PAGES))
def test_corner_pages_take_the_arrow_path_and_match(case: str, hard_delete: bool) -> None:
    body = _body(CORNER_PAGES[case], pretty=case.startswith("pretty"))
    exact, arrow, converter = convert_both(body, hard_delete=hard_delete)
    assert converter.declined_pages == 0
    assert_same_tables(exact, arrow, case)


DECLINED_PAGES = {
    "custom field changes type": [
        _po("A", customFields={"Cost Center": "CC-1"}),
        _po("B", customFields={"Cost Center": 42}),
    ],
    "list of floats": [_po("A", weights=[1, 2.5])],
    "date-like text in an untyped field": [_po("A", goLive="2024-05-01")],
    "a typed field that does not fit its type": [
        _po("A", shipmentAddress={"isActive": "maybe"}),
    ],
}


@pytest.mark.parametrize("case", list(DECLINED_PAGES))
def test_pages_the_arrow_path_cannot_type_exactly_take_the_exact_path(case: str) -> None:
    exact, arrow, converter = convert_both(_body(DECLINED_PAGES[case]))
    assert_same_tables(exact, arrow, case)
    assert converter.declined_pages == 1


@pytest.mark.parametrize(
    ("record", "field"),
    [
        (_po("A", totalNetValue="12,50"), "totalNetValue"),
        (_po("A", totalNetValue=1.1234567891), "totalNetValue"),  # would need rounding
        (_po("A", totalNetValue=True), "totalNetValue"),
        (_po("A", dueAt="2024-01-05T10:00:00"), "dueAt"),
        (_po("A", updatedAt=None), "updatedAt"),
        (_po("A", key=""), "key"),
        (_po("A", lineItems=[{"quantity": "1"}]), "lineItems.key"),
    ],
)
def test_bad_values_raise_the_exact_paths_error(record: dict[str, Any], field: str) -> None:
    body = _body([_po("OK"), record])
    spec = ENTITIES["purchase_orders"]
    with pytest.raises(ContractViolationError) as exact_error:
        RecordConverter(spec, "acme").convert(read_json_page(body), "req-1")
    with pytest.raises(ContractViolationError) as arrow_error:
        RecordConverter(spec, "acme").convert(PageDecoder(spec)(body), "req-1")
    assert str(arrow_error.value) == str(exact_error.value)
    assert arrow_error.value.field == field
    assert arrow_error.value.request_id == "req-1"


def test_date_only_fields_are_dates_and_timestamps_utc() -> None:
    _, arrow, converter = convert_both(
        _body([_po("A", orderDate="2024-03-01", dueAt="2024-03-05")])
    )
    assert converter.declined_pages == 0
    assert arrow.main is not None
    assert arrow.main.schema.field("order_date").type == pa.date32()
    assert arrow.main.column("order_date")[0].as_py().isoformat() == "2024-03-01"
    # a date-only value in a timestamp field is midnight UTC
    assert arrow.main.column("due_at")[0].as_py().isoformat() == "2024-03-05T00:00:00+00:00"
    assert arrow.main.schema.field("total_net_value").type == pa.decimal128(38, 9)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"data": [{"key": "A"}]',  # cut off
        b'{"data": null, "next_cursor": null}',
        b'[{"key": "A"}]',
        b'{"data": [1, 2], "next_cursor": null}',
    ],
)
def test_bodies_that_are_not_list_answers_are_refused_on_both_paths(body: bytes) -> None:
    from makini_source.columnar import NotAListAnswer

    for arrow in (True, False):
        decoder = PageDecoder(ENTITIES["purchase_orders"], arrow=arrow)
        try:
            page = decoder(body)
        except (NotAListAnswer, ValueError):
            continue
        # JSON with a data array of non-objects: the converter refuses its records
        with pytest.raises(ContractViolationError):
            RecordConverter(ENTITIES["purchase_orders"], "acme").convert(page, "r")


def _concat(tables: list[pa.Table]) -> pa.Table:
    return pa.concat_tables(tables, promote_options="default").combine_chunks()


@pytest.mark.parametrize("hard_delete", [False, True])
def test_pages_converted_together_give_the_rows_of_pages_converted_alone(
    sandbox_factory: Any, hard_delete: bool
) -> None:
    config = SandboxConfig(
        seed=13,
        connections=[
            ConnectionConfig(
                name="acme",
                token="tok_acme",
                purchase_orders=260,
                lines_per_po=(0, 3),
                custom_fields={"Cost Center": "string", "projectCode": "integer"},
            )
        ],
    )
    sandbox = sandbox_factory(config)
    sandbox.delete_record("acme", "purchase-orders", "PO-000004")
    with MakiniClient(sandbox.url, sandbox.tokens["acme"], "acme") as client:
        for name in ("purchase_orders", "vendors", "work_orders"):
            spec = ENTITIES[name]
            window = Window(None, None, None)
            pages = list(V1Dialect().pages(client, spec, window, 25, PageDecoder(spec)))
            alone = RecordConverter(spec, "acme", hard_delete=hard_delete)
            want = [alone.convert(page.decoded, page.request_id) for page in pages]
            batcher = PageBatcher(RecordConverter(spec, "acme", hard_delete=hard_delete), 60)
            got = [
                tables for page in pages for tables in batcher.add(page.decoded, page.request_id)
            ]
            got += batcher.flush()
            if name == "purchase_orders":
                assert len(got) < len(pages)  # pages really were converted together
            want_main = [t.main for t in want if t.main is not None]
            got_main = [t.main for t in got if t.main is not None]
            assert _concat(got_main).equals(_concat(want_main)), name
            for child in spec.children:
                want_rows = [t.children[child.table] for t in want if child.table in t.children]
                got_rows = [t.children[child.table] for t in got if child.table in t.children]
                assert _concat(got_rows).equals(_concat(want_rows)), f"{name} {child.table}"
                assert sum(t.live_children[child.table] for t in got) == sum(
                    t.live_children[child.table] for t in want
                )


def test_a_bad_value_in_pages_converted_together_names_its_own_page() -> None:
    spec = ENTITIES["purchase_orders"]
    reader = PageDecoder(spec)
    good = [reader(_body([_po(f"P{n}")])) for n in range(3)]
    bad = reader(_body([_po("BAD", totalNetValue="12,5")]))
    batcher = PageBatcher(RecordConverter(spec, "acme"), 1_000)
    for number, page in enumerate(good):
        assert batcher.add(page, f"req-{number}") == []  # collected, not converted
    # the invalid decimal fails the batch's Arrow conversion: the pages are converted one by
    # one, the bad one the exact way, and its error names its own request
    with pytest.raises(ContractViolationError) as error:
        batcher.add(bad, "req-bad")
        batcher.flush()
    assert error.value.request_id == "req-bad"
    assert error.value.field == "totalNetValue"


@pytest.mark.parametrize(
    "value",
    [b"NaN", b"-Infinity", b"[1.5, Infinity]", b'{"deep": [NaN]}'],
)
def test_non_finite_literals_are_refused_even_where_arrow_would_take_them(value: bytes) -> None:
    from makini_source.jsonbody import InvalidJSON

    body = b'{"data": [{"key": "A", "updatedAt": "2024-01-01T00:00:00Z", "x": ' + value + b"}]}"
    with pytest.raises(InvalidJSON, match="NaN and Infinity"):
        PageDecoder(ENTITIES["vendors"])(body)


@pytest.mark.parametrize("number", [b"12345678901234567890", b"9007199254740993", b"-1e300"])
def test_numbers_arrow_would_round_are_read_whole_by_the_exact_path(number: bytes) -> None:
    body = (
        b'{"data": [{"key": "A", "updatedAt": "2024-01-01T00:00:00Z", "x": 1.5}, '
        b'{"key": "B", "updatedAt": "2024-01-01T00:00:00Z", "x": ' + number + b"}]}"
    )
    page = PageDecoder(ENTITIES["vendors"])(body)
    assert isinstance(page.records, list)  # not Arrow: every digit kept
    assert str(page.records[1]["x"]) == str(json.loads(number))


def test_a_rounded_number_deep_in_lists_of_objects_goes_to_the_exact_path() -> None:
    """The float columns of a page's type are found once per type (cached): a float
    under a list of objects under an object is still checked, page after page."""
    decoder = PageDecoder(ENTITIES["vendors"])
    for number in (b"2.5", b"9007199254740993", b"3.25"):
        body = (
            b'{"data": [{"key": "A", "updatedAt": "2024-01-01T00:00:00Z", '
            b'"x": {"rows": [{"v": 1.5}, {"v": ' + number + b"}]}}]}"
        )
        page = decoder(body)
        assert isinstance(page.records, list) == (number == b"9007199254740993")


def test_ordinary_floats_stay_on_the_arrow_path() -> None:
    body = b'{"data": [{"key": "A", "updatedAt": "2024-01-01T00:00:00Z", "x": 1.5, "y": [2.25]}]}'
    page = PageDecoder(ENTITIES["vendors"])(body)
    assert not isinstance(page.records, list)


def test_decimals_sent_as_numbers_switch_the_reader_once_and_stay_exact() -> None:
    """Decimals are read as text (cast when converted); a server that sends them as JSON
    numbers makes the reader read decimals itself, from that page on, still through Arrow."""
    from decimal import Decimal

    spec = ENTITIES["purchase_orders"]
    reader = PageDecoder(spec)
    as_text = reader(_body([_po("A")]))
    numbers = _body([_po("B")]).replace(b'"totalNetValue":"10.5000"', b'"totalNetValue":10.5000')
    as_number = reader(numbers)
    later_text = reader(_body([_po("C")]))
    converter = RecordConverter(spec, "acme")
    for page in (as_text, as_number, later_text):
        assert not isinstance(page.records, list)  # Arrow, not the exact path
        table = converter.convert(page, "r").main
        assert table is not None
        assert table.column("total_net_value").to_pylist() == [Decimal("10.500000000")]
