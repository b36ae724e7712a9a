"""Generates the Makini entity catalogue (`makini_source/catalogue.json`) from the OpenAPI files.

Every list endpoint of the `erp` and `eam` families in `makini_sandbox/openapi/` becomes an
entity: its fields, their types and its nested lists come from the endpoint's schema. The six
entities of the v1 contract (`makini-api.md`) add their v1 fields and page sizes from the
overrides below. The output is deterministic: rerunning on the same files gives the
same bytes (`--check` verifies the committed file).

Usage:
    python scripts/generate_catalogue.py                 # rewrite makini_source/catalogue.json
    python scripts/generate_catalogue.py --check         # exit 1 if the committed file is stale
    python scripts/generate_catalogue.py --explain       # what each rule decided, and oddities
    python scripts/generate_catalogue.py --markdown docs/catalogue.md   # also the Markdown table

Which paths become entities:
    * `GET /api/{family}/{path}` whose 200 response has `data: [ {$ref} ]` (a paged listing).
    * Skipped: paths with `{` (one record, or a per-record sub-listing such as
      `materials/{key}/children`), and `purchase-orders.line-items` (the contract says to read
      lines from the embedded `lineItems`: the flat listing carries no parent key).
    * `statuses/purchase-orders` style paths are entities of their own, named by snake_case of
      the whole path (`statuses_purchase_orders`, table the same).
    * `work-orders/materials` declares `WorkOrder` items, but it is the listing of work-order
      materials (its per-record siblings `{key}/materials` are all "MaterialItem"): it is
      read with the `MaterialItem` schema (ENDPOINT_SCHEMA_OVERRIDES).
    * An entity in both families takes the union of both schemas' fields (erp's order first);
      differences are reported by `--explain` (in these files the shared schemas are equal).

How a field's type is decided (the schemas type nearly everything `string`, so the declared
type decides little; examples are faker output and only used as hints in `--explain`):
    1. FIELD_OVERRIDES (`Schema.field` or `*.field`), each with its reason.
    2. Name rules, first match wins (NAME_RULES):
       `key`, `*Key` -> text; `*Keys` -> json (lists of keys, whatever the declared type);
       `*At` -> timestamp; `date`, `*Date` -> date; `is*`, `has*` -> bool;
       money and quantities -> decimal: `quantity`, `price`, `discount`, `cost`, `rate`,
       `budget`, `reading`, `reorderPoint`, `quantity*`, and names ending in `Value`,
       `Quantity`, `Price`, `Cost`, `Amount`, `Rate`, `Discount`, `Percentage`, `Level`
       (stock levels), `Reading` (meter readings);
       `lat`, `lng` -> double; `*Count` -> bigint.
    3. Structure: `$ref` to an object schema -> object (its fields typed by the same rules,
       flattened by the source with `__`; deeper than MAX_OBJECT_DEPTH -> json); `$ref` to a
       schema without properties (`Dimension` is `[]` in both files) -> open object (its keys
       are not known in advance; the source flattens whatever arrives, like `customFields`);
       array of `$ref` -> a child table when the field is on the entity itself, json when it
       is inside a child or an object (only one child level); array of scalars or without
       items -> json; declared `boolean` -> bool, `integer` -> bigint, `number` -> double.
       A declared `object` without `$ref` or properties decides nothing: the files put it on
       scalar fields (`quantity`, `orderDate`, `uomKey`, `estimatedTime`).
    4. Everything else -> text (durations such as `estimatedTime` too: their unit is unknown).

Children (nested lists of objects on the entity):
    * Table `<parent_table>__<field_snake>` (dlt's nested-table naming), except the PO lines,
      which keep `purchase_order_line_items`.
    * Parent key column `<snake(schema)>_key`, parent version column `<snake(schema)>_updated_at`
      (null when the parent has no `updatedAt`), where schema is the v1 schema for the six
      (materials: `Material`, so `material_key`) and the endpoint's schema otherwise. If a
      child field would normalize to one of those names, the column becomes `parent_<name>`.
    * Identity `key` when the child objects have a `key` field, else `position` (column
      `list_position`, 1-based).

Entities:
    * `cursor_field`: `updatedAt` when the unified schema has it, else `createdAt`, else null
      (full replace each run). `deleted_field`: `deletedAt` when the unified schema has it.
      `primary_key`: `key`, or null when the records have none (`work-orders/custom-fields`).
    * The six v1 entities (V1_ENTITIES) are the default ones; they carry `v1` (page size and
      v1 schema), their v1 fields first (the contract's lists for POs and lines; for the
      others the v1 schema's fields, then `key, createdAt, updatedAt, deletedAt,
      customFields` that every v1 record has), and `v1_only: true` on fields the
      unified schema lacks (PO `createdAt`, `deletedAt`; `customFields` everywhere: in the
      unified dialect custom fields arrive as extra top-level keys instead).
    * Names are dlt's snake_case of the path (unique); tables the same.

Output (`makini_source/catalogue.py` reads it): `{"version", "sources": {file: sha256},
"entities": [...]}`; an entity has `name, path, families, schema, table, default, v1
({"max_page_size", "schema"} or null), cursor_field, deleted_field, primary_key, fields,
children`; a field `name, type` plus `fields` (objects), `open: true` (objects whose keys are
not known in advance) and `v1_only: true` where they apply; a child `field, table,
parent_key_column, parent_version_column, identity, schema, fields` (and `v1_only`). Every
field of the schemas appears once, in `fields` or as a child's `field`. Keys are sorted in
every object, entities by name; fields keep schema order. A value is written on one line when
it fits 100 columns.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlt.common.normalizers.naming.snake_case import NamingConvention

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OPENAPI_DIR = REPO_ROOT / "makini_sandbox" / "openapi"
DEFAULT_OUTPUT = REPO_ROOT / "makini_source" / "catalogue.json"

CATALOGUE_VERSION = 1
#: family -> OpenAPI file; this order is also the order schemas are merged in
FAMILY_FILES: dict[str, str] = {"erp": "oas3_erp.json", "eam": "oas3_eam.json"}
#: nesting of objects kept as flattened columns; deeper objects land as JSON text
MAX_OBJECT_DEPTH = 3
REF_PREFIX = "#/components/schemas/"
#: columns every table has besides the record's fields (a field must not collide with them)
CONNECTION_COLUMN = "connection_id"
POSITION_COLUMN = "list_position"

FIELD_TYPES = ("text", "bigint", "double", "bool", "decimal", "timestamp", "date", "object", "json")

#: list paths that are not entities, and why
EXCLUDED_PATHS: dict[str, str] = {
    "purchase-orders.line-items": "lines are read from the embedded `lineItems` (contract); "
    "the flat listing has no parent key",
}

#: path -> (schema to read it with, why)
ENDPOINT_SCHEMA_OVERRIDES: dict[str, tuple[str, str]] = {
    "work-orders/materials": (
        "MaterialItem",
        (
            "declared `WorkOrder`, but it lists work-order materials: its per-record siblings "
            "(`work-orders/{key}/materials`, `assets/{key}/materials`, ...) are 'MaterialItem'"
        ),
    ),
}


@dataclass(frozen=True)
class NameRule:
    """A type decided by a field's name."""

    rule: str
    type: str
    pattern: re.Pattern[str]


NAME_RULES: tuple[NameRule, ...] = (
    NameRule("name: key, *Key", "text", re.compile(r"^key$|[a-z0-9]Key$")),
    NameRule("name: *Keys", "json", re.compile(r"[a-z0-9]Keys$")),
    NameRule("name: *At", "timestamp", re.compile(r"[a-z0-9]At$")),
    NameRule("name: date, *Date", "date", re.compile(r"^date$|[a-z0-9]Date$")),
    NameRule("name: is*, has*", "bool", re.compile(r"^(is|has)[A-Z]")),
    NameRule(
        "name: money and quantities",
        "decimal",
        re.compile(
            r"^(quantity|price|discount|cost|rate|budget|reading|reorderPoint)$"
            r"|^quantity[A-Z]"
            r"|[a-z](Value|Quantity|Price|Cost|Amount|Rate|Discount|Percentage|Level|Reading)$"
        ),
    ),
    NameRule("name: lat, lng", "double", re.compile(r"^(lat|lng|latitude|longitude)$")),
    NameRule("name: *Count", "bigint", re.compile(r"[a-z0-9]Count$")),
)


@dataclass(frozen=True)
class Override:
    """A correction of what the schema says about one field.

    Attributes:
        why: The evidence, printed by `--explain`.
        type: The field's type, final.
        schema: A property schema used instead of the declared one (rules then apply).
        open: With `type="object"`: the object's keys are not known in advance.
    """

    why: str
    type: str | None = None
    schema: dict[str, Any] | None = None
    open: bool = False


def _ref(schema: str) -> dict[str, Any]:
    return {"$ref": REF_PREFIX + schema}


FIELD_OVERRIDES: dict[str, Override] = {
    "*.customFields": Override(
        "v1: an object of per-connection custom fields, flattened to custom_fields__<name>",
        type="object",
        open=True,
    ),
    "*.shipmentDate": Override(
        "carries a time of day: the v1 source typed it timestamp and the sandbox sends "
        "RFC 3339 timestamps (the contract names only orderDate as date-only)",
        type="timestamp",
    ),
    "Address.addressLines": Override(
        "v1 contract: `addressLines (array of strings)`; declared string", type="json"
    ),
    "SupplyOption.partNumber": Override(
        "declared array, but singular and a string wherever else it occurs (sandbox too)",
        type="text",
    ),
    "Customer.addresses": Override(
        "declared string; a list of Address in Company and Organization, same field names",
        schema={"type": "array", "items": _ref("Address")},
    ),
    "Customer.billingAddress": Override(
        "declared string; an Address in Company, Organization, Site and PurchaseOrder",
        schema=_ref("Address"),
    ),
    "PreventiveMaintenance.documents": Override(
        "declared an array without items; a list of Document in every other schema",
        schema={"type": "array", "items": _ref("Document")},
    ),
    "Fulfillment.lineItems": Override(
        "declared string; a list by its name whose item schema is not published: JSON text",
        type="json",
    ),
}


def _override(schema: str, name: str) -> Override | None:
    """The override of `schema.name`, or of every field called `name`."""
    return FIELD_OVERRIDES.get(f"{schema}.{name}") or FIELD_OVERRIDES.get(f"*.{name}")


@dataclass(frozen=True)
class V1Entity:
    """What the v1 contract adds to one of its six entities.

    Attributes:
        max_page_size: Largest `limit` v1 accepts.
        schema: The schema the v1 contract names for it.
        fields: Its field list in contract order when the contract spells it out; otherwise
            the schema's fields followed by V1_RECORD_FIELDS.
        child_fields: Field order of the children the contract spells out.
        child_tables: Child field -> table name kept from the v1 source.
    """

    max_page_size: int
    schema: str
    fields: tuple[str, ...] = ()
    child_fields: dict[str, tuple[str, ...]] = field(default_factory=dict)
    child_tables: dict[str, str] = field(default_factory=dict)


def _names(text: str) -> tuple[str, ...]:
    """`"a, b,\n c"` -> `("a", "b", "c")`: field lists as the contract writes them."""
    return tuple(name for name in re.split(r"[,\s]+", text) if name)


#: fields every v1 record has (contract, "Records")
V1_RECORD_FIELDS = ("key", "createdAt", "updatedAt", "deletedAt", "customFields")

V1_ENTITIES: dict[str, V1Entity] = {
    "purchase-orders": V1Entity(
        200,
        "PurchaseOrder",
        fields=_names(
            """key, orderNo, title, description, statusKey, siteKey, organizationKey, vendorKey,
            locationKey, currencyKey, orderDate, dueAt, approvedAt, completedAt, shipmentDate,
            shippingMethod, terms, notes, shipmentAddress, billingAddress, deliveryAddress,
            totalNetValue, totalGrossValue, userRequestedKey, userApprovedKey, createdAt,
            updatedAt, deletedAt, customFields, lineItems"""
        ),
        child_fields={
            "lineItems": _names(
                """key, lineNo, code, type, name, description, lineRef, materialKey, productKey,
                assetKey, accountKey, vendorKey, locationKey, storeroomKey, statusKey, quantity,
                receivedQuantity, uomKey, currencyKey, price, discount, lineTaxValue,
                lineTotalValue, notes, deliveryAt, dueAt, createdAt, updatedAt, deletedAt"""
            )
        },
        child_tables={"lineItems": "purchase_order_line_items"},
    ),
    "vendors": V1Entity(500, "Vendor"),
    "materials": V1Entity(500, "Material"),
    "sites": V1Entity(500, "Site"),
    "assets": V1Entity(250, "Asset"),
    "work-orders": V1Entity(250, "WorkOrder"),
}

_naming = NamingConvention()


def snake(name: str) -> str:
    """dlt's snake_case of an identifier (`lineItems` -> `line_items`)."""
    return _naming.normalize_identifier(name)


# --- reading the OpenAPI files ---------------------------------------------------------------


@dataclass(frozen=True)
class OpenApiFile:
    """One family's OpenAPI document."""

    family: str
    filename: str
    sha256: str
    document: dict[str, Any]

    @classmethod
    def load(cls, directory: Path, family: str, filename: str) -> OpenApiFile:
        raw = (directory / filename).read_bytes()
        return cls(family, filename, hashlib.sha256(raw).hexdigest(), json.loads(raw))

    @property
    def schemas(self) -> dict[str, Any]:
        schemas: dict[str, Any] = self.document.get("components", {}).get("schemas", {})
        return schemas

    def properties(self, schema: str) -> dict[str, Any] | None:
        """The properties of a schema; None when it is missing or not an object schema."""
        found = self.schemas.get(schema)
        if not isinstance(found, dict) or not isinstance(found.get("properties"), dict):
            return None
        properties: dict[str, Any] = found["properties"]
        return properties

    def example(self, schema: str) -> dict[str, Any]:
        found = self.schemas.get(schema)
        example = found.get("example") if isinstance(found, dict) else None
        return example if isinstance(example, dict) else {}


def ref_name(prop: dict[str, Any]) -> str | None:
    """`Address` for `{"$ref": "#/components/schemas/Address"}`."""
    ref = prop.get("$ref")
    if isinstance(ref, str) and ref.startswith(REF_PREFIX):
        return ref[len(REF_PREFIX) :]
    return None


@dataclass(frozen=True)
class Endpoint:
    family: str
    path: str
    schema: str


def list_endpoints(spec: OpenApiFile, explain: Explain) -> list[Endpoint]:
    """The family's paged list endpoints, in file order; the rest is reported as skipped."""
    prefix = f"/api/{spec.family}/"
    found = []
    for url, operations in spec.document["paths"].items():
        if "get" not in operations:
            continue
        path = url.removeprefix(prefix)
        if path.endswith("{key}"):
            explain.single_records += 1
            continue
        if "{" in path:
            explain.skip(spec.family, path, "a per-record sub-listing")
            continue
        if path in EXCLUDED_PATHS:
            explain.skip(spec.family, path, EXCLUDED_PATHS[path])
            continue
        response = operations["get"].get("responses", {}).get("200", {})
        body = response.get("content", {}).get("application/json", {}).get("schema", {})
        data = body.get("properties", {}).get("data", {})
        schema = ref_name(data.get("items", {})) if data.get("type") == "array" else None
        if schema is None:
            explain.skip(spec.family, path, "its response is not a listing of records")
            continue
        if path in ENDPOINT_SCHEMA_OVERRIDES:
            schema, why = ENDPOINT_SCHEMA_OVERRIDES[path]
            explain.note(f"{spec.family} {path}: read with schema {schema}: {why}")
        found.append(Endpoint(spec.family, path, schema))
    return found


# --- explaining decisions ----------------------------------------------------------------------


class Explain:
    """Collects what the rules decided, for `--explain`."""

    def __init__(self) -> None:
        self.decisions: dict[str, dict[str, str]] = {}
        self.hints: dict[str, str] = {}
        self.odd: dict[str, str] = {}
        self.notes: list[str] = []
        self.skipped: list[str] = []
        self.single_records = 0

    def decide(self, rule: str, where: str, outcome: str) -> None:
        self.decisions.setdefault(rule, {})[where] = outcome

    def hint(self, where: str, message: str) -> None:
        self.hints[where] = message

    def note(self, message: str) -> None:
        if message not in self.notes:
            self.notes.append(message)

    def skip(self, family: str, path: str, why: str) -> None:
        self.skipped.append(f"{family} {path}: {why}")

    def render(self, catalogue: dict[str, Any]) -> str:
        lines = ["# Rules and what they decided (Schema.field -> type)", ""]
        for rule in sorted(self.decisions):
            decided = self.decisions[rule]
            lines.append(f"## {rule}: {len(decided)} fields")
            lines.extend(f"  {where} -> {outcome}" for where, outcome in sorted(decided.items()))
            lines.append("")
        lines.append("# Declared types the decision departs from (the schemas' oddities)")
        lines.extend(f"  {where}: {message}" for where, message in sorted(self.odd.items()))
        lines += ["", "# Examples that disagree with the decided type (hints only)"]
        lines.extend(f"  {where}: {message}" for where, message in sorted(self.hints.items()))
        if not self.hints:
            lines.append("  (none: where an example carries a type, it is the decided one)")
        lines += ["", "# Notes"]
        lines.extend(f"  {note}" for note in self.notes)
        lines += ["", "# Skipped paths"]
        lines.append(f"  {self.single_records} single-record paths (.../{{key}})")
        lines.extend(f"  {skipped}" for skipped in self.skipped)
        lines += ["", "# Counts"]
        lines.extend(f"  {line}" for line in summary(catalogue))
        return "\n".join(lines) + "\n"


def summary(catalogue: dict[str, Any]) -> list[str]:
    """Entities per family, children, cursor fields."""
    entities = catalogue["entities"]
    per_family: dict[str, int] = {}
    cursors: dict[str, int] = {}
    for entity in entities:
        for family in entity["families"]:
            per_family[family] = per_family.get(family, 0) + 1
        cursor = entity["cursor_field"] or "replace"
        cursors[cursor] = cursors.get(cursor, 0) + 1
    both = sum(1 for entity in entities if len(entity["families"]) == 2)
    children = [child for entity in entities for child in entity["children"]]
    by_identity: dict[str, int] = {}
    for child in children:
        by_identity[child["identity"]] = by_identity.get(child["identity"], 0) + 1
    v1 = sum(1 for entity in entities if entity["v1"])
    return [
        f"entities: {len(entities)} ({_counts(per_family)}, in both {both}; v1 {v1})",
        f"children: {len(children)} ({_counts(by_identity)})",
        f"cursor_field: {_counts(cursors)}",
    ]


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counts.items()))


# --- deciding types ----------------------------------------------------------------------------


_TIMESTAMP_EXAMPLE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")


def _example_hint(example: Any, decided: str) -> str | None:
    """What an example suggests when it disagrees with the decided type."""
    if isinstance(example, str) and _TIMESTAMP_EXAMPLE.match(example):
        suggested = "timestamp"
        if decided in ("timestamp", "date"):
            return None
    elif example in ("true", "false") or isinstance(example, bool):
        suggested = "bool"
    elif isinstance(example, int):
        suggested = "bigint"
        if decided in ("bigint", "decimal", "double"):
            return None
    else:
        return None
    if suggested == decided:
        return None
    return f"example {example!r} suggests {suggested}, decided {decided}"


#: decided types that agree with each declared type
_AGREEING = {
    "string": {"text", "decimal", "timestamp", "date", "bigint", "double"},
    "boolean": {"bool"},
    "integer": {"bigint", "decimal"},
    "number": {"double", "decimal"},
    "array": {"json"},
}


def _departure(prop: dict[str, Any], decided: str) -> str | None:
    """How the declared type disagrees with the decided one, or None."""
    declared = prop.get("type")
    if ref_name(prop) is not None or declared is None:
        return None
    if declared == "object":
        return f"declared object without $ref or properties, decided {decided}"
    if decided in _AGREEING.get(str(declared), set()):
        return None
    return f"declared {declared}, decided {decided}"


@dataclass(frozen=True)
class Owner:
    """Where a property sits: its schema, file and nesting, for rules and explanations."""

    spec: OpenApiFile
    schema: str
    depth: int  # 0 on the entity itself, 1 inside a child or object, ...


class Typer:
    """Turns schema properties into catalogue fields and children."""

    def __init__(self, explain: Explain) -> None:
        self.explain = explain

    def field(self, owner: Owner, name: str, prop: dict[str, Any]) -> dict[str, Any]:
        """One field of the catalogue: `{"name", "type"}`, plus `fields`/`open` for objects.

        An array of `$ref` on the entity itself is a child, decided by `child_schema` first.
        """
        where = f"{owner.schema}.{name}"
        override = _override(owner.schema, name)
        if override is not None and override.schema is not None:
            prop = override.schema
        if override is not None and override.type is not None:
            self.explain.decide("override", where, f"{override.type}: {override.why}")
            result: dict[str, Any] = {"name": name, "type": override.type}
            if override.type == "object":
                result["fields"] = []
                if override.open:
                    result["open"] = True
            return result
        decided, rule = self._scalar(name, prop)
        if decided is None:
            result, rule = self._structured(owner, name, prop)
        else:
            result = {"name": name, "type": decided}
        if override is not None:
            rule = f"override (schema replaced), then {rule}"
            self.explain.note(f"{where}: {override.why}")
        self.explain.decide(rule, where, result["type"] + (" (open)" if result.get("open") else ""))
        departure = _departure(prop, result["type"])
        if departure is not None:
            self.explain.odd[where] = departure
        hint = _example_hint(owner.spec.example(owner.schema).get(name), result["type"])
        if hint is not None:
            self.explain.hint(where, hint)
        return result

    def child_schema(self, owner: Owner, name: str, prop: dict[str, Any]) -> str | None:
        """The item schema when the property is a nested list of objects on the entity."""
        override = _override(owner.schema, name)
        if override is not None:
            if override.type is not None:
                return None
            if override.schema is not None:
                prop = override.schema
                self.explain.note(f"{owner.schema}.{name}: {override.why}")
        if owner.depth > 0 or prop.get("type") != "array":
            return None
        item = ref_name(prop.get("items") or {})
        if item is None or owner.spec.properties(item) is None:
            return None
        return item

    def _scalar(self, name: str, prop: dict[str, Any]) -> tuple[str | None, str]:
        for rule in NAME_RULES:
            if rule.pattern.search(name):
                return rule.type, rule.rule
        return None, ""

    def _structured(
        self, owner: Owner, name: str, prop: dict[str, Any]
    ) -> tuple[dict[str, Any], str]:
        declared = prop.get("type")
        target = ref_name(prop)
        if target is not None:
            properties = owner.spec.properties(target)
            if properties is None:
                self.explain.note(
                    f"{owner.schema}.{name}: schema {target} has no properties "
                    f"({json.dumps(owner.spec.schemas.get(target))}): open object"
                )
                return {"name": name, "type": "object", "fields": [], "open": True}, (
                    "structure: $ref to a schema without properties"
                )
            if owner.depth + 1 > MAX_OBJECT_DEPTH:
                return {"name": name, "type": "json"}, "structure: object nested too deep"
            inner = Owner(owner.spec, target, owner.depth + 1)
            fields = [self.field(inner, sub, subprop) for sub, subprop in properties.items()]
            return {"name": name, "type": "object", "fields": fields}, "structure: $ref object"
        if declared == "array":
            if ref_name(prop.get("items") or {}) is not None:
                return {
                    "name": name,
                    "type": "json",
                }, "structure: list of objects in a child or object"
            return {
                "name": name,
                "type": "json",
            }, "structure: list of scalars (or of no declared items)"
        simple = {"boolean": "bool", "integer": "bigint", "number": "double"}.get(str(declared))
        if simple is not None:
            return {"name": name, "type": simple}, f"structure: declared {declared}"
        return {"name": name, "type": "text"}, "default: text"


# --- building entities -------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One schema an entity's fields come from (v1 schema, erp schema, eam schema)."""

    label: str
    spec: OpenApiFile
    schema: str
    properties: dict[str, Any]
    unified: bool


def ordered_union(*lists: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for names in lists:
        for name in names:
            seen.setdefault(name, None)
    return list(seen)


class CatalogueBuilder:
    """Builds the catalogue document from the family files."""

    def __init__(self, specs: Sequence[OpenApiFile]) -> None:
        self.specs = list(specs)
        self.explain = Explain()
        self.typer = Typer(self.explain)

    def build(self) -> dict[str, Any]:
        by_path: dict[str, list[Endpoint]] = {}
        for spec in self.specs:
            for endpoint in list_endpoints(spec, self.explain):
                by_path.setdefault(endpoint.path, []).append(endpoint)
        entities = [self._entity(path, endpoints) for path, endpoints in by_path.items()]
        entities.sort(key=lambda entity: entity["name"])
        validate(entities)
        return {
            "version": CATALOGUE_VERSION,
            "sources": {spec.filename: spec.sha256 for spec in self.specs},
            "entities": entities,
        }

    def _spec(self, family: str) -> OpenApiFile:
        return next(spec for spec in self.specs if spec.family == family)

    def _schema_source(self, schema: str, label: str, unified: bool) -> Source:
        """The first file (in family order) that defines the schema."""
        for spec in self.specs:
            properties = spec.properties(schema)
            if properties is not None:
                return Source(label, spec, schema, properties, unified)
        raise ValueError(f"schema {schema} ({label}) is in none of the OpenAPI files")

    def _entity(self, path: str, endpoints: list[Endpoint]) -> dict[str, Any]:
        name = snake(path)
        v1 = V1_ENTITIES.get(path)
        sources = []
        if v1 is not None:
            sources.append(self._schema_source(v1.schema, "v1", unified=False))
        for endpoint in endpoints:
            properties = self._spec(endpoint.family).properties(endpoint.schema)
            if properties is None:
                raise ValueError(f"{endpoint.family} {path}: schema {endpoint.schema} is empty")
            sources.append(
                Source(
                    endpoint.family,
                    self._spec(endpoint.family),
                    endpoint.schema,
                    properties,
                    True,
                )
            )
        self._report_differences(name, sources)
        v1_order: list[str] = []
        if v1 is not None:
            v1_order = list(v1.fields) or ordered_union(sources[0].properties, V1_RECORD_FIELDS)
        names = ordered_union(v1_order, *(source.properties for source in sources))
        unified_names = {n for source in sources if source.unified for n in source.properties}
        if v1 is not None:
            self.explain.note(
                f"{name}: v1-only fields {[n for n in names if n not in unified_names]}"
            )

        schema = endpoints[0].schema
        record = v1.schema if v1 is not None else schema
        table = name
        fields: list[dict[str, Any]] = []
        children: list[dict[str, Any]] = []
        for field_name in names:
            source = next((s for s in sources if field_name in s.properties), sources[0])
            prop = source.properties.get(field_name, {})
            owner = Owner(source.spec, source.schema, 0)
            item_schema = self.typer.child_schema(owner, field_name, prop)
            if item_schema is not None:
                child = self._child(table, record, source, field_name, item_schema, v1)
                if field_name not in unified_names:
                    child["v1_only"] = True
                children.append(child)
                continue
            entry = self.typer.field(owner, field_name, prop)
            if field_name not in unified_names:
                entry["v1_only"] = True
            fields.append(entry)
        has = {entry["name"] for entry in fields if not entry.get("v1_only")}
        cursor = "updatedAt" if "updatedAt" in has else "createdAt" if "createdAt" in has else None
        if cursor != "updatedAt":
            self.explain.note(
                f"{name}: no updatedAt in the unified schema: "
                + (f"incremental on {cursor}" if cursor else "full replace each run")
            )
        for child in children:
            if "updatedAt" not in has:
                child["parent_version_column"] = None
        if "key" not in has:
            self.explain.note(f"{name}: its records have no key: primary_key null")
        return {
            "name": name,
            "path": path,
            "families": sorted(endpoint.family for endpoint in endpoints),
            "schema": schema,
            "table": table,
            "default": v1 is not None,
            "v1": None if v1 is None else {"max_page_size": v1.max_page_size, "schema": v1.schema},
            "cursor_field": cursor,
            "deleted_field": "deletedAt" if "deletedAt" in has else None,
            "primary_key": "key" if "key" in has else None,
            "fields": fields,
            "children": children,
        }

    def _child(
        self,
        parent_table: str,
        record: str,
        source: Source,
        field_name: str,
        item_schema: str,
        v1: V1Entity | None,
    ) -> dict[str, Any]:
        properties = source.spec.properties(item_schema) or {}
        order = ordered_union(v1.child_fields.get(field_name, ()) if v1 else (), properties)
        owner = Owner(source.spec, item_schema, 1)
        fields = [self.typer.field(owner, sub, properties.get(sub, {})) for sub in order]
        table = (v1.child_tables.get(field_name) if v1 else None) or (
            f"{parent_table}__{snake(field_name)}"
        )
        columns = {snake(entry["name"]) for entry in fields}
        parent_key, parent_version = f"{snake(record)}_key", f"{snake(record)}_updated_at"
        if parent_key in columns:
            self.explain.note(f"{table}: a field is named {parent_key}: parent_{parent_key}")
            parent_key = f"parent_{parent_key}"
        if parent_version in columns:
            self.explain.note(f"{table}: a field is named {parent_version}: parent_...")
            parent_version = f"parent_{parent_version}"
        identity = "key" if "key" in properties else "position"
        self.explain.decide(
            "structure: list of $ref on the entity -> child table",
            f"{source.schema}.{field_name}",
            f"{table} ({item_schema}, identity {identity})",
        )
        return {
            "field": field_name,
            "table": table,
            "parent_key_column": parent_key,
            "parent_version_column": parent_version,
            "identity": identity,
            "schema": item_schema,
            "fields": fields,
        }

    def _report_differences(self, entity: str, sources: list[Source]) -> None:
        """Notes how the schemas an entity merges differ (v1 schema, erp, eam)."""
        first, *others = sources
        for other in others:
            pair = f"{entity}: {first.label} {first.schema} vs {other.label} {other.schema}"
            only_first = [n for n in first.properties if n not in other.properties]
            only_other = [n for n in other.properties if n not in first.properties]
            changed = [
                n
                for n in first.properties
                if n in other.properties
                and _without_docs(first.properties[n]) != _without_docs(other.properties[n])
            ]
            if only_first or only_other or changed:
                self.explain.note(
                    f"{pair}: only in {first.label} {only_first}, only in {other.label} "
                    f"{only_other}, declared differently {changed} (merged: the union, in "
                    f"{first.label}'s order, {first.label}'s declaration first)"
                )
            else:
                self.explain.note(f"{pair}: the same fields")


def _without_docs(prop: Any) -> Any:
    if isinstance(prop, dict):
        return {k: v for k, v in prop.items() if k not in ("description", "example")}
    return prop


def columns(fields: Sequence[dict[str, Any]], prefix: str = "") -> list[str]:
    """The column names a field list flattens to (objects with `__`, as dlt names them)."""
    names = []
    for entry in fields:
        name = prefix + snake(entry["name"])
        if entry["type"] == "object" and entry["fields"]:
            names.extend(columns(entry["fields"], name + "__"))
        else:
            names.append(name)
    return names


def validate(entities: Sequence[dict[str, Any]]) -> None:
    """Fails on names that would collide in the destination.

    Raises:
        ValueError: Two entities share a name or table, a child table collides with another
            table, or a table would get the same column twice.
    """
    tables: dict[str, str] = {}

    def claim(table: str, owner: str) -> None:
        if table in tables:
            raise ValueError(f"table {table} of {owner} is also the table of {tables[table]}")
        tables[table] = owner

    names = [entity["name"] for entity in entities]
    if len(set(names)) != len(names):
        raise ValueError(f"entity names are not unique: {names}")
    for entity in entities:
        claim(entity["table"], entity["name"])
        _unique_columns(entity["table"], [CONNECTION_COLUMN, *columns(entity["fields"])])
    for entity in entities:
        for child in entity["children"]:
            claim(child["table"], f"{entity['name']}.{child['field']}")
            fixed = [CONNECTION_COLUMN, child["parent_key_column"], child["parent_version_column"]]
            if child["identity"] == "position":
                fixed.append(POSITION_COLUMN)
            _unique_columns(child["table"], [c for c in fixed if c] + columns(child["fields"]))


def _unique_columns(table: str, names: list[str]) -> None:
    seen = set()
    for name in names:
        if name in seen:
            raise ValueError(f"table {table} would have column {name} twice")
        seen.add(name)


# --- rendering ---------------------------------------------------------------------------------


def render_json(catalogue: dict[str, Any]) -> str:
    """The catalogue as JSON text: sorted keys, a value on one line when it fits 100 columns."""
    return _render(catalogue, 0) + "\n"


def _render(value: Any, indent: int) -> str:
    compact = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(", ", ": "))
    if not isinstance(value, (dict, list)) or len(compact) + indent <= 100:
        return compact
    pad = " " * (indent + 1)
    if isinstance(value, dict):
        items = [
            f"{pad}{json.dumps(key)}: {_render(value[key], indent + 1)}" for key in sorted(value)
        ]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    items = [pad + _render(item, indent + 1) for item in value]
    return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"


def render_markdown(catalogue: dict[str, Any]) -> str:
    """A Markdown table of every entity, generated from the catalogue."""
    lines = [
        "# Makini entity catalogue",
        "",
        "<!-- generated by scripts/generate_catalogue.py --markdown docs/catalogue.md; "
        + "do not edit -->",
        "",
        "Every list endpoint of the `erp` and `eam` families in Makini's OpenAPI files "
        + "(`makini_sandbox/openapi/`), as `makini_source/catalogue.json` describes it; "
        + "`scripts/generate_catalogue.py` documents the rules.",
        "",
        "- **entity** in bold: one of the six entities of the v1 contract, read by default.",
        "- **load**: how a run loads the entity. *updatedAt*: incrementally, records changed "
        + "since the last run merged on (`connection_id`, `key`), deletes found or listed. "
        + "*createdAt* (the only time the entity has): incrementally on it, records taken as "
        + "append-only (an update that leaves `createdAt` alone is not seen until a full "
        + "reload), vanished records found as deletes. *replace* (no time at all): read whole "
        + "on every run, and each connection's rows replaced (also when it now lists nothing).",
        "- **child tables**: the entity's nested lists, a row per element with the parent's "
        + "key; *key* or *position* identifies a row within its parent; *v1 only*: the unified "
        + "dialect does not send the list.",
        "- **dialects**: *v1 + unified* where the v1 API has the entity, else *unified*: "
        + "`--entities all` skips it for v1 connections, with one note per connection.",
        "",
        *(f"- {line}" for line in summary(catalogue)),
        "",
        "| entity | path | families | table | load | child tables | dialects |",
        "|---|---|---|---|---|---|---|",
    ]
    for entity in catalogue["entities"]:
        children = "<br>".join(
            f"`{child['table']}` ({child['identity']}{', v1 only' if child.get('v1_only') else ''})"
            for child in entity["children"]
        )
        name = f"**{entity['name']}**" if entity["default"] else entity["name"]
        lines.append(
            f"| {name} | `{entity['path']}` | {', '.join(entity['families'])} "
            f"| `{entity['table']}` | {entity['cursor_field'] or '*replace*'} | {children} "
            f"| {'v1 + unified' if entity['v1'] else 'unified'} |"
        )
    return "\n".join(lines) + "\n"


# --- command line ------------------------------------------------------------------------------


def build_catalogue(openapi_dir: Path = DEFAULT_OPENAPI_DIR) -> tuple[dict[str, Any], Explain]:
    """Reads the family files in `openapi_dir` and returns the catalogue and its explanation."""
    specs = [OpenApiFile.load(openapi_dir, family, name) for family, name in FAMILY_FILES.items()]
    builder = CatalogueBuilder(specs)
    catalogue = builder.build()
    return catalogue, builder.explain


def _stale(path: Path, fresh: str) -> bool:
    """Whether `path` differs from `fresh`; prints the start of the difference."""
    current = path.read_text(encoding="utf-8") if path.exists() else ""
    if current == fresh:
        return False
    diff = difflib.unified_diff(
        current.splitlines(), fresh.splitlines(), str(path), "fresh generation", lineterm=""
    )
    print(f"{path} is not what the OpenAPI files generate:", file=sys.stderr)
    for number, line in enumerate(diff):
        if number == 40:
            print("...", file=sys.stderr)
            break
        print(line, file=sys.stderr)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the generator; returns the exit status."""
    parser = argparse.ArgumentParser(
        description="Generate makini_source/catalogue.json from Makini's OpenAPI files."
    )
    parser.add_argument("--openapi-dir", type=Path, default=DEFAULT_OPENAPI_DIR)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--markdown", type=Path, help="also write the Markdown table here")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if an output is stale"
    )
    parser.add_argument("--explain", action="store_true", help="print what each rule decided")
    args = parser.parse_args(argv)

    catalogue, explain = build_catalogue(args.openapi_dir)
    outputs = [(args.output, render_json(catalogue))]
    if args.markdown is not None:
        outputs.append((args.markdown, render_markdown(catalogue)))
    if args.explain:
        print(explain.render(catalogue), end="")
    if args.check:
        stale = [path for path, text in outputs if _stale(path, text)]
        return 1 if stale else 0
    for path, text in outputs:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    if not args.explain:
        for line in summary(catalogue):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
