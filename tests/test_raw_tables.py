"""Raw tables (`raw_tables=...`): one `raw__<table>` per table each connection lists, rows as
dlt infers them, each connection's rows replaced on every run; unified connections only.

The oracle reads `/api/raw/tables` and every table's pages with plain httpx.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pendulum
import pytest
from conftest import Loader, Sandbox, small_connections
from dlt.common.normalizers.naming.snake_case import NamingConvention

from makini_sandbox import SandboxConfig
from makini_source import connection_failures, makini_source, source_connections
from makini_source.exceptions import ConfigurationError
from makini_source.raw_tables import raw_table_name
from makini_source.settings import CONNECTION_COLUMN, MARKER_COLUMN

NAMING = NamingConvention()


def api_tables(sandbox: Sandbox, connection: str) -> dict[str, list[dict[str, Any]]]:
    """Table -> every row, as the API lists them now."""
    headers = {
        "Authorization": f"Bearer {sandbox.tokens[connection]}",
        "Accept": "application/json",
    }
    listing = sandbox.admin.get("/api/raw/tables", headers=headers)
    listing.raise_for_status()
    tables = {}
    for table in listing.json()["data"]:
        rows: list[dict[str, Any]] = []
        page = 1
        while True:
            response = sandbox.admin.get(
                f"/api/raw/tables/{table['name']}/data",
                params={"page": page, "per_page": 100},
                headers=headers,
            )
            response.raise_for_status()
            body = response.json()
            rows.extend(body["data"])
            if body["meta"]["current_page"] >= body["meta"]["last_page"]:
                break
            page += 1
        tables[table["name"]] = rows
    return tables


INTEGRAL_TEXT = re.compile(r"^-?\d+\.0$")
ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$")


def canonical(value: Any) -> Any:
    """A value as comparable text, whichever way it landed: in a column of its own type, or
    as text (a `mixed` column: JSON text), or as a timestamp (ISO text, which dlt detects)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat()
    if isinstance(value, str) and ISO_TIME.match(value):
        parsed = pendulum.parse(value)
        assert isinstance(parsed, datetime)
        return parsed.astimezone(timezone.utc).isoformat()
    # an integral number compares as an integer however it landed (7, 7.0, "7.0")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str) and INTEGRAL_TEXT.match(value):
        return value[:-2]
    return str(value)


def as_loaded(row: dict[str, Any]) -> tuple[Any, ...]:
    """An API row as the destination holds it: columns snake_case, values canonical."""
    return tuple(sorted((NAMING.normalize_identifier(k), canonical(v)) for k, v in row.items()))


def from_destination(row: dict[str, Any], columns: list[str]) -> tuple[Any, ...]:
    """A destination row folded back: each column's value from wherever dlt put it (a column
    whose type changes from row to row keeps other types in `<column>__v_<type>`)."""
    values = []
    for column in sorted(columns):
        held = [
            row[name]
            for name in row
            if (name == column or name.startswith(f"{column}__v_")) and row[name] is not None
        ]
        assert len(held) <= 1, (column, held)
        values.append((column, canonical(held[0]) if held else None))
    return tuple(values)


def assert_raw_tables_match_api(
    loader: Loader, sandbox: Sandbox, connections: list[str], selected: set[str] | None = None
) -> int:
    """Every selected raw table of every connection holds exactly the API's rows (a
    multiset: raw rows have no key). Returns the rows compared."""
    compared = 0
    problems = []
    tables = set(loader.pipeline.default_schema.data_table_names())
    for connection in connections:
        for table, api_rows in api_tables(sandbox, connection).items():
            if selected is not None and table not in selected:
                continue
            name = raw_table_name(table)
            assert name in tables, name
            rows = [r for r in loader_rows(loader, name) if r[CONNECTION_COLUMN] == connection]
            columns = sorted({NAMING.normalize_identifier(k) for r in api_rows for k in r})
            want = Counter(as_loaded(r) for r in api_rows)
            got = Counter(from_destination(r, columns) for r in rows)
            if want != got:
                problems.append(
                    f"{name} {connection}: missing {list((want - got).elements())[:2]}, "
                    f"extra {list((got - want).elements())[:2]}"
                )
            assert all(r[MARKER_COLUMN] is None for r in rows)
            compared += len(rows)
    assert not problems, "\n".join(problems)
    return compared


def loader_rows(loader: Loader, table: str) -> list[dict[str, Any]]:
    with loader.pipeline.sql_client() as client:
        qualified = client.make_qualified_table_name(table)
        with client.execute_query(f"SELECT * FROM {qualified}") as cursor:
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, values)) for values in cursor.fetchall()]


def run(loader: Loader, **kwargs: Any) -> Any:
    kwargs.setdefault("base_url", loader.sandbox.url)
    kwargs.setdefault("connections", dict(loader.sandbox.tokens))
    kwargs.setdefault("dialect", "unified")
    kwargs.setdefault("entities", ["vendors"])
    return loader.run_source(**kwargs)


def config(rows: int) -> SandboxConfig:
    return SandboxConfig(
        connections=[dataclasses.replace(c, raw_table_rows=rows) for c in small_connections()]
    )


def test_every_raw_table_loads_untyped_and_each_run_replaces_a_connections_rows(
    sandbox_factory: Any, tmp_path: Path
) -> None:
    sandbox = sandbox_factory(config(rows=130))  # more than a page of 100
    loader = Loader(sandbox, tmp_path)
    legacy = {"token": sandbox.tokens["acme"], "dialect": "v1"}
    source = run(loader, connections={**sandbox.tokens, "legacy": legacy}, raw_tables=True)
    assert connection_failures(source) == {}
    notes = {c.name: c.notes for c in source_connections(source)}
    assert notes["legacy"] == ["raw tables skipped: the v1 dialect has none"]
    assert assert_raw_tables_match_api(loader, sandbox, ["acme", "globex"]) == 7 * 130
    # the run report is written whichever resource (an entity or the raw tables) ends last
    reported = dict(loader.query("SELECT connection_id, status FROM makini_data.connections"))
    assert set(reported) == {"acme", "globex", "legacy"}
    raw = {t for t in loader.pipeline.default_schema.data_table_names() if t.startswith("raw__")}
    assert raw == {raw_table_name(t) for c in ("acme", "globex") for t in api_tables(sandbox, c)}
    # untyped: dlt inferred the types (Maximo's ISO times as timestamps); a column the
    # listing calls mixed is text, every value kept (not coerced into the first one's type)
    types = dict(
        loader.query(
            "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'makini_data' AND table_name IN ('raw__ekko', 'raw__workorder')"
        )
    )
    assert types["raw__ekko.netwr"] == "DOUBLE" and types["raw__ekko.aedat"] == "VARCHAR"
    assert types["raw__ekko.zz_priority"] == "VARCHAR"
    assert types["raw__workorder.reportdate"] == "TIMESTAMP WITH TIME ZONE"
    assert not [name for name in types if "__v_" in name]

    # fewer rows now: each connection's rows are replaced, not merged
    sandbox = sandbox_factory(config(rows=40))
    run(loader, raw_tables="all")
    assert assert_raw_tables_match_api(loader, sandbox, ["acme", "globex"]) == 7 * 40

    # a connection that fails in the middle keeps the tables it did not finish
    sandbox = sandbox_factory(config(rows=10))
    rule = {"connection": "globex", "entity": "raw-tables/ASSET", "kind": "status", "status": 500}
    sandbox.post("/_admin/faults", {"rules": [rule]})
    source = run(loader, raw_tables=True, max_attempts=1)
    assert set(connection_failures(source)) == {"globex"}
    assert assert_raw_tables_match_api(loader, sandbox, ["acme"]) == 4 * 10
    counts = dict(
        loader.query("SELECT connection_id, COUNT(*) FROM makini_data.raw__asset GROUP BY 1")
    )
    assert counts == {"globex": 40}  # the last complete read
    sandbox.post("/_admin/faults", {"rules": []})

    # a table a connection no longer lists loses that connection's rows
    sandbox.post("/_admin/connections/acme/profile", {"family": "eam"})
    source = run(loader, raw_tables=True, entities=["sites"])
    ekko = dict(
        loader.query("SELECT connection_id, COUNT(*) FROM makini_data.raw__ekko GROUP BY 1")
    )
    assert ekko == {}
    acme = next(c for c in source_connections(source) if c.name == "acme")
    assert "raw table EKKO is no longer listed: its rows were removed" in acme.notes
    assert_raw_tables_match_api(loader, sandbox, ["acme", "globex"])


@pytest.mark.postgres
def test_a_selection_loads_only_the_tables_named(loader: Loader, sandbox: Sandbox) -> None:
    source = run(loader, raw_tables="ekko, Asset, NOPE")
    raw = {t for t in loader.pipeline.default_schema.data_table_names() if t.startswith("raw__")}
    assert raw == {"raw__ekko", "raw__asset"}
    assert_raw_tables_match_api(loader, sandbox, ["acme", "globex"], selected={"EKKO", "ASSET"})
    notes = {c.name: c.notes for c in source_connections(source)}
    assert "raw tables not listed by this connection: ASSET, NOPE" in notes["acme"]
    # left out of the selection now: its rows stay
    run(loader, raw_tables=["ASSET"])
    assert loader.query("SELECT COUNT(*) FROM makini_data.raw__ekko") == [(25,)]


def test_permission_denied_skips_a_table_or_fails_as_configured(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.post("/_admin/connections/acme/permissions", {"denied": ["raw-tables/EKPO"]})
    loader = Loader(sandbox, tmp_path)
    source = run(loader, raw_tables=True)
    acme = next(c for c in source_connections(source) if c.name == "acme")
    assert acme.failure is None and "raw table EKPO skipped: permission denied" in acme.notes
    assert "raw__ekpo" not in loader.pipeline.default_schema.data_table_names()
    assert_raw_tables_match_api(loader, sandbox, ["globex"])
    with pytest.raises(Exception, match="403"):
        run(Loader(sandbox, tmp_path / "strict"), raw_tables=True, on_permission_denied="fail")


@pytest.mark.parametrize("value", [3, {"EKKO": 1}, [1]])
def test_bad_raw_tables_option_fails_before_any_request(sandbox: Sandbox, value: Any) -> None:
    with pytest.raises(ConfigurationError, match="raw_tables"):
        makini_source(base_url=sandbox.url, connections=dict(sandbox.tokens), raw_tables=value)
