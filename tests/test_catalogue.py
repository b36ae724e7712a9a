"""The entity catalogue: generated from the OpenAPI files, complete, and readable.

`makini_source/catalogue.json` must be exactly what `scripts/generate_catalogue.py` makes of
`makini_sandbox/openapi/`; it must hold every list endpoint of both families, the six v1
entities with their contract fields, and names that cannot collide in a destination. The six
are also checked against what the sandbox (the v1 contract's implementation) sends.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ENTITY_PATHS, Sandbox, run_captured
from dlt.common.normalizers.naming.snake_case import NamingConvention

from makini_source.catalogue import (
    POSITION_COLUMN,
    Entity,
    Field,
    default_entities,
    entities_of_family,
    load_catalogue,
    select,
)

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "generate_catalogue.py"
OPENAPI = REPO / "makini_sandbox" / "openapi"
COMMITTED = REPO / "makini_source" / "catalogue.json"
FAMILY_FILES = {"erp": "oas3_erp.json", "eam": "oas3_eam.json"}
FIELD_TYPES = {"text", "bigint", "double", "bool", "decimal", "timestamp", "date", "object", "json"}
SNAKE = NamingConvention()

# the v1 contract (makini-api.md): page sizes, and the two field lists it spells out
V1_PAGE_SIZES = {
    "purchase_orders": 200,
    "vendors": 500,
    "materials": 500,
    "sites": 500,
    "assets": 250,
    "work_orders": 250,
}
V1_PO_FIELDS = [
    *("key", "orderNo", "title", "description", "statusKey", "siteKey", "organizationKey"),
    *("vendorKey", "locationKey", "currencyKey", "orderDate", "dueAt", "approvedAt"),
    *("completedAt", "shipmentDate", "shippingMethod", "terms", "notes", "shipmentAddress"),
    *("billingAddress", "deliveryAddress", "totalNetValue", "totalGrossValue"),
    *("userRequestedKey", "userApprovedKey", "createdAt", "updatedAt", "deletedAt"),
    "customFields",
]
V1_LINE_FIELDS = [
    *("key", "lineNo", "code", "type", "name", "description", "lineRef", "materialKey"),
    *("productKey", "assetKey", "accountKey", "vendorKey", "locationKey", "storeroomKey"),
    *("statusKey", "quantity", "receivedQuantity", "uomKey", "currencyKey", "price"),
    *("discount", "lineTaxValue", "lineTotalValue", "notes", "deliveryAt", "dueAt"),
    *("createdAt", "updatedAt", "deletedAt"),
]
V1_MONEY = [
    *("totalNetValue", "totalGrossValue", "quantity", "receivedQuantity", "price", "discount"),
    *("lineTaxValue", "lineTotalValue"),
]


def run_script(*args: str | Path, hash_seed: str = "0") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONHASHSEED": hash_seed}
    return run_captured([sys.executable, str(SCRIPT), *map(str, args)], REPO, env)


def openapi(family: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((OPENAPI / FAMILY_FILES[family]).read_text())
    return document


def list_paths(family: str) -> set[str]:
    """GET paths of a family without `{`, minus `purchase-orders.line-items` (the contract
    says to read lines from the embedded `lineItems`)."""
    prefix = f"/api/{family}/"
    return {
        url.removeprefix(prefix)
        for url, operations in openapi(family)["paths"].items()
        if "get" in operations and "{" not in url and not url.endswith(".line-items")
    }


def columns(fields: Iterable[Field], prefix: str = "") -> Iterator[str]:
    for entry in fields:
        name = prefix + SNAKE.normalize_identifier(entry.name)
        if entry.type == "object" and entry.fields:
            yield from columns(entry.fields, name + "__")
        else:
            yield name


# --- generation ------------------------------------------------------------------------------


def test_committed_files_are_what_the_openapi_files_generate() -> None:
    result = run_script("--check", "--markdown", REPO / "docs" / "catalogue.md")
    assert result.returncode == 0, result.stderr


def test_check_fails_on_a_stale_catalogue(tmp_path: Path) -> None:
    stale = tmp_path / "catalogue.json"
    stale.write_text(COMMITTED.read_text().replace('"max_page_size": 200', '"max_page_size": 201'))
    result = run_script("--check", "--output", stale)
    assert result.returncode == 1
    assert "max_page_size" in result.stderr  # the diff shows what changed


def test_generation_gives_the_same_bytes_every_time(tmp_path: Path) -> None:
    outputs = []
    for run, seed in enumerate(("1", "2")):
        target = tmp_path / f"run{run}" / "catalogue.json"
        markdown = tmp_path / f"run{run}" / "catalogue.md"
        result = run_script("--output", target, "--markdown", markdown, hash_seed=seed)
        assert result.returncode == 0, result.stderr
        outputs.append((target.read_bytes(), markdown.read_bytes()))
    assert outputs[0] == outputs[1]
    assert outputs[0][0] == COMMITTED.read_bytes()


def test_explain_reports_every_rule_and_the_counts() -> None:
    result = run_script("--explain", "--check")
    assert result.returncode == 0, result.stderr
    for section in ("name: *At", "name: money and quantities", "override", "# Skipped paths"):
        assert section in result.stdout
    assert "purchase-orders.line-items" in result.stdout
    assert f"entities: {len(load_catalogue())}" in result.stdout


def test_sources_are_the_reference_files() -> None:
    sources = json.loads(COMMITTED.read_text())["sources"]
    assert sources == {
        name: hashlib.sha256((OPENAPI / name).read_bytes()).hexdigest()
        for name in FAMILY_FILES.values()
    }


# --- completeness ----------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILY_FILES)
def test_every_list_endpoint_of_a_family_is_an_entity(family: str) -> None:
    listed = {entity.path for entity in entities_of_family(family)}
    assert listed == list_paths(family)


def test_every_schema_field_is_a_field_or_a_child() -> None:
    for entity in load_catalogue().values():
        names = [f.name for f in entity.fields] + [c.field for c in entity.children]
        assert len(names) == len(set(names)), entity.name
        for family in entity.families:
            schema = openapi(family)["components"]["schemas"][entity.schema]
            missing = set(schema["properties"]) - set(names)
            assert not missing, (entity.name, family, missing)
        for child in entity.children:
            for family in entity.families:
                item = openapi(family)["components"]["schemas"][child.schema]["properties"]
                assert set(item) <= {f.name for f in child.fields}, (child.table, family)


def test_names_and_types_are_well_formed() -> None:
    def check(fields: Iterable[Field], where: str) -> None:
        for entry in fields:
            assert entry.type in FIELD_TYPES, (where, entry)
            if entry.type == "object":
                assert entry.fields or entry.open, (where, entry)
                check(entry.fields, f"{where}.{entry.name}")
            else:
                assert not entry.fields and not entry.open, (where, entry)

    for name, entity in load_catalogue().items():
        assert name == entity.name == SNAKE.normalize_identifier(entity.path)
        check(entity.fields, name)
        for child in entity.children:
            check(child.fields, child.table)


def test_cursor_follows_the_times_the_unified_schema_has() -> None:
    for entity in load_catalogue().values():
        unified = {f.name for f in entity.fields if not f.v1_only}
        expected = next((t for t in ("updatedAt", "createdAt") if t in unified), None)
        assert entity.cursor_field == expected, entity.name
        assert entity.deleted_field == ("deletedAt" if "deletedAt" in unified else None)
    replaced = sorted(e.name for e in load_catalogue().values() if e.cursor_field is None)
    assert "uom" in replaced and "purchase_orders" not in replaced


def test_date_only_fields_are_dates() -> None:
    # every `*Date` field but shipmentDate, which the v1 source and sandbox send with a time
    def dates(fields: Iterable[Field]) -> Iterator[Field]:
        for entry in fields:
            yield entry
            yield from dates(entry.fields)

    every = [
        f
        for e in load_catalogue().values()
        for f in dates([*e.fields, *(g for c in e.children for g in c.fields)])
    ]
    date_named = [f for f in every if re.fullmatch(r"date|\w+Date", f.name)]
    assert {f.name for f in date_named} >= {"orderDate", "invoiceDate", "dueDate", "date"}
    for entry in date_named:
        assert entry.type == ("timestamp" if entry.name == "shipmentDate" else "date"), entry


# --- the six v1 entities -----------------------------------------------------------------------


def test_the_default_entities_are_the_six_of_v1() -> None:
    defaults = {entity.name: entity for entity in default_entities()}
    assert {name: e.v1_max_page_size for name, e in defaults.items()} == V1_PAGE_SIZES
    assert {e.table for e in defaults.values()} == set(V1_PAGE_SIZES)
    assert all(e.in_v1 for e in defaults.values())
    assert not any(e.in_v1 for e in load_catalogue().values() if not e.default)


def test_purchase_orders_have_the_v1_fields_and_types() -> None:
    po = load_catalogue()["purchase_orders"]
    assert [f.name for f in po.fields][: len(V1_PO_FIELDS)] == V1_PO_FIELDS
    assert po.field("orderDate").type == "date"
    assert po.field("dueAt").type == "timestamp"
    for name in ("totalNetValue", "totalGrossValue"):
        assert po.field(name).type == "decimal"
    address = po.field("shipmentAddress")
    assert address.type == "object"
    assert {f.name: f.type for f in address.fields}["addressLines"] == "json"
    custom = po.field("customFields")
    assert (custom.type, custom.open, custom.v1_only) == ("object", True, True)
    # the unified PurchaseOrder has no createdAt/deletedAt: v1 only, and no soft delete there
    assert po.field("createdAt").v1_only and po.field("deletedAt").v1_only
    assert (po.cursor_field, po.deleted_field) == ("updatedAt", None)

    lines = po.child("lineItems")
    assert (lines.table, lines.identity, lines.schema) == (
        "purchase_order_line_items",
        "key",
        "POLineItem",
    )
    assert (lines.parent_key_column, lines.parent_version_column) == (
        "purchase_order_key",
        "purchase_order_updated_at",
    )
    assert [f.name for f in lines.fields][: len(V1_LINE_FIELDS)] == V1_LINE_FIELDS
    line_types = {f.name: f.type for f in lines.fields}
    assert all(line_types[name] == "decimal" for name in V1_MONEY if name in line_types)


def test_other_v1_entities_have_their_typed_fields_and_children() -> None:
    catalogue = load_catalogue()
    types = {name: {f.name: f.type for f in e.fields} for name, e in catalogue.items()}
    assert types["materials"]["isActive"] == "bool"
    assert types["materials"]["parentKeys"] == "json"
    assert types["sites"]["lat"] == types["sites"]["lng"] == "double"
    assert types["work_orders"]["materialCount"] == "bigint"
    assert types["assets"]["activatedAt"] == "timestamp"
    materials = catalogue["materials"]
    assert (materials.schema, materials.v1_schema) == ("Part", "Material")
    supply = materials.child("supplyOptions")
    assert (supply.table, supply.identity, supply.identity_column) == (
        "materials__supply_options",
        "position",
        POSITION_COLUMN,
    )
    assert supply.parent_key_column == "material_key"
    assert materials.child("inventories").v1_only  # unified `Part` has `inventory` instead
    tasks = catalogue["work_orders"].child("tasks")
    assert (tasks.table, tasks.identity) == ("work_orders__tasks", "key")


def _readable(entry: Field, value: Any) -> bool:
    """Whether a value the sandbox sends can be read as the catalogue's type."""
    if value is None:
        return True
    if entry.type == "object":
        return isinstance(value, dict)
    if entry.type == "json":
        return isinstance(value, (list, dict, str))
    if entry.type == "bool":
        return isinstance(value, bool)
    if entry.type in ("text", "date", "timestamp") and not isinstance(value, str):
        return False
    try:
        if entry.type == "decimal":
            Decimal(str(value))
        elif entry.type == "bigint":
            int(value)
        elif entry.type == "double":
            float(value)
        elif entry.type == "date":
            dt.date.fromisoformat(value)
        elif entry.type == "timestamp":
            dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (InvalidOperation, ValueError):
        return False
    return True


def _check_record(record: dict[str, Any], fields: Iterable[Field], where: str) -> None:
    by_name = {f.name: f for f in fields}
    for name, value in record.items():
        assert name in by_name, f"{where}: the sandbox sends {name!r}, the catalogue lacks it"
        entry = by_name[name]
        assert _readable(entry, value), f"{where}.{name}: {value!r} is not a {entry.type}"
        if entry.type == "object" and not entry.open and value is not None:
            _check_record(value, entry.fields, f"{where}.{name}")


def test_the_sandbox_sends_only_catalogue_fields_of_readable_types(sandbox: Sandbox) -> None:
    catalogue = load_catalogue()
    assert set(ENTITY_PATHS) == {e.name for e in default_entities()}
    with httpx.Client(
        base_url=sandbox.url, headers={"Authorization": f"Bearer {sandbox.tokens['acme']}"}
    ) as client:
        for name, path in ENTITY_PATHS.items():
            entity = catalogue[name]
            assert entity.path == path
            response = client.get(
                f"/api/v1/{path}",
                params={"limit": entity.v1_max_page_size, "include_deleted": "true"},
            )
            response.raise_for_status()
            records = response.json()["data"]
            assert records, name
            for record in records:
                children = {c.field: c for c in entity.children}
                _check_record(
                    {k: v for k, v in record.items() if k not in children}, entity.fields, name
                )
                for field_name, child in children.items():
                    for item in record.get(field_name) or []:
                        _check_record(item, child.fields, child.table)


# --- destination names -------------------------------------------------------------------------


def test_tables_and_columns_cannot_collide() -> None:
    catalogue = load_catalogue()
    tables = [e.table for e in catalogue.values()]
    tables += [c.table for e in catalogue.values() for c in e.children]
    assert len(tables) == len(set(tables))
    for entity in catalogue.values():
        own = ["connection_id", *columns(entity.fields)]
        assert len(own) == len(set(own)), entity.table
        for child in entity.children:
            assert child.table == "purchase_order_line_items" or child.table == (
                f"{entity.table}__{SNAKE.normalize_identifier(child.field)}"
            )
            fixed = ["connection_id", child.parent_key_column, child.parent_version_column]
            if child.identity == "position":
                fixed.append(POSITION_COLUMN)
            else:
                assert "key" in {f.name for f in child.fields}
            names = [c for c in fixed if c] + list(columns(child.fields))
            assert len(names) == len(set(names)), child.table


# --- the loader --------------------------------------------------------------------------------


def test_load_catalogue_is_cached_and_read_only() -> None:
    catalogue = load_catalogue()
    assert load_catalogue() is catalogue
    assert list(catalogue) == sorted(catalogue)
    with pytest.raises(TypeError):
        catalogue["x"] = catalogue["vendors"]  # type: ignore[index]


def test_select_accepts_families_names_paths_and_all() -> None:
    catalogue = load_catalogue()
    assert select("all") == list(catalogue.values())
    assert select("default") == default_entities()
    erp = select("erp:*")
    assert erp == entities_of_family("erp") and all("erp" in e.families for e in erp)
    eam_only = {e.name for e in select(["eam:*"])} - {e.name for e in erp}
    assert "work_orders" in eam_only and "sales_orders" not in eam_only
    by_name = select("vendors, purchase_orders,vendors")
    assert [e.name for e in by_name] == ["vendors", "purchase_orders"]  # as named, once each
    assert select(["statuses/purchase-orders"]) == [catalogue["statuses_purchase_orders"]]
    assert len(select("erp:*, eam:*")) == len(catalogue)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("purchase_order", "did you mean purchase_orders"),
        ("sales-order", "did you mean sales-orders"),
        ("crm:*", "unknown family 'crm'"),
        (" , ", "names no entity"),
    ],
)
def test_select_rejects_unknown_names_with_close_matches(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        select(spec)


def test_entities_of_family_rejects_other_families() -> None:
    with pytest.raises(ValueError, match="unknown family"):
        entities_of_family("v1")


def test_entity_lookups_name_what_is_missing() -> None:
    po: Entity = load_catalogue()["purchase_orders"]
    with pytest.raises(KeyError, match="no field 'orderNumber'"):
        po.field("orderNumber")
    with pytest.raises(KeyError, match="no child list 'lines'"):
        po.child("lines")


def test_the_column_reference_is_generated_from_the_catalogue() -> None:
    """docs/tables.md is what scripts/generate_table_docs.py writes now (rerun it after a
    catalogue or converter change)."""
    result = run_captured(
        [sys.executable, str(REPO / "scripts" / "generate_table_docs.py"), "--check"], REPO
    )
    assert result.returncode == 0, result.stderr
