"""Tests of the Makini sandbox over real HTTP on loopback."""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest
from orjson import loads as orjson_loads
from sandbox_clients import reset_admin, sandbox_clients

from makini_sandbox import (
    ConnectionConfig,
    SandboxAdmin,
    SandboxAdminError,
    SandboxConfig,
    SandboxServer,
)
from makini_sandbox.models import Store
from makini_sandbox.timeutil import format_timestamp, parse_timestamp

ENTITIES = ["purchase-orders", "vendors", "materials", "sites", "assets", "work-orders"]
DECIMAL_RE = re.compile(r"^-?\d+\.\d{4}$")
REQ_ID_RE = re.compile(r"^req_[0-9a-f]+$")


def small_config(seed: int = 7) -> SandboxConfig:
    return SandboxConfig(
        seed=seed,
        tie_group=4,
        big_tie_group=25,
        connections=[
            ConnectionConfig(
                name="acme",
                token="tok-acme",
                purchase_orders=120,
                vendors=40,
                materials=12,
                sites=3,
                assets=10,
                work_orders=12,
                lines_per_po=(1, 4),
                custom_fields={"Cost Center": "string", "projectCode": "integer"},
            ),
            ConnectionConfig(
                name="globex",
                token="tok-globex",
                purchase_orders=30,
                vendors=10,
                materials=5,
                sites=2,
                assets=5,
                work_orders=5,
                custom_fields={"Cost Center": "number", "isUrgent": "boolean"},
            ),
        ],
    )


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(small_config()) as srv:
        yield srv


@pytest.fixture(scope="module")
def clients(server: SandboxServer) -> Iterator[dict[str, Any]]:
    tokens = {"acme": "tok-acme", "globex": "tok-globex", "anon": None}
    with sandbox_clients(server.url, tokens, accept_json=False) as clients:
        yield clients


@pytest.fixture()
def admin(clients: dict[str, Any]) -> SandboxAdmin:
    """The admin client, after a reset to the small config."""
    return reset_admin(clients, small_config())


@pytest.fixture()
def acme(clients: dict[str, Any], admin: SandboxAdmin) -> httpx.Client:
    return clients["acme"]


@pytest.fixture()
def globex(clients: dict[str, Any], admin: SandboxAdmin) -> httpx.Client:
    return clients["globex"]


@pytest.fixture()
def anon(clients: dict[str, Any], admin: SandboxAdmin) -> httpx.Client:
    return clients["anon"]


def ts(value: str) -> int:
    return parse_timestamp(value)


def list_all(
    client: httpx.Client, entity: str, params: dict[str, Any] | None = None, limit: int = 7
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every record of a listing, and the raw pages."""
    records: list[dict[str, Any]] = []
    pages: list[dict[str, Any]] = []
    resp = client.get(f"/api/v1/{entity}", params={**(params or {}), "limit": limit})
    for _ in range(10_000):
        assert resp.status_code == 200, resp.text
        body = resp.json()
        pages.append(body)
        records.extend(body["data"])
        if body["next_cursor"] is None:
            return records, pages
        resp = client.get(
            f"/api/v1/{entity}", params={"cursor": body["next_cursor"], "limit": limit}
        )
    raise AssertionError("listing did not end")


def order_key(rec: dict[str, Any]) -> tuple[int, str]:
    return ts(rec["updatedAt"]), rec["key"]


def assert_error(resp: httpx.Response, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["code"] == code
    assert err["message"]
    assert err["request_id"] == resp.headers["X-Request-Id"]
    assert REQ_ID_RE.match(err["request_id"])


# -- pagination -----------------------------------------------------------------------------


def test_pagination_covers_every_record_once_in_order(acme: httpx.Client) -> None:
    records, pages = list_all(acme, "purchase-orders", limit=7)
    keys = [r["key"] for r in records]
    assert len(keys) == len(set(keys)) == 120
    assert all(p["total_count"] == 120 for p in pages)
    assert [order_key(r) for r in records] == sorted(order_key(r) for r in records)
    # ties straddle page boundaries, and one tie group is larger than a page
    boundary_ties = sum(
        1
        for a, b in itertools.pairwise(pages)
        if a["data"] and b["data"] and a["data"][-1]["updatedAt"] == b["data"][0]["updatedAt"]
    )
    assert boundary_ties >= 2
    counts: dict[str, int] = {}
    for r in records:
        counts[r["updatedAt"]] = counts.get(r["updatedAt"], 0) + 1
    assert max(counts.values()) >= 25
    # every entity lists completely
    for entity, n in zip(ENTITIES[1:], (40, 12, 3, 10, 12)):
        recs, _ = list_all(acme, entity, limit=5)
        assert len({r["key"] for r in recs}) == n


def test_limit_may_change_between_pages_and_defaults(acme: httpx.Client) -> None:
    full, _ = list_all(acme, "purchase-orders", limit=200)
    first = acme.get("/api/v1/purchase-orders", params={"limit": 5}).json()
    second = acme.get(
        "/api/v1/purchase-orders", params={"cursor": first["next_cursor"], "limit": 50}
    ).json()
    assert [r["key"] for r in first["data"] + second["data"]] == [r["key"] for r in full[:55]]
    default = acme.get("/api/v1/purchase-orders").json()
    assert len(default["data"]) == 100
    # an empty parameter counts as absent
    assert len(acme.get("/api/v1/vendors", params={"cursor": "", "limit": ""}).json()["data"]) == 40


def test_records_shape_decimals_and_totals(acme: httpx.Client) -> None:
    records, _ = list_all(acme, "purchase-orders", limit=200)
    line_keys: set[str] = set()
    for po in records:
        for f in ("key", "createdAt", "updatedAt", "deletedAt", "customFields", "lineItems"):
            assert f in po
        assert po["deletedAt"] is None
        assert re.match(r"^\d{4}-\d{2}-\d{2}$", po["orderDate"])
        assert set(po["customFields"]) == {"Cost Center", "projectCode"}
        assert ts(po["updatedAt"]) >= ts(po["createdAt"])
        net = gross = Decimal(0)
        for line in po["lineItems"]:
            assert line["key"] not in line_keys
            line_keys.add(line["key"])
            for f in ("quantity", "price", "lineTotalValue"):
                assert DECIMAL_RE.match(line[f]), line[f]
            for f in ("receivedQuantity", "discount", "lineTaxValue"):
                assert line[f] is None or DECIMAL_RE.match(line[f])
            if line["deletedAt"] is None:
                net += Decimal(line["lineTotalValue"])
                gross += Decimal(line["lineTotalValue"]) + Decimal(line["lineTaxValue"] or 0)
        assert Decimal(po["totalNetValue"]) == net
        assert Decimal(po["totalGrossValue"]) == gross
        for addr in ("shipmentAddress", "billingAddress", "deliveryAddress"):
            a = po[addr]
            assert a is None or isinstance(a["addressLines"], list)
    assert any("." in r["updatedAt"] for r in records)  # some fractional seconds
    prices = {line["price"] for po in records for line in po["lineItems"]}
    assert "0.1000" in prices or "1234567.8901" in prices


def test_default_connections_collide_on_keys_but_differ_in_custom_fields() -> None:
    store = Store(SandboxConfig())
    names = list(store.connections)
    assert names == ["acme", "globex", "initech"]
    cfs = [set(c.custom_fields) for c in store.connections.values()]
    assert cfs[0] != cfs[1] != cfs[2]
    assert "Cost Center" in cfs[0] and "projectCode" in cfs[0]
    for conn in store.connections.values():
        assert conn.entities["purchase-orders"].current("PO-000001") is not None


# -- errors -----------------------------------------------------------------------------------


def test_parameter_and_cursor_errors(acme: httpx.Client, globex: httpx.Client) -> None:
    for limit in ("0", "201", "abc", "-1", "1.5"):
        assert_error(
            acme.get("/api/v1/purchase-orders", params={"limit": limit}), 400, "INVALID_PARAMETER"
        )
    assert acme.get("/api/v1/vendors", params={"limit": 500}).status_code == 200
    assert_error(acme.get("/api/v1/assets", params={"limit": 251}), 400, "INVALID_PARAMETER")
    for bad in ("2024-13-01", "yesterday", "2024-01-01T00:00:00", "2024-01-01T00:00:00 02:00"):
        assert_error(
            acme.get("/api/v1/vendors", params={"modified_after": bad}), 400, "INVALID_PARAMETER"
        )
    assert_error(
        acme.get("/api/v1/vendors", params={"include_deleted": "yes"}), 400, "INVALID_PARAMETER"
    )
    assert_error(acme.get("/api/v1/invoices"), 404, "NOT_FOUND")
    assert_error(acme.get("/api/v1/vendors", params={"cursor": "garbage"}), 400, "INVALID_CURSOR")
    cur = acme.get("/api/v1/vendors", params={"limit": 2}).json()["next_cursor"]
    body, sig = cur.split(".")
    tampered = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1] + "." + sig
    assert_error(acme.get("/api/v1/vendors", params={"cursor": tampered}), 400, "INVALID_CURSOR")
    assert_error(acme.get("/api/v1/sites", params={"cursor": cur}), 400, "INVALID_CURSOR")
    assert_error(globex.get("/api/v1/vendors", params={"cursor": cur}), 400, "INVALID_CURSOR")
    ids = {acme.get("/api/v1/sites").headers["X-Request-Id"] for _ in range(5)}
    assert len(ids) == 5 and all(REQ_ID_RE.match(i) for i in ids)


def test_cursor_expires_after_an_hour(acme: httpx.Client, admin: SandboxAdmin) -> None:
    cur = acme.get("/api/v1/vendors", params={"limit": 2}).json()["next_cursor"]
    admin.advance_clock(1800)
    assert acme.get("/api/v1/vendors", params={"cursor": cur}).status_code == 200
    admin.advance_clock(1801 + 1)
    assert_error(acme.get("/api/v1/vendors", params={"cursor": cur}), 400, "INVALID_CURSOR")


def test_auth_revocation_and_permissions(
    server: SandboxServer, acme: httpx.Client, anon: httpx.Client, admin: SandboxAdmin
) -> None:
    assert_error(anon.get("/api/v1/vendors"), 401, "AUTHENTICATION_FAILED")
    bad = anon.get("/api/v1/vendors", headers={"Authorization": "Bearer nope"})
    assert_error(bad, 401, "AUTHENTICATION_FAILED")
    assert "X-RateLimit-Limit" in bad.headers
    admin.set_permissions("acme", ["assets"])
    assert_error(acme.get("/api/v1/assets"), 403, "PERMISSION_DENIED")
    assert acme.get("/api/v1/vendors").status_code == 200
    admin.revoke_token("acme")
    assert_error(acme.get("/api/v1/vendors"), 401, "AUTHENTICATION_FAILED")
    assert_error(acme.get("/api/v1/sync-status"), 401, "AUTHENTICATION_FAILED")
    admin.set_token("acme", revoked=False)
    status = acme.get("/api/v1/sync-status").json()["data"]
    assert status["status"] == "active"
    admin.set_token("acme", token="tok-new")
    assert_error(acme.get("/api/v1/vendors"), 401, "AUTHENTICATION_FAILED")
    assert (
        acme.get("/api/v1/vendors", headers={"Authorization": "Bearer tok-new"}).status_code == 200
    )
    assert server.tokens["acme"] == "tok-new"


# -- filters ----------------------------------------------------------------------------------


def test_modified_after_inclusive_before_exclusive(acme: httpx.Client) -> None:
    full, _ = list_all(acme, "purchase-orders", limit=200)
    # a timestamp shared by several records
    counts: dict[str, int] = {}
    for r in full:
        counts[r["updatedAt"]] = counts.get(r["updatedAt"], 0) + 1
    t = max(counts, key=lambda k: (counts[k], k))
    t_us = ts(t)
    after, _ = list_all(acme, "purchase-orders", {"modified_after": t})
    before, _ = list_all(acme, "purchase-orders", {"modified_before": t})
    assert [r["key"] for r in after] == [r["key"] for r in full if ts(r["updatedAt"]) >= t_us]
    assert [r["key"] for r in before] == [r["key"] for r in full if ts(r["updatedAt"]) < t_us]
    assert len(after) + len(before) == 120
    # the same instant with a UTC offset, and a date-only bound
    dt = datetime.fromtimestamp(t_us / 1e6, tz=timezone.utc).astimezone(
        timezone(timedelta(hours=2))
    )
    offset = dt.isoformat()
    resp = acme.get("/api/v1/purchase-orders", params={"modified_after": offset, "limit": 200})
    assert resp.json()["total_count"] == len(after)
    day = full[60]["updatedAt"][:10]
    by_day, _ = list_all(acme, "purchase-orders", {"modified_before": day})
    assert all(r["updatedAt"][:10] < day for r in by_day)
    assert len(by_day) == sum(1 for r in full if r["updatedAt"][:10] < day)


def test_created_filters(acme: httpx.Client) -> None:
    full, _ = list_all(acme, "purchase-orders", limit=200)
    c = sorted(r["createdAt"] for r in full)[40]
    got, pages = list_all(acme, "purchase-orders", {"created_after": c}, limit=9)
    expected = [r["key"] for r in full if ts(r["createdAt"]) >= ts(c)]
    assert [r["key"] for r in got] == expected
    assert pages[0]["total_count"] == len(expected)
    got, _ = list_all(acme, "purchase-orders", {"created_before": c})
    assert len(got) == 120 - len(expected)


def test_cursor_carries_filters_and_repeated_params_are_ignored(acme: httpx.Client) -> None:
    full, _ = list_all(acme, "vendors", limit=500)
    t = full[10]["updatedAt"]
    expected = [r["key"] for r in full if ts(r["updatedAt"]) >= ts(t)]
    first = acme.get("/api/v1/vendors", params={"modified_after": t, "limit": 4}).json()
    keys = [r["key"] for r in first["data"]]
    cursor = first["next_cursor"]
    while cursor:
        page = acme.get(
            "/api/v1/vendors",
            params={
                "cursor": cursor,
                "modified_after": "2020-01-01",
                "modified_before": "bogus",
                "include_deleted": "maybe",
                "limit": 4,
            },
        ).json()
        keys += [r["key"] for r in page["data"]]
        assert page["total_count"] == len(expected)
        cursor = page["next_cursor"]
    assert keys == expected


# -- mutations --------------------------------------------------------------------------------


def test_changes_during_a_listing(acme: httpx.Client, admin: SandboxAdmin) -> None:
    first = acme.get("/api/v1/vendors", params={"limit": 10}).json()
    assert first["total_count"] == 40
    changed = first["data"][3]["key"]
    admin.put_record("acme", "vendors", changed, {"name": "Changed Ltd"})
    admin.put_record("acme", "vendors", "V-NEW-1", {"name": "Brand New"})
    records = list(first["data"])
    cursor = first["next_cursor"]
    while cursor:
        page = acme.get("/api/v1/vendors", params={"cursor": cursor, "limit": 10}).json()
        assert page["total_count"] == 40  # counted when the listing began
        records += page["data"]
        cursor = page["next_cursor"]
    keys = [r["key"] for r in records]
    assert keys.count(changed) == 2
    assert keys[-2:] == [changed, "V-NEW-1"]
    assert records[-2]["name"] == "Changed Ltd"
    assert [order_key(r) for r in records[-2:]] == sorted(order_key(r) for r in records[-2:])


def test_admin_put_bumps_updated_at_and_handles_lines(
    acme: httpx.Client, admin: SandboxAdmin
) -> None:
    full, _ = list_all(acme, "purchase-orders", limit=200)
    newest = max(ts(r["updatedAt"]) for r in full)
    po = full[0]
    rec = admin.put_record("acme", "purchase-orders", po["key"], {"title": "Edited"})
    assert ts(rec["updatedAt"]) > newest
    assert rec["lineItems"] == po["lineItems"]
    assert rec["createdAt"] == po["createdAt"]
    # replace lines: keep the first unchanged, change the second or add one
    lines = po["lineItems"]
    new_lines = [
        {"key": lines[0]["key"]},
        {"key": "NEWLINE-1", "quantity": "2.5000", "price": "0.1000", "lineTaxValue": "0.0500"},
    ]
    rec2 = admin.put_record("acme", "purchase-orders", po["key"], {"lineItems": new_lines})
    assert ts(rec2["updatedAt"]) > ts(rec["updatedAt"])
    kept, added = rec2["lineItems"]
    assert kept == lines[0]  # unchanged line keeps its updatedAt
    assert added["updatedAt"] == added["createdAt"] == rec2["updatedAt"]
    assert added["lineTotalValue"] == "0.2500"
    net = Decimal(kept["lineTotalValue"]) if kept["deletedAt"] is None else Decimal(0)
    assert Decimal(rec2["totalNetValue"]) == net + Decimal("0.25")
    changed_line = dict(kept, notes="changed")
    rec3 = admin.put_record(
        "acme", "purchase-orders", po["key"], {"lineItems": [changed_line, added]}
    )
    assert rec3["lineItems"][0]["updatedAt"] == rec3["updatedAt"]
    assert rec3["lineItems"][1]["updatedAt"] == added["updatedAt"]
    # create with defaults, and an explicit updatedAt
    created = admin.put_record("acme", "vendors", "V-X", {"name": "X", "customFields": {"a": 1}})
    assert created["createdAt"] == created["updatedAt"]
    assert created["code"] is None and created["deletedAt"] is None
    old = admin.put_record("acme", "vendors", "V-OLD", {"updatedAt": "2023-06-01T00:00:00Z"})
    assert old["updatedAt"] == "2023-06-01T00:00:00Z"
    listed = acme.get(
        "/api/v1/vendors",
        params={"modified_before": "2023-06-01T00:00:01Z", "modified_after": "2023-06-01"},
    ).json()
    assert "V-OLD" in [r["key"] for r in listed["data"]]


def test_tombstones_only_with_include_deleted(acme: httpx.Client, admin: SandboxAdmin) -> None:
    full, _ = list_all(acme, "purchase-orders", limit=200)
    victim = full[5]
    tomb = admin.delete_record("acme", "purchase-orders", victim["key"])
    assert tomb["deletedAt"] == tomb["updatedAt"]
    assert tomb["lineItems"] == victim["lineItems"]
    live, pages = list_all(acme, "purchase-orders", limit=50)
    assert victim["key"] not in {r["key"] for r in live}
    assert pages[0]["total_count"] == 119
    everything, pages = list_all(acme, "purchase-orders", {"include_deleted": "true"}, limit=50)
    assert pages[0]["total_count"] == 120
    last = everything[-1]
    assert last["key"] == victim["key"] and last["deletedAt"] == tomb["deletedAt"]
    assert last["lineItems"] == victim["lineItems"]


def test_pending_records_and_sync(acme: httpx.Client, admin: SandboxAdmin) -> None:
    status = acme.get("/api/v1/sync-status").json()["data"]
    assert status == {
        "connection_id": "conn_acme",
        "system": "SAP S/4HANA",
        "status": "active",
        "initial_sync_completed": True,
        "last_sync_at": status["last_sync_at"],
        "last_sync_status": "success",
    }
    sync1 = ts(status["last_sync_at"])
    full, _ = list_all(acme, "vendors", limit=500)
    assert max(ts(r["updatedAt"]) for r in full) < sync1
    # a visible write is listed at once, newer than last_sync_at, which does not move
    rec = admin.put_record("acme", "vendors", "V-000002", {"name": "Now"})
    sync2 = ts(acme.get("/api/v1/sync-status").json()["data"]["last_sync_at"])
    assert sync2 == sync1 and ts(rec["updatedAt"]) > sync1
    listed = {r["key"]: r for r in list_all(acme, "vendors", limit=500)[0]}
    assert listed["V-000002"]["name"] == "Now"
    # late-arriving: pending with an updatedAt older than records already served
    late_ts = format_timestamp(sync2 + 1)
    admin.put_record(
        "acme", "vendors", "V-LATE", {"name": "Late", "updatedAt": late_ts}, pending=True
    )
    admin.put_record("acme", "vendors", "V-000003", {"name": "Pending change"}, pending=True)
    admin.put_record("acme", "vendors", "V-000004", {"name": "Visible"})
    listed = {r["key"]: r for r in list_all(acme, "vendors", limit=500)[0]}
    assert "V-LATE" not in listed
    assert listed["V-000003"]["name"] != "Pending change"
    assert listed["V-000004"]["name"] == "Visible"
    sync3 = ts(acme.get("/api/v1/sync-status").json()["data"]["last_sync_at"])
    assert sync3 == sync1 <= ts(late_ts)
    got = admin.get_record("acme", "vendors", "V-000003")
    assert got["pending"]["name"] == "Pending change" and got["data"]["name"] != "Pending change"
    # the safe next modified_after is the previous last_sync_at
    result = admin.sync("acme", status="active")
    assert result["published"] == 2
    after_sync = ts(acme.get("/api/v1/sync-status").json()["data"]["last_sync_at"])
    assert after_sync > sync3
    incremental, _ = list_all(acme, "vendors", {"modified_after": format_timestamp(sync3)})
    keys = [r["key"] for r in incremental]
    assert "V-LATE" in keys and "V-000003" in keys
    admin.sync("acme", status="syncing", initial_sync_completed=False, publish=False)
    data = acme.get("/api/v1/sync-status").json()["data"]
    assert data["status"] == "syncing" and data["initial_sync_completed"] is False


# -- rate limits, faults, page shapes ---------------------------------------------------------


def test_rate_limit_headers_and_429(
    acme: httpx.Client, globex: httpx.Client, admin: SandboxAdmin
) -> None:
    r = acme.get("/api/v1/sites")
    assert {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"} <= set(r.headers)
    admin.set_rate_limit("acme", 3, window_seconds=2)
    remaining = [int(acme.get("/api/v1/sites").headers["X-RateLimit-Remaining"]) for _ in range(3)]
    assert remaining == [2, 1, 0]
    r = acme.get("/api/v1/sites")
    assert_error(r, 429, "RATE_LIMIT_EXCEEDED")
    assert r.headers["X-RateLimit-Limit"] == "3"
    assert 1 <= int(r.headers["Retry-After"]) <= 2
    assert 1 <= int(r.headers["X-RateLimit-Reset"]) <= 2
    assert globex.get("/api/v1/sites").status_code == 200  # limits are per connection
    admin.set_rate_limit("acme", 1, window_seconds=60, retry_after_format="http-date")
    assert acme.get("/api/v1/sites").status_code == 200
    r = acme.get("/api/v1/sites")
    assert r.status_code == 429
    when = parsedate_to_datetime(r.headers["Retry-After"])
    assert 0 < (when - datetime.now(timezone.utc)).total_seconds() <= 61
    stats = admin.stats()["connections"]["acme"]
    assert stats["status"]["429"] == 2
    assert stats["entities"]["sites"] >= 7
    assert stats["first_request_ts"] <= stats["last_request_ts"]


def test_rate_limit_window_resets(acme: httpx.Client, admin: SandboxAdmin) -> None:
    admin.set_rate_limit("acme", 1, window_seconds=0.5)
    assert acme.get("/api/v1/sites").status_code == 200
    assert acme.get("/api/v1/sites").status_code == 429
    time.sleep(0.6)
    assert acme.get("/api/v1/sites").status_code == 200


def test_faults(acme: httpx.Client, admin: SandboxAdmin) -> None:
    admin.set_faults(
        [
            {
                "kind": "status",
                "status": 503,
                "retry_after": 1,
                "entity": "vendors",
                "times": 1,
                "after": 1,
            },
        ]
    )
    assert acme.get("/api/v1/vendors").status_code == 200  # skipped by "after"
    r = acme.get("/api/v1/vendors")
    assert_error(r, 503, "SERVICE_UNAVAILABLE")
    assert r.headers["Retry-After"] == "1"
    assert acme.get("/api/v1/vendors").status_code == 200  # "times" used up
    admin.set_faults([{"kind": "truncate", "connection": "acme", "times": 1}])
    with pytest.raises(httpx.HTTPError):
        acme.get("/api/v1/purchase-orders", params={"limit": 50})
    assert acme.get("/api/v1/purchase-orders").status_code == 200
    admin.set_faults([{"kind": "html", "times": 1}])
    r = acme.get("/api/v1/vendors")
    assert r.status_code == 502 and r.headers["content-type"].startswith("text/html")
    assert r.headers["X-Request-Id"]
    admin.set_faults(
        [{"kind": "bad_record", "set_field": {"totalNetValue": "12,5"}, "index": 1, "times": 1}]
    )
    data = acme.get("/api/v1/purchase-orders", params={"limit": 3}).json()["data"]
    assert data[1]["totalNetValue"] == "12,5" and data[0]["totalNetValue"] != "12,5"
    admin.set_faults([{"kind": "reset", "entity": "sites", "times": 1}])
    with pytest.raises(httpx.TransportError):
        acme.get("/api/v1/sites")
    admin.set_faults([{"kind": "repeat_cursor"}, {"kind": "extra_field", "field": "newField"}])
    first = acme.get("/api/v1/sites", params={"limit": 1}).json()
    assert first["data"][0]["newField"] == "surprise"
    again = acme.get("/api/v1/sites", params={"cursor": first["next_cursor"]}).json()
    assert again["next_cursor"] == first["next_cursor"]
    rules = admin.faults()
    assert rules[0]["fired"] == 1 and rules[1]["fired"] == 2
    admin.clear_faults()
    with pytest.raises(SandboxAdminError):
        admin.set_faults([{"kind": "explode"}])


def test_short_and_empty_pages(acme: httpx.Client, admin: SandboxAdmin) -> None:
    admin.set_pages("acme", short_every=2, empty_every=3)
    records, pages = list_all(acme, "purchase-orders", limit=10)
    assert len({r["key"] for r in records}) == len(records) == 120
    sizes = [len(p["data"]) for p in pages]
    assert sizes[1] < 10 and sizes[2] == 0
    assert pages[2]["next_cursor"] is not None
    admin.set_pages("acme", null_total_count=True)
    assert acme.get("/api/v1/sites").json()["total_count"] is None
    assert [order_key(r) for r in records] == sorted(order_key(r) for r in records)


# -- determinism and admin --------------------------------------------------------------------


def test_same_seed_same_bytes(acme: httpx.Client, admin: SandboxAdmin) -> None:
    def first_pages() -> list[bytes]:
        out = []
        for entity in ENTITIES:
            r = acme.get(f"/api/v1/{entity}", params={"limit": 50})
            out.append(r.content.split(b'],"next_cursor"')[0])
        return out

    a = first_pages()
    admin.reset(small_config())
    assert first_pages() == a
    admin.reset(small_config(seed=8))
    assert first_pages() != a
    s1, s2 = Store(small_config()), Store(small_config())
    e1, e2 = (s.connections["acme"].entities["purchase-orders"] for s in (s1, s2))
    assert [e1.base_bytes(p) for p in range(120)] == [e2.base_bytes(p) for p in range(120)]


def test_admin_connections_stats_and_bulk(acme: httpx.Client, admin: SandboxAdmin) -> None:
    conns = {c["name"]: c for c in admin.connections()}
    assert conns["acme"]["token"] == "tok-acme"
    assert conns["acme"]["counts"]["purchase-orders"]["visible"] == 120
    assert conns["globex"]["sync"]["connection_id"] == "conn_globex"
    res = admin.bulk("acme", "purchase-orders", count=10, set={"statusKey": "closed"})
    assert res["changed"] == 10
    newest = acme.get("/api/v1/purchase-orders", params={"modified_after": res["updatedAt"]})
    body = newest.json()
    assert body["total_count"] == 10
    assert {r["updatedAt"] for r in body["data"]} == {res["updatedAt"]}
    assert all(r["statusKey"] == "closed" for r in body["data"])
    admin.bulk("acme", "vendors", keys=["V-000001", "V-000002"], delete=True)
    assert admin.connections()[0]["counts"]["vendors"]["deleted"] == 2
    assert admin.stats()["total"]["requests"] >= 1


def test_timeouts_non_json_and_unknown_paths(
    acme: httpx.Client, anon: httpx.Client, admin: SandboxAdmin
) -> None:
    admin.set_faults([{"kind": "delay", "seconds": 0.5, "entity": "sites", "times": 1}])
    with pytest.raises(httpx.ReadTimeout):
        acme.get("/api/v1/sites", timeout=0.1)
    admin.set_faults([{"kind": "non_json", "entity": "sync-status", "times": 1}])
    r = acme.get("/api/v1/sync-status")
    assert r.status_code == 200
    with pytest.raises(ValueError):
        r.json()
    assert acme.get("/api/v1/sync-status").json()["data"]["connection_id"] == "conn_acme"
    assert_error(anon.get("/nothing/here"), 404, "NOT_FOUND")
    assert_error(acme.get("/api/v1/purchase-orders/PO-000001"), 404, "NOT_FOUND")
    assert_error(acme.post("/api/v1/vendors"), 405, "METHOD_NOT_ALLOWED")
    assert anon.get("/_admin/health").headers["X-Request-Id"].startswith("req_")
    admin.set_permissions("acme", ["sync-status"])
    assert_error(acme.get("/api/v1/sync-status"), 403, "PERMISSION_DENIED")


def test_store_listing_matches_a_brute_force_model_under_random_changes() -> None:
    """Keyset scans and counts agree with sorting/filtering everything, after random changes."""
    import random

    from makini_sandbox.models import Filters

    cfg = small_config(seed=3)
    store = Store(cfg)
    conn = store.connections["acme"]
    es = conn.entities["vendors"]
    ref: dict[str, tuple[int, int, bool]] = {}  # key -> (updatedAt, createdAt, deleted)
    for row in es.scan(None, Filters(), 1000):
        rec = orjson_loads(row[2])
        ref[rec["key"]] = (ts(rec["updatedAt"]), ts(rec["createdAt"]), False)
    assert len(ref) == 40
    rng = random.Random(1)
    stamps = sorted({u for u, _, _ in ref.values()})
    pending: dict[str, tuple[int, int, bool]] = {}
    for step in range(150):
        op = rng.random()
        key = rng.choice([*ref, f"NEW-{rng.randrange(30)}"])
        explicit = rng.choice(stamps) if rng.random() < 0.4 else None
        body: dict[str, Any] = {"name": f"step {step}"}
        if explicit is not None:
            body["updatedAt"] = format_timestamp(explicit)
        is_pending = rng.random() < 0.2
        base = pending.get(key) or ref.get(key)
        if op < 0.2 and base is not None:
            rec = store.delete_record(
                "acme",
                "vendors",
                key,
                pending=is_pending,
                deleted_at=(None if explicit is None else format_timestamp(explicit)),
            )
            new = (ts(rec["updatedAt"]), base[1], True)
        else:
            rec = store.put_record("acme", "vendors", key, body, pending=is_pending)
            new = (ts(rec["updatedAt"]), ts(rec["createdAt"]), rec["deletedAt"] is not None)
        if is_pending:
            pending[key] = new
        else:
            pending.pop(key, None)
            ref[key] = new
        if rng.random() < 0.1:
            store.sync("acme")
            ref.update(pending)
            pending.clear()
        if step % 10 == 0:
            for _ in range(3):
                some = sorted({u for u, _, _ in ref.values()})
                flt = Filters(
                    modified_after=rng.choice([None, *some]),
                    modified_before=rng.choice([None, *some]),
                    created_after=rng.choice([None, *sorted(c for _, c, _ in ref.values())]),
                    include_deleted=rng.random() < 0.5,
                )
                expected = sorted(
                    (u, k)
                    for k, (u, c, d) in ref.items()
                    if (flt.include_deleted or not d)
                    and (flt.modified_after is None or u >= flt.modified_after)
                    and (flt.modified_before is None or u < flt.modified_before)
                    and (flt.created_after is None or c >= flt.created_after)
                )
                assert es.count(flt) == len(expected)
                got: list[tuple[int, str]] = []
                after = None
                while True:
                    rows = es.scan(after, flt, rng.randint(1, 6))
                    if not rows:
                        break
                    got += [(r[0], r[1]) for r in rows]
                    after = got[-1]
                assert got == expected
