"""Account credentials over real HTTP: discovery, minted tokens that expire mid-listing, the
connections tables, filters, and no secret anywhere.

Every test ends by comparing the destination with what the API lists now.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Loader, Sandbox, assert_destination_matches_api, small_connections

from makini_sandbox import ConnectionConfig, SandboxConfig
from makini_source import connection_failures, makini_source, source_connections
from makini_source.accounts import ConnectionInactive, expires_at
from makini_source.exceptions import ConfigurationError, ReauthorizationRequired

CLIENT_ID, CLIENT_SECRET = "mk_client_demo", "mk_secret_demo"


def account_config(**overrides: Any) -> SandboxConfig:
    """acme (erp) and globex (eam) active, initech inactive, hooli needing reauthorization."""
    acme, globex = small_connections()
    acme.tags, globex.tags = ["europe", "pilot"], ["americas"]
    connections = [
        acme,
        globex,
        ConnectionConfig(name="initech", token="tok_initech", connection_status="inactive"),
        ConnectionConfig(
            name="hooli", token="tok_hooli", connection_status="reauthorization_required"
        ),
    ]
    return SandboxConfig(connections=connections, **overrides)


class Recording(httpx.BaseTransport):
    """A real HTTP transport that keeps the Authorization of every request, and can act after
    each one."""

    def __init__(self, after: Any = None) -> None:
        self._inner = httpx.HTTPTransport()
        self.authorizations: set[str] = set()
        self.requests: list[httpx.Request] = []
        self._after = after

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        self.requests.append(request)
        if "authorization" in request.headers:
            self.authorizations.add(request.headers["authorization"].removeprefix("Bearer "))
        if self._after is not None:
            self._after(request, response)
        return response

    def close(self) -> None:
        self._inner.close()


def run(loader: Loader, **kwargs: Any) -> Any:
    kwargs.setdefault("base_url", loader.sandbox.url)
    kwargs.setdefault("client_id", CLIENT_ID)
    kwargs.setdefault("client_secret", CLIENT_SECRET)
    kwargs.setdefault("connections", None)
    kwargs.setdefault("dialect", "auto")
    return loader.run_source(**kwargs)


def keyed(sandbox: Sandbox) -> dict[str, str]:
    """The discovered connection_id (the Makini key) of each sandbox connection."""
    return {c["profile"]["key"]: c["name"] for c in sandbox.admin_connections()}


def test_discovery_loads_every_active_connection_and_reports_the_others(
    sandbox_factory: Any, tmp_path: Path
) -> None:
    sandbox = sandbox_factory(account_config())
    loader = Loader(sandbox, tmp_path, dialect="unified")
    source = run(loader, entities=["vendors", "purchase_orders"])
    failures = connection_failures(source)
    assert set(failures) == {"conn_initech", "conn_hooli"}
    assert isinstance(failures["conn_initech"], ConnectionInactive)
    assert isinstance(failures["conn_hooli"], ReauthorizationRequired)
    names = keyed(sandbox)
    rows = {
        row[0]: row[1:]
        for row in loader.query(
            "SELECT connection_id, name, makini_key, status, provider, family, dialect, "
            f"run_outcome, rows_read FROM {loader.table('connections')}"
        )
    }
    assert set(rows) == set(names)  # one row per connection seen, healthy or not
    assert rows["conn_acme"][:6] == ("Acme", "conn_acme", "active", "SAP S/4HANA", "erp", "unified")
    assert rows["conn_acme"][6] == "ok" and rows["conn_acme"][7] > 0
    assert rows["conn_initech"][2] == "inactive" and rows["conn_initech"][6] == "failed"
    assert rows["conn_hooli"][6] == "failed"
    history = loader.query(f"SELECT COUNT(*) FROM {loader.table('connection_runs')}")
    assert history == [(4,)]
    assert_destination_matches_api(
        loader,
        sandbox,
        entities=["vendors", "purchase_orders"],
        connections=[],
        aliases={"conn_acme": "acme", "conn_globex": "globex"},
    )
    # a second run adds to the history and keeps one row per connection
    run(loader, entities=["vendors"])
    assert loader.query(f"SELECT COUNT(*) FROM {loader.table('connection_runs')}") == [(8,)]
    assert loader.query(f"SELECT COUNT(*) FROM {loader.table('connections')}") == [(4,)]


def test_minted_tokens_expire_mid_listing_and_the_listing_goes_on(
    sandbox_factory: Any, tmp_path: Path
) -> None:
    sandbox = sandbox_factory(
        account_config(connection_token_ttl_seconds=30, expires_in_format="mixed")
    )
    pages = {"count": 0}

    def expire_tokens(request: httpx.Request, response: httpx.Response) -> None:
        # every third page of acme's listing, the store clock jumps past every token's
        # lifetime (globex's too, wherever its listing is)
        if request.url.path == "/api/erp/purchase-orders" and "per_page" in request.url.params:
            pages["count"] += 1
            if pages["count"] % 3 == 0:
                sandbox.post("/_admin/clock", {"advance_seconds": 60})

    transport = Recording(after=expire_tokens)
    loader = Loader(sandbox, tmp_path, dialect="unified")
    run(loader, entities=["purchase_orders"], page_size=5, max_slices=1, transport=transport)
    mints = sandbox.admin.get("/_admin/stats").json()["data"]["token_mints"]
    assert mints.get("acme", 0) >= 3, mints  # minted again after every expiry
    statuses = [r for r in transport.requests if r.url.path.endswith("/purchase-orders")]
    assert len(statuses) > 6
    assert_destination_matches_api(
        loader,
        sandbox,
        entities=["purchase_orders"],
        connections=[],
        aliases={"conn_acme": "acme", "conn_globex": "globex"},
    )


def test_expires_in_is_seconds_or_a_unix_time_number_or_text() -> None:
    assert expires_at(300, now=1_000.0) == 1_300.0
    assert expires_at("300", now=1_000.0) == 1_300.0
    assert expires_at(1_715_674_414, now=1_000.0) == 1_715_674_414.0
    assert expires_at("1715674414", now=1_000.0) == 1_715_674_414.0
    with pytest.raises(ValueError):
        expires_at("soon")


def test_filters_and_configured_tokens_beside_discovery(
    sandbox_factory: Any, tmp_path: Path
) -> None:
    sandbox = sandbox_factory(account_config())
    loader = Loader(sandbox, tmp_path, dialect="unified")
    only_europe = run(loader, entities=["vendors"], connection_tags=["europe"])
    assert [c.name for c in source_connections(only_europe)] == ["conn_acme"]
    by_key = run(loader, entities=["vendors"], connection_keys="conn_globex, conn_initech")
    assert {c.name for c in source_connections(by_key)} == {"conn_globex", "conn_initech"}
    # a configured token is used under its own name; discovery adds the other keys
    both = run(
        loader,
        entities=["vendors"],
        connections={"conn_acme": sandbox.tokens["acme"]},
        connection_keys=["conn_acme", "conn_globex"],
    )
    by_name = {c.name: c for c in source_connections(both)}
    assert set(by_name) == {"conn_acme", "conn_globex"}
    assert by_name["conn_acme"].profile is None and by_name["conn_globex"].profile is not None
    assert_destination_matches_api(
        loader,
        sandbox,
        entities=["vendors"],
        connections=[],
        aliases={"conn_acme": "acme", "conn_globex": "globex"},
    )


def test_bad_account_credentials_are_a_clear_error_without_the_secret(
    sandbox: Sandbox,
) -> None:
    with pytest.raises(
        ConfigurationError, match="refused the account's client credentials"
    ) as raised:
        makini_source(
            base_url=sandbox.url, client_id=CLIENT_ID, client_secret="mk_wrong_secret_value"
        )
    assert "mk_wrong_secret_value" not in str(raised.value)
    with pytest.raises(ConfigurationError, match="both"):
        makini_source(base_url=sandbox.url, client_id=CLIENT_ID)


def test_no_account_secret_or_minted_token_is_written_anywhere(
    sandbox_factory: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox = sandbox_factory(account_config(connection_token_ttl_seconds=30))
    # the API echoes the Authorization it got into an error and a request id
    sandbox.post(
        "/_admin/faults",
        {
            "rules": [
                {
                    "kind": "echo_auth",
                    "entity": "vendors",
                    "connection": "globex",
                    "times": 2,
                    "status": 500,
                    "where": ["message", "request_id"],
                },
            ]
        },
    )
    transport = Recording()
    loader = Loader(sandbox, tmp_path, dialect="unified")
    with caplog.at_level("DEBUG"):
        source = run(
            loader, entities=["vendors", "sites"], transport=transport, backoff_base_seconds=0.01
        )
    secrets = {CLIENT_SECRET} | {t for t in transport.authorizations if t}
    assert len(secrets) >= 4  # the secret, the account token and two minted tokens at least
    texts = [caplog.text, str(connection_failures(source)), str(loader.pipeline.last_trace)]
    for connection in source_connections(source):
        texts += connection.notes
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".duckdb" for p in files)
    for secret in secrets:
        for text in texts:
            assert secret not in text
        for path in files:
            assert secret.encode() not in path.read_bytes(), path
    assert_destination_matches_api(
        loader,
        sandbox,
        entities=["vendors", "sites"],
        connections=[],
        aliases={"conn_acme": "acme", "conn_globex": "globex"},
    )


def test_the_cli_with_only_account_credentials_loads_every_active_connection(
    sandbox_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    from makini_source.cli import main

    sandbox = sandbox_factory(account_config(connection_token_ttl_seconds=5))
    monkeypatch.delenv("SOURCES__MAKINI__CONNECTIONS", raising=False)
    monkeypatch.setenv("SOURCES__MAKINI__BASE_URL", sandbox.url)
    monkeypatch.setenv("SOURCES__MAKINI__CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("SOURCES__MAKINI__CLIENT_SECRET", CLIENT_SECRET)
    database = tmp_path / "accounts.duckdb"
    argv = ["run", "--no-progress", "--duckdb-path", str(database)]
    argv += ["--pipelines-dir", str(tmp_path / "p"), "--entities", "vendors, purchase_orders"]
    assert main(argv) == 2  # the inactive and the unauthorized connection failed; named below
    out, err = capsys.readouterr()
    assert "conn_initech" in err and "inactive" in err and "conn_hooli" in err
    assert "conn_acme" in out and CLIENT_SECRET not in out + err
    from conftest import SqlDataset

    dataset = SqlDataset.duckdb(database)
    assert_destination_matches_api(
        dataset,
        sandbox,
        entities=["vendors", "purchase_orders"],
        connections=[],
        aliases={"conn_acme": "acme", "conn_globex": "globex"},
        dialect="unified",
    )
    health = dataset.rows("connections")
    assert {key[0]: row["run_outcome"] for key, row in health.items()} == {
        "conn_acme": "ok",
        "conn_globex": "ok",
        "conn_initech": "failed",
        "conn_hooli": "failed",
    }
