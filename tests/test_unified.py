"""The unified dialect over real HTTP: exact walks over offset pages, deletes without
tombstones, its sync status, families, errors; and both dialects side by side.

Every test ends by comparing the destination with what the API lists now
(`assert_destination_matches_api`, unified-aware: each connection has only its family's
entities, and records it deleted vanish).
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path
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

from makini_sandbox import ConnectionConfig, SandboxConfig
from makini_source import connection_failures, source_connections
from makini_source.exceptions import BadRequestError, ReauthorizationRequired
from makini_source.window import format_timestamp


def eam_connection(
    name: str = "plant", purchase_orders: int = 40, **fields: Any
) -> ConnectionConfig:
    """An EAM connection (every one of the six entities in the unified dialect)."""
    return ConnectionConfig(
        name=name,
        token=f"tok_{name}",
        system="IBM Maximo",
        purchase_orders=purchase_orders,
        vendors=12,
        materials=8,
        sites=3,
        assets=9,
        work_orders=10,
        custom_fields={"Cost Center": "string", "Budget": "number", "flagged": "boolean"},
        **fields,
    )


class Recording(httpx.BaseTransport):
    """A real HTTP transport that keeps every request, and can act after each one."""

    def __init__(self, after: Any = None) -> None:
        self._inner = httpx.HTTPTransport()
        self.requests: list[httpx.Request] = []
        self._after = after

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        self.requests.append(request)
        if self._after is not None:
            self._after(request)
        return response

    def close(self) -> None:
        self._inner.close()

    def listing_pages(self, path: str) -> list[httpx.Request]:
        return [
            r for r in self.requests if r.url.path.endswith(path) and "per_page" in r.url.params
        ]


def unified_loader(sandbox: Sandbox, tmp_path: Path, name: str = "u") -> Loader:
    return Loader(sandbox, tmp_path / name, dialect="unified")


# --- both dialects -------------------------------------------------------------------------


def _comparable(loader: Loader, table: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Rows without dlt's columns and without what only one dialect sends (v1: a PO's
    createdAt)."""
    rows = loader.rows(table)
    skip = {"_dlt_id", "_dlt_load_id"} | ({"created_at"} if table == "purchase_orders" else set())
    return {key: {c: v for c, v in row.items() if c not in skip} for key, row in rows.items()}


def test_both_dialects_load_the_same_data_into_identical_tables(
    sandbox_factory: Any, tmp_path: Path
) -> None:
    sandbox = sandbox_factory(SandboxConfig(connections=[eam_connection()]))
    v1 = Loader(sandbox, tmp_path / "v1", dialect="v1")
    unified = unified_loader(sandbox, tmp_path)
    entities = ["purchase_orders", "vendors", "sites", "assets", "work_orders"]
    v1.run(entities=entities)
    unified.run(entities=entities)
    for entity in entities:
        tables = [entity] + (["purchase_order_line_items"] if entity == "purchase_orders" else [])
        for table in tables:
            want, got = _comparable(v1, table), _comparable(unified, table)
            assert set(got) == set(want), table
            assert got == want, table
        assert _columns(v1, entity) == _columns(unified, entity), entity
    assert_destination_matches_api(v1, sandbox, entities=entities)
    assert_destination_matches_api(unified, sandbox, entities=entities)


def _columns(loader: Loader, table: str) -> dict[str, str]:
    with loader.pipeline.sql_client() as client:
        rows = client.execute_sql(
            "SELECT column_name, data_type FROM information_schema.columns "
            f"WHERE table_schema = 'makini_data' AND table_name = '{table}'"
        )
    return {name: kind for name, kind in rows or [] if not name.startswith("_dlt")}


def test_auto_asks_each_connection_and_one_run_mixes_dialects(
    sandbox_factory: Any, tmp_path: Path
) -> None:
    sandbox = sandbox_factory(SandboxConfig(connections=small_connections()))
    loader = unified_loader(sandbox, tmp_path)
    connections = {
        "acme": {"token": sandbox.tokens["acme"], "dialect": "v1"},
        "globex": {"token": sandbox.tokens["globex"], "family": "eam"},
    }
    transport = Recording()
    source = loader.run_source(connections=connections, dialect="auto", transport=transport)
    dialects = {c.name: (c.dialect.name, c.dialect.family) for c in source_connections(source)}  # type: ignore[union-attr]
    assert dialects == {"acme": ("v1", None), "globex": ("unified", "eam")}
    # a configured family skips the probe: globex never asked /api/erp/vendors
    assert not [r for r in transport.requests if r.url.path == "/api/erp/vendors"]
    assert_destination_matches_api(loader, sandbox, connections=["acme"], dialect="v1")
    assert_destination_matches_api(loader, sandbox, connections=["globex"], dialect="unified")


def test_auto_finds_v1_where_the_unified_dialect_is_not_served(
    sandbox_factory: Any, tmp_path: Path
) -> None:
    sandbox = sandbox_factory(SandboxConfig(connections=small_connections(), dialect="v1"))
    loader = Loader(sandbox, tmp_path, dialect="auto")
    source = loader.run_source(entities=["vendors"])
    assert {c.dialect.name for c in source_connections(source)} == {"v1"}  # type: ignore[union-attr]
    assert_destination_matches_api(loader, sandbox, entities=["vendors"], dialect="v1")


def test_entities_a_family_does_not_serve_are_skipped_with_a_note(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    loader = unified_loader(sandbox, tmp_path)
    source = loader.run_source(entities=["assets", "vendors"])
    acme = next(c for c in source_connections(source) if c.name == "acme")  # acme is an ERP
    assert acme.failure is None
    assert any("assets skipped" in note and "erp" in note for note in acme.notes)
    assert not [k for k in loader.rows("assets") if k[0] == "acme"]
    assert_destination_matches_api(loader, sandbox, entities=["assets", "vendors"])


# --- exact walks ------------------------------------------------------------------------------


class ChangeDuringWalk:
    """After some PO pages of the walk: change a record already read, change one not read
    yet, delete one not read yet, and create one."""

    def __init__(self, sandbox: Sandbox, connection: str) -> None:
        self.sandbox = sandbox
        self.connection = connection
        self.pages = 0
        self.keys = [r["key"] for r in sandbox.records("purchase_orders", connection)]

    def __call__(self, request: httpx.Request) -> None:
        if (
            not request.url.path.endswith("/purchase-orders")
            or "per_page" not in request.url.params
        ):
            return
        self.pages += 1
        put, delete = self.sandbox.put_record, self.sandbox.delete_record
        connection = self.connection
        if self.pages == 2:
            put(connection, "purchase-orders", self.keys[0], {"title": "changed after read"})
            put(connection, "purchase-orders", self.keys[-3], {"title": "changed before read"})
        elif self.pages == 3:
            delete(connection, "purchase-orders", self.keys[-2])
            put(connection, "purchase-orders", "PO-NEW-1", {"title": "created during the walk"})
        elif self.pages == 4:
            put(connection, "purchase-orders", self.keys[1], {"title": "moved again"})


@pytest.mark.parametrize("key_queries", [True, False])
def test_a_walk_over_changing_offsets_misses_nothing(
    sandbox_factory: Any, tmp_path: Path, key_queries: bool
) -> None:
    sandbox = sandbox_factory(
        SandboxConfig(connections=[eam_connection()], unified_key_queries=key_queries)
    )
    loader = unified_loader(sandbox, tmp_path)
    changes = ChangeDuringWalk(sandbox, "plant")
    transport = Recording(after=changes)
    loader.run_source(entities=["purchase_orders"], page_size=5, max_slices=1, transport=transport)
    assert changes.pages > 4
    rows = loader.rows("purchase_orders")
    assert rows[("plant", changes.keys[0])]["title"] == "changed after read"
    assert rows[("plant", changes.keys[-3])]["title"] == "changed before read"
    assert rows[("plant", "PO-NEW-1")]["title"] == "created during the walk"
    assert_destination_matches_api(loader, sandbox, entities=["purchase_orders"])
    # every request asked for page 1 of a moving filter: offsets never mattered
    pages = transport.listing_pages("/purchase-orders")
    assert {r.url.params.get("page") for r in pages} == {"1"} or not key_queries


@pytest.mark.parametrize("key_queries", [True, False])
def test_ties_longer_than_a_page_in_unstable_order_are_read_whole(
    sandbox_factory: Any, tmp_path: Path, key_queries: bool
) -> None:
    # one group of 24 records shares an updatedAt: nearly five pages of 5, shuffled anew on
    # every request
    config = SandboxConfig(
        connections=[eam_connection(purchase_orders=96)],
        tie_group=4,
        big_tie_group=24,
        unified_key_queries=key_queries,
    )
    sandbox = sandbox_factory(config)
    loader = unified_loader(sandbox, tmp_path)
    loader.run_source(entities=["purchase_orders"], page_size=5, max_slices=1)
    biggest = loader.query(
        f"SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM {loader.table('purchase_orders')} "
        "GROUP BY updated_at) AS ties"
    )[0][0]
    assert biggest >= 24
    assert_destination_matches_api(loader, sandbox, entities=["purchase_orders"])


# --- deletes without tombstones -----------------------------------------------------------------


@pytest.mark.parametrize("hard_delete", [False, True])
def test_deletes_are_found_and_marked_or_removed(
    sandbox_factory: Any, tmp_path: Path, hard_delete: bool
) -> None:
    sandbox = sandbox_factory(SandboxConfig(connections=[eam_connection(purchase_orders=300)]))
    loader = unified_loader(sandbox, tmp_path)
    entities = ["purchase_orders", "vendors", "assets"]
    loader.run_source(entities=entities, hard_delete=hard_delete)
    pos = sandbox.records("purchase_orders", "plant")
    old, recent = pos[7], pos[-1]  # one far below the watermark, one near its top
    sandbox.delete_record("plant", "purchase-orders", old["key"])
    sandbox.delete_record("plant", "purchase-orders", recent["key"])
    vendor = sandbox.records("vendors", "plant")[2]
    sandbox.delete_record("plant", "vendors", vendor["key"])  # vendors keep a soft delete
    asset = sandbox.records("assets", "plant")[4]
    sandbox.admin.delete(
        f"/_admin/connections/plant/assets/{asset['key']}", params={"hard": "true"}
    ).raise_for_status()
    source = loader.run_source(entities=entities, hard_delete=hard_delete)
    plant = source_connections(source)[0]
    assert plant.deletes_found == {"purchase_orders": 2, "assets": 1}
    # far cheaper than listing: 300 POs are 3 pages of 100; the deletes cost a few counts
    assert 0 < plant.delete_requests < 40
    rows = loader.rows("purchase_orders")
    lines = loader.rows("purchase_order_line_items")
    for key in (old["key"], recent["key"]):
        po_lines = [r for k, r in lines.items() if r["purchase_order_key"] == key]
        if hard_delete:
            assert ("plant", key) not in rows and not po_lines
        else:
            assert rows[("plant", key)]["deleted_at"] is not None
            assert po_lines and all(r["deleted_at"] is not None for r in po_lines)
    assert_destination_matches_api(loader, sandbox, entities=entities, hard_delete=hard_delete)
    # a run with nothing deleted: one count per entity
    quiet = source_connections(loader.run_source(entities=entities, hard_delete=hard_delete))[0]
    assert quiet.deletes_found == {} and quiet.delete_requests <= len(entities) + 2
    assert_destination_matches_api(loader, sandbox, entities=entities, hard_delete=hard_delete)


# --- sync status and watermark ------------------------------------------------------------------


def test_the_watermark_follows_finished_syncs_only(sandbox: Sandbox, tmp_path: Path) -> None:
    loader = unified_loader(sandbox, tmp_path)
    loader.run_source(entities=["vendors"])
    stored = loader.watermarks("vendors")
    status = httpx.get(
        f"{sandbox.url}/api/integrations/current",
        headers={"Authorization": f"Bearer {sandbox.tokens['acme']}", "Accept": "application/json"},
    ).json()["data"]
    assert status["sync_status"] in ("done", "fulldone")
    # a sync under way (or failed) guarantees nothing: what is listed loads, the point stays
    sandbox.sync("acme", status="syncing")
    sandbox.sync("globex", status="error", publish=False)
    sandbox.put_record("acme", "vendors", "V-DURING", {"name": "during a sync"})
    source = loader.run_source(entities=["vendors"])
    assert loader.watermarks("vendors") == stored
    assert ("acme", "V-DURING") in loader.rows("vendors")
    notes = {c.name: " ".join(c.notes) for c in source_connections(source)}
    assert "inprogress" in notes["acme"] and "'error'" in notes["globex"]
    assert_destination_matches_api(loader, sandbox, entities=["vendors"])
    # a finished sync moves it
    sandbox.sync("acme", status="active")
    sandbox.sync("globex", status="active")
    loader.run_source(entities=["vendors"])
    assert loader.watermarks("vendors")["acme"] > stored["acme"]
    assert_destination_matches_api(loader, sandbox, entities=["vendors"])


def test_fail_fails_that_connection_and_the_others_load(sandbox: Sandbox, tmp_path: Path) -> None:
    loader = unified_loader(sandbox, tmp_path)
    sandbox.sync("globex", status="reauthorization_required", publish=False)
    source = loader.run_source(entities=["vendors", "sites"])
    failures = connection_failures(source)
    assert set(failures) == {"globex"}
    assert isinstance(failures["globex"], ReauthorizationRequired)
    assert "fail" in str(failures["globex"])
    assert_destination_matches_api(
        loader, sandbox, entities=["vendors", "sites"], connections=["acme"]
    )


def test_late_changes_before_the_sync_point_are_caught(sandbox: Sandbox, tmp_path: Path) -> None:
    """The meaning of sync_updated_at is not verified on a live tenant. A record copied late
    with a time just before the stored point: a new one changes the counts, so the delete
    finder's comparison lists it either way; a changed one does not, and only the lookback
    reads it again."""
    with_lookback = unified_loader(sandbox, tmp_path, "with")
    without = unified_loader(sandbox, tmp_path, "without")
    with_lookback.run_source(entities=["vendors"])
    without.run_source(entities=["vendors"], lookback_seconds=0)
    point = with_lookback.watermarks("vendors")["acme"]
    late = format_timestamp(parse_api_time(point) - timedelta(seconds=30))  # type: ignore[operator]
    vendor = sandbox.records("vendors", "acme")[3]
    for key, fields in (
        ("V-LATE-NEW", {"name": "late new"}),
        (vendor["key"], {"name": "late change"}),
    ):
        response = sandbox.admin.put(
            f"/_admin/connections/acme/vendors/{key}", json={**fields, "updatedAt": late}
        )
        assert response.status_code == 200, response.text
    with_lookback.run_source(entities=["vendors"])
    without.run_source(entities=["vendors"], lookback_seconds=0)
    assert ("acme", "V-LATE-NEW") in with_lookback.rows("vendors")
    assert ("acme", "V-LATE-NEW") in without.rows("vendors")
    assert with_lookback.rows("vendors")[("acme", vendor["key"])]["name"] == "late change"
    assert without.rows("vendors")[("acme", vendor["key"])]["name"] != "late change"
    assert_destination_matches_api(with_lookback, sandbox, entities=["vendors"])


# --- errors, limits, values -----------------------------------------------------------------


def set_faults(sandbox: Sandbox, *rules: dict[str, Any]) -> None:
    sandbox.post("/_admin/faults", {"rules": list(rules)})


def test_laravel_errors_name_the_request_and_redirects_are_not_followed(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    loader = unified_loader(sandbox, tmp_path)
    # a 422 with Laravel's errors: the error names the request itself (Makini documents no
    # request id)
    set_faults(
        sandbox,
        {
            "kind": "status",
            "status": 422,
            "connection": "acme",
            "entity": "vendors",
            "message": "The per page field must be an integer.",
        },
        {
            "kind": "headers",
            "connection": "acme",
            "entity": "vendors",
            "headers": {"X-Request-Id": None},
        },
        # a login page's redirect, as Laravel answers a refused token
        {
            "kind": "raw_body",
            "status": 302,
            "body": "",
            "content_type": "text/html",
            "connection": "globex",
            "entity": "vendors",
        },
        {
            "kind": "headers",
            "connection": "globex",
            "entity": "vendors",
            "headers": {"Location": "https://login.makini.example/login"},
        },
    )
    transport = Recording()
    source = loader.run_source(entities=["vendors"], transport=transport)
    failures = connection_failures(source)
    assert isinstance(failures["acme"], BadRequestError)
    text = str(failures["acme"])
    assert "per page field" in text and "request=GET /api/erp/vendors?" in text
    assert "page=1" in text and "status=422" in text
    assert isinstance(failures["globex"], ReauthorizationRequired)
    assert "redirected (302)" in str(failures["globex"])
    assert not [r for r in transport.requests if r.url.host == "login.makini.example"]
    for request in transport.requests:
        assert request.headers["accept"] == "application/json"


def test_rate_limit_with_a_unix_reset_is_waited_and_money_as_numbers_lands_exact(
    sandbox_factory: Any, tmp_path: Path
) -> None:
    sandbox = sandbox_factory(
        SandboxConfig(connections=[eam_connection(purchase_orders=12, money_as_numbers=True)])
    )
    sandbox.post("/_admin/connections/plant/rate-limit", {"limit": 4, "window_seconds": 1})
    loader = unified_loader(sandbox, tmp_path)
    loader.run_source(entities=["purchase_orders", "vendors"], page_size=5)
    stats = sandbox.admin.get("/_admin/stats").json()["data"]["connections"]["plant"]
    # the unified dialect sends no reset before a 429: the first 429 teaches the window's
    # length (one per listing running at that moment), then the pace keeps under the limit
    assert stats["status"].get("429", 0) <= 2
    assert stats["status"]["200"] >= 10
    sandbox.post("/_admin/connections/plant/rate-limit", {"limit": 0})
    raw = httpx.get(
        f"{sandbox.url}/api/eam/purchase-orders",
        params={"per_page": 3},
        headers={"Authorization": "Bearer tok_plant", "Accept": "application/json"},
    ).text
    assert '"totalNetValue":' in raw and '"totalNetValue":"' not in raw  # numbers on the wire
    rows = loader.rows("purchase_orders")
    v1 = sandbox.snapshot("purchase_orders")
    for key, record in v1.items():
        if record["totalNetValue"] is not None and not record.get("deletedAt"):
            assert rows[key]["total_net_value"] == Decimal(record["totalNetValue"])
    assert loader.rows("purchase_order_line_items")  # lines' decimals too, by the check below
    assert_destination_matches_api(loader, sandbox, entities=["purchase_orders", "vendors"])


def test_every_entity_path_of_both_families_is_read_from_the_listing_only(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """No request relies on `links.next`: every listing request sets its own filters."""
    loader = unified_loader(sandbox, tmp_path)
    transport = Recording()
    loader.run_source(page_size=5, max_slices=1, transport=transport)
    for request in transport.requests:
        if (
            request.url.path.startswith(("/api/erp/", "/api/eam/"))
            and "per_page" in request.url.params
        ):
            params = dict(request.url.params)
            if params.get("per_page") != "1":
                assert any(k.startswith("sort[") for k in params), request.url
    assert_destination_matches_api(loader, sandbox, entities=list(ENTITY_PATHS))
