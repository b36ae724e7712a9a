"""Hostile-server fault kinds (issue #14): what the sandbox really sends over HTTP.

Each test sets fault rules through the admin API and reads the answer with a real HTTP
client (httpx, or a raw socket where httpx would hide the bytes).
"""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
from sandbox_clients import reset_admin, sandbox_clients

from makini_sandbox import ConnectionConfig, SandboxAdmin, SandboxConfig, SandboxServer
from makini_sandbox.faults import FaultRule

TOKEN = "tok-acme"
BEARER = f"Bearer {TOKEN}"
CREDENTIALS = {
    "grant_type": "client_credentials",
    "client_id": "mk_client_demo",
    "client_secret": "mk_secret_demo",
}


def config() -> SandboxConfig:
    return SandboxConfig(
        seed=9,
        connections=[
            ConnectionConfig(
                name="acme",
                token=TOKEN,
                purchase_orders=6,
                vendors=7,
                lines_per_po=(2, 3),
                custom_fields={"Cost Center": "string"},
            ),
            ConnectionConfig(name="globex", token="tok-globex", purchase_orders=3),
        ],
    )


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(config()) as srv:
        yield srv


@pytest.fixture(scope="module")
def clients(server: SandboxServer) -> Iterator[dict[str, Any]]:
    with sandbox_clients(server.url, {"acme": TOKEN}, plain=["anon"]) as clients:
        yield clients


@pytest.fixture()
def admin(clients: dict[str, Any]) -> SandboxAdmin:
    return reset_admin(clients, config())


@pytest.fixture()
def acme(clients: dict[str, Any], admin: SandboxAdmin) -> httpx.Client:
    return clients["acme"]


def raw_get(url: str, path: str, read_for: float) -> bytes:
    """Send a GET on a raw socket; return what arrived within ``read_for`` seconds (the
    client then disconnects)."""
    parsed = urlparse(url)
    with socket.create_connection((parsed.hostname, parsed.port), timeout=read_for) as sock:
        request = f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {BEARER}\r\n\r\n"
        sock.sendall(request.encode())
        started = time.monotonic()
        data = b""
        while time.monotonic() - started < read_for:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            data += chunk
        return data


# -- drip and endless -------------------------------------------------------------------------


def test_drip_sends_headers_with_the_full_length_then_the_body_slowly(
    acme: httpx.Client, admin: SandboxAdmin, server: SandboxServer
) -> None:
    normal = acme.get("/api/v1/sync-status").content
    admin.set_faults([{"kind": "drip", "entity": "sync-status", "bytes_per_second": 500}])
    started = time.monotonic()
    with acme.stream("GET", "/api/v1/sync-status") as resp:
        headers_after = time.monotonic() - started
        assert resp.headers["content-length"] == str(len(normal))
        body = resp.read()
    took = time.monotonic() - started
    assert body == normal and headers_after < 0.2
    assert took >= 0.8 * len(normal) / 500, took
    # a slow drip: a client with a deadline sees a few bytes, gives up, the server goes on
    admin.set_faults([{"kind": "drip", "entity": "vendors", "bytes_per_second": 4}])
    data = raw_get(server.url, "/api/v1/vendors", read_for=0.6)
    head, _, body_start = data.partition(b"\r\n\r\n")
    assert b"200 OK" in head and b"content-length: " in head.lower()
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    assert 0 < len(body_start) <= 4 < length
    admin.clear_faults()
    assert acme.get("/api/v1/vendors").status_code == 200


def test_endless_body_streams_until_the_client_disconnects(
    acme: httpx.Client, admin: SandboxAdmin
) -> None:
    admin.set_faults([{"kind": "endless", "entity": "vendors"}])
    received = 0
    with acme.stream("GET", "/api/erp/vendors") as resp:
        assert resp.status_code == 200
        assert "content-length" not in resp.headers
        assert resp.headers["transfer-encoding"] == "chunked"
        start = b""
        for chunk in resp.iter_bytes():
            start = start if len(start) > 100 else start + chunk
            received += len(chunk)
            if received > 3_000_000:
                break
    assert start.startswith(b'{"data":[{"key":')
    assert received > 3_000_000
    # with max_bytes the server ends it: the chunked body never completes
    admin.set_faults([{"kind": "endless", "entity": "vendors", "max_bytes": 200_000}])
    with pytest.raises(httpx.RemoteProtocolError):
        acme.get("/api/v1/vendors")
    admin.clear_faults()
    assert acme.get("/api/v1/vendors").status_code == 200


# -- headers ----------------------------------------------------------------------------------


def test_headers_override_rate_limit_and_retry_headers(
    acme: httpx.Client, admin: SandboxAdmin
) -> None:
    admin.set_faults(
        [
            {
                "kind": "headers",
                "entity": "vendors",
                "headers": {
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": 86400,
                    "X-RateLimit-Limit": None,
                },
            }
        ]
    )
    resp = acme.get("/api/v1/vendors")
    assert resp.status_code == 200 and resp.json()["data"]
    assert resp.headers.get_list("X-RateLimit-Remaining") == ["0"]
    assert resp.headers.get_list("X-RateLimit-Reset") == ["86400"]
    assert "X-RateLimit-Limit" not in resp.headers
    # templates: a millisecond epoch, a past HTTP-date
    admin.set_faults(
        [
            {
                "kind": "headers",
                "headers": {"X-RateLimit-Reset": "{now_ms+60}", "Retry-After": "{http_date-3600}"},
            }
        ]
    )
    resp = acme.get("/api/erp/vendors")
    reset_ms = int(resp.headers["X-RateLimit-Reset"])
    assert abs(reset_ms - (time.time() + 60) * 1000) < 5000
    assert parsedate_to_datetime(resp.headers["Retry-After"]).timestamp() < time.time() - 3000
    # with a status: a 429 carrying the given Retry-After, in the request's dialect
    for retry_after in ("0", "-5"):
        admin.set_faults(
            [{"kind": "headers", "status": 429, "headers": {"Retry-After": retry_after}}]
        )
        v1 = acme.get("/api/v1/vendors")
        assert v1.status_code == 429 and v1.json()["error"]["code"] == "RATE_LIMIT_EXCEEDED"
        assert v1.headers.get_list("Retry-After") == [retry_after]
        unified = acme.get("/api/erp/vendors")
        assert unified.status_code == 429 and unified.json() == {"message": "Too Many Attempts."}
    # or a status rule and a headers rule together
    admin.set_faults(
        [
            {"kind": "status", "status": 503, "retry_after": 30},
            {"kind": "headers", "headers": {"Retry-After": "0"}},
        ]
    )
    resp = acme.get("/api/v1/vendors")
    assert resp.status_code == 503 and resp.headers.get_list("Retry-After") == ["0"]


# -- raw bodies -------------------------------------------------------------------------------


def test_raw_body_sends_exact_bytes_with_a_correct_length(
    acme: httpx.Client, admin: SandboxAdmin
) -> None:
    surrogate = '{"data":[{"key":"\\ud800"}],"next_cursor":null,"total_count":1}'
    invalid_utf8 = b'{"data":[{"key":"\xff\xfe"}],"next_cursor":null,"total_count":1}'
    cases: list[tuple[dict[str, Any], bytes]] = [
        ({"body": surrogate}, surrogate.encode()),
        ({"body_base64": base64.b64encode(invalid_utf8).decode()}, invalid_utf8),
        (
            {"body": '{"data":[],"next_cursor":null}', "status": 201},
            b'{"data":[],"next_cursor":null}',
        ),
    ]
    for params, expected in cases:
        admin.set_faults([{"kind": "raw_body", "entity": "vendors", **params}])
        resp = acme.get("/api/v1/vendors")
        assert resp.status_code == params.get("status", 200)
        assert resp.content == expected
        assert resp.headers["content-length"] == str(len(expected))
    # trailing garbage after a real page
    admin.clear_faults()
    page = acme.get("/api/v1/vendors").content
    admin.set_faults([{"kind": "raw_body", "append": "\n<!-- cached -->"}])
    resp = acme.get("/api/v1/vendors")
    assert resp.content == page + b"\n<!-- cached -->"
    assert resp.headers["content-length"] == str(len(resp.content))
    with pytest.raises(json.JSONDecodeError):
        json.loads(resp.content)


def test_nan_and_infinity_literals_in_a_record(acme: httpx.Client, admin: SandboxAdmin) -> None:
    admin.set_faults(
        [
            {
                "kind": "bad_record",
                "entity": "purchase-orders",
                "raw_fields": {"totalNetValue": "NaN", "totalGrossValue": "-Infinity"},
            }
        ]
    )
    for path in ("/api/v1/purchase-orders", "/api/erp/purchase-orders"):
        body = acme.get(path).content
        assert b'"totalNetValue":NaN' in body and b'"totalGrossValue":-Infinity' in body
        record = json.loads(body)["data"][0]  # Python's json reads the literals
        assert record["totalNetValue"] != record["totalNetValue"]


# -- echo_auth --------------------------------------------------------------------------------


def test_echo_auth_quotes_the_authorization_header(acme: httpx.Client, admin: SandboxAdmin) -> None:
    admin.set_faults([{"kind": "echo_auth", "entity": "vendors", "status": 401}])
    v1 = acme.get("/api/v1/vendors")
    assert v1.status_code == 401 and BEARER in v1.json()["error"]["message"]
    unified = acme.get("/api/erp/vendors")
    assert unified.status_code == 401 and BEARER in unified.json()["message"]
    admin.set_faults([{"kind": "echo_auth", "where": ["request_id", "cursor"]}])
    page = acme.get("/api/v1/vendors", params={"limit": 2})
    assert page.status_code == 200
    assert page.headers["X-Request-Id"] == BEARER
    assert page.json()["next_cursor"] == BEARER
    admin.set_faults([{"kind": "echo_auth", "where": ["message", "request_id"]}])
    error = acme.get("/api/v1/sync-status")
    assert error.status_code == 500 and error.json()["error"]["request_id"] == BEARER
    assert error.headers["X-Request-Id"] == BEARER


# -- bad records ------------------------------------------------------------------------------


def test_set_field_takes_any_json_value(acme: httpx.Client, admin: SandboxAdmin) -> None:
    values: dict[str, Any] = {
        "name": "a\u0000b",
        "code": 123456789012345678901234567890,
        "deletedAt": {"at": "2024-01-01T00:00:00Z"},
        "updatedAt": "2024-01-01T00:00:00.1234567Z",
        "companyKey": "\x1b[31mred\x1b[0m\x1b]0;title\x07",
        "connectionId": "conn_globex",
        "_dlt_id": "forged",
    }
    admin.set_faults([{"kind": "bad_record", "entity": "vendors", "set_field": values}])
    for path in ("/api/v1/vendors", "/api/erp/vendors"):
        body = acme.get(path).content
        assert b'"code":123456789012345678901234567890' in body  # exact, not a float
        record = json.loads(body)["data"][0]
        for name, value in values.items():
            assert record[name] == value, (path, name)
    # fields on a nested line of a purchase order
    admin.set_faults(
        [
            {
                "kind": "bad_record",
                "entity": "purchase-orders",
                "target": "lineItems.1",
                "set_field": {"purchaseOrderKey": "PO-000002", "connectionId": "x"},
            }
        ]
    )
    po = acme.get("/api/v1/purchase-orders").json()["data"][0]
    assert po["lineItems"][1]["purchaseOrderKey"] == "PO-000002"
    assert "purchaseOrderKey" not in po["lineItems"][0] and "connectionId" not in po


def test_custom_fields_with_colliding_and_odd_names(
    acme: httpx.Client, admin: SandboxAdmin
) -> None:
    custom = {"Cost Center": "A", "cost_center": "B", "CostCenter": "C", "成本中心": "D", "": "E"}
    admin.set_faults([{"kind": "bad_record", "index": "all", "custom_fields": custom}])
    v1 = acme.get("/api/v1/vendors").json()["data"]
    assert all(r["customFields"].items() >= custom.items() for r in v1)
    unified = acme.get("/api/erp/vendors").json()["data"]
    assert all(r.items() >= custom.items() for r in unified)
    assert "customFields" not in unified[0]


# -- empty pages ------------------------------------------------------------------------------


def test_empty_pages_with_fresh_cursors_then_the_listing_continues(
    acme: httpx.Client, admin: SandboxAdmin
) -> None:
    everything = acme.get("/api/v1/vendors", params={"limit": 100}).json()["data"]
    admin.set_faults([{"kind": "empty_pages", "entity": "vendors"}])
    cursors = []
    params: dict[str, Any] = {"limit": 3}
    for _ in range(6):
        page = acme.get("/api/v1/vendors", params=params).json()
        assert page["data"] == [] and page["next_cursor"] is not None
        cursors.append(page["next_cursor"])
        params = {"cursor": page["next_cursor"]}
    assert len(set(cursors)) == len(cursors)
    admin.clear_faults()
    records = []
    while params:
        page = acme.get("/api/v1/vendors", params=params).json()
        records.extend(page["data"])
        params = {"cursor": page["next_cursor"]} if page["next_cursor"] else {}
    assert records == everything
    # unified: pages past the end still claim one more
    admin.set_faults([{"kind": "empty_pages", "entity": "vendors"}])
    for page_no in (1, 5, 50):
        body = acme.get("/api/erp/vendors", params={"page": page_no}).json()
        assert body["links"]["next"].endswith(f"?page={page_no + 1}")
        assert body["meta"]["last_page"] > page_no
        assert (body["data"] == []) == (page_no > 1)


# -- sync times -------------------------------------------------------------------------------


def test_sync_time_in_the_future_or_unparseable(acme: httpx.Client, admin: SandboxAdmin) -> None:
    admin.sync("acme", last_sync_at="9999-12-31")
    assert acme.get("/api/v1/sync-status").json()["data"]["last_sync_at"] == "9999-12-31T00:00:00Z"
    current = acme.get("/api/integrations/current").json()["data"]
    assert current["sync_status"] == "done"
    assert current["sync_updated_at"] == "9999-12-31T00:00:00Z"
    for raw in ("not-a-time", "", 1717236900, "2024-13-45T99:00:00Z"):
        admin.set_sync_time_raw("acme", raw)
        assert acme.get("/api/v1/sync-status").json()["data"]["last_sync_at"] == raw
        assert acme.get("/api/integrations/current").json()["data"]["sync_updated_at"] == raw
    admin.set_sync_time_raw("acme", clear=True)
    assert acme.get("/api/v1/sync-status").json()["data"]["last_sync_at"] == "9999-12-31T00:00:00Z"


# -- faults on account endpoints and patterns -------------------------------------------------


def test_faults_reach_account_endpoints(clients: dict[str, Any], admin: SandboxAdmin) -> None:
    anon: httpx.Client = clients["anon"]
    admin.set_faults([{"kind": "status", "entity": "link-token", "status": 503, "times": 1}])
    assert anon.post("/link/token", json=CREDENTIALS).status_code == 503
    account = anon.post("/link/token", json=CREDENTIALS).json()["access_token"]
    auth = {"Authorization": f"Bearer {account}", "Accept": "application/json"}
    admin.set_faults(
        [
            {"kind": "echo_auth", "entity": "system-connections"},
            {"kind": "reset", "entity": "connection-token", "connection": "acme"},
        ]
    )
    echoed = anon.get("/api/system/connections", headers=auth)
    assert echoed.status_code == 500 and account in echoed.json()["message"]
    with pytest.raises(httpx.TransportError):
        anon.post("/api/system/connections/conn_acme/token", headers=auth)
    minted = anon.post("/api/system/connections/conn_globex/token", headers=auth)
    assert minted.status_code == 200, "the rule names acme's mints only"
    admin.set_faults(
        [{"kind": "bad_record", "entity": "system-connections", "set_field": {"key": ""}}]
    )
    listed = anon.get("/api/system/connections", headers=auth).json()["data"]
    assert listed[0]["key"] == "" and listed[1]["key"] == "conn_globex"
    entities = admin.stats()["connections"]["_account"]["entities"]
    assert entities == {"link-token": 2, "system-connections": 2, "connection-token": 2}


def test_entity_patterns_and_rule_validation(acme: httpx.Client, admin: SandboxAdmin) -> None:
    admin.set_faults([{"kind": "status", "entity": "statuses/*", "status": 502}])
    assert acme.get("/api/erp/statuses/invoices").status_code == 502
    assert acme.get("/api/erp/statuses/purchase-orders").status_code == 502
    assert acme.get("/api/erp/invoices").status_code == 200
    for bad in (
        {"kind": "drip", "bytes_per_second": 0},
        {"kind": "headers", "headers": {"X-Bad": "a\nb"}},
        {"kind": "raw_body"},
        {"kind": "raw_body", "body": "x", "append": "y"},
        {"kind": "echo_auth", "where": "footer"},
        {"kind": "bad_record", "custom_fields": ["x"]},
    ):
        with pytest.raises(ValueError):
            FaultRule.from_dict(bad)
