"""The Arrow path (`columnar.PageReader`) against the exact path (orjson + Python conversion).

Both must make the same tables from the same page: the same columns in the same order, the
same types and the same values. Pages come from the sandbox over HTTP, and hand-written
bodies cover the corners (missing fields, nulls, deleted records and lines, dates, lists).
"""

from __future__ import annotations

from typing import Any

import orjson
import pyarrow as pa
import pytest

from makini_sandbox import ConnectionConfig, SandboxConfig
from makini_source.client import MakiniClient
from makini_source.columnar import PageReader
from makini_source.exceptions import ContractViolationError
from makini_source.records import PageBatcher, PageTables, RecordConverter
from makini_source.settings import ENTITIES

# the entities whose sandbox pages the Arrow path reads itself (the others hold lists of
# objects, whose exact JSON text only the exact path keeps)
ARROW_ENTITIES = {"purchase_orders", "vendors", "sites"}


def assert_same_tables(exact: PageTables, arrow: PageTables, label: str) -> None:
    for part in ("main", "children"):
        want, got = getattr(exact, part), getattr(arrow, part)
        if want is None or got is None:
            assert want is got, f"{label} {part}"
            continue
        assert got.schema == want.schema, f"{label} {part}:\n{got.schema}\n!=\n{want.schema}"
        assert got.equals(want), f"{label} {part}: values differ"
    assert arrow.live_children == exact.live_children, label


def convert_both(
    body: bytes, entity: str = "purchase_orders", hard_delete: bool = False
) -> tuple[PageTables, PageTables, RecordConverter]:
    spec = ENTITIES[entity]
    exact = RecordConverter(spec, "acme", hard_delete=hard_delete)
    arrow = RecordConverter(spec, "acme", hard_delete=hard_delete)
    want = exact.convert(orjson.loads(body)["data"])
    page = PageReader(spec)(body)
    if page is None:  # the client then parses the body as JSON: the exact path again
        arrow.declined_pages += 1
        return want, arrow.convert(orjson.loads(body)["data"]), arrow
    return want, arrow.convert(page.records), arrow


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
        for name, spec in ENTITIES.items():
            params = {"include_deleted": "true"}
            exact_pages = list(client.iter_pages(name, spec.path, params, 50))
            fast_pages = list(
                client.iter_pages(name, spec.path, params, 50, decode=PageReader(spec))
            )
            assert len(fast_pages) == len(exact_pages) > 0
            exact = RecordConverter(spec, "acme", hard_delete=hard_delete)
            fast = RecordConverter(spec, "acme", hard_delete=hard_delete)
            for number, (want, got) in enumerate(zip(exact_pages, fast_pages)):
                assert (got.next_cursor is None) == (want.next_cursor is None)
                assert got.total_count == want.total_count
                assert got.request_id  # the client fills it in for decoded pages too
                assert_same_tables(
                    exact.convert(want.records, want.request_id),
                    fast.convert(got.records, got.request_id),
                    f"{name} page {number}",
                )
            if name in ARROW_ENTITIES:
                assert fast.declined_pages == 0, name  # the Arrow path really ran
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
    "custom field null on the whole page": [
        _po("A", customFields={"Budget": None}),
        _po("B", customFields={"Budget": None}),
    ],
    "ints and floats in a custom field": [
        _po("A", customFields={"Budget": 10}),
        _po("B", customFields={"Budget": 10.5}),
    ],
    "empty page": [],
}


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
    "list of objects": [_po("A", documents=[{"name": "a"}, {"name": "b", "url": "u"}])],
    "date-like text in an untyped field": [_po("A", goLive="2024-05-01")],
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
        (_po("A", totalNetValue=12.5), "totalNetValue"),
        (_po("A", dueAt="2024-01-05T10:00:00"), "dueAt"),
        (_po("A", updatedAt=None), "updatedAt"),
        (_po("A", key=""), "key"),
        (_po("A", lineItems=[{"quantity": "1"}]), "lineItems.key"),
    ],
)
def test_bad_values_raise_the_exact_paths_error(record: dict[str, Any], field: str) -> None:
    body = _body([_po("OK"), record])
    page = PageReader(ENTITIES["purchase_orders"])(body)
    records = orjson.loads(body)["data"] if page is None else page.records  # as the client does
    spec = ENTITIES["purchase_orders"]
    with pytest.raises(ContractViolationError) as exact_error:
        RecordConverter(spec, "acme").convert(orjson.loads(body)["data"], "req-1")
    with pytest.raises(ContractViolationError) as arrow_error:
        RecordConverter(spec, "acme").convert(records, "req-1")
    assert str(arrow_error.value) == str(exact_error.value)
    assert arrow_error.value.field == field
    assert arrow_error.value.request_id == "req-1"


def test_naive_midnight_dates_read_as_utc_midnight() -> None:
    _, arrow, converter = convert_both(_body([_po("A", orderDate="2024-03-01")]))
    assert converter.declined_pages == 0
    assert arrow.main is not None
    value = arrow.main.column("order_date")[0].as_py()
    assert value.isoformat() == "2024-03-01T00:00:00+00:00"
    assert arrow.main.schema.field("total_net_value").type == pa.decimal128(38, 9)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"data": [{"key": "A"}]',  # cut off
        b'{"data": [], "total_count": 0}',  # no next_cursor
        b'{"data": null, "next_cursor": null}',
        b'[{"key": "A"}]',
        b'{"data": [1, 2], "next_cursor": null}',
        b'{"data": [], "next_cursor": 5}',
    ],
)
def test_bodies_that_are_not_list_answers_are_left_to_the_json_path(body: bytes) -> None:
    assert PageReader(ENTITIES["purchase_orders"])(body) is None


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
            pages = list(
                client.iter_pages(
                    name, spec.path, {"include_deleted": "true"}, 25, decode=PageReader(spec)
                )
            )
            alone = RecordConverter(spec, "acme", hard_delete=hard_delete)
            want = [alone.convert(page.records, page.request_id) for page in pages]
            batcher = PageBatcher(RecordConverter(spec, "acme", hard_delete=hard_delete), 60)
            got = [
                tables for page in pages for tables in batcher.add(page.records, page.request_id)
            ]
            got += batcher.flush()
            if name == "purchase_orders":
                assert len(got) < len(pages)  # pages really were converted together
            for part in ("main", "children"):
                want_tables = [getattr(t, part) for t in want if getattr(t, part) is not None]
                got_tables = [getattr(t, part) for t in got if getattr(t, part) is not None]
                if not want_tables:
                    assert not got_tables
                    continue
                assert _concat(got_tables).equals(_concat(want_tables)), f"{name} {part}"
            assert sum(t.live_children for t in got) == sum(t.live_children for t in want)


def test_a_bad_value_in_pages_converted_together_names_its_own_page() -> None:
    spec = ENTITIES["purchase_orders"]
    reader = PageReader(spec)
    good = [reader(_body([_po(f"P{n}")])) for n in range(3)]
    bad = reader(_body([_po("BAD", totalNetValue="12,5")]))
    assert all(page is not None for page in [*good, bad])
    batcher = PageBatcher(RecordConverter(spec, "acme"), 1_000)
    for number, page in enumerate(good):
        assert batcher.add(page.records, f"req-{number}") == []  # collected, not converted
    batcher.add(bad.records, "req-bad")
    with pytest.raises(ContractViolationError) as error:
        batcher.flush()
    assert error.value.request_id == "req-bad"
    assert error.value.field == "totalNetValue"
