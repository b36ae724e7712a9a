"""The source against the sandbox over real HTTP, checked in what lands in DuckDB."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from conftest import (
    ENTITY_PATHS,
    Loader,
    Sandbox,
    assert_destination_matches_api,
    parse_api_time,
    small_connections,
)

from makini_sandbox import SandboxConfig
from makini_source import connection_failures, makini_source, source_connections
from makini_source.exceptions import ConfigurationError
from makini_source.window import format_timestamp

TABLES = list(ENTITY_PATHS) + ["purchase_order_line_items"]
DECIMALS = ("quantity", "receivedQuantity", "price", "discount", "lineTaxValue", "lineTotalValue")


def ts(value: str | None) -> datetime | None:
    return parse_api_time(value)


@pytest.mark.postgres
def test_full_load_lands_all_seven_tables_exactly(loader: Loader, sandbox: Sandbox) -> None:
    loader.run()
    assert_destination_matches_api(loader, sandbox)
    counts = dict(
        loader.query(f"SELECT 'x', COUNT(*) FROM {loader.table('purchase_order_line_items')}")
    )
    assert counts["x"] > 0
    connections = {
        r[0] for r in loader.query(f"SELECT DISTINCT connection_id FROM {loader.table('vendors')}")
    }
    assert connections == {"acme", "globex"}


def test_first_sync_read_in_time_slices_lands_the_same_rows(
    loader: Loader, sandbox_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from makini_source import reading

    sandbox = sandbox_factory(SandboxConfig(connections=small_connections(90), tie_group=4))
    sandbox.sync_all()
    monkeypatch.setattr(reading, "SLICE_MIN_RECORDS", 20)  # 90 POs -> 4 slices
    requests: list[httpx.Request] = []
    network = httpx.HTTPTransport()

    class Recording(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            requests.append(request)
            return network.handle_request(request)

    def po_listings() -> set[tuple[str, str | None]]:
        """(token, modified_after) of every PO listing's first page (probes aside)."""
        return {
            (r.headers["authorization"], r.url.params.get("modified_after"))
            for r in requests
            if r.url.path.endswith("/purchase-orders")
            and "cursor" not in r.url.params
            and r.url.params.get("limit") != "1"
        }

    loader.run(page_size=7, max_slices=4, transport=Recording())
    assert_destination_matches_api(loader, sandbox)
    # each connection's POs were read in four slices below the sync point and one above it
    assert len(po_listings()) == 2 * (4 + 1)
    assert set(loader.watermarks("purchase_orders")) == {"acme", "globex"}

    # later runs are incremental: one listing per entity, no probe
    requests.clear()
    po = sandbox.records("purchase_orders", "acme")[5]
    sandbox.put_record("acme", "purchase-orders", po["key"], {"title": "changed"})
    sandbox.sync_all()
    loader.run(page_size=7, max_slices=4, transport=Recording())
    assert not [r for r in requests if r.url.params.get("limit") == "1"]
    assert len(po_listings()) == 2
    assert_destination_matches_api(loader, sandbox)
    assert loader.rows("purchase_orders")[("acme", po["key"])]["title"] == "changed"


def test_pagination_with_short_and_empty_pages_and_ties(
    loader: Loader, sandbox_factory: Any
) -> None:
    sandbox = sandbox_factory(SandboxConfig(connections=small_connections(60), tie_group=7))
    for name in sandbox.tokens:
        sandbox.post(f"/_admin/connections/{name}/pages", {"short_every": 2, "empty_every": 3})
    loader.sandbox = sandbox
    loader.run(page_size=5)
    assert_destination_matches_api(loader, sandbox)
    # ties really crossed page boundaries: more records share an updatedAt than fit a page
    biggest_tie = loader.query(
        f"SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM {loader.table('purchase_orders')} GROUP BY connection_id, updated_at) AS ties"
    )[0][0]
    assert biggest_tie > 5


def test_colliding_keys_stay_apart_per_connection(loader: Loader, sandbox: Sandbox) -> None:
    loader.run(entities=["purchase_orders"])
    shared = loader.query(
        f"SELECT key FROM {loader.table('purchase_orders')} GROUP BY key HAVING COUNT(DISTINCT connection_id) = 2"
    )
    assert shared, "the sandbox's connections share PO keys"
    key = shared[0][0]
    rows = loader.rows("purchase_orders")
    assert rows[("acme", key)]["connection_id"] == "acme"
    assert rows[("globex", key)]["connection_id"] == "globex"
    api_acme = sandbox.snapshot("purchase_orders")[("acme", key)]
    assert rows[("acme", key)]["order_no"] == api_acme["orderNo"]
    assert_destination_matches_api(loader, sandbox, entities=["purchase_orders"])


def column_types(loader: Loader, table: str) -> dict[str, str]:
    """column -> type per the destination's information_schema, spelled as DuckDB does."""
    if loader.pipeline.destination.destination_name == "postgres":
        return dict(
            loader.query(
                "SELECT column_name, CASE WHEN data_type = 'numeric' THEN 'DECIMAL(' || "
                "numeric_precision || ',' || numeric_scale || ')' ELSE UPPER(data_type) END "
                "FROM information_schema.columns "
                f"WHERE table_schema = 'makini_data' AND table_name = '{table}'"
            )
        )
    return dict(
        loader.query(
            "SELECT column_name, data_type FROM information_schema.columns "
            f"WHERE table_schema = 'makini_data' AND table_name = '{table}'"
        )
    )


@pytest.mark.postgres
def test_decimals_and_timestamps_have_exact_types_and_values(
    loader: Loader, sandbox: Sandbox
) -> None:
    loader.run(entities=["purchase_orders"])
    types = column_types(loader, "purchase_order_line_items")
    for column in ("quantity", "received_quantity", "price", "line_total_value"):
        assert types[column] == "DECIMAL(38,9)", column
    assert types["updated_at"] == "TIMESTAMP WITH TIME ZONE"
    po_types = column_types(loader, "purchase_orders")
    assert po_types["total_net_value"] == "DECIMAL(38,9)"
    assert po_types["created_at"] == "TIMESTAMP WITH TIME ZONE"
    lines = loader.rows("purchase_order_line_items")
    checked = 0
    for (connection, _), po in sandbox.snapshot("purchase_orders").items():
        for line in po["lineItems"]:
            row = lines[(connection, line["key"])]
            for field in DECIMALS:
                column = "".join("_" + c.lower() if c.isupper() else c for c in field)
                expected = line.get(field)
                assert row[column] == (Decimal(expected) if expected is not None else None), field
                checked += expected is not None
            assert row["updated_at"] == ts(line["updatedAt"])
    assert checked > 50
    assert_destination_matches_api(loader, sandbox, entities=["purchase_orders"])


def test_custom_fields_become_columns_per_connection(loader: Loader, sandbox: Sandbox) -> None:
    loader.run(entities=["purchase_orders"])
    columns = {
        r[0]
        for r in loader.query(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'makini_data' AND table_name = 'purchase_orders'"
        )
    }
    assert {
        "custom_fields__project_code",
        "custom_fields__approved",
        "custom_fields__budget_amount",
        "custom_fields__region",
    } <= columns
    rows = loader.rows("purchase_orders")
    seen = 0
    for (connection, key), po in sandbox.snapshot("purchase_orders").items():
        fields = po["customFields"]
        if connection == "acme" and fields.get("projectCode") is not None:
            assert rows[(connection, key)]["custom_fields__project_code"] == fields["projectCode"]
            seen += 1
        if connection == "globex" and fields.get("Region") is not None:
            assert rows[(connection, key)]["custom_fields__region"] == fields["Region"]
            seen += 1
    assert seen > 10
    # "Cost Center" is text at acme and an integer at globex: the column stays text and
    # globex's numbers are kept, as text, not dropped
    globex_costs = {
        key: po["customFields"]["Cost Center"]
        for (connection, key), po in sandbox.snapshot("purchase_orders").items()
        if connection == "globex" and po["customFields"].get("Cost Center") is not None
    }
    assert globex_costs
    for key, value in globex_costs.items():
        assert rows[("globex", key)]["custom_fields__cost_center"] == str(value)
    assert_destination_matches_api(loader, sandbox, entities=["purchase_orders"])


CUSTOM_FIELD_ENTITIES = ["purchase_orders", "vendors"]  # both write `custom_field_columns`


def test_custom_field_columns_lists_each_field_once_per_connection(
    loader: Loader, sandbox: Sandbox
) -> None:
    """A run writes `custom_field_columns` rows only for custom fields that no earlier run
    listed (its merge cost an incremental run as much as an entity's); after a drop, the
    next run lists every field it reads again."""
    from dlt.pipeline.helpers import pipeline_drop

    def listed() -> set[tuple[Any, ...]]:
        return set(
            loader.query(
                "SELECT connection_id, table_name, name, column_name "
                "FROM makini_data.custom_field_columns"
            )
        )

    def written() -> int:
        counts = loader.pipeline.last_trace.last_normalize_info.row_counts
        return int(counts.get("custom_field_columns", 0))

    loader.run(entities=CUSTOM_FIELD_ENTITIES)
    first = listed()
    assert {row[1] for row in first} == set(CUSTOM_FIELD_ENTITIES)
    assert ("acme", "purchase_orders", "projectCode", "custom_fields__project_code") in first
    assert ("globex", "purchase_orders", "Region", "custom_fields__region") in first
    assert written() == len(first)

    po = sandbox.records("purchase_orders", "acme", include_deleted=False)[0]
    sandbox.put_record("acme", "purchase-orders", po["key"], {"title": "changed"})
    loader.run(entities=CUSTOM_FIELD_ENTITIES)
    assert loader.rows("purchase_orders")[("acme", po["key"])]["title"] == "changed"
    assert written() == 0  # the same fields as before: nothing to write
    assert listed() == first

    # a field new to acme (globex has it already): its one row
    sandbox.put_record("acme", "purchase-orders", po["key"], {"customFields": {"Region": "EU"}})
    loader.run(entities=CUSTOM_FIELD_ENTITIES)
    assert written() == 1
    assert listed() == first | {("acme", "purchase_orders", "Region", "custom_fields__region")}

    # dropped with the resource that created it: the other resource's state still says
    # "listed", but the table is gone, so its fields are listed again too
    owner = loader.pipeline.default_schema.tables["custom_field_columns"]["resource"]
    pipeline_drop(loader.pipeline, resources=[owner])()
    loader.run(entities=CUSTOM_FIELD_ENTITIES, start_date="2000-01-01", lookback_seconds=10**9)
    assert listed() == first | {("acme", "purchase_orders", "Region", "custom_fields__region")}
    assert_destination_matches_api(loader, sandbox, entities=CUSTOM_FIELD_ENTITIES)


def _first_po_with_lines(sandbox: Sandbox, connection: str, at_least: int) -> dict[str, Any]:
    for record in sandbox.records("purchase_orders", connection, include_deleted=False):
        if len(record["lineItems"]) >= at_least:
            return record
    raise AssertionError("no PO with enough lines")


def _change_a_bit_of_everything(sandbox: Sandbox) -> dict[str, Any]:
    """Updates, line changes, deletes and a new record, visible at once (no sync).

    Returns the keys involved.
    """
    acme_pos = sandbox.records("purchase_orders", "acme", include_deleted=False)
    shrunk = _first_po_with_lines(sandbox, "acme", 3)
    others = [p for p in acme_pos if p["key"] != shrunk["key"]]
    changed, emptied, deleted = others[0], others[1], others[2]
    lines = [dict(line) for line in changed["lineItems"]]
    if lines:
        lines[0]["quantity"] = "4242.1250"
    sandbox.put_record(
        "acme", "purchase-orders", changed["key"], {"title": "changed title", "lineItems": lines}
    )
    # a line that leaves its PO, and a PO that loses all its lines
    sandbox.put_record(
        "acme", "purchase-orders", shrunk["key"], {"lineItems": shrunk["lineItems"][:1]}
    )
    sandbox.put_record("acme", "purchase-orders", emptied["key"], {"lineItems": []})
    sandbox.delete_record("acme", "purchase-orders", deleted["key"])
    vendor = sandbox.records("vendors", "globex", include_deleted=False)[0]
    sandbox.delete_record("globex", "vendors", vendor["key"])
    sandbox.put_record("globex", "vendors", "V-NEW-1", {"name": "Newco"})
    work_order = sandbox.records("work_orders", "globex", include_deleted=False)[-1]
    sandbox.put_record("globex", "work-orders", work_order["key"], {"status": "approved"})
    return {
        "changed": changed["key"],
        "shrunk": shrunk["key"],
        "emptied": emptied["key"],
        "deleted": deleted["key"],
        "vendor": vendor["key"],
        "work_order": work_order["key"],
        "line": lines[0]["key"] if lines else None,
    }


@pytest.mark.postgres
def test_changes_after_last_sync_at_are_loaded_by_the_same_run(
    loader: Loader, sandbox: Sandbox
) -> None:
    loader.run()
    assert_destination_matches_api(loader, sandbox)
    first_watermarks = loader.watermarks("purchase_orders")
    assert set(first_watermarks) == {"acme", "globex"}

    # Makini lists these changes although its last_sync_at stays before them
    keys = _change_a_bit_of_everything(sandbox)
    loader.run()
    assert_destination_matches_api(loader, sandbox)
    pos = loader.rows("purchase_orders")
    assert pos[("acme", keys["changed"])]["title"] == "changed title"
    assert pos[("acme", keys["deleted"])]["deleted_at"] is not None
    assert loader.rows("vendors")[("globex", keys["vendor"])]["deleted_at"] is not None
    assert loader.rows("vendors")[("globex", "V-NEW-1")]["name"] == "Newco"
    assert loader.rows("work_orders")[("globex", keys["work_order"])]["status"] == "approved"
    if keys["line"]:
        lines = loader.rows("purchase_order_line_items")
        assert lines[("acme", keys["line"])]["quantity"] == Decimal("4242.125")
    # the sync point did not move, so neither did the watermark
    assert loader.watermarks("purchase_orders") == first_watermarks


def test_two_runs_without_a_sync_in_between_are_both_exact(
    loader: Loader, sandbox: Sandbox
) -> None:
    loader.run()
    _change_a_bit_of_everything(sandbox)
    loader.run()
    assert_destination_matches_api(loader, sandbox)
    vendor = sandbox.records("vendors", "acme", include_deleted=False)[3]
    sandbox.put_record("acme", "vendors", vendor["key"], {"name": "Renamed again"})
    sandbox.delete_record("acme", "sites", sandbox.records("sites", "acme")[0]["key"])
    loader.run()
    assert_destination_matches_api(loader, sandbox)
    assert loader.rows("vendors")[("acme", vendor["key"])]["name"] == "Renamed again"


def test_late_arrival_older_than_last_sync_at_is_caught_by_the_next_run(
    loader: Loader, sandbox: Sandbox
) -> None:
    loader.run(entities=["vendors"])
    watermark = loader.watermarks("vendors")["acme"]
    # a prompt change, then a late one: Makini lists the prompt one now and the late one
    # only after its next sync, with an updatedAt older than the prompt one's
    prompt = sandbox.put_record("acme", "vendors", "V-PROMPT", {"name": "Prompt plc"})
    late_at = format_timestamp(
        ts(watermark) + (ts(prompt["data"]["updatedAt"]) - ts(watermark)) / 2  # type: ignore[operator]
    )
    sandbox.put_record(
        "acme", "vendors", "V-LATE", {"name": "Late Ltd", "updatedAt": late_at}, pending=True
    )
    loader.run(entities=["vendors"])
    assert ("acme", "V-PROMPT") in loader.rows("vendors")
    assert ("acme", "V-LATE") not in loader.rows("vendors")  # not listed yet
    assert_destination_matches_api(loader, sandbox, entities=["vendors"])

    sandbox.sync_all()  # publishes the late record; last_sync_at moves past both
    loader.run(entities=["vendors"])
    assert loader.rows("vendors")[("acme", "V-LATE")]["name"] == "Late Ltd"
    assert_destination_matches_api(loader, sandbox, entities=["vendors"])
    # a run with nothing new changes nothing
    loader.run(entities=["vendors"])
    assert_destination_matches_api(loader, sandbox, entities=["vendors"])


def test_records_sharing_the_watermark_timestamp_are_not_lost(
    loader: Loader, sandbox: Sandbox
) -> None:
    loader.run(entities=["vendors"])
    watermark = loader.watermarks("vendors")["acme"]
    # records land exactly on the previous run's watermark, late, then get published
    for key in ("V-TIE-1", "V-TIE-2", "V-TIE-3"):
        sandbox.put_record(
            "acme", "vendors", key, {"name": key, "updatedAt": watermark}, pending=True
        )
    sandbox.sync_all()
    loader.run(entities=["vendors"])
    rows = loader.rows("vendors")
    assert {("acme", "V-TIE-1"), ("acme", "V-TIE-2"), ("acme", "V-TIE-3")} <= set(rows)
    assert_destination_matches_api(loader, sandbox, entities=["vendors"])


class ChangingTransport(httpx.BaseTransport):
    """A real HTTP transport that changes a PO in the sandbox right after the first PO page."""

    def __init__(self, sandbox: Sandbox, key: str, lines: Any) -> None:
        self._inner = httpx.HTTPTransport()
        self._sandbox = sandbox
        self._key = key
        self._lines = lines
        self.changed = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        first_page = request.url.path.endswith("/purchase-orders") and (
            request.url.params.get("limit") != "1"  # not a first sync's probe
        )
        if not self.changed and first_page:
            self.changed = True
            self._sandbox.put_record(
                "acme",
                "purchase-orders",
                self._key,
                {"title": "mid-listing", "lineItems": self._lines},
            )
        return response

    def close(self) -> None:
        self._inner.close()


def test_record_changed_during_a_listing_ends_up_newest_with_its_lines_in_that_run(
    loader: Loader, sandbox: Sandbox
) -> None:
    # a PO on the first page, changed right after that page is served: the listing reads its
    # old version (all its lines) and, at the end, its new one (one line left)
    first_page = sandbox.records("purchase_orders", "acme")[:5]
    victim = next(po for po in first_page if len(po["lineItems"]) >= 2)
    transport = ChangingTransport(sandbox, victim["key"], victim["lineItems"][:1])
    loader.run(entities=["purchase_orders"], page_size=5, transport=transport)
    assert transport.changed
    rows = loader.rows("purchase_orders")
    assert rows[("acme", victim["key"])]["title"] == "mid-listing"
    assert_destination_matches_api(loader, sandbox, entities=["purchase_orders"])


def test_sync_states_load_what_is_listed_and_guard_the_watermark(
    loader: Loader, sandbox: Sandbox
) -> None:
    loader.run(entities=["vendors"])
    stored = loader.watermarks("vendors")
    # a sync under way: what is listed loads, the watermark stays at the last complete point
    sandbox.sync("acme", status="syncing", publish=False)
    sandbox.put_record("acme", "vendors", "V-SYNCING", {"name": "During a sync"})
    # a sync point older than the stored watermark never moves it back
    sandbox.sync("globex", last_sync_at="2020-01-01T00:00:00Z", publish=False)
    source = makini_source(
        base_url=sandbox.url, connections=dict(sandbox.tokens), entities=["vendors"], dialect="v1"
    )
    loader.pipeline.run(source, loader_file_format="parquet")
    assert ("acme", "V-SYNCING") in loader.rows("vendors")
    assert loader.watermarks("vendors") == stored
    notes = {c.name: c.notes for c in source_connections(source)}
    assert any("syncing" in note for note in notes["acme"])
    assert any("older than the watermark" in note for note in notes["globex"])
    assert_destination_matches_api(loader, sandbox, entities=["vendors"])

    # a sync point in the future is not stored (it would freeze every later run)
    sandbox.sync("acme", status="active", last_sync_at="9999-12-31T00:00:00Z", publish=False)
    source = makini_source(
        base_url=sandbox.url, connections=dict(sandbox.tokens), entities=["vendors"], dialect="v1"
    )
    loader.pipeline.run(source, loader_file_format="parquet")
    assert loader.watermarks("vendors")["acme"] == stored["acme"]
    assert any("in the future" in n for n in source_connections(source)[0].notes)
    sandbox.put_record("acme", "vendors", "V-AFTER-FUTURE", {"name": "Still loaded"})
    loader.run(entities=["vendors"])
    assert ("acme", "V-AFTER-FUTURE") in loader.rows("vendors")
    assert_destination_matches_api(loader, sandbox, entities=["vendors"])


def test_reauthorization_required_fails_that_connection_and_the_others_load(
    loader: Loader, sandbox: Sandbox
) -> None:
    sandbox.sync("acme", status="reauthorization_required", publish=False)
    source = makini_source(
        base_url=sandbox.url,
        connections=dict(sandbox.tokens),
        entities=["vendors", "sites"],
        dialect="v1",
    )
    loader.pipeline.run(source, loader_file_format="parquet")
    failures = connection_failures(source)
    assert set(failures) == {"acme"}
    assert "reauthorization" in str(failures["acme"])
    assert_destination_matches_api(
        loader, sandbox, entities=["vendors", "sites"], connections=["globex"]
    )
    assert not [k for k in loader.rows("vendors") if k[0] == "acme"]


def test_stop_at_sync_point_keeps_the_warehouse_as_of_the_last_sync(
    loader: Loader, sandbox: Sandbox
) -> None:
    loader.run(entities=["vendors"], stop_at_sync_point=True)
    sandbox.put_record("acme", "vendors", "V-AFTER-SYNC", {"name": "Not yet"})
    loader.run(entities=["vendors"], stop_at_sync_point=True)
    assert ("acme", "V-AFTER-SYNC") not in loader.rows("vendors")
    sandbox.sync_all()
    loader.run(entities=["vendors"], stop_at_sync_point=True)
    assert_destination_matches_api(loader, sandbox, entities=["vendors"])


@pytest.mark.postgres
def test_hard_delete_removes_deleted_records_and_their_lines(
    loader: Loader, sandbox: Sandbox
) -> None:
    loader.run(hard_delete=True)
    po = _first_po_with_lines(sandbox, "acme", 2)
    sandbox.delete_record("acme", "purchase-orders", po["key"])
    sandbox.sync_all()
    loader.run(hard_delete=True)
    assert ("acme", po["key"]) not in loader.rows("purchase_orders")
    lines = loader.rows("purchase_order_line_items")
    assert not [
        k for k, r in lines.items() if k[0] == "acme" and r["purchase_order_key"] == po["key"]
    ]
    assert_destination_matches_api(loader, sandbox, hard_delete=True)


def test_backfill_with_end_date_loads_a_window_and_leaves_state_alone(
    loader: Loader, sandbox: Sandbox
) -> None:
    api = sandbox.snapshot("vendors")
    times = sorted(ts(r["updatedAt"]) for r in api.values())
    cut = times[len(times) // 2]
    assert cut is not None
    loader.run(entities=["vendors"], start_date="2000-01-01", end_date=cut.isoformat())
    rows = loader.rows("vendors")
    assert rows and all(row["updated_at"] < cut for row in rows.values())
    assert {k for k, r in api.items() if ts(r["updatedAt"]) < cut} == set(rows)
    assert loader.watermarks("vendors") == {}
    loader.run(entities=["vendors"])
    assert set(loader.rows("vendors")) == set(api)
    assert_destination_matches_api(loader, sandbox, entities=["vendors"])


def test_configuration_from_environment_and_single_token(
    loader: Loader, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from makini_source import makini_source

    monkeypatch.setenv("SOURCES__MAKINI__BASE_URL", sandbox.url)
    monkeypatch.setenv("SOURCES__MAKINI__API_TOKEN", sandbox.tokens["globex"])
    loader.pipeline.run(makini_source(entities=["sites"]), loader_file_format="parquet")
    connections = {
        r[0] for r in loader.query(f"SELECT DISTINCT connection_id FROM {loader.table('sites')}")
    }
    assert connections == {"default"}
    monkeypatch.delenv("SOURCES__MAKINI__API_TOKEN")
    monkeypatch.setenv("SOURCES__MAKINI__CONNECTIONS", json.dumps({"acme": sandbox.tokens["acme"]}))
    loader.pipeline.run(makini_source(entities=["sites"]), loader_file_format="parquet")
    connections = {
        r[0] for r in loader.query(f"SELECT DISTINCT connection_id FROM {loader.table('sites')}")
    }
    assert connections == {"default", "acme"}
    assert_destination_matches_api(
        loader, sandbox, entities=["sites"], connections=["acme"], aliases={"default": "globex"}
    )


def test_bad_configuration_fails_before_any_request(sandbox: Sandbox) -> None:
    from makini_source import makini_source

    with pytest.raises(ConfigurationError, match="unknown entity 'invoicez'.*invoices"):
        makini_source(base_url=sandbox.url, connections={"a": "token"}, entities=["invoicez"])
    with pytest.raises(ConfigurationError, match="filled by purchase_orders"):
        makini_source(
            base_url=sandbox.url, connections={"a": "token"}, entities="purchase_order_line_items"
        )
    with pytest.raises(ConfigurationError, match="no Makini connections"):
        makini_source(base_url=sandbox.url, connections={})
    with pytest.raises(ConfigurationError, match="plain http"):
        makini_source(base_url="http://example.com", connections={"a": "token"})
