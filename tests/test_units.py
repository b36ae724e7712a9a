"""Unit tests of small pure pieces: window planning, Retry-After, paginator, record conversion."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

from makini_source.catalogue import load_catalogue
from makini_source.client import parse_retry_after
from makini_source.exceptions import ConfigurationError, ContractViolationError
from makini_source.paginator import CursorPaginator, KeysetWalk, PageWalk
from makini_source.ratelimit import RateLimiter
from makini_source.records import RecordConverter, settle_batch_types
from makini_source.window import (
    Window,
    format_timestamp,
    next_watermark,
    plan_window,
    split_window,
)

NOW = datetime(2024, 6, 3, tzinfo=timezone.utc)


def test_first_run_reads_everything_listed_and_stores_the_sync_point() -> None:
    window = plan_window(None, "2024-01-01", None, "2024-06-01T10:15:00Z", now=NOW)
    assert window.modified_after == "2024-01-01T00:00:00.000000Z"
    assert window.modified_before is None
    assert window.next_watermark == "2024-06-01T10:15:00.000000Z"
    assert window.note is None


def test_next_run_starts_at_stored_watermark_not_start_date() -> None:
    window = plan_window(
        "2024-06-01T10:15:00.000000Z", "2024-01-01", None, "2024-06-02T00:00:00Z", now=NOW
    )
    assert window.modified_after == "2024-06-01T10:15:00.000000Z"
    assert window.modified_before is None
    assert window.next_watermark == "2024-06-02T00:00:00.000000Z"


def test_unknown_last_sync_at_reads_everything_and_keeps_state() -> None:
    window = plan_window("2024-06-01T00:00:00.000000Z", None, None, None, now=NOW)
    assert window.modified_after == "2024-06-01T00:00:00.000000Z"
    assert window.modified_before is None
    assert window.next_watermark is None


def test_backfill_ignores_state_and_does_not_move_it() -> None:
    window = plan_window(
        "2025-01-01T00:00:00.000000Z", "2024-01-01", "2024-02-01", "2025-06-01T00:00:00Z"
    )
    assert (window.modified_after, window.modified_before) == (
        "2024-01-01T00:00:00.000000Z",
        "2024-02-01T00:00:00.000000Z",
    )
    assert window.next_watermark is None


def test_a_run_without_a_new_sync_still_reads_everything_listed_since_the_watermark() -> None:
    window = plan_window("2024-06-01T10:15:00.000000Z", None, None, "2024-06-01T10:15:00Z", now=NOW)
    assert not window.is_empty
    assert (window.modified_after, window.modified_before) == ("2024-06-01T10:15:00.000000Z", None)
    assert window.next_watermark == "2024-06-01T10:15:00.000000Z"


def test_the_watermark_never_moves_back() -> None:
    window = plan_window("2024-06-01T10:15:00.000000Z", None, None, "2024-05-01T00:00:00Z", now=NOW)
    assert window.modified_after == "2024-06-01T10:15:00.000000Z"
    assert window.next_watermark is None
    assert window.note is not None and "older than the watermark" in window.note


def test_a_sync_point_in_the_future_is_not_stored() -> None:
    window = plan_window("2024-06-01T10:15:00.000000Z", None, None, "9999-12-31T00:00:00Z", now=NOW)
    assert window.next_watermark is None
    assert window.note is not None and "in the future" in window.note
    # a few minutes of clock skew are tolerated
    skewed = next_watermark(None, "2024-06-03T00:04:00Z", now=NOW)
    assert skewed.value == "2024-06-03T00:04:00.000000Z"


def test_stop_at_sync_point_reads_up_to_it_only() -> None:
    window = plan_window(
        "2024-06-01T00:00:00.000000Z",
        None,
        None,
        "2024-06-02T00:00:00Z",
        stop_at_sync_point=True,
        now=NOW,
    )
    assert window.modified_before == "2024-06-02T00:00:00.000000Z"
    assert plan_window(
        "2024-06-02T00:00:00.000000Z",
        None,
        None,
        "2024-06-02T00:00:00Z",
        stop_at_sync_point=True,
        now=NOW,
    ).is_empty


def test_timestamps_normalise_offsets_to_utc() -> None:
    assert format_timestamp("2024-03-05T14:07:09+02:00") == "2024-03-05T12:07:09.000000Z"
    with pytest.raises(ConfigurationError):
        format_timestamp("yesterday-ish")


def test_retry_after_delta_seconds_and_http_date() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2026 07:28:00 GMT", now=1792567670.0) == pytest.approx(
        10.0
    )
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: no wait
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None


def test_paginator_follows_cursor_and_refuses_a_loop() -> None:
    paginator = CursorPaginator({"modified_after": "x"}, limit=10)
    assert paginator.request_params() == {"modified_after": "x", "limit": 10}
    paginator.update("c1", 10)
    assert paginator.request_params() == {"cursor": "c1", "limit": 10}
    with pytest.raises(ValueError, match="repeats"):
        paginator.update("c1", 10)
    paginator.update(None, 3)
    assert not paginator.has_next


def test_paginator_stops_an_endless_run_of_empty_pages() -> None:
    paginator = CursorPaginator({}, limit=10, max_empty_pages=5)
    for number in range(4):
        paginator.update(f"c{number}", 0)
    with pytest.raises(ValueError, match="5 empty pages in a row"):
        paginator.update("c4", 0)


def test_a_walk_without_a_time_field_goes_by_key_alone() -> None:
    walk = KeysetWalk(None, None, None, per_page=2)
    assert walk.request_params() == {"sort[key]": 0, "page": 1, "per_page": 2}
    assert walk.update([("A", None), ("B", None)], 2, 5) == [True, True]
    assert walk.request_params() == {
        "filter[key:gt]": "B",
        "sort[key]": 0,
        "page": 1,
        "per_page": 2,
    }
    assert walk.update([("C", None)], 2, 1) == [True]
    assert not walk.has_next
    with pytest.raises(ValueError, match="no key"):
        KeysetWalk(None, None, None, per_page=2).update([("", None)], 2, 1)
    with pytest.raises(ValueError, match="time bounds"):
        KeysetWalk(None, "2024-01-01", None, per_page=2)


def test_a_walk_without_time_or_key_queries_reads_passes_until_nothing_is_new() -> None:
    walk = KeysetWalk(None, None, None, per_page=2, key_queries=False)
    pages = [
        ([("A", None), ("B", None)], 3),
        ([("C", None)], 3),  # pass 1 ends: three new
        ([("B", None), ("A", None)], 3),
        ([("C", None)], 3),  # pass 2 ends: nothing new, all three seen
    ]
    fresh = []
    for records, total in pages:
        assert walk.has_next
        assert "sort[key]" not in walk.request_params()
        fresh.append(walk.update(records, 2, total))
    assert fresh == [[True, True], [True], [False, False], [False]]
    assert not walk.has_next


def test_page_walk_reads_pages_and_starts_again_when_the_count_changes() -> None:
    walk = PageWalk(per_page=2, max_attempts=2)
    assert walk.request_params() == {"page": 1, "per_page": 2}
    assert walk.update(2, 2, 3) is False
    assert walk.request_params()["page"] == 2
    assert walk.update(1, 2, 4) is True  # a record came meanwhile: from page 1 again
    assert walk.request_params()["page"] == 1
    assert walk.update(2, 2, 4) is False
    assert walk.update(2, 2, 4) is False
    assert not walk.has_next  # the four counted were read: no request for an empty page
    again = PageWalk(per_page=2, max_attempts=1)
    again.update(2, 2, 3)
    with pytest.raises(ValueError, match="changed during 1 walks"):
        again.update(2, 2, 2)


def test_page_walk_checks_that_the_records_add_up_to_the_count() -> None:
    walk = PageWalk(per_page=2)
    walk.update(2, 2, 2)
    assert not walk.has_next  # the count says that was all
    short = PageWalk(per_page=2)
    assert short.update(1, 2, 2) is True  # one record missing from a short page: again
    assert short.update(2, 2, 2) is False and not short.has_next


def test_rate_limiter_spreads_remaining_requests_over_the_window() -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(clock=lambda: now[0], sleep=sleep)
    assert limiter.acquire() == 0.0
    limiter.observe({"x-ratelimit-remaining": "4", "x-ratelimit-reset": "2"})
    limiter.acquire()
    limiter.acquire()
    # 4 more fit before the window ends and the 5th goes at its end: 5 steps of 0.4 s
    assert slept == [pytest.approx(0.4), pytest.approx(0.4)]
    limiter.observe({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "3"})
    limiter.acquire()
    assert now[0] == pytest.approx(103.8)


def _po(**overrides: object) -> dict:
    record = {
        "key": "PO-1",
        "createdAt": "2024-01-01T00:00:00Z",
        "updatedAt": "2024-01-02T03:04:05.123456Z",
        "deletedAt": None,
        "orderDate": "2024-01-01",
        "totalNetValue": "1234567.8901",
        "shipmentAddress": {"city": "Linz", "addressLines": ["Hafenstr. 1", "Tor 3"]},
        "customFields": {"Cost Center": "CC-7", "projectCode": 12, "urgent": True},
        "lineItems": [
            {"key": "L1", "quantity": "0.1000", "price": "3.3333", "deletedAt": None},
            {"key": "L2", "quantity": "2", "price": None, "deletedAt": "2024-01-02T00:00:00Z"},
        ],
    }
    record.update(overrides)
    return record


def test_converter_names_types_and_exact_decimals() -> None:
    tables = RecordConverter(load_catalogue()["purchase_orders"], "acme").convert([_po()])
    main = tables.main
    assert main is not None
    assert main.column("total_net_value").type == pa.decimal128(38, 9)
    assert main.column("total_net_value")[0].as_py() == Decimal("1234567.8901")
    assert main.column("updated_at").type == pa.timestamp("us", tz="UTC")
    assert main.column("order_date").type == pa.date32()  # a date, the same in any time zone
    assert main.column("order_date")[0].as_py().isoformat() == "2024-01-01"
    assert main.column("custom_fields__cost_center")[0].as_py() == "CC-7"
    assert main.column("custom_fields__project_code").type == pa.int64()
    assert main.column("shipment_address__address_lines")[0].as_py() == '["Hafenstr. 1","Tor 3"]'
    assert "line_items" not in main.column_names
    lines = tables.children["purchase_order_line_items"]
    assert lines.column("key").to_pylist() == ["L1", "L2"]
    assert lines.column("purchase_order_key").to_pylist() == ["PO-1", "PO-1"]
    assert lines.column("quantity")[0].as_py() == Decimal("0.1")
    assert lines.column("deleted_at")[1].as_py() is not None


def test_converter_marks_po_without_lines_and_drops_deleted_lines_on_hard_delete() -> None:
    spec = load_catalogue()["purchase_orders"]
    lines = "purchase_order_line_items"
    empty = RecordConverter(spec, "acme").convert([_po(lineItems=[])]).children[lines]
    assert empty.column("_makini_marker").to_pylist() == [True]
    hard = RecordConverter(spec, "acme", hard_delete=True).convert([_po()]).children[lines]
    assert hard.column("key").to_pylist() == ["L1"]
    deleted_po = (
        RecordConverter(spec, "acme", hard_delete=True)
        .convert([_po(deletedAt="2024-02-01T00:00:00Z")])
        .children[lines]
    )
    assert deleted_po.column("_makini_marker").to_pylist() == [True]


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"key": None}, "key"),
        ({"updatedAt": None}, "updatedAt"),
        ({"totalNetValue": "12,5"}, "totalNetValue"),
        ({"totalNetValue": "0.0000000001"}, "totalNetValue"),  # would need rounding
        ({"createdAt": "not-a-time"}, "createdAt"),
    ],
)
def test_converter_rejects_contract_violations_by_field(override: dict, field: str) -> None:
    with pytest.raises(ContractViolationError) as raised:
        RecordConverter(load_catalogue()["purchase_orders"], "acme").convert(
            [_po(**override)], "req_1"
        )
    assert field in str(raised.value)
    assert "req_1" in str(raised.value) and "acme" in str(raised.value)


def test_split_window_cuts_below_the_sync_point_and_reads_past_it_last() -> None:
    window = Window(None, None, "2024-01-05T00:00:00Z", "2024-01-05T00:00:00Z")
    slices = split_window(window, "2024-01-01T00:00:00Z", 4)
    assert [(s.modified_after, s.modified_before) for s in slices] == [
        (None, "2024-01-02T00:00:00.000000Z"),
        ("2024-01-02T00:00:00.000000Z", "2024-01-03T00:00:00.000000Z"),
        ("2024-01-03T00:00:00.000000Z", "2024-01-04T00:00:00.000000Z"),
        ("2024-01-04T00:00:00.000000Z", "2024-01-05T00:00:00Z"),
        ("2024-01-05T00:00:00Z", None),
    ]
    assert {s.next_watermark for s in slices} == {"2024-01-05T00:00:00Z"}


def test_split_window_of_a_backfill_tiles_its_bounds() -> None:
    window = Window("2024-01-01T00:00:00Z", "2024-01-03T00:00:00Z", None)
    slices = split_window(window, "2024-01-01T00:00:00Z", 2)
    assert [(s.modified_after, s.modified_before) for s in slices] == [
        ("2024-01-01T00:00:00Z", "2024-01-02T00:00:00.000000Z"),
        ("2024-01-02T00:00:00.000000Z", "2024-01-03T00:00:00Z"),
    ]


def test_split_window_keeps_a_window_without_sync_point_or_too_short_whole() -> None:
    unbounded = Window("2024-01-01T00:00:00Z", None, None)
    assert split_window(unbounded, "2024-01-02T00:00:00Z", 4) == [unbounded]
    tiny = Window(None, None, None, "2024-01-01T00:00:01Z")
    assert split_window(tiny, "2024-01-01T00:00:00Z", 4) == [tiny]


def test_connections_of_one_run_share_settled_column_types() -> None:
    """A custom field typed text in one connection and a number in another gets one type,
    the widest that loses nothing, whichever connection's page came first."""
    spec = load_catalogue()["vendors"]
    record = {"key": "V-1", "updatedAt": "2024-01-01T00:00:00Z", "deletedAt": None}

    def vendors(connection: str, **fields: Any) -> pa.Table:
        tables = RecordConverter(spec, connection).convert([{**record, "customFields": fields}])
        assert tables.main is not None
        return tables.main

    for order in ((0, 1), (1, 0)):
        pieces = [
            vendors("acme", **{"Cost Center": "CC-7"}),
            vendors("globex", **{"Cost Center": 42}),
        ]
        settled: dict[tuple[str, str], pa.DataType] = {}
        fitted = settle_batch_types("vendors", [pieces[i] for i in order], settled)
        values = sorted(str(t.column("custom_fields__cost_center")[0]) for t in fitted)
        assert values == ["42", "CC-7"]
        assert {t.schema.field("custom_fields__cost_center").type for t in fitted} == {pa.string()}
    # integers and floats: floats; and a later batch follows what the first one settled
    settled = {}
    first = settle_batch_types(
        "vendors", [vendors("a", Budget=10), vendors("b", Budget=10.5)], settled
    )
    assert {t.schema.field("custom_fields__budget").type for t in first} == {pa.float64()}
    later = settle_batch_types("vendors", [vendors("c", Budget=7)], settled)
    assert later[0].column("custom_fields__budget").to_pylist() == [7.0]
    # a value that cannot take the settled type keeps its own, in a variant column
    settled = {("vendors", "custom_fields__budget"): pa.float64()}
    odd = settle_batch_types("vendors", [vendors("d", Budget=True)], settled)
    assert odd[0].column("custom_fields__budget__v_bool").to_pylist() == [True]


@pytest.mark.parametrize(
    "when",
    [
        datetime(2024, 5, 1, 12, 3, 4, 123456, tzinfo=timezone.utc),
        datetime(2024, 5, 1, 12, 3, 4, tzinfo=timezone(timedelta(hours=2))),
        datetime(2024, 5, 1, 0, 0),  # naive: UTC, as dlt stores it
        "2024-05-01T12:03:04.5+00:00",  # a destination that answers text
    ],
)
def test_a_destination_time_orders_as_its_text_does(when: Any) -> None:
    from makini_source.deletes import _order_of
    from makini_source.paginator import time_order
    from makini_source.window import format_timestamp

    assert _order_of(when) == time_order(format_timestamp(when) or "")


@pytest.mark.parametrize(
    ("text", "whole_seconds", "nanoseconds"),
    [
        ("2024-05-01T12:03:04Z", "2024-05-01T12:03:04Z", 0),
        ("2024-05-01T12:03:04.123456789Z", "2024-05-01T12:03:04Z", 123456789),
        ("2024-05-01T14:03:04.1+02:00", "2024-05-01T12:03:04Z", 100000000),
        ("2024-05-01T12:03:04", "2024-05-01T12:03:04Z", 0),  # no offset: UTC
        ("2024-05-01", "2024-05-01T00:00:00Z", 0),
        ("2024-05-01 12:03:04.5Z", "2024-05-01T12:03:04Z", 500000000),
    ],
)
def test_a_walk_orders_times_as_pendulum_reads_them(
    text: str, whole_seconds: str, nanoseconds: int
) -> None:
    """The walk's fast parser reads every spelling to the instant `to_datetime` reads."""
    from makini_source.paginator import time_order
    from makini_source.window import to_datetime

    assert time_order(text) == (to_datetime(whole_seconds), nanoseconds)


def test_text_columns_are_searched_for_nul_only_where_their_bytes_hold_one() -> None:
    from makini_source.records import _may_hold_nul

    assert _may_hold_nul(pa.array(["a", "b\x00c", None]))
    assert not _may_hold_nul(pa.array(["a", "bc", None]))
    assert not _may_hold_nul(pa.array([None, None], pa.string()))
    # a slice may keep the bytes of values outside it: a false alarm only costs the search
    assert _may_hold_nul(pa.array(["a\x00", "b"]).slice(1))


def test_reading_outside_a_pipeline_finds_none_and_makes_none() -> None:
    """An entity read without a running pipeline (a source iterated by hand) gets no
    pipeline, and asking does not create dlt's default one."""
    from dlt.common.configuration.container import Container
    from dlt.common.pipeline import PipelineContext

    from makini_source.reading import _running_pipeline

    with Container().injectable_context(PipelineContext()) as context:
        assert _running_pipeline() is None
        assert not context.is_active()


def test_text_needing_json_escapes_is_found_in_the_data_buffer() -> None:
    from makini_source.records import _may_need_escape

    for byte in [*range(0x20), ord('"'), ord("\\")]:
        assert _may_need_escape(pa.array(["plain", f"a{chr(byte)}b"])), hex(byte)
    assert not _may_need_escape(pa.array(["plain", "é 😀 \u2028 \x7f / '", ""]))
    assert not _may_need_escape(pa.array([], pa.string()))


def test_counting_is_an_int64_sequence() -> None:
    from makini_source.columnar import _counting

    assert _counting(4).to_pylist() == [0, 1, 2, 3]
    assert _counting(3, start=1).to_pylist() == [1, 2, 3]
    assert _counting(0).type == pa.int64() and len(_counting(0)) == 0
