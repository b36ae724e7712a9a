"""Tests of the sandbox's unified dialect and account API over real HTTP on loopback."""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sandbox_clients import reset_admin, sandbox_clients

from makini_sandbox import (
    ConnectionConfig,
    SandboxAdmin,
    SandboxAdminError,
    SandboxConfig,
    SandboxServer,
)
from makini_sandbox.cli import build_config, parse_args
from makini_sandbox.timeutil import parse_timestamp

JSON_ACCEPT = "application/json"
REQ_ID_RE = re.compile(r"^req_[0-9a-f]{24}$")
LARAVEL_TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
LOGIN_URL = "https://login.makini.example/login"


def unified_config(**overrides: Any) -> SandboxConfig:
    """acme: an ERP (active); globex: an ERP (inactive); initech: an EAM (needs
    reauthorization). acme has a tie group of 12 records, larger than the small pages used."""
    return SandboxConfig(
        **{
            "seed": 11,
            "tie_group": 3,
            "big_tie_group": 12,
            "connections": [
                ConnectionConfig(
                    name="acme",
                    token="tok-acme",
                    purchase_orders=60,
                    vendors=50,
                    materials=6,
                    sites=3,
                    assets=4,
                    work_orders=4,
                    lines_per_po=(1, 3),
                    custom_fields={"Cost Center": "string", "projectCode": "integer"},
                    tags=["eu", "sap"],
                ),
                ConnectionConfig(
                    name="globex",
                    token="tok-globex",
                    system="Oracle NetSuite",
                    purchase_orders=5,
                    vendors=5,
                    materials=2,
                    sites=1,
                    assets=1,
                    work_orders=1,
                    connection_status="inactive",
                ),
                ConnectionConfig(
                    name="initech",
                    token="tok-initech",
                    system="IBM Maximo",
                    purchase_orders=8,
                    vendors=6,
                    materials=3,
                    sites=2,
                    assets=9,
                    work_orders=7,
                    connection_status="reauthorization_required",
                ),
            ],
            **overrides,
        }
    )


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(unified_config()) as srv:
        yield srv


@pytest.fixture(scope="module")
def clients(server: SandboxServer) -> Iterator[dict[str, Any]]:
    """API clients send ``Accept: application/json``; ``raw`` sends no header at all."""
    tokens = {"acme": "tok-acme", "initech": "tok-initech", "anon": None}
    with sandbox_clients(server.url, tokens, plain=["raw"]) as clients:
        yield clients


@pytest.fixture()
def admin(clients: dict[str, Any]) -> SandboxAdmin:
    return reset_admin(clients, unified_config())


@pytest.fixture()
def acme(clients: dict[str, Any], admin: SandboxAdmin) -> httpx.Client:
    return clients["acme"]


@pytest.fixture()
def initech(clients: dict[str, Any], admin: SandboxAdmin) -> httpx.Client:
    return clients["initech"]


def get_ok(client: httpx.Client, path: str, params: Any = None) -> dict[str, Any]:
    resp = client.get(path, params=params)
    assert resp.status_code == 200, resp.text
    return resp.json()


def read_all(client: httpx.Client, path: str, params: dict[str, Any] | None = None) -> list[Any]:
    """Every record of a listing, walking pages of 100 sorted by key (a total order)."""
    out: list[dict[str, Any]] = []
    page = 1
    while True:
        body = get_ok(
            client, path, {**(params or {}), "sort[key]": 0, "per_page": 100, "page": page}
        )
        out.extend(body["data"])
        if body["meta"]["current_page"] >= body["meta"]["last_page"]:
            return out
        page += 1


def keys(body: dict[str, Any]) -> list[str]:
    return [r["key"] for r in body["data"]]


def assert_laravel(resp: httpx.Response, status: int, message: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    assert REQ_ID_RE.match(resp.headers["X-Request-Id"])
    body = resp.json()
    assert set(body) <= {"message", "errors"} and body["message"]
    if message is not None:
        assert body["message"] == message
    return body


def assert_422(resp: httpx.Response, param: str) -> None:
    body = assert_laravel(resp, 422)
    assert list(body["errors"]) == [param], body
    assert body["message"] == body["errors"][param][0]


# -- envelope and paging ----------------------------------------------------------------------


def test_envelope_defaults_clamping_and_past_the_end(acme: httpx.Client) -> None:
    body = get_ok(acme, "/api/erp/vendors")
    assert list(body) == ["data", "links", "meta"]
    meta = body["meta"]
    base = str(acme.base_url).rstrip("/") + "/api/erp/vendors"
    assert meta == {
        "current_page": 1,
        "from": 1,
        "last_page": 4,
        "path": base,
        "per_page": 15,
        "to": 15,
        "total": 50,
    }
    assert body["links"] == {
        "first": f"{base}?page=1",
        "last": f"{base}?page=4",
        "prev": None,
        "next": f"{base}?page=2",
    }
    assert len(body["data"]) == 15
    clamped = get_ok(acme, "/api/erp/purchase-orders", {"per_page": 500})
    assert clamped["meta"]["per_page"] == 100 and len(clamped["data"]) == 60
    assert clamped["meta"]["last_page"] == 1 and clamped["links"]["next"] is None
    last = get_ok(acme, "/api/erp/vendors", {"per_page": 20, "page": 3})
    assert (last["meta"]["from"], last["meta"]["to"], len(last["data"])) == (41, 50, 10)
    assert last["links"]["next"] is None and last["links"]["prev"] == f"{base}?page=2"
    past = get_ok(acme, "/api/erp/vendors", {"per_page": 20, "page": 9})
    assert past["data"] == [] and past["meta"]["from"] is None and past["meta"]["to"] is None
    assert past["meta"]["current_page"] == 9 and past["meta"]["total"] == 50
    empty = get_ok(acme, "/api/erp/vendors", {"filter[key]": "NOPE"})
    assert empty["data"] == [] and empty["meta"]["total"] == 0
    assert empty["meta"]["last_page"] == 1 and empty["links"]["last"] == f"{base}?page=1"
    # empty values count as absent
    assert get_ok(acme, "/api/erp/vendors", {"page": "", "per_page": ""})["meta"]["per_page"] == 15


def test_links_are_absolute_from_the_request_host_and_carry_only_page(
    acme: httpx.Client,
) -> None:
    params: dict[str, str | int] = {
        "per_page": 5,
        "page": 2,
        "filter[updatedAt:gteq]": "2023-01-01",
        "sort[updatedAt]": 0,
        "sort[key]": 0,
    }
    resp = acme.get("/api/erp/vendors", params=params, headers={"Host": "api.example.test"})
    body = resp.json()
    assert body["meta"]["path"] == "http://api.example.test/api/erp/vendors"
    for name, n in (("first", 1), ("prev", 1), ("next", 3), ("last", 10)):
        assert body["links"][name] == f"http://api.example.test/api/erp/vendors?page={n}"


def test_offsets_are_computed_per_request_so_a_page_walk_skips_a_moved_record(
    acme: httpx.Client, admin: SandboxAdmin
) -> None:
    full = read_all(acme, "/api/erp/vendors")
    params = {"sort[updatedAt]": 0, "sort[key]": 0, "per_page": 5}
    ordered = keys(get_ok(acme, "/api/erp/vendors", {**params, "per_page": 100}))
    seen: list[str] = []
    page = 1
    while True:
        body = get_ok(acme, "/api/erp/vendors", {**params, "page": page})
        seen.extend(keys(body))
        if page == 1:  # a record already read changes: it moves to the end
            admin.put_record("acme", "vendors", ordered[1], {"name": "Moved Ltd"})
        if body["links"]["next"] is None:
            break
        page += 1
    skipped = ordered[5]  # the first record of page 2 slid onto page 1, already read
    assert skipped not in seen
    assert seen.count(ordered[1]) == 2 and seen[-1] == ordered[1]
    assert set(seen) == {r["key"] for r in full} - {skipped}


# -- filters ----------------------------------------------------------------------------------


def test_key_filters_operators_encoding_and_match(acme: httpx.Client) -> None:
    all_keys = [r["key"] for r in read_all(acme, "/api/erp/vendors")]
    k = "V-000020"

    def listed(query: str) -> list[str]:
        # raw query string: brackets and colons as given (encoded or not)
        return keys(get_ok(acme, f"/api/erp/vendors?per_page=100&sort[key]=0&{query}"))

    assert listed(f"filter[key]={k}") == [k]
    assert listed(f"filter[key:eq]={k}") == [k]
    assert listed(f"filter%5Bkey%3Agt%5D={k}") == [x for x in all_keys if x > k]
    assert listed(f"filter[key:gteq]={k}") == [x for x in all_keys if x >= k]
    assert listed(f"filter[key:lt]={k}") == [x for x in all_keys if x < k]
    assert listed(f"filter[key:lted]={k}") == listed(f"filter[key:lteq]={k}")
    assert listed(f"filter[key:lted]={k}") == [x for x in all_keys if x <= k]
    assert listed("filter[key:contains]=03") == [x for x in all_keys if "03" in x]
    assert listed("filter[key:startsWith]=V-00004") == [
        x for x in all_keys if x.startswith("V-00004")
    ]
    both = "filter[key:lt]=V-000003&filter[key:gt]=V-000047"
    assert listed(both) == []
    assert listed(both + "&filterMatch=any") == [
        "V-000001",
        "V-000002",
        "V-000048",
        "V-000049",
        "V-000050",
    ]
    assert listed(both + "&filterMatch=all") == []
    # the same filter twice: the last value wins
    assert listed("filter[key]=V-000001&filter[key]=V-000002") == ["V-000002"]


def test_timestamp_filters_compare_exactly(acme: httpx.Client) -> None:
    records = read_all(acme, "/api/erp/vendors")
    micro = next(r for r in records if re.search(r"\.\d{6}Z$", r["updatedAt"]))
    t = micro["updatedAt"]
    us = parse_timestamp(t)

    def matching(op: str, value: str, field: str = "updatedAt") -> set[str]:
        body = get_ok(acme, "/api/erp/vendors", {f"filter[{field}:{op}]": value, "per_page": 100})
        return {r["key"] for r in body["data"]}

    def expect(test: Any, field: str = "updatedAt") -> set[str]:
        return {r["key"] for r in records if test(parse_timestamp(r[field]))}

    assert matching("gteq", t) == expect(lambda v: v >= us)
    assert matching("gt", t) == expect(lambda v: v > us) and micro["key"] not in matching("gt", t)
    assert matching("lt", t) == expect(lambda v: v < us)
    assert matching("lted", t) == expect(lambda v: v <= us)
    assert micro["key"] in matching("eq", t)
    # 7 fraction digits: half a microsecond after t
    half = t[:-1] + "5Z"
    assert matching("gt", half) == expect(lambda v: v > us) == matching("gteq", half)
    assert matching("lted", half) == expect(lambda v: v <= us) == matching("lt", half)
    assert matching("eq", half) == set()
    # a date is midnight UTC; createdAt filters work on entities that show createdAt
    assert matching("gteq", "2024-01-01", "createdAt") == expect(
        lambda v: v >= parse_timestamp("2024-01-01"), "createdAt"
    )
    day = get_ok(acme, "/api/erp/vendors", {"filter[updatedAt:lt]": "2024-01-01"})
    assert day["meta"]["total"] == len(expect(lambda v: v < parse_timestamp("2024-01-01")))


def test_bad_filters_sorts_and_paging_answer_422(acme: httpx.Client, admin: SandboxAdmin) -> None:
    for params, param in (
        ({"filter[name]": "x"}, "filter"),
        ({"filter[key:like]": "x"}, "filter"),
        ({"filter[updatedAt:gt]": "yesterday"}, "filter"),
        ({"filter[updatedAt:gt]": "2024-06-01 10:15:00"}, "filter"),
        ({"filter[updatedAt:gt]": "2024-06-01T10:15:00"}, "filter"),
        ({"filter[updatedAt:contains]": "2024"}, "filter"),
        ({"filter": "x"}, "filter"),
        ({"filterMatch": "some"}, "filterMatch"),
        ({"sort[name]": 0}, "sort"),
        ({"sort[updatedAt]": 2}, "sort"),
        ({"sort[updatedAt]": "asc"}, "sort"),
        ({"page": 0}, "page"),
        ({"page": "two"}, "page"),
        ({"page": "-1"}, "page"),
        ({"per_page": 0}, "per_page"),
        ({"per_page": "1.5"}, "per_page"),
    ):
        assert_422(acme.get("/api/erp/vendors", params=params), param)
    # purchase orders have no createdAt in the unified shape
    assert_422(
        acme.get("/api/erp/purchase-orders", params={"filter[createdAt:gt]": "2024-01-01"}),
        "filter",
    )
    assert_422(acme.get("/api/erp/purchase-orders", params={"sort[createdAt]": 0}), "sort")
    # a server that only filters and sorts on timestamps
    admin.reset(unified_config(unified_key_queries=False))
    assert_422(acme.get("/api/erp/vendors", params={"filter[key]": "V-000001"}), "filter")
    assert_422(acme.get("/api/erp/vendors", params={"sort[key]": 0}), "sort")
    assert get_ok(acme, "/api/erp/vendors", {"sort[updatedAt]": 1})["meta"]["total"] == 50


# -- sort and ties ------------------------------------------------------------------------------


def _sort_key(record: dict[str, Any], spec: list[tuple[str, bool]]) -> tuple[Any, ...]:
    return tuple((parse_timestamp(record[f]) if f != "key" else record[f]) for f, _ in spec)


def _assert_sorted(records: list[dict[str, Any]], spec: list[tuple[str, bool]]) -> None:
    for a, b in itertools.pairwise(records):
        for f, desc in spec:
            va, vb = _sort_key(a, [(f, desc)])[0], _sort_key(b, [(f, desc)])[0]
            if va != vb:
                assert (va > vb) if desc else (va < vb), (a["key"], b["key"], spec)
                break


def test_sort_orders_multi_fields_in_query_order_and_default(acme: httpx.Client) -> None:
    all_recs = read_all(acme, "/api/erp/vendors")
    by_key = [r["key"] for r in all_recs]
    assert by_key == sorted(by_key)
    desc = get_ok(acme, "/api/erp/vendors?sort[key]=1&per_page=100")
    assert keys(desc) == by_key[::-1]
    default = get_ok(acme, "/api/erp/vendors", {"per_page": 100})["data"]
    created = sorted(all_recs, key=lambda r: (parse_timestamp(r["createdAt"]), r["key"]))
    assert [r["key"] for r in default] == [r["key"] for r in created]
    for query, spec in (
        ("sort[updatedAt]=1&sort[key]=0", [("updatedAt", True), ("key", False)]),
        ("sort[updatedAt]=0&sort[key]=1", [("updatedAt", False), ("key", True)]),
        ("sort[createdAt]=1&sort[updatedAt]=0", [("createdAt", True), ("updatedAt", False)]),
        ("sort[updatedAt]=0&sort[createdAt]=1", [("updatedAt", False), ("createdAt", True)]),
    ):
        records = get_ok(acme, f"/api/erp/vendors?{query}&per_page=100")["data"]
        assert len(records) == 50
        _assert_sorted(records, spec)
    first = get_ok(acme, "/api/erp/vendors?sort[updatedAt]=1&sort[key]=0&per_page=100")["data"]
    second = get_ok(acme, "/api/erp/vendors?sort[key]=0&sort[updatedAt]=1&per_page=100")["data"]
    assert [r["key"] for r in first] != [r["key"] for r in second]  # the order of params counts


def test_ties_are_shuffled_between_requests_but_a_key_sort_is_stable(
    acme: httpx.Client, admin: SandboxAdmin
) -> None:
    def tie_orders(query: str, n: int = 6) -> list[list[str]]:
        return [keys(get_ok(acme, f"/api/erp/vendors?{query}&per_page=100")) for _ in range(n)]

    shuffled = tie_orders("sort[updatedAt]=0")
    assert len({tuple(o) for o in shuffled}) > 1
    by_time = {
        r["key"]: parse_timestamp(r["updatedAt"]) for r in read_all(acme, "/api/erp/vendors")
    }
    for order in shuffled:  # every answer has every record sorted by updatedAt; only ties move
        assert sorted(order) == sorted(by_time)
        assert [by_time[k] for k in order] == sorted(by_time.values())
    stable = tie_orders("sort[updatedAt]=0&sort[key]=0")
    assert len({tuple(o) for o in stable}) == 1
    # the big tie group (12 records) is larger than a page: walking pages of 5 over it can
    # repeat and skip records
    walks = []
    for _ in range(4):
        seen: list[str] = []
        for page in range(1, 11):
            seen.extend(
                keys(
                    get_ok(
                        acme,
                        "/api/erp/vendors",
                        {"sort[updatedAt]": 0, "per_page": 5, "page": page},
                    )
                )
            )
        walks.append(seen)
    assert any(len(set(w)) < 50 for w in walks)
    # reproducible: the same requests after a reset give the same orders
    admin.reset(unified_config())
    first_run = tie_orders("sort[updatedAt]=0", 3)
    admin.reset(unified_config())
    assert tie_orders("sort[updatedAt]=0", 3) == first_run


# -- records ----------------------------------------------------------------------------------


def test_unified_record_shape_and_custom_fields(
    acme: httpx.Client, clients: dict[str, Any]
) -> None:
    v1 = (
        clients["raw"]
        .get(
            "/api/v1/purchase-orders",
            params={"limit": 200},
            headers={"Authorization": "Bearer tok-acme"},
        )
        .json()["data"]
    )
    v1_by_key = {r["key"]: r for r in v1}
    pos = read_all(acme, "/api/erp/purchase-orders")
    assert len(pos) == 60
    for po in pos:
        old = v1_by_key[po["key"]]
        assert "createdAt" not in po and "deletedAt" not in po and "customFields" not in po
        assert po["updatedAt"] == old["updatedAt"]
        for name, value in old["customFields"].items():
            assert po[name] == value
        assert {"Cost Center", "projectCode"} <= set(po)
        assert po["lineItems"] == old["lineItems"] and all(
            "deletedAt" in li for li in po["lineItems"]
        )
        assert isinstance(po["totalNetValue"], str)
    vendor = get_ok(acme, "/api/erp/vendors/V-000007")["data"]
    assert {"createdAt", "updatedAt", "deletedAt", "Cost Center", "projectCode"} <= set(vendor)
    assert "customFields" not in vendor


def test_money_as_numbers_keeps_the_exact_digits(acme: httpx.Client, admin: SandboxAdmin) -> None:
    as_strings = acme.get("/api/erp/purchase-orders/PO-000003").json()["data"]
    admin.set_profile("acme", money_as_numbers=True)
    raw = acme.get("/api/erp/purchase-orders/PO-000003").text
    as_numbers = json.loads(raw, parse_float=Decimal)["data"]
    assert f'"totalNetValue":{as_strings["totalNetValue"]}' in raw  # unquoted, same digits
    assert isinstance(as_numbers["totalNetValue"], Decimal)
    assert str(as_numbers["totalNetValue"]) == as_strings["totalNetValue"]
    for a, b in zip(as_strings["lineItems"], as_numbers["lineItems"]):
        for name in ("quantity", "price", "lineTotalValue"):
            assert str(b[name]) == a[name] and isinstance(b[name], Decimal)
    assert isinstance(as_numbers["orderNo"], str)  # not money: stays a string
    # an admin-written value that is not a plain decimal stays a string
    admin.put_record("acme", "purchase-orders", "PO-000003", {"totalNetValue": "12,5"})
    assert acme.get("/api/erp/purchase-orders/PO-000003").json()["data"]["totalNetValue"] == "12,5"


def test_deletes_po_vanishes_vendor_soft_and_hard(acme: httpx.Client, admin: SandboxAdmin) -> None:
    v1 = httpx.Client(base_url=str(acme.base_url), headers={"Authorization": "Bearer tok-acme"})
    with v1:
        admin.delete_record("acme", "purchase-orders", "PO-000010")
        assert "PO-000010" not in {r["key"] for r in read_all(acme, "/api/erp/purchase-orders")}
        assert get_ok(acme, "/api/erp/purchase-orders")["meta"]["total"] == 59
        assert_laravel(acme.get("/api/erp/purchase-orders/PO-000010"), 404, "Not Found.")
        tomb = v1.get("/api/v1/purchase-orders", params={"include_deleted": "true", "limit": 200})
        assert any(r["key"] == "PO-000010" and r["deletedAt"] for r in tomb.json()["data"])
        # soft delete: still listed, deletedAt set, updatedAt moved to the deletion
        before = get_ok(acme, "/api/erp/vendors/V-000005")["data"]
        admin.delete_record("acme", "vendors", "V-000005")
        soft = get_ok(acme, "/api/erp/vendors/V-000005")["data"]
        assert soft["deletedAt"] == soft["updatedAt"] and soft["updatedAt"] > before["updatedAt"]
        last = get_ok(acme, "/api/erp/vendors", {"sort[updatedAt]": 1, "sort[key]": 0})["data"][0]
        assert last["key"] == "V-000005"
        assert get_ok(acme, "/api/erp/vendors")["meta"]["total"] == 50
        # hard delete: gone from unified, a tombstone in v1
        admin.delete_record("acme", "vendors", "V-000006", hard=True)
        admin.bulk("acme", "vendors", keys=["V-000008", "V-000009"], delete=True, hard=True)
        listed = {r["key"] for r in read_all(acme, "/api/erp/vendors")}
        assert not listed & {"V-000006", "V-000008", "V-000009"} and len(listed) == 47
        assert acme.get("/api/erp/vendors/V-000006").status_code == 404
        v1_tombs = v1.get("/api/v1/vendors", params={"include_deleted": "true", "limit": 500})
        deleted = {r["key"] for r in v1_tombs.json()["data"] if r["deletedAt"]}
        assert deleted == {"V-000005", "V-000006", "V-000008", "V-000009"}
        # restoring brings it back
        admin.put_record("acme", "vendors", "V-000006", {"deletedAt": None})
        assert get_ok(acme, "/api/erp/vendors/V-000006")["data"]["deletedAt"] is None


def test_line_items_flat_listing(acme: httpx.Client) -> None:
    pos = get_ok(acme, "/api/erp/purchase-orders", {"per_page": 100})["data"]
    lines = [li for po in pos for li in po["lineItems"]]
    body = get_ok(acme, "/api/erp/purchase-orders.line-items", {"per_page": 7, "page": 2})
    assert body["meta"]["total"] == len(lines)
    assert body["data"] == lines[7:14]


# -- families -----------------------------------------------------------------------------------


def test_families_serve_their_entities_only(
    acme: httpx.Client, initech: httpx.Client, clients: dict[str, Any], admin: SandboxAdmin
) -> None:
    for entity in ("purchase-orders", "vendors", "materials", "sites"):
        assert acme.get(f"/api/erp/{entity}").status_code == 200
        assert_laravel(acme.get(f"/api/eam/{entity}"), 404, "Not Found.")
        assert_laravel(initech.get(f"/api/erp/{entity}"), 404, "Not Found.")
        assert initech.get(f"/api/eam/{entity}").status_code == 200
    for entity in ("assets", "work-orders"):
        assert_laravel(acme.get(f"/api/erp/{entity}"), 404, "Not Found.")
        assert get_ok(initech, f"/api/eam/{entity}")["meta"]["total"] in (9, 7)
        assert get_ok(initech, f"/api/eam/{entity}/{'AST' if entity == 'assets' else 'WO'}-000001")
    # v1 keeps serving every entity to every connection
    v1 = clients["raw"].get("/api/v1/assets", headers={"Authorization": "Bearer tok-acme"})
    assert v1.status_code == 200 and len(v1.json()["data"]) == 4
    # unknown routes answer 404 before auth
    assert_laravel(clients["anon"].get("/api/erp/no-such-entity"), 404, "Not Found.")
    assert_laravel(clients["anon"].get("/api/crm/vendors"), 404, "Not Found.")
    admin.set_profile("acme", family="eam")
    assert acme.get("/api/eam/assets").status_code == 200
    assert acme.get("/api/erp/vendors").status_code == 404


# -- sync status ------------------------------------------------------------------------------


def test_integrations_current_maps_the_sync_state(
    acme: httpx.Client, admin: SandboxAdmin, clients: dict[str, Any]
) -> None:
    v1 = {"Authorization": "Bearer tok-acme"}
    last_sync = clients["raw"].get("/api/v1/sync-status", headers=v1).json()["data"]["last_sync_at"]
    data = get_ok(acme, "/api/integrations/current")["data"]
    assert list(data) == [
        "id", "company_name", "email", "provider", "updated_at", "sync_status", "sync_updated_at",
    ]  # fmt: skip
    assert data["company_name"] == "Acme" and data["provider"] == "sap"
    assert data["email"] == "ops@acme.example"
    assert data["sync_status"] == "done" and data["sync_updated_at"] == last_sync
    admin.sync("acme", full_sync=True)
    full = get_ok(acme, "/api/integrations/current")["data"]
    assert full["sync_status"] == "fulldone"
    assert (
        full["sync_updated_at"]
        == clients["raw"].get("/api/v1/sync-status", headers=v1).json()["data"]["last_sync_at"]
    )
    admin.sync("acme")
    assert get_ok(acme, "/api/integrations/current")["data"]["sync_status"] == "done"
    admin.advance_clock(60)
    before = parse_timestamp(admin.clock())
    admin.sync("acme", status="syncing", publish=False)
    after = parse_timestamp(admin.clock())
    syncing = get_ok(acme, "/api/integrations/current")["data"]
    assert syncing["sync_status"] == "inprogress"
    assert before <= parse_timestamp(syncing["sync_updated_at"]) <= after
    admin.advance_clock(30)
    admin.sync("acme", status="syncing", publish=False)  # no change: the start stays
    assert (
        get_ok(acme, "/api/integrations/current")["data"]["sync_updated_at"]
        == syncing["sync_updated_at"]
    )
    admin.sync("acme", status="error", publish=False)
    error = get_ok(acme, "/api/integrations/current")["data"]
    assert error["sync_status"] == "error"
    assert parse_timestamp(error["sync_updated_at"]) > parse_timestamp(syncing["sync_updated_at"])
    admin.set_token("acme", status="reauthorization_required")
    assert get_ok(acme, "/api/integrations/current")["data"]["sync_status"] == "fail"
    admin.set_profile("acme", sync_updated_at_format="laravel")
    laravel = get_ok(acme, "/api/integrations/current")["data"]["sync_updated_at"]
    assert LARAVEL_TIME_RE.match(laravel)
    assert parse_timestamp(laravel.replace(" ", "T") + "Z") <= parse_timestamp(admin.clock())
    admin.revoke_token("acme")
    assert_laravel(acme.get("/api/integrations/current"), 401, "Unauthenticated.")


# -- errors and rate limits -------------------------------------------------------------------


def test_laravel_errors_and_the_login_redirect(
    acme: httpx.Client, admin: SandboxAdmin, clients: dict[str, Any]
) -> None:
    anon, raw = clients["anon"], clients["raw"]
    assert_laravel(anon.get("/api/erp/vendors"), 401, "Unauthenticated.")
    bad = {"Authorization": "Bearer nope", "Accept": JSON_ACCEPT}
    assert_laravel(raw.get("/api/erp/vendors", headers=bad), 401, "Unauthenticated.")
    for headers in ({"Authorization": "Bearer nope"}, {"Accept": "text/html"}, {}):
        resp = raw.get("/api/erp/vendors", headers=headers)
        assert resp.status_code == 302
        assert resp.headers["Location"] == LOGIN_URL
        assert not LOGIN_URL.startswith(str(raw.base_url))  # another host
        assert REQ_ID_RE.match(resp.headers["X-Request-Id"])
    # a valid token does not need Accept
    assert (
        raw.get("/api/erp/vendors", headers={"Authorization": "Bearer tok-acme"}).status_code == 200
    )
    admin.set_permissions("acme", ["vendors", "integrations"])
    assert_laravel(acme.get("/api/erp/vendors"), 403, "This action is unauthorized.")
    assert_laravel(acme.get("/api/integrations/current"), 403, "This action is unauthorized.")
    assert acme.get("/api/erp/sites").status_code == 200
    assert_laravel(acme.get("/api/erp/sites/NOPE"), 404, "Not Found.")
    assert_laravel(acme.get("/api/nothing/here"), 404, "Not Found.")


def test_rate_limit_headers_are_shared_with_v1_and_reset_is_a_unix_time(
    acme: httpx.Client, admin: SandboxAdmin, clients: dict[str, Any]
) -> None:
    admin.set_rate_limit("acme", 3, window_seconds=30)
    first = acme.get("/api/erp/sites")
    assert first.headers["X-RateLimit-Limit"] == "3"
    assert first.headers["X-RateLimit-Remaining"] == "2"
    assert "X-RateLimit-Reset" not in first.headers
    v1 = clients["raw"].get("/api/v1/sites", headers={"Authorization": "Bearer tok-acme"})
    assert v1.headers["X-RateLimit-Remaining"] == "1"
    assert acme.get("/api/integrations/current").headers["X-RateLimit-Remaining"] == "0"
    limited = acme.get("/api/erp/sites")
    assert_laravel(limited, 429, "Too Many Attempts.")
    retry = int(limited.headers["Retry-After"])
    reset = int(limited.headers["X-RateLimit-Reset"])
    assert 1 <= retry <= 30
    assert abs(reset - (time.time() + retry)) <= 2 and reset > 10**9
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    stats = admin.stats()["connections"]["acme"]
    assert stats["dialects"] == {"unified": 3, "v1": 1} and stats["status"]["429"] == 1


def test_faults_apply_to_unified_paths(acme: httpx.Client, admin: SandboxAdmin) -> None:
    admin.set_faults([{"kind": "status", "entity": "vendors", "status": 503, "times": 1}])
    assert_laravel(acme.get("/api/erp/vendors"), 503, "Service Unavailable")
    assert acme.get("/api/erp/vendors").status_code == 200
    admin.set_faults([{"kind": "status", "entity": "integrations", "status": 500, "times": 1}])
    assert_laravel(acme.get("/api/integrations/current"), 500, "Server Error")
    admin.set_faults([{"kind": "html", "entity": "sites", "times": 1}])
    html = acme.get("/api/erp/sites")
    assert html.status_code == 502 and html.headers["content-type"].startswith("text/html")
    admin.set_faults(
        [
            {"kind": "bad_record", "entity": "vendors", "drop_field": "key", "times": 1},
            {"kind": "extra_field", "entity": "vendors", "field": "surprise", "times": 1},
        ]
    )
    data = acme.get("/api/erp/vendors").json()["data"]
    assert "key" not in data[0] and all(r["surprise"] == "surprise" for r in data)
    admin.set_faults([{"kind": "non_json", "entity": "vendors", "times": 1}])
    with pytest.raises(json.JSONDecodeError):
        json.loads(acme.get("/api/erp/vendors").text)
    admin.set_faults([{"kind": "truncate", "entity": "vendors", "times": 1}])
    with pytest.raises(httpx.HTTPError):
        acme.get("/api/erp/vendors")
    admin.set_faults([{"kind": "reset", "entity": "materials", "times": 1}])
    with pytest.raises(httpx.HTTPError):
        acme.get("/api/erp/materials")
    fired = admin.faults()
    assert fired[0]["fired"] == 1
    assert acme.get("/api/erp/materials").status_code == 200


# -- account credentials ------------------------------------------------------------------------


def _account_token(client: httpx.Client, **override: Any) -> httpx.Response:
    body = {
        "grant_type": "client_credentials",
        "client_id": "mk_client_demo",
        "client_secret": "mk_secret_demo",
        **override,
    }
    return client.post("/link/token", json=body)


def test_account_flow_list_connections_and_mint_tokens(
    admin: SandboxAdmin, clients: dict[str, Any]
) -> None:
    anon: httpx.Client = clients["anon"]
    bad = _account_token(anon, client_secret="wrong")
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"
    assert _account_token(anon, client_id="other").status_code == 401
    grant = _account_token(anon, grant_type="password")
    assert grant.status_code == 400 and grant.json()["error"] == "unsupported_grant_type"
    issued = _account_token(anon)
    assert issued.status_code == 200
    token = issued.json()
    assert token["token_type"] == "bearer" and token["expires_in"] == 3600
    account = {"Authorization": f"Bearer {token['access_token']}", "Accept": JSON_ACCEPT}
    # form-encoded credentials work too (as OAuth clients send them)
    form = anon.post(
        "/link/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "mk_client_demo",
            "client_secret": "mk_secret_demo",
        },
    )
    assert form.status_code == 200

    page1 = anon.get("/api/system/connections", params={"per_page": 2}, headers=account).json()
    page2 = anon.get(
        "/api/system/connections", params={"per_page": 2, "page": 2}, headers=account
    ).json()
    assert page1["meta"]["total"] == 3 and page1["meta"]["last_page"] == 2
    conns = page1["data"] + page2["data"]
    assert [c["key"] for c in conns] == ["conn_acme", "conn_globex", "conn_initech"]
    acme_c = conns[0]
    assert set(acme_c) == {
        "key", "name", "email", "status", "integration_name", "tags", "client_id",
        "created_at", "updated_at", "connected_at",
    }  # fmt: skip
    assert acme_c["name"] == "Acme" and acme_c["tags"] == ["eu", "sap"]
    assert acme_c["integration_name"] == "SAP S/4HANA" and acme_c["client_id"] == "mk_client_demo"
    assert [c["status"] for c in conns] == ["active", "inactive", "reauthorization_required"]

    minted = anon.post("/api/system/connections/conn_acme/token", headers=account)
    assert minted.status_code == 200
    conn_token = minted.json()["data"]
    assert conn_token["expires_in"] == 300 and conn_token["token"] != "tok-acme"
    bearer = {"Authorization": f"Bearer {conn_token['token']}", "Accept": JSON_ACCEPT}
    assert anon.get("/api/erp/vendors", headers=bearer).json()["meta"]["total"] == 50
    assert len(anon.get("/api/v1/vendors", headers=bearer).json()["data"]) == 50
    assert anon.get("/api/integrations/current", headers=bearer).json()["data"]["id"] == "int_acme"
    assert_422(
        anon.post("/api/system/connections/conn_globex/token", headers=account), "connection"
    )
    assert_laravel(
        anon.post("/api/system/connections/conn_initech/token", headers=account),
        403,
        "This action is unauthorized.",
    )
    assert_laravel(anon.post("/api/system/connections/conn_nope/token", headers=account), 404)
    # tokens are not interchangeable
    assert_laravel(anon.get("/api/erp/vendors", headers=account), 401)
    assert_laravel(anon.get("/api/system/connections", headers=bearer), 401)
    assert anon.get("/api/system/connections").status_code == 401
    no_accept = clients["raw"].get("/api/system/connections")
    assert no_accept.status_code == 302 and no_accept.headers["Location"] == LOGIN_URL
    # the admin can change the account-level status and other profile fields
    admin.set_profile(
        "globex", connection_status="active", tags=["new"], display_name="Globex Corp"
    )
    assert (
        anon.post("/api/system/connections/conn_globex/token", headers=account).status_code == 200
    )
    listed = anon.get("/api/system/connections", headers=account).json()["data"][1]
    assert (listed["name"], listed["tags"], listed["status"]) == ("Globex Corp", ["new"], "active")
    assert admin.stats()["token_mints"] == {"acme": 1, "globex": 1}
    assert admin.minted_tokens("acme") == {"minted": 1, "live": 1}
    assert admin.revoke_minted_tokens("acme")["revoked"] == 1
    assert_laravel(anon.get("/api/erp/vendors", headers=bearer), 401)


def test_minted_tokens_expire_on_the_store_clock(
    admin: SandboxAdmin, clients: dict[str, Any]
) -> None:
    admin.reset(unified_config(connection_token_ttl_seconds=5, account_token_ttl_seconds=60))
    anon: httpx.Client = clients["anon"]
    account = {
        "Authorization": f"Bearer {_account_token(anon).json()['access_token']}",
        "Accept": JSON_ACCEPT,
    }
    minted = anon.post("/api/system/connections/conn_acme/token", headers=account).json()["data"]
    assert minted["expires_in"] == 5
    bearer = {"Authorization": f"Bearer {minted['token']}", "Accept": JSON_ACCEPT}
    assert anon.get("/api/erp/sites", headers=bearer).status_code == 200
    admin.advance_clock(6)
    assert_laravel(anon.get("/api/erp/sites", headers=bearer), 401, "Unauthenticated.")
    v1 = anon.get("/api/v1/sites", headers={"Authorization": bearer["Authorization"]})
    assert v1.status_code == 401 and v1.json()["error"]["code"] == "AUTHENTICATION_FAILED"
    assert admin.minted_tokens("acme") == {"minted": 1, "live": 0}
    # minting again works; the static token never expires
    again = anon.post("/api/system/connections/conn_acme/token", headers=account).json()["data"]
    assert (
        anon.get(
            "/api/erp/sites",
            headers={"Authorization": f"Bearer {again['token']}", "Accept": JSON_ACCEPT},
        ).status_code
        == 200
    )
    assert clients["acme"].get("/api/erp/sites").status_code == 200
    admin.advance_clock(61)
    assert_laravel(anon.get("/api/system/connections", headers=account), 401)


def test_expires_in_forms(admin: SandboxAdmin, clients: dict[str, Any]) -> None:
    anon: httpx.Client = clients["anon"]
    admin.reset(unified_config(expires_in_format="mixed"))
    forms = [_account_token(anon).json()["expires_in"]]
    account = {
        "Authorization": f"Bearer {_account_token(anon).json()['access_token']}",
        "Accept": JSON_ACCEPT,
    }
    for _ in range(4):
        forms.append(
            anon.post("/api/system/connections/conn_acme/token", headers=account).json()["data"][
                "expires_in"
            ]
        )
    now = parse_timestamp(admin.clock()) // 1_000_000
    # one step per token issued: account tokens 3600 and a unix time (not kept here), then
    # the mints "300", str(unix), 300, unix
    assert forms[0] == 3600
    kinds = []
    for value in forms[1:]:
        number = int(value)
        unix = number > 10**9
        kinds.append((type(value).__name__, unix))
        assert (abs(number - (now + 300)) <= 2) if unix else number == 300
    assert kinds == [("str", False), ("str", True), ("int", False), ("int", True)]
    admin.reset(unified_config(expires_in_format="unix"))
    unix = _account_token(anon).json()["expires_in"]
    assert isinstance(unix, int) and abs(unix - (now + 3600)) <= 2
    admin.reset(unified_config(expires_in_format="string"))
    assert _account_token(anon).json()["expires_in"] == "3600"


# -- dialects and config ------------------------------------------------------------------------


def test_dialect_switch(acme: httpx.Client, admin: SandboxAdmin, clients: dict[str, Any]) -> None:
    raw = clients["raw"]
    v1 = {"Authorization": "Bearer tok-acme"}
    admin.reset(unified_config(dialect="v1"))
    assert raw.get("/api/v1/vendors", headers=v1).status_code == 200
    gone = acme.get("/api/erp/vendors")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "NOT_FOUND"
    assert _account_token(clients["anon"]).status_code == 404
    admin.reset(unified_config(dialect="unified"))
    assert acme.get("/api/erp/vendors").status_code == 200
    assert_laravel(raw.get("/api/v1/vendors", headers=v1), 404, "Not Found.")
    assert_laravel(raw.get("/api/v1/sync-status", headers=v1), 404, "Not Found.")


def test_config_round_trip_defaults_and_cli() -> None:
    default = SandboxConfig()
    assert [(c.name, c.family, c.key, c.provider) for c in default.connections] == [
        ("acme", "erp", "conn_acme", "sap"),
        ("globex", "erp", "conn_globex", "netsuite"),
        ("initech", "eam", "conn_initech", "maximo"),
    ]
    assert (default.dialect, default.client_id, default.expires_in_format) == (
        "both", "mk_client_demo", "seconds",
    )  # fmt: skip
    config = unified_config(dialect="unified", expires_in_format="mixed")
    config.connections[0].money_as_numbers = True
    again = SandboxConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    with pytest.raises(ValueError):
        SandboxConfig(dialect="v2")
    with pytest.raises(ValueError):
        ConnectionConfig(name="x", token="t", family="crm")
    args = parse_args(["--dialect", "unified", "--connections", "1", "--expires-in-format", "unix"])
    built = build_config(args)
    assert built.dialect == "unified" and built.expires_in_format == "unix"
    assert built.connections[0].family == "erp"


def test_admin_describes_profiles_and_rejects_bad_values(admin: SandboxAdmin) -> None:
    described = {c["name"]: c for c in admin.connections()}
    assert described["initech"]["profile"]["family"] == "eam"
    assert described["acme"]["minted_tokens"] == {"minted": 0, "live": 0}
    bad: list[dict[str, Any]] = [
        {"family": "crm"},
        {"connection_status": "gone"},
        {"tags": "x"},
        {"key": "conn_globex"},
    ]
    for fields in bad:
        with pytest.raises(SandboxAdminError) as caught:
            admin.set_profile("acme", **fields)
        assert caught.value.status == 400
    assert admin.set_profile("acme", key="acme-key")["key"] == "acme-key"
