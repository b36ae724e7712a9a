"""The sandbox serves every list endpoint of Makini's OpenAPI files (the catalogue) over HTTP.

Expectations are read from the OpenAPI files directly (not from the sandbox's own reading
of them): every list endpoint of a family answers at ``/api/{family}/{path}`` with records
whose fields are the schema's fields, and 404 on the other family.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
from sandbox_clients import reset_admin, sandbox_clients

from makini_sandbox import ConnectionConfig, SandboxAdmin, SandboxConfig, SandboxServer
from makini_sandbox.timeutil import parse_timestamp

OPENAPI = Path(__file__).resolve().parent.parent / "makini_sandbox" / "openapi"
SIX = ("purchase-orders", "vendors", "materials", "sites", "assets", "work-orders")
#: what the sandbox (and the catalogue) read differently from the declared item schema
RECORD_SCHEMA = {"work-orders/materials": "MaterialItem"}
DECIMAL_RE = re.compile(r"^-?\d+\.\d{4}$")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
CUSTOM = {"Cost Center": "string", "projectCode": "integer"}


@cache
def openapi(family: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((OPENAPI / f"oas3_{family}.json").read_text())
    return document


def list_endpoints(family: str) -> dict[str, str]:
    """path -> record schema of a family's list endpoints (no ``{``, not the flat lines)."""
    prefix = f"/api/{family}/"
    out = {}
    for url, operations in openapi(family)["paths"].items():
        path = url.removeprefix(prefix)
        if "get" not in operations or "{" in path or path.endswith(".line-items"):
            continue
        schema = operations["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        data = schema.get("properties", {}).get("data", {})
        if data.get("type") == "array" and "$ref" in data.get("items", {}):
            out[path] = RECORD_SCHEMA.get(path, data["items"]["$ref"].rsplit("/", 1)[1])
    return out


def properties(family: str, schema: str) -> dict[str, Any]:
    found = openapi(family)["components"]["schemas"].get(schema)
    return found.get("properties", {}) if isinstance(found, dict) else {}


def config(**overrides: Any) -> SandboxConfig:
    return SandboxConfig(
        seed=5,
        tie_group=3,
        big_tie_group=0,
        connections=[
            ConnectionConfig(
                name="acme",
                token="tok-acme",
                purchase_orders=8,
                vendors=6,
                materials=6,
                sites=3,
                lines_per_po=(1, 3),
                custom_fields=CUSTOM,
                extra_counts={"invoices": 40, "uom": 3},
            ),
            ConnectionConfig(
                name="initech",
                token="tok-initech",
                system="IBM Maximo",
                purchase_orders=5,
                assets=6,
                work_orders=6,
                custom_fields=CUSTOM,
                extra_count=4,
            ),
        ],
        **overrides,
    )


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(config()) as srv:
        yield srv


@pytest.fixture(scope="module")
def clients(server: SandboxServer) -> Iterator[dict[str, Any]]:
    tokens = {"acme": "tok-acme", "initech": "tok-initech"}
    with sandbox_clients(server.url, tokens) as clients:
        yield clients


@pytest.fixture()
def admin(clients: dict[str, Any]) -> SandboxAdmin:
    return reset_admin(clients, config())


def listing(client: httpx.Client, url: str, **params: Any) -> dict[str, Any]:
    resp = client.get(url, params={"per_page": 100, **params})
    assert resp.status_code == 200, (url, resp.text)
    body: dict[str, Any] = resp.json()
    return body


def check_value(where: str, name: str, value: Any) -> None:
    """Values follow the contract's kinds by field name (null allowed)."""
    if value is None:
        return
    if name == "key" or name.endswith("Key"):
        assert isinstance(value, str) and value, where
    elif name.endswith("Keys"):
        if isinstance(value, str) and " assets " in where:
            return  # v1's assets send accountKeys as the schema declares it: a string
        assert isinstance(value, list) and all(isinstance(k, str) for k in value), where
    elif name.endswith("At"):
        parse_timestamp(value)  # RFC 3339 with an offset
        assert "T" in value, where
    elif name == "date" or name.endswith("Date"):
        if name == "shipmentDate" and " purchase-orders " in where:
            parse_timestamp(value)  # the six keep v1's shapes: v1 sends a timestamp there
        else:
            assert DATE_RE.match(value), where
    elif re.match(r"^(is|has)[A-Z]", name):
        assert isinstance(value, bool), where
    elif name in ("price", "quantity", "rate", "reading") or name.endswith(("Value", "Quantity")):
        assert isinstance(value, str) and DECIMAL_RE.match(value), (where, value)


def check_record(
    family: str, schema: str, record: dict[str, Any], where: str, six: bool = False
) -> None:
    """Every field of the schema and no other; nested lists of objects as their schemas
    (0-3 elements, except in the six, whose lists keep v1's sizes)."""
    props = properties(family, schema)
    assert set(record) == set(props), f"{where}: {set(record) ^ set(props)}"
    for name, prop in props.items():
        value = record[name]
        check_value(f"{where}.{name}", name, value)
        item = prop.get("items", {}).get("$ref") if prop.get("type") == "array" else None
        if item is not None and properties(family, item.rsplit("/", 1)[1]):
            assert isinstance(value, list) and (six or len(value) <= 3), where
            for i, element in enumerate(value):
                nested = item.rsplit("/", 1)[1]
                check_record(family, nested, element, f"{where}.{name}[{i}]", six)


@pytest.mark.parametrize(("family", "connection"), [("erp", "acme"), ("eam", "initech")])
def test_every_list_endpoint_answers_with_the_schema_fields(
    clients: dict[str, Any], admin: SandboxAdmin, family: str, connection: str
) -> None:
    client: httpx.Client = clients[connection]
    endpoints = list_endpoints(family)
    assert len(endpoints) >= 30  # erp 42, eam 32 in these files
    keys: set[str] = set()
    for path, schema in endpoints.items():
        body = listing(client, f"/api/{family}/{path}")
        records = body["data"]
        assert records and body["meta"]["total"] == len(records), path
        for record in records:
            if path in SIX:  # custom fields arrive as extra top-level keys
                custom = {name: record.pop(name) for name in CUSTOM}
                assert custom.keys() == CUSTOM.keys(), path
            where = f"{family} {path} {record.get('key')}"
            check_record(family, schema, record, where, path in SIX)
            if "key" in record:
                assert record["key"] not in keys, f"{path}: key {record['key']} not unique"
                keys.add(record["key"])
            if "deletedAt" in record:
                assert record["deletedAt"] is None
        first = records[0]
        if "key" in first and path not in SIX:
            one = client.get(f"/api/{family}/{path}/{first['key']}")
            assert one.status_code == 200 and one.json() == {"data": first}, path


def test_other_family_and_v1_answer_404(clients: dict[str, Any], admin: SandboxAdmin) -> None:
    erp, eam = set(list_endpoints("erp")), set(list_endpoints("eam"))
    acme, initech = clients["acme"], clients["initech"]
    for path in sorted(erp - eam)[:5]:
        assert acme.get(f"/api/erp/{path}").status_code == 200
        assert initech.get(f"/api/eam/{path}").status_code == 404
        assert initech.get(f"/api/erp/{path}").status_code == 404, "initech is an EAM"
    for path in sorted(eam - erp)[:5]:
        assert acme.get(f"/api/eam/{path}").status_code == 404
        assert acme.get(f"/api/erp/{path}").status_code == 404
    assert acme.get("/api/erp/statuses/no-such-status").status_code == 404
    v1 = acme.get("/api/v1/invoices")
    assert v1.status_code == 404 and v1.json()["error"]["code"] == "NOT_FOUND"


def test_counts_history_ties_and_query_fields(clients: dict[str, Any], admin: SandboxAdmin) -> None:
    acme: httpx.Client = clients["acme"]
    invoices = listing(acme, "/api/erp/invoices", **{"sort[updatedAt]": "0", "sort[key]": "0"})
    records = invoices["data"]
    assert invoices["meta"]["total"] == 40  # extra_counts
    assert listing(acme, "/api/erp/uom")["meta"]["total"] == 3
    assert listing(acme, "/api/erp/taxes")["meta"]["total"] == 5  # extra_count default
    updated = [parse_timestamp(r["updatedAt"]) for r in records]
    assert updated == sorted(updated)
    assert len(set(updated)) < len(updated), "bulk-update ties"
    assert updated[-1] - updated[0] > 180 * 86_400 * 10**6, "spread over the history"
    assert all(parse_timestamp(r["createdAt"]) <= parse_timestamp(r["updatedAt"]) for r in records)
    # filters and sort on the fields the entity has
    middle = records[20]["updatedAt"]
    newer = listing(acme, "/api/erp/invoices", **{"filter[updatedAt:gt]": middle})["data"]
    assert {r["key"] for r in newer} == {
        r["key"] for r in records if parse_timestamp(r["updatedAt"]) > parse_timestamp(middle)
    }
    page = listing(acme, "/api/erp/invoices", per_page=7, page=2, **{"sort[key]": "1"})
    descending = sorted((r["key"] for r in records), reverse=True)
    assert [r["key"] for r in page["data"]] == descending[7:14]
    # createdAt only (exchange rates), neither (uom): other fields are 422
    rates = listing(acme, "/api/erp/exchange-rates", **{"sort[createdAt]": "1"})["data"]
    created = [r["createdAt"] for r in rates]
    assert [parse_timestamp(c) for c in created] == sorted(
        (parse_timestamp(c) for c in created), reverse=True
    )
    assert acme.get("/api/erp/exchange-rates", params={"sort[updatedAt]": "0"}).status_code == 422
    assert acme.get("/api/erp/uom", params={"filter[createdAt]": "2024-01-01"}).status_code == 422
    assert acme.get("/api/erp/uom", params={"filter[key:startsWith]": "UOM-"}).status_code == 200


def test_admin_changes_show_up(clients: dict[str, Any], admin: SandboxAdmin) -> None:
    acme, initech = clients["acme"], clients["initech"]
    path = "statuses/purchase-orders"
    first = listing(acme, f"/api/erp/{path}")["data"][0]
    written = admin.put_record("acme", path, first["key"], {"name": "Renamed"})
    assert written["code"] == first["code"], "merged into the record"
    newest = listing(acme, f"/api/erp/{path}", **{"sort[updatedAt]": "1"})["data"][0]
    assert newest["key"] == first["key"] and newest["name"] == "Renamed"
    assert parse_timestamp(newest["updatedAt"]) > parse_timestamp(first["updatedAt"])
    assert admin.get_record("acme", path, first["key"])["data"]["name"] == "Renamed"
    # a new record; deletes: soft where the schema has deletedAt, else the record vanishes
    admin.put_record("acme", "uom", "UOM-NEW", {"name": "Pallet"})
    assert acme.get("/api/erp/uom/UOM-NEW").json()["data"] == {
        "key": "UOM-NEW",
        "name": "Pallet",
        "code": None,
        "rateBaseKey": None,
        "rate": None,
        "isActive": None,
    }
    admin.delete_record("acme", "uom", "UOM-NEW")
    assert acme.get("/api/erp/uom/UOM-NEW").status_code == 404
    assert listing(acme, "/api/erp/uom")["meta"]["total"] == 3
    admin.delete_record("acme", path, first["key"])
    soft = acme.get(f"/api/erp/{path}/{first['key']}").json()["data"]
    assert soft["deletedAt"] == soft["updatedAt"]
    # bulk on an eam entity with a slash in its path
    changed = admin.bulk("initech", "work-orders/materials", count=2, set={"name": "Bulk"})
    assert changed["changed"] == 2
    named = listing(
        initech, "/api/eam/work-orders/materials", **{"filter[updatedAt]": changed["updatedAt"]}
    )
    assert sorted(r["key"] for r in named["data"]) == sorted(changed["keys"])
    assert {r["name"] for r in named["data"]} == {"Bulk"}


def test_faults_permissions_and_materials_unified_shape(
    clients: dict[str, Any], admin: SandboxAdmin
) -> None:
    acme: httpx.Client = clients["acme"]
    admin.set_faults([{"kind": "status", "entity": "statuses/invoices", "status": 503, "times": 1}])
    assert acme.get("/api/erp/statuses/invoices").status_code == 503
    assert acme.get("/api/erp/statuses/invoices").status_code == 200
    admin.set_permissions("acme", ["invoices"])
    assert acme.get("/api/erp/invoices").status_code == 403
    assert acme.get("/api/erp/invoices/INVOICES-000001").status_code == 403
    # materials: Part's fields in the unified dialect (v1 keeps its own shape), stable
    unified = listing(acme, "/api/erp/materials")["data"][0]
    assert "drawings" in unified and "inventories" not in unified
    again = acme.get(f"/api/erp/materials/{unified['key']}").json()["data"]
    assert again == unified
    v1 = acme.get("/api/v1/materials").json()["data"][0]
    assert "inventories" in v1 and "drawings" not in v1


def test_extra_counts_are_checked_and_catalogue_stores_built_on_first_use() -> None:
    with pytest.raises(ValueError, match="unknown entity path"):
        ConnectionConfig(name="x", token="t", extra_counts={"invoice": 3})
    with pytest.raises(ValueError, match="purchase_orders="):
        ConnectionConfig(name="x", token="t", extra_counts={"purchase-orders": 3})
    with SandboxServer(config()) as srv:
        conn = srv.store.connections["acme"]
        assert set(conn.entities) == set(SIX)
        with httpx.Client(base_url=srv.url, headers={"Authorization": "Bearer tok-acme"}) as c:
            assert c.get("/api/v1/purchase-orders").status_code == 200
            assert set(conn.entities) == set(SIX)
            assert c.get("/api/erp/receipts").status_code == 200
        assert set(conn.entities) == {*SIX, "receipts"}
