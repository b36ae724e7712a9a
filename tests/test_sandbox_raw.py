"""Raw tables (``/api/raw/tables``, ``/api/raw/tables/{table}/data``) over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sandbox_clients import reset_admin, sandbox_clients

from makini_sandbox import ConnectionConfig, SandboxAdmin, SandboxConfig, SandboxServer


def config(**overrides: Any) -> SandboxConfig:
    return SandboxConfig(
        seed=3,
        connections=[
            ConnectionConfig(name="acme", token="tok-acme", purchase_orders=5, raw_table_rows=33),
            ConnectionConfig(
                name="initech", token="tok-initech", system="IBM Maximo", purchase_orders=5
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
    tokens = {"acme": "tok-acme", "initech": "tok-initech", "anon": None}
    with sandbox_clients(server.url, tokens) as clients:
        yield clients


@pytest.fixture()
def admin(clients: dict[str, Any]) -> SandboxAdmin:
    return reset_admin(clients, config())


def rows_of(client: httpx.Client, table: str, **params: Any) -> tuple[list[dict[str, Any]], int]:
    resp = client.get(f"/api/raw/tables/{table}/data", params={"per_page": 100, **params})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    return body["data"], body["meta"]["total"]


def test_tables_are_listed_per_family_with_columns_and_row_counts(
    clients: dict[str, Any], admin: SandboxAdmin
) -> None:
    erp = clients["acme"].get("/api/raw/tables").json()["data"]
    eam = clients["initech"].get("/api/raw/tables").json()["data"]
    assert [t["name"] for t in erp] == ["EKKO", "EKPO", "LFA1", "MARA"]
    assert [t["name"] for t in eam] == ["WORKORDER", "ASSET", "LOCATIONS"]
    for table in erp + eam:
        assert set(table) == {"name", "description", "columns", "rows"}
        assert all(set(c) == {"name", "type"} for c in table["columns"])
    assert {t["rows"] for t in erp} == {33} and {t["rows"] for t in eam} == {25}
    # every listed column is in the rows, in order, and the counts hold
    for client, tables in ((clients["acme"], erp), (clients["initech"], eam)):
        for table in tables:
            rows, total = rows_of(client, table["name"])
            assert total == len(rows) == table["rows"]
            assert all(list(r) == [c["name"] for c in table["columns"]] for r in rows)


def test_rows_mix_scalar_types_and_are_deterministic(
    clients: dict[str, Any], admin: SandboxAdmin
) -> None:
    acme = clients["acme"]
    tables = {t["name"]: t for t in acme.get("/api/raw/tables").json()["data"]}
    rows, _ = rows_of(acme, "EKPO")
    kinds = {type(v).__name__ for r in rows for v in r.values()}
    assert {"str", "int", "float", "bool", "NoneType"} <= kinds
    mixed = next(c["name"] for c in tables["EKPO"]["columns"] if c["type"] == "mixed")
    assert len({type(r[mixed]).__name__ for r in rows}) >= 3
    typed = {c["name"]: c["type"] for c in tables["EKPO"]["columns"]}
    python = {"string": (str,), "integer": (int,), "number": (float, int), "boolean": (bool,)}
    for row in rows:
        for name, value in row.items():
            if typed[name] != "mixed" and value is not None:
                assert isinstance(value, python[typed[name]]), (name, value)
    admin.reset(config())
    assert rows_of(acme, "EKPO")[0] == rows


def test_paging_filters_and_sort(clients: dict[str, Any], admin: SandboxAdmin) -> None:
    acme = clients["acme"]
    everything, total = rows_of(acme, "EKKO")
    walked: list[dict[str, Any]] = []
    page = 1
    while True:
        body = acme.get("/api/raw/tables/EKKO/data", params={"page": page, "per_page": 10}).json()
        walked.extend(body["data"])
        assert body["meta"]["last_page"] == 4
        if body["links"]["next"] is None:
            break
        page += 1
    assert walked == everything and total == 33
    beyond = acme.get("/api/raw/tables/EKKO/data", params={"page": 9}).json()
    assert beyond["data"] == [] and beyond["meta"]["from"] is None
    # numeric comparison on numbers, text comparison on strings, both combined
    middle = sorted(r["NETWR"] for r in everything)[16]
    high, _ = rows_of(acme, "EKKO", **{"filter[NETWR:gt]": str(middle)})
    assert high == [r for r in everything if r["NETWR"] > middle]
    usd, _ = rows_of(acme, "EKKO", **{"filter[WAERS]": "USD"})
    assert usd == [r for r in everything if r["WAERS"] == "USD"]
    either, _ = rows_of(
        acme,
        "EKKO",
        **{"filter[WAERS]": "USD", "filter[NETWR:gt]": str(middle), "filterMatch": "any"},
    )
    assert either == [r for r in everything if r["WAERS"] == "USD" or r["NETWR"] > middle]
    blocked, _ = rows_of(acme, "EKKO", **{"filter[LOEKZ]": "L"})
    assert blocked == [r for r in everything if r["LOEKZ"] == "L"]
    ordered, _ = rows_of(acme, "EKKO", **{"sort[WAERS]": "0", "sort[NETWR]": "1"})
    assert ordered == sorted(everything, key=lambda r: (r["WAERS"], -r["NETWR"]))
    items, _ = rows_of(acme, "EKPO", **{"filter[ELIKZ]": "true"})
    assert items and all(r["ELIKZ"] is True for r in items)
    bad = acme.get("/api/raw/tables/EKKO/data", params={"filter[NOPE]": "1"})
    assert bad.status_code == 422 and "filter" in bad.json()["errors"]
    assert acme.get("/api/raw/tables/EKKO/data", params={"per_page": "x"}).status_code == 422


def test_auth_family_permissions_faults_and_rate_limit(
    clients: dict[str, Any], admin: SandboxAdmin
) -> None:
    acme, initech, anon = clients["acme"], clients["initech"], clients["anon"]
    assert anon.get("/api/raw/tables").status_code == 401
    assert anon.get("/api/raw/tables/EKKO/data").status_code == 401
    assert acme.get("/api/raw/tables/WORKORDER/data").status_code == 404  # eam's table
    assert initech.get("/api/raw/tables/EKKO/data").status_code == 404
    admin.set_permissions("acme", ["raw-tables/EKPO"])
    assert acme.get("/api/raw/tables/EKPO/data").status_code == 403
    assert acme.get("/api/raw/tables/EKKO/data").status_code == 200
    admin.set_permissions("acme", ["raw-tables"])
    assert acme.get("/api/raw/tables").status_code == 403
    assert acme.get("/api/raw/tables/EKKO/data").status_code == 403
    admin.set_permissions("acme", [])
    admin.set_faults([{"kind": "status", "entity": "raw-tables/LFA1", "status": 502, "times": 1}])
    assert acme.get("/api/raw/tables/LFA1/data").status_code == 502
    assert acme.get("/api/raw/tables/LFA1/data").status_code == 200
    admin.set_rate_limit("initech", 2, window_seconds=60)
    assert initech.get("/api/raw/tables").status_code == 200
    assert initech.get("/api/raw/tables/ASSET/data").status_code == 200
    limited = initech.get("/api/raw/tables/ASSET/data")
    assert limited.status_code == 429 and "Retry-After" in limited.headers
    stats = admin.stats()["connections"]["acme"]["entities"]
    assert stats["raw-tables/LFA1"] == 2


def test_raw_tables_are_unified_only(clients: dict[str, Any], admin: SandboxAdmin) -> None:
    admin.reset(config(dialect="v1"))
    resp = clients["acme"].get("/api/raw/tables")
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "NOT_FOUND"
