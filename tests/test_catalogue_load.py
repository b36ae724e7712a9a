"""Every published entity loads: `--entities all` (and a family) over real HTTP into DuckDB.

The sandbox serves every catalogue entity in the unified dialect (the six also in v1). Each
test ends by comparing the destination with what the API lists now, every expectation
derived from the catalogue (`catalogue_api.assert_catalogue_matches_api`), so a new entity
in the catalogue is tested without a line changed here.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import dlt
import httpx
import pytest
from catalogue_api import (
    assert_catalogue_matches_api,
    declared_columns,
    expected_table_types,
    families,
    table_rows,
    unified_records,
)
from conftest import Loader, Sandbox, assert_destination_matches_api, small_connections

from makini_sandbox import SandboxConfig
from makini_source import connection_failures, source_connections
from makini_source.catalogue import Entity, load_catalogue, select
from makini_source.cli import main
from makini_source.hints import replaced_per_connection
from makini_source.report import CONNECTIONS_TABLE, RUNS_TABLE
from makini_source.settings import CUSTOM_FIELD_COLUMNS_TABLE

ALL = list(load_catalogue().values())


def unified(sandbox: Sandbox, tmp_path: Path, name: str = "u") -> Loader:
    return Loader(sandbox, tmp_path / name, dialect="unified")


def served_tables(sandbox: Sandbox, entities: list[Entity]) -> set[str]:
    """The tables of the entities some connection's family serves."""
    served = set(families(sandbox).values())
    return {t for e in entities if served & set(e.families) for t in e.tables}


def loaded_tables(loader: Any) -> set[str]:
    """The entity tables that landed (the run report's tables and the custom fields' column
    list set aside)."""
    report = {CONNECTIONS_TABLE, RUNS_TABLE, CUSTOM_FIELD_COLUMNS_TABLE}
    return set(loader.pipeline.default_schema.data_table_names()) - report


# --- changes through the admin API, each chosen from the catalogue ---------------------------


def first_text_field(entity: Entity) -> str | None:
    """A field an update can change: the first plain text field that is not the key."""
    return next(
        (f.name for f in entity.fields if f.type == "text" and f.name != "key" and not f.v1_only),
        None,
    )


def change_everything(
    sandbox: Sandbox, connection: str, family: str, entities: list[Entity]
) -> dict[str, int]:
    """For every entity of `entities` the connection serves: update one record, create one, delete one
    (soft where the entity has `deletedAt`, else it vanishes) and hard-delete another.

    Records with only `createdAt` are not updated: their time would not move (the source
    reads them as append-only). Records without a key cannot be addressed: one is created.

    Returns:
        Changes made, per kind.
    """
    made = {"updated": 0, "created": 0, "deleted": 0, "hard_deleted": 0}
    for entity in entities:
        if family not in entity.families:
            continue
        prefix = f"/_admin/connections/{connection}/{entity.path}"
        new_key = f"NEW-{entity.table.upper()}"
        text = first_text_field(entity)
        sandbox.admin.put(f"{prefix}/{new_key}", json={text: "created"} if text else {})
        made["created"] += 1
        if entity.primary_key is None:
            continue
        keys = [r["key"] for r in unified_records(sandbox, connection, family, entity)]
        keys.remove(new_key)
        if entity.cursor_field != "createdAt" and text:
            sandbox.put_record(connection, entity.path, keys[0], {text: "updated"})
            made["updated"] += 1
        sandbox.delete_record(connection, entity.path, keys[1])
        made["deleted"] += 1
        if entity.deleted_field and len(keys) > 2:
            sandbox.admin.delete(f"{prefix}/{keys[2]}", params={"hard": "true"}).raise_for_status()
            made["hard_deleted"] += 1
    return made


# --- every entity, both families -------------------------------------------------------------


def test_all_loads_every_entity_exactly_and_stays_exact_after_changes(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    loader = unified(sandbox, tmp_path)
    source = loader.run_source(entities="all")
    assert connection_failures(source) == {}
    assert loaded_tables(loader) == served_tables(sandbox, ALL)
    first = assert_catalogue_matches_api(loader, sandbox, ALL)
    # one note per connection names every entity its family does not serve
    for connection in source_connections(source):
        family = families(sandbox)[connection.name]
        other = sorted(e.name for e in ALL if family not in e.families)
        assert connection.notes == [
            f"{len(other)} entities skipped (not served by the {family} family): "
            + ", ".join(other)
        ]
    second = change_and_compare(loader, sandbox, ALL, hard_delete=False)
    assert first > 500 and second > 0


def change_and_compare(
    loader: Loader, sandbox: Sandbox, entities: list[Entity], hard_delete: bool
) -> int:
    """Changes every entity of every connection, runs again, compares; returns the rows
    compared."""
    for name, family in families(sandbox).items():
        made = change_everything(sandbox, name, family, entities)
        assert made["updated"] and made["created"] and made["deleted"] and made["hard_deleted"]
    source = loader.run_source(entities=[e.name for e in entities], hard_delete=hard_delete)
    assert connection_failures(source) == {}
    # the records that vanished from incremental entities were found, per connection
    for connection in source_connections(source):
        assert connection.deletes_found, connection.name
    return assert_catalogue_matches_api(loader, sandbox, entities, hard_delete=hard_delete)


def test_declared_column_types_land_as_declared(sandbox: Sandbox, tmp_path: Path) -> None:
    loader = unified(sandbox, tmp_path)
    loader.run_source(entities="all")
    with loader.pipeline.sql_client() as client:
        rows = client.execute_sql(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            f"WHERE table_schema = '{loader.pipeline.dataset_name}'"
        )
    landed: dict[str, dict[str, str]] = {}
    for table, column, kind in rows or []:
        landed.setdefault(table, {})[column] = kind
    wrong = []
    checked = 0
    for entity in ALL:
        for table, columns in expected_table_types(entity).items():
            assert table in landed, f"{table} ({entity.name}) was not created"
            for column, kind in columns.items():
                checked += 1
                if landed[table].get(column) != kind:
                    wrong.append(f"{table}.{column}: {landed[table].get(column)}, declared {kind}")
    assert not wrong, "\n".join(wrong)
    assert checked > 1000  # every column of 55 entities and their child tables


def test_the_command_line_loads_all_of_both_families_and_raw_tables(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("SOURCES__MAKINI__BASE_URL", sandbox.url)
    monkeypatch.setenv("SOURCES__MAKINI__DIALECT", "unified")
    monkeypatch.setenv("SOURCES__MAKINI__CONNECTIONS", json.dumps(sandbox.tokens))
    database = tmp_path / "cli.duckdb"
    paths = ["--duckdb-path", str(database), "--pipelines-dir", str(tmp_path / "p")]
    args = ["run", "--entities", "all", "--raw-tables", "ekko", "--no-progress", *paths]
    assert main([*args, "--pipeline-name", "cli_all"]) == 0
    out = capsys.readouterr().out
    assert "raw__ekko" in out and "invoices__line_items" in out  # rows read, per table
    pipeline = dlt.pipeline(
        "cli_all",
        pipelines_dir=str(tmp_path / "p"),
        destination=dlt.destinations.duckdb(str(database)),
        dataset_name="makini_data",
    )
    attached = SimpleNamespace(pipeline=pipeline)
    assert loaded_tables(attached) == served_tables(sandbox, ALL) | {"raw__ekko"}
    assert_catalogue_matches_api(attached, sandbox, ALL)


# --- selections and v1 ------------------------------------------------------------------------


def test_a_family_selection_loads_its_entities_and_hard_deletes(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    loader = unified(sandbox, tmp_path)
    selected = select("erp:*")
    loader.run_source(entities="erp:*", hard_delete=True)
    # the EAM connection loads the ERP entities its family serves too
    assert loaded_tables(loader) == served_tables(sandbox, selected)
    assert_catalogue_matches_api(loader, sandbox, selected, hard_delete=True)
    change_and_compare(loader, sandbox, selected, hard_delete=True)


def test_v1_connections_load_the_six_and_skip_the_rest_in_one_note(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    loader = Loader(sandbox, tmp_path, dialect="v1")
    source = loader.run_source(entities="all")
    six = [e for e in ALL if e.in_v1]
    assert loaded_tables(loader) == {t for e in six for t in e.tables}
    assert_destination_matches_api(loader, sandbox, entities=[e.name for e in six])
    for connection in source_connections(source):
        assert len(connection.notes) == 1, connection.notes
        note = connection.notes[0]
        assert note.startswith(f"{len(ALL) - len(six)} entities skipped (not served by the v1")
        assert all(e.name in note for e in ALL)


# --- entities without a time, or without a key -----------------------------------------------

WITHOUT_TIME = [e for e in ALL if e.cursor_field is None]


class Recording(httpx.BaseTransport):
    """A real HTTP transport that keeps every request and can act after each one."""

    def __init__(self, after: Any = None) -> None:
        self._inner = httpx.HTTPTransport()
        self.requests: list[httpx.Request] = []
        self.answers: list[tuple[httpx.Request, int]] = []  # acme's requests and statuses
        self._after = after

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        self.requests.append(request)
        if request.headers["authorization"].endswith("acme"):
            self.answers.append((request, response.status_code))
        if self._after is not None:
            self._after(request)
        return response

    def close(self) -> None:
        self._inner.close()


def eam_sandbox(
    sandbox_factory: Any, key_queries: bool = True, extra_counts: dict[str, int] | None = None
) -> Sandbox:
    """Two EAM connections (every entity without a time is EAM), 7 records of each."""
    connections = [
        dataclasses.replace(
            c, system="IBM Maximo", family="eam", extra_count=7, extra_counts=extra_counts or {}
        )
        for c in small_connections()
    ]
    config = SandboxConfig(connections=connections, unified_key_queries=key_queries)
    return sandbox_factory(config)  # type: ignore[no-any-return]


@pytest.mark.parametrize("key_queries", [True, False])
def test_entities_without_a_time_are_walked_by_key_or_by_page_and_replaced(
    sandbox_factory: Any, tmp_path: Path, key_queries: bool
) -> None:
    sandbox = eam_sandbox(sandbox_factory, key_queries)
    assert {e.name for e in WITHOUT_TIME} and all(replaced_per_connection(e) for e in WITHOUT_TIME)
    loader = unified(sandbox, tmp_path)
    transport = Recording()
    names = [e.name for e in WITHOUT_TIME]
    loader.run_source(entities=names, page_size=2, transport=transport)
    assert_catalogue_matches_api(loader, sandbox, WITHOUT_TIME)
    for entity in WITHOUT_TIME:
        listing = [
            dict(r.url.params)
            for r in transport.requests
            if r.url.path.endswith(f"/{entity.path}") and "per_page" in r.url.params
        ]
        assert len(listing) >= 4, entity.name  # 7 records, 2 a page
        assert not any("updatedAt" in p or "createdAt" in p for q in listing for p in q)
        keyed = [q for q in listing if q.get("sort[key]") == "0"]
        paged = [q for q in listing if q not in keyed]
        if entity.primary_key is None:
            assert not keyed and {q["page"] for q in paged} == {"1", "2", "3", "4"}
        elif key_queries:  # a keyset walk on key alone: always page 1, past the last key
            assert not paged and all(q["page"] == "1" for q in keyed)
            assert sum("filter[key:gt]" in q for q in keyed) >= 3
        else:  # refused once per connection, then read by whole passes over the pages
            assert len(keyed) == 2 and {q["page"] for q in paged} >= {"1", "2", "3", "4"}

    # replaced per connection: a connection that lists nothing now loses every row
    uom = next(e for e in WITHOUT_TIME if e.primary_key is not None)
    keys = [r["key"] for r in unified_records(sandbox, "acme", "eam", uom)]
    sandbox.post(f"/_admin/connections/acme/{uom.path}/_bulk", {"keys": keys, "delete": True})
    sandbox.put_record("globex", uom.path, "NEW-UOM", {"name": "created"})
    loader.run_source(entities=names, page_size=2)
    assert not [r for r in table_rows(loader, uom.table) if r["connection_id"] == "acme"]
    assert_catalogue_matches_api(loader, sandbox, WITHOUT_TIME)


@pytest.mark.parametrize("entity", WITHOUT_TIME, ids=lambda e: e.name)
def test_a_replaced_listing_cut_short_keeps_the_rows_it_had(
    sandbox_factory: Any, tmp_path: Path, entity: Entity
) -> None:
    # more records than the source converts at once (settings.CONVERT_BATCH_RECORDS), so
    # rows of the first pages are ready to load before the listing fails
    sandbox = eam_sandbox(sandbox_factory, extra_counts={entity.path: 1_250})
    loader = unified(sandbox, tmp_path)
    loader.run_source(entities=[entity.name])
    before = [r for r in table_rows(loader, entity.table) if r["connection_id"] == "acme"]
    assert len(before) == 1_250
    # acme's listing fails after 11 pages: most of a listing must not replace anything
    sandbox.put_record("acme", entity.path, "NEW-1", {"name": "not loaded"})
    rule = {"connection": "acme", "entity": entity.path, "kind": "status", "status": 500}
    sandbox.post("/_admin/faults", {"rules": [{**rule, "after": 11}]})
    transport = Recording()
    source = loader.run_source(entities=[entity.name], max_attempts=1, transport=transport)
    assert set(connection_failures(source)) == {"acme"}
    acme_pages = [s for r, s in transport.answers if r.url.path.endswith(entity.path)]
    assert acme_pages == [200] * 11 + [500]  # 1,100 records read, then the failure
    after = [r for r in table_rows(loader, entity.table) if r["connection_id"] == "acme"]
    assert sorted(map(repr, after)) == sorted(map(repr, before))
    assert_catalogue_matches_api(loader, sandbox, [entity], connections=["globex"])


def test_a_keyless_listing_that_changes_under_the_walk_is_read_again(
    sandbox_factory: Any, tmp_path: Path
) -> None:
    sandbox = eam_sandbox(sandbox_factory)
    keyless = next(e for e in WITHOUT_TIME if e.primary_key is None)
    created: list[bool] = []

    def create_after_first_page(request: httpx.Request) -> None:
        path, page = request.url.path, request.url.params.get("page")
        acme = request.headers["authorization"].endswith("acme")
        if acme and path.endswith(keyless.path) and page == "1" and not created:
            created.append(True)
            sandbox.put_record("acme", keyless.path, "NEW-1", {"name": "during the walk"})

    loader = unified(sandbox, tmp_path)
    transport = Recording(create_after_first_page)
    loader.run_source(entities=[keyless.name], page_size=2, transport=transport)
    pages = [r.url.params["page"] for r in transport.requests if r.url.path.endswith(keyless.path)]
    assert pages.count("1") >= 3  # acme's walk began again; globex walked once
    assert_catalogue_matches_api(loader, sandbox, [keyless])


# --- entities with only createdAt -----------------------------------------------------------


@pytest.mark.postgres
def test_entities_with_only_created_at_load_incrementally_on_it(
    loader: Loader, sandbox: Sandbox
) -> None:
    created_only = [e for e in ALL if e.cursor_field == "createdAt"]
    assert created_only
    loader.dialect = "unified"
    loader.run_source(entities=[e.name for e in created_only])
    assert_catalogue_matches_api(loader, sandbox, created_only)
    deleted: dict[str, dict[str, int]] = {}  # connection -> entity -> records deleted
    for entity in created_only:
        served = {c: f for c, f in families(sandbox).items() if f in entity.families}
        assert set(loader.watermarks(entity.table)) == set(served), entity.name
        for connection, family in served.items():
            records = unified_records(sandbox, connection, family, entity)
            sandbox.put_record(connection, entity.path, "NEW-1", {})
            sandbox.delete_record(connection, entity.path, records[0]["key"])  # it vanishes
            deleted.setdefault(connection, {})[entity.name] = 1
    transport = Recording()
    source = loader.run_source(entities=[e.name for e in created_only], transport=transport)
    # incremental: the listing starts at the stored watermark (the delete finder lists older
    # ranges only where counts differ); nothing is read whole
    for entity in created_only:
        listing = [
            r.url.params
            for r in transport.requests
            if r.url.path.endswith(entity.path) and r.url.params.get("per_page") != "1"
        ]
        assert any("filter[createdAt:gteq]" in p for p in listing), entity.name
        assert all(any(k.startswith("filter[createdAt") for k in p) for p in listing)
    assert {c.name: c.deletes_found for c in source_connections(source)} == deleted
    assert_catalogue_matches_api(loader, sandbox, created_only)


def test_declared_columns_helper_matches_the_catalogue_shape() -> None:
    """The comparison's own view of the catalogue: every leaf once, objects flattened."""
    purchase_orders = load_catalogue()["purchase_orders"]
    columns = declared_columns(purchase_orders.fields)
    assert columns["total_net_value"] == "decimal"
    assert columns["billing_address__city"] == "text"
    assert "custom_fields" not in columns and "billing_address" not in columns
