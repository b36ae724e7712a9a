"""The source against the sandbox over real HTTP, checked in what lands in DuckDB."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import httpx
import pendulum
import pytest
from conftest import ENTITY_PATHS, Loader, Sandbox, small_connections

from makini_sandbox import SandboxConfig
from makini_source.exceptions import ConfigurationError

TABLES = list(ENTITY_PATHS) + ["purchase_order_line_items"]
DECIMALS = ("quantity", "receivedQuantity", "price", "discount", "lineTaxValue", "lineTotalValue")


def ts(value: str | None) -> datetime | None:
    if value is None:
        return None
    parsed = pendulum.parse(value if len(value) > 10 else value + "T00:00:00Z")
    assert isinstance(parsed, datetime)
    return parsed.astimezone(timezone.utc)


def expected_lines(
    pos: dict[tuple[str, str], dict[str, Any]], hard_delete: bool = False
) -> dict[tuple[str, str], dict[str, Any]]:
    """(connection, line key) -> line (with the PO key and effective deletedAt) per the API."""
    lines: dict[tuple[str, str], dict[str, Any]] = {}
    for (connection, po_key), po in pos.items():
        if hard_delete and po["deletedAt"]:
            continue
        for line in po["lineItems"]:
            deleted_at = line.get("deletedAt") or po["deletedAt"]
            if hard_delete and deleted_at:
                continue
            lines[(connection, line["key"])] = {
                **line,
                "poKey": po_key,
                "effectiveDeletedAt": deleted_at,
            }
    return lines


def assert_lines_belong_to_loaded_po_version(loader: Loader) -> None:
    """Every line in the destination was read with the PO version that is in the destination."""
    stale = loader.query(
        f"""
        SELECT li.connection_id, li.key FROM {loader.table("purchase_order_line_items")} li
        LEFT JOIN {loader.table("purchase_orders")} po
          ON po.connection_id = li.connection_id AND po.key = li.purchase_order_key
        WHERE po.updated_at IS DISTINCT FROM li.purchase_order_updated_at
        """
    )
    assert stale == [], f"lines of another PO version remain: {stale[:5]}"


def assert_matches_api(loader: Loader, sandbox: Sandbox, hard_delete: bool = False) -> None:
    """The destination holds exactly the API's records, each in its newest version."""
    assert_lines_belong_to_loaded_po_version(loader)
    for entity in ENTITY_PATHS:
        api = sandbox.snapshot(entity)
        if hard_delete:
            api = {k: r for k, r in api.items() if not r["deletedAt"]}
        rows = loader.rows(entity)
        assert set(rows) == set(api), f"{entity}: keys differ"
        for key, record in api.items():
            row = rows[key]
            assert row["updated_at"] == ts(record["updatedAt"]), (entity, key)
            assert row["deleted_at"] == ts(record["deletedAt"]), (entity, key)
        if entity == "purchase_orders":
            for key, record in api.items():
                assert rows[key]["total_net_value"] == (
                    Decimal(record["totalNetValue"])
                    if record["totalNetValue"] is not None
                    else None
                )
            want = expected_lines(api, hard_delete)
            got = loader.rows("purchase_order_line_items")
            assert set(got) == set(want), "line items differ"
            for key, line in want.items():
                assert got[key]["purchase_order_key"] == line["poKey"]
                assert got[key]["deleted_at"] == ts(line["effectiveDeletedAt"])
                for field in ("quantity", "price"):
                    expected = None if line.get(field) is None else Decimal(line[field])
                    assert got[key][field] == expected


@pytest.mark.postgres
def test_full_load_lands_all_seven_tables_exactly(loader: Loader, sandbox: Sandbox) -> None:
    loader.run()
    assert_matches_api(loader, sandbox)
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
    import makini_source

    sandbox = sandbox_factory(SandboxConfig(connections=small_connections(90), tie_group=4))
    sandbox.sync_all()
    monkeypatch.setattr(makini_source, "SLICE_MIN_RECORDS", 20)  # 90 POs -> 4 slices
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
    assert_matches_api(loader, sandbox)
    assert len(po_listings()) == 2 * 4  # each connection's POs were read in four slices
    assert set(loader.watermarks("purchase_orders")) == {"acme", "globex"}

    # later runs are incremental: one listing per entity, no probe
    requests.clear()
    po = sandbox.records("purchase_orders", "acme")[5]
    sandbox.put_record("acme", "purchase-orders", po["key"], {"title": "changed"})
    sandbox.sync_all()
    loader.run(page_size=7, max_slices=4, transport=Recording())
    assert not [r for r in requests if r.url.params.get("limit") == "1"]
    assert len(po_listings()) == 2
    assert_matches_api(loader, sandbox)
    assert loader.rows("purchase_orders")[("acme", po["key"])]["title"] == "changed"


def test_pagination_with_short_and_empty_pages_and_ties(
    loader: Loader, sandbox_factory: Any
) -> None:
    sandbox = sandbox_factory(SandboxConfig(connections=small_connections(60), tie_group=7))
    for name in sandbox.tokens:
        sandbox.post(f"/_admin/connections/{name}/pages", {"short_every": 2, "empty_every": 3})
    loader.sandbox = sandbox
    loader.run(page_size=5)
    assert_matches_api(loader, sandbox)
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


def _first_po_with_lines(sandbox: Sandbox, connection: str, at_least: int) -> dict[str, Any]:
    for record in sandbox.records("purchase_orders", connection, include_deleted=False):
        if len(record["lineItems"]) >= at_least:
            return record
    raise AssertionError("no PO with enough lines")


@pytest.mark.postgres
def test_incremental_updates_deletes_removed_lines_and_late_arrivals(
    loader: Loader, sandbox: Sandbox
) -> None:
    loader.run()
    first_watermarks = loader.watermarks("purchase_orders")
    assert set(first_watermarks) == {"acme", "globex"}

    acme_pos = sandbox.records("purchase_orders", "acme", include_deleted=False)
    changed, shrunk, emptied, deleted = (
        acme_pos[0],
        _first_po_with_lines(sandbox, "acme", 3),
        acme_pos[2],
        acme_pos[3],
    )
    if shrunk["key"] in (changed["key"], emptied["key"], deleted["key"]):
        shrunk = next(p for p in acme_pos[4:] if len(p["lineItems"]) >= 3)
    # an updated PO and line
    lines = [dict(line) for line in changed["lineItems"]]
    lines[0]["quantity"] = "4242.1250"
    sandbox.put_record(
        "acme", "purchase-orders", changed["key"], {"title": "changed title", "lineItems": lines}
    )
    # a line that leaves its PO, and a PO that loses all its lines
    sandbox.put_record(
        "acme", "purchase-orders", shrunk["key"], {"lineItems": shrunk["lineItems"][:1]}
    )
    sandbox.put_record("acme", "purchase-orders", emptied["key"], {"lineItems": []})
    # deletions
    sandbox.delete_record("acme", "purchase-orders", deleted["key"])
    vendor = sandbox.records("vendors", "globex", include_deleted=False)[0]
    sandbox.delete_record("globex", "vendors", vendor["key"])
    # a new record
    sandbox.put_record("globex", "vendors", "V-NEW-1", {"name": "Newco"})
    sandbox.sync_all()
    # a late arrival: Makini has not copied it yet, and a record changed after it is visible
    # already (Makini's last_sync_at stays before the late record's updatedAt)
    sandbox.put_record("acme", "vendors", "V-LATE-1", {"name": "Late Ltd"}, pending=True)
    sandbox.put_record("acme", "vendors", "V-AFTER-LATE", {"name": "Prompt plc"})

    loader.run()
    rows = loader.rows("purchase_orders")
    assert rows[("acme", changed["key"])]["title"] == "changed title"
    assert rows[("acme", deleted["key"])]["deleted_at"] is not None
    assert loader.rows("vendors")[("globex", vendor["key"])]["deleted_at"] is not None
    assert loader.rows("vendors")[("globex", "V-NEW-1")]["name"] == "Newco"
    assert ("acme", "V-LATE-1") not in loader.rows("vendors")
    line_rows = loader.rows("purchase_order_line_items")
    assert line_rows[("acme", lines[0]["key"])]["quantity"] == Decimal("4242.125")
    assert [
        k
        for k, r in line_rows.items()
        if r["purchase_order_key"] == shrunk["key"] and k[0] == "acme"
    ] == [("acme", shrunk["lineItems"][0]["key"])]
    assert not [
        k
        for k, r in line_rows.items()
        if r["purchase_order_key"] == emptied["key"] and k[0] == "acme"
    ]
    assert_lines_belong_to_loaded_po_version(loader)

    # Makini's next sync publishes the late record, older than a record already visible
    sandbox.sync_all()
    loader.run()
    assert loader.rows("vendors")[("acme", "V-LATE-1")]["name"] == "Late Ltd"
    assert_matches_api(loader, sandbox)
    # a run with nothing new changes nothing
    loader.run()
    assert_matches_api(loader, sandbox)


def test_records_sharing_the_watermark_timestamp_are_not_lost(
    loader: Loader, sandbox: Sandbox
) -> None:
    loader.run(entities=["vendors"])
    watermark = loader.watermarks("vendors")["acme"]
    # records land exactly on the previous run's upper bound, late, then get published
    for key in ("V-TIE-1", "V-TIE-2", "V-TIE-3"):
        sandbox.put_record(
            "acme", "vendors", key, {"name": key, "updatedAt": watermark}, pending=True
        )
    sandbox.sync_all()
    loader.run(entities=["vendors"])
    rows = loader.rows("vendors")
    assert {("acme", "V-TIE-1"), ("acme", "V-TIE-2"), ("acme", "V-TIE-3")} <= set(rows)
    assert_matches_vendors(loader, sandbox)


def assert_matches_vendors(loader: Loader, sandbox: Sandbox) -> None:
    api = sandbox.snapshot("vendors")
    rows = loader.rows("vendors")
    assert set(rows) == set(api)


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
        if not self.changed and request.url.path.endswith("/purchase-orders"):
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


def test_record_changed_during_a_listing_ends_up_newest_with_its_lines(
    loader: Loader, sandbox: Sandbox
) -> None:
    victim = _first_po_with_lines(sandbox, "acme", 3)
    transport = ChangingTransport(sandbox, victim["key"], victim["lineItems"][:1])
    loader.run(entities=["purchase_orders"], page_size=5, transport=transport)
    assert transport.changed
    # after the run that saw the change: one consistent version of the PO and its lines
    assert_lines_belong_to_loaded_po_version(loader)
    sandbox.sync_all()
    loader.run(entities=["purchase_orders"])
    rows = loader.rows("purchase_orders")
    assert rows[("acme", victim["key"])]["title"] == "mid-listing"
    assert_matches_api_pos(loader, sandbox)


def assert_matches_api_pos(loader: Loader, sandbox: Sandbox) -> None:
    assert_lines_belong_to_loaded_po_version(loader)
    api = sandbox.snapshot("purchase_orders")
    assert set(loader.rows("purchase_orders")) == set(api)
    assert set(loader.rows("purchase_order_line_items")) == set(expected_lines(api))


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
    assert_matches_api(loader, sandbox, hard_delete=True)


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


def test_bad_configuration_fails_before_any_request(sandbox: Sandbox) -> None:
    from makini_source import makini_source

    with pytest.raises(ConfigurationError, match="unknown entity"):
        makini_source(base_url=sandbox.url, connections={"a": "t"}, entities=["invoices"])
    with pytest.raises(ConfigurationError, match="no Makini connections"):
        makini_source(base_url=sandbox.url, connections={})
    with pytest.raises(ConfigurationError, match="plain http"):
        makini_source(base_url="http://example.com", connections={"a": "t"})
