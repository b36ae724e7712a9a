"""Resilience over real HTTP against the sandbox: pacing, retries, permanent errors, bad input.

Crash safety and secrets (subprocess runs of the pipeline script) are in
`test_resilience_process.py`.
"""

from __future__ import annotations

import email.utils
import itertools
import logging
import math
import re
import threading
import time
from typing import Any

import httpx
import pytest
from conftest import (
    ALL_TABLES,
    Loader,
    Sandbox,
    assert_destination_matches_api,
    small_connections,
)
from dlt.pipeline.exceptions import PipelineStepFailed

from makini_sandbox import ConnectionConfig, SandboxConfig
from makini_source import connection_failures, makini_source, raise_on_connection_failures
from makini_source.catalogue import load_catalogue
from makini_source.client import MakiniClient, RetryPolicy, check_base_url
from makini_source.columnar import PageDecoder
from makini_source.dialects.v1 import V1Dialect
from makini_source.exceptions import (
    BadRequestError,
    ConfigurationError,
    ConnectionsFailed,
    ContractViolationError,
    PermissionDeniedError,
    ReauthorizationRequired,
    RetriableAPIError,
)
from makini_source.window import Window

REQUEST_ID = re.compile(r"request_id=req_[0-9a-f]{24}")


class RecordingTransport(httpx.HTTPTransport):
    """A real HTTP transport that notes when each request went out and how it ended."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        entry: dict[str, Any] = {
            "path": request.url.path,
            "token": request.headers.get("authorization", "").removeprefix("Bearer tok_"),
            "sent": time.monotonic(),
            "wall": time.time(),
        }
        with self._lock:
            self.log.append(entry)
        try:
            response = super().handle_request(request)
        except Exception:
            entry["status"] = "error"
            entry["done"] = time.monotonic()
            raise
        entry["status"] = response.status_code
        entry["done"] = time.monotonic()
        return response


def one_connection(vendors: int = 12, **overrides: Any) -> SandboxConfig:
    """A sandbox with only `acme` (few records besides vendors)."""
    base = small_connections()[0]
    fields = {**base.__dict__, "vendors": vendors, "purchase_orders": 4, **overrides}
    return SandboxConfig(connections=[ConnectionConfig(**fields)])


def client_for(
    sandbox: Sandbox, connection: str = "acme", **retry: Any
) -> tuple[MakiniClient, RecordingTransport]:
    transport = RecordingTransport()
    policy = RetryPolicy(**{"backoff_base_seconds": 0.01, "timeout_seconds": 5.0, **retry})
    client = MakiniClient(
        sandbox.url,
        sandbox.tokens[connection],
        connection,
        retry=policy,
        transport=transport,
        errors=V1Dialect().read_error,
    )
    return client, transport


def read_all(client: MakiniClient, entity: str = "vendors", page_size: int = 2) -> int:
    """Records of one whole v1 listing."""
    spec = load_catalogue()[entity]
    pages = V1Dialect().pages(client, spec, Window(None, None, None), page_size, PageDecoder(spec))
    return sum(len(page.decoded) for page in pages)


def stats(sandbox: Sandbox) -> dict[str, Any]:
    return sandbox.admin.get("/_admin/stats").json()["data"]


def fired(sandbox: Sandbox) -> list[dict[str, Any]]:
    return sandbox.admin.get("/_admin/faults").json()["data"]


def set_faults(sandbox: Sandbox, *rules: dict[str, Any]) -> None:
    sandbox.post("/_admin/faults", {"rules": list(rules)})


def rate_of(connection_stats: dict[str, Any]) -> float:
    span = connection_stats["last_request_ts"] - connection_stats["first_request_ts"]
    return (connection_stats["requests"] - 1) / span


def error_chain(exc: BaseException) -> list[BaseException]:
    chain = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def find_error(exc: BaseException, kind: type) -> Any:
    for error in error_chain(exc):
        if isinstance(error, kind):
            return error
    raise AssertionError(f"no {kind.__name__} in {exc!r}")


# --- 1. pacing ------------------------------------------------------------------------------


def test_pacing_uses_nearly_the_full_rate_without_429s(
    loader: Loader, sandbox_factory: Any
) -> None:
    sandbox = sandbox_factory(one_connection(vendors=40))
    loader.sandbox = sandbox
    sandbox.post("/_admin/connections/acme/rate-limit", {"limit": 10, "window_seconds": 2})
    loader.run(entities=["vendors"], page_size=2)
    assert len(loader.rows("vendors")) == 40
    seen = stats(sandbox)["connections"]["acme"]
    assert seen["requests"] >= 21  # sync status + 20 pages: more than two windows' worth
    assert seen["status"].get("429", 0) <= 1
    # 10 per 2 s is 5 requests per second
    assert rate_of(seen) >= 0.93 * 5.0, seen
    assert_destination_matches_api(loader, sandbox, entities=["vendors"])


@pytest.mark.parametrize(
    "status, retry_format",
    [(429, "seconds"), (429, "http-date"), (503, "seconds")],
)
def test_retry_after_is_waited_exactly(sandbox: Sandbox, status: int, retry_format: str) -> None:
    if retry_format == "http-date":
        wake = math.ceil(time.time()) + 1  # HTTP-dates have whole seconds
        retry_after = email.utils.formatdate(wake, usegmt=True)
    else:
        retry_after = "0.7"
    set_faults(
        sandbox,
        {
            "kind": "status",
            "status": status,
            "retry_after": retry_after,
            "times": 1,
            "entity": "vendors",
        },
    )
    client, transport = client_for(sandbox, backoff_base_seconds=5.0)  # a backoff would show
    assert read_all(client) == 12
    rejected = next(i for i, e in enumerate(transport.log) if e["status"] == status)
    after = transport.log[rejected + 1]
    if retry_format == "http-date":
        assert wake <= after["wall"] <= wake + 0.15
    else:
        assert 0.7 <= after["sent"] - transport.log[rejected]["done"] <= 0.85
    assert client.stats.retries == 1


def test_one_connection_limit_never_slows_another(sandbox_factory: Any) -> None:
    """Two connections read at the same time, each by its own client (as the source does),
    each paced by its own limiter: both run at their own limit, no 429s."""
    connections = small_connections()
    connections[0].vendors, connections[1].vendors = 10, 80
    sandbox = sandbox_factory(SandboxConfig(connections=connections))
    # acme: 1 request/s; globex: 10 requests/s
    sandbox.post("/_admin/connections/acme/rate-limit", {"limit": 2, "window_seconds": 2})
    sandbox.post("/_admin/connections/globex/rate-limit", {"limit": 20, "window_seconds": 2})
    clients = {name: client_for(sandbox, name)[0] for name in ("acme", "globex")}
    counts: dict[str, int] = {}

    def read(name: str) -> None:
        counts[name] = read_all(clients[name], page_size=2)

    threads = [threading.Thread(target=read, args=(name,)) for name in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counts == {"acme": 10, "globex": 80}
    seen = stats(sandbox)["connections"]
    acme, globex = seen["acme"], seen["globex"]
    assert acme["status"].get("429", 0) == 0 and globex["status"].get("429", 0) == 0
    assert acme["requests"] == 5 and globex["requests"] == 40
    assert rate_of(acme) >= 0.85 * 1.0, acme
    assert rate_of(globex) >= 0.85 * 10.0, globex
    overlap = min(acme["last_request_ts"], globex["last_request_ts"]) - max(
        acme["first_request_ts"], globex["first_request_ts"]
    )
    assert overlap > 3.0  # they really ran at the same time


# --- 2. transient faults --------------------------------------------------------------------

TRANSIENT_FAULTS = [
    {"kind": "status", "status": 500, "probability": 0.02},
    {"kind": "status", "status": 502, "probability": 0.015},
    {"kind": "status", "status": 503, "probability": 0.015},
    {"kind": "html", "status": 502, "probability": 0.015},
    {"kind": "truncate", "fraction": 0.4, "probability": 0.015},
    {"kind": "reset", "probability": 0.01},
    {"kind": "delay", "seconds": 0.8, "probability": 0.01},
]


def table_contents(loader: Loader, table: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Rows without dlt's bookkeeping columns.

    A custom field whose type differs between connections lands in its first-seen column type
    plus a variant column (`__v_text`...); which type comes first depends on which
    connection's page arrived first, and connections are read concurrently. So such a field is
    compared as one value, as text, whatever column it landed in.
    """
    contents = {}
    for key, row in loader.rows(table).items():
        flat: dict[str, Any] = {}
        for column, value in row.items():
            if column.startswith("_dlt"):
                continue
            if column.startswith("custom_fields__"):
                column = column.split("__v_")[0]
                if value is None:
                    flat.setdefault(column, None)
                    continue
                value = str(value).lower()
            flat[column] = value
        contents[key] = flat
    return contents


def assert_same_rows(
    got: dict[Any, dict[str, Any]], want: dict[Any, dict[str, Any]], table: str
) -> None:
    assert set(got) == set(want), f"{table}: keys differ"
    diffs = [
        (key, column, got[key].get(column), want[key].get(column))
        for key in want
        for column in set(got[key]) | set(want[key])
        if got[key].get(column) != want[key].get(column)
    ]
    assert not diffs, f"{table}: {diffs[:5]}"


def test_ten_percent_transient_failures_load_exactly_the_clean_rows(
    sandbox: Sandbox, tmp_path: Any
) -> None:
    retry = {"backoff_base_seconds": 0.01, "max_attempts": 10, "timeout_seconds": 0.4}
    set_faults(sandbox, *TRANSIENT_FAULTS)
    faulty = Loader(sandbox, tmp_path / "faulty")
    faulty.run(page_size=2, **retry)
    rules = fired(sandbox)
    total = stats(sandbox)["total"]
    sandbox.admin.delete("/_admin/faults").raise_for_status()
    clean = Loader(sandbox, tmp_path / "clean")
    clean.run(page_size=2)

    failed = sum(rule["fired"] for rule in rules)
    assert total["requests"] >= 70
    assert failed >= 5 and len([r for r in rules if r["fired"]]) >= 3, rules
    for table in ALL_TABLES:
        assert_same_rows(table_contents(faulty, table), table_contents(clean, table), table)
    assert_destination_matches_api(faulty, sandbox)
    assert_destination_matches_api(clean, sandbox)


def test_retries_back_off_exponentially_and_stop_at_max_attempts(sandbox: Sandbox) -> None:
    set_faults(sandbox, {"kind": "status", "status": 503, "entity": "vendors"})
    client, transport = client_for(sandbox, max_attempts=5, backoff_base_seconds=0.05)
    with pytest.raises(RetriableAPIError) as caught:
        read_all(client)
    vendor_requests = [e for e in transport.log if e["path"].endswith("/vendors")]
    assert len(vendor_requests) == 5
    gaps = [b["sent"] - a["done"] for a, b in itertools.pairwise(vendor_requests)]
    for attempt, gap in enumerate(gaps, start=1):
        ceiling = 0.05 * 2 ** (attempt - 1)
        assert ceiling / 2 <= gap <= ceiling + 0.05, (attempt, gaps)
    message = str(caught.value)
    assert "gave up after 5 attempts" in message
    for part in ("connection=acme", "entity=vendors", "status=503", "code=SERVICE_UNAVAILABLE"):
        assert part in message
    assert REQUEST_ID.search(message)
    assert sandbox.tokens["acme"] not in message


def test_retries_stop_when_the_time_budget_is_spent(sandbox: Sandbox) -> None:
    set_faults(sandbox, {"kind": "html", "status": 502, "entity": "vendors"})
    client, _ = client_for(
        sandbox, max_attempts=1000, backoff_base_seconds=0.05, max_elapsed_seconds=0.6
    )
    started = time.monotonic()
    with pytest.raises(RetriableAPIError, match="gave up after") as caught:
        read_all(client)
    assert time.monotonic() - started < 0.6 + 0.5
    assert caught.value.status == 502 and "text/html" in str(caught.value)


def test_timeouts_resets_and_cut_off_bodies_are_retried(sandbox: Sandbox) -> None:
    set_faults(
        sandbox,
        {"kind": "delay", "seconds": 0.6, "entity": "vendors", "times": 1},
        {"kind": "reset", "entity": "vendors", "after": 1, "times": 1},
        {"kind": "truncate", "entity": "vendors", "after": 2, "times": 1},
    )
    client, _ = client_for(sandbox, timeout_seconds=0.3)
    assert read_all(client) == 12
    assert [r["fired"] for r in fired(sandbox)] == [1, 1, 1]
    assert client.stats.retries >= 3


# --- 3. permanent errors --------------------------------------------------------------------


def test_bad_request_fails_its_connection_at_once_with_the_server_message(
    loader: Loader, sandbox: Sandbox
) -> None:
    set_faults(
        sandbox,
        {
            "kind": "status",
            "status": 400,
            "connection": "acme",
            "entity": "vendors",
            "message": "limit is out of range",
        },
    )
    transport = RecordingTransport()
    source = loader.run_source(entities=["vendors"], backoff_base_seconds=0.01, transport=transport)
    error = connection_failures(source)["acme"]
    assert isinstance(error, BadRequestError)
    assert "limit is out of range" in str(error)
    assert (
        error.connection == "acme"
        and error.entity == "vendors"
        and error.code == "INVALID_PARAMETER"
    )
    assert REQUEST_ID.search(str(error))
    acme_vendor_requests = [
        e for e in transport.log if e["path"] == "/api/v1/vendors" and e["token"] == "acme"
    ]
    assert len(acme_vendor_requests) == 1  # no retry
    assert "acme" not in loader.watermarks("vendors")
    # the other connection loaded; and the next run, once the server answers again, is exact
    assert_destination_matches_api(loader, sandbox, entities=["vendors"], connections=["globex"])
    sandbox.admin.delete("/_admin/faults").raise_for_status()
    loader.run(entities=["vendors"])
    assert_destination_matches_api(loader, sandbox, entities=["vendors"])


def test_failed_connections_are_listed_and_the_healthy_one_commits(
    loader: Loader, sandbox_factory: Any
) -> None:
    connections = small_connections()
    connections.append(
        ConnectionConfig(name="initech", token="tok_initech", vendors=6, sites=2, purchase_orders=3)
    )
    sandbox = sandbox_factory(SandboxConfig(connections=connections))
    loader.sandbox = sandbox
    sandbox.post("/_admin/connections/acme/token", {"revoked": True})
    set_faults(
        sandbox, {"kind": "status", "status": 503, "connection": "globex", "entity": "vendors"}
    )
    source = makini_source(
        base_url=sandbox.url,
        connections=dict(sandbox.tokens),
        entities=["vendors", "sites"],
        max_attempts=3,
        backoff_base_seconds=0.01,
    )
    loader.pipeline.run(source, loader_file_format="parquet").raise_on_failed_jobs()
    assert {key[0] for key in loader.rows("vendors")} == {"initech"}
    # globex's sites may have been read before its vendors failed (dlt interleaves resources)
    assert {key[0] for key in loader.rows("sites")} - {"globex"} == {"initech"}
    assert loader.watermarks("vendors").keys() == {"initech"}
    failures = connection_failures(source)
    assert set(failures) == {"acme", "globex"}
    assert isinstance(failures["acme"], ReauthorizationRequired)
    assert "'acme' needs reauthorization" in str(failures["acme"])
    assert failures["globex"].status == 503 and "gave up after 3 attempts" in str(
        failures["globex"]
    )
    with pytest.raises(ConnectionsFailed) as caught:
        raise_on_connection_failures(source)
    text = str(caught.value)
    assert "acme:" in text and "globex:" in text and "initech" not in text
    for token in sandbox.tokens.values():
        assert token not in text
    assert_destination_matches_api(
        loader, sandbox, entities=["vendors", "sites"], connections=["initech"]
    )


def test_permission_denied_skips_the_entity_with_a_warning_or_fails(
    loader: Loader, sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox.post("/_admin/connections/acme/permissions", {"denied": ["sites"]})
    with caplog.at_level(logging.WARNING, logger="makini_source"):
        loader.run(entities=["sites", "vendors"])
    assert {key[0] for key in loader.rows("sites")} == {"globex"}
    assert {key[0] for key in loader.rows("vendors")} == {"acme", "globex"}
    assert "acme" not in loader.watermarks("sites")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("sites" in m and "acme" in m and "PERMISSION_DENIED" in m for m in warnings), (
        warnings
    )
    assert_destination_matches_api(loader, sandbox, entities=["vendors"])
    assert_destination_matches_api(loader, sandbox, entities=["sites"], connections=["globex"])

    with pytest.raises(PipelineStepFailed) as caught:
        loader.run(entities=["sites"], on_permission_denied="fail")
    error = find_error(caught.value, PermissionDeniedError)
    assert error.connection == "acme" and error.entity == "sites" and error.status == 403


# --- 5. bad input ---------------------------------------------------------------------------


VIOLATIONS = [
    ({"kind": "bad_record", "index": 1, "drop_field": "key"}, "vendors", "key"),
    ({"kind": "bad_record", "index": 0, "drop_field": "updatedAt"}, "vendors", "updatedAt"),
    (
        {"kind": "bad_record", "index": 1, "set_field": {"updatedAt": "last tuesday"}},
        "vendors",
        "updatedAt",
    ),
    (
        {"kind": "bad_record", "index": 2, "set_field": {"totalNetValue": "12,5"}},
        "purchase_orders",
        "totalNetValue",
    ),
    (
        {"kind": "non_json", "body": "<html>OK</html>", "content_type": "text/html"},
        "vendors",
        "body",
    ),
    ({"kind": "repeat_cursor", "after": 1}, "vendors", "next_cursor"),
]


def test_contract_violations_fail_their_connection_naming_where(
    loader: Loader, sandbox: Sandbox
) -> None:
    paths = {"vendors": "vendors", "purchase_orders": "purchase-orders"}
    for rule, entity, field in VIOLATIONS:
        set_faults(sandbox, {**rule, "connection": "acme", "entity": paths[entity], "times": 1})
        # no probe request (max_slices=1): the fault hits the listing's first page
        source = loader.run_source(entities=[entity], page_size=3, max_slices=1)
        error = connection_failures(source)["acme"]
        assert isinstance(error, ContractViolationError), (rule, error)
        assert (error.connection, error.entity) == ("acme", entity), rule
        assert error.field is not None and field in error.field, (rule, error)
        text = str(error)
        assert (
            "connection=acme" in text and f"entity={entity}" in text and repr(error.field) in text
        )
        assert REQUEST_ID.search(text), text
        assert "acme" not in loader.watermarks(entity)
        assert [r["fired"] for r in fired(sandbox)] == [1], rule
        # the other connection is not held back by acme's bad answer
        assert_destination_matches_api(loader, sandbox, entities=[entity], connections=["globex"])
    # once the server's answers are whole again, the next run loads exactly the API
    sandbox.admin.delete("/_admin/faults").raise_for_status()
    loader.run(entities=["vendors", "purchase_orders"], page_size=3)
    assert_destination_matches_api(loader, sandbox, entities=["vendors", "purchase_orders"])


def test_unknown_field_becomes_a_column_and_long_strings_land_intact(
    loader: Loader, sandbox: Sandbox
) -> None:
    long_name = "Ü" + "x" * 100_000 + "ß"
    sandbox.put_record("acme", "vendors", "V-LONG", {"name": long_name})
    long_notes = "line\n" * 20_000
    po = sandbox.records("purchase_orders", "acme")[0]
    sandbox.put_record("acme", "purchase-orders", po["key"], {"notes": long_notes})
    set_faults(
        sandbox,
        {"kind": "extra_field", "entity": "vendors", "field": "loyaltyTier", "value": "gold"},
    )
    loader.run(entities=["vendors", "purchase_orders"])
    vendors = loader.rows("vendors")
    assert vendors[("acme", "V-LONG")]["name"] == long_name
    assert loader.rows("purchase_orders")[("acme", po["key"])]["notes"] == long_notes
    assert {row["loyalty_tier"] for row in vendors.values()} == {"gold"}
    assert_destination_matches_api(loader, sandbox, entities=["vendors", "purchase_orders"])


# --- 6. transport security ------------------------------------------------------------------


def test_tls_is_verified_and_plain_http_only_reaches_loopback() -> None:
    import ssl

    client = MakiniClient("https://api.makini.io", "tok", "acme")
    pool = client._http._transport._pool  # type: ignore[attr-defined]
    assert pool._ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert pool._ssl_context.check_hostname
    client.close()
    assert check_base_url("http://127.0.0.1:8000/") == "http://127.0.0.1:8000"
    assert check_base_url("http://localhost:1") == "http://localhost:1"
    with pytest.raises(ConfigurationError, match="plain http"):
        check_base_url("http://api.example.com")
    assert (
        check_base_url("http://api.example.com", allow_insecure_http=True)
        == "http://api.example.com"
    )
    assert "secret-token" not in repr(MakiniClient("https://x.io", "secret-token", "a")._http.auth)  # type: ignore[attr-defined]


def test_a_rate_limited_connection_never_slows_another_in_one_run(
    sandbox_factory: Any, tmp_path: Any
) -> None:
    """Within one pipeline run, a connection held back by a low limit does not pace a fast one."""
    sandbox = sandbox_factory(
        SandboxConfig(
            connections=[
                ConnectionConfig(
                    name="slow",
                    token="tok_slow",
                    purchase_orders=0,
                    vendors=16,
                    materials=0,
                    sites=0,
                    assets=0,
                    work_orders=0,
                ),
                ConnectionConfig(
                    name="fast",
                    token="tok_fast",
                    purchase_orders=0,
                    vendors=80,
                    materials=0,
                    sites=0,
                    assets=0,
                    work_orders=0,
                ),
            ]
        )
    )
    sandbox.post("/_admin/connections/slow/rate-limit", {"limit": 2, "window_seconds": 1})
    sandbox.admin.delete("/_admin/stats").raise_for_status()
    loader = Loader(sandbox, tmp_path)
    loader.run(entities=["vendors"], page_size=2)  # slow: ~9 requests at 2/s; fast: ~41 at once
    stats = sandbox.admin.get("/_admin/stats").json()["data"]["connections"]
    slow_span = stats["slow"]["last_request_ts"] - stats["slow"]["first_request_ts"]
    fast_span = stats["fast"]["last_request_ts"] - stats["fast"]["first_request_ts"]
    assert slow_span > 3.0
    # in lockstep the fast connection would finish no sooner than the slow one
    assert fast_span < slow_span / 2, (fast_span, slow_span)
    # and it runs alongside, not after: it is done while the slow one still waits
    assert stats["fast"]["last_request_ts"] < stats["slow"]["last_request_ts"] - 1.0
    sandbox.post("/_admin/connections/slow/rate-limit", {"limit": 0})  # for the check below
    assert_destination_matches_api(loader, sandbox, entities=["vendors"])


def test_an_unreachable_host_fails_within_seconds_naming_it(
    sandbox: Sandbox, tmp_path: Any
) -> None:
    """A wrong port (nothing listens): the connection fails at once, not after 8 retries."""
    import socket

    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    loader = Loader(sandbox, tmp_path)
    started = time.monotonic()
    source = makini_source(
        base_url=f"http://127.0.0.1:{port}",
        connections={"acme": sandbox.tokens["acme"]},
        entities=["vendors"],
        dialect="v1",
    )
    loader.pipeline.run(source, loader_file_format="parquet")
    failure = connection_failures(source)["acme"]
    assert time.monotonic() - started < 10
    assert f"cannot connect to 127.0.0.1:{port}" in str(failure)
    assert source.resources["vendors"].makini_connections[0].client.stats.requests == 1
    # the other connections of a run are not held back (and the check command says the same)
    from makini_source.cli import main

    os_env = {"SOURCES__MAKINI__BASE_URL": f"http://127.0.0.1:{port}"}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in os_env.items():
            patch.setenv(name, value)
        patch.setenv("SOURCES__MAKINI__CONNECTIONS", '{"acme": "tok_acme_1"}')
        started = time.monotonic()
        assert main(["check"]) == 1
        assert time.monotonic() - started < 10


def test_backoff_is_not_reported_as_throttling(sandbox: Sandbox) -> None:
    set_faults(sandbox, {"kind": "status", "status": 503, "entity": "vendors", "times": 3})
    client, _ = client_for(sandbox, backoff_base_seconds=0.2)
    assert read_all(client) == 12
    assert client.stats.retries == 3
    assert client.stats.backoff_seconds >= 0.1 + 0.2 + 0.4 - 0.05  # half of each ceiling at least
    assert client.stats.throttle_seconds < 0.05  # no rate limit was hit
