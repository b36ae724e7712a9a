"""Record shapes of every Makini list endpoint, read from Makini's OpenAPI files.

The files (``makini_sandbox/openapi/oas3_erp.json``, ``oas3_eam.json``, verbatim copies of
Makini's reference) are package data, so an installed sandbox reads them too. Every
``GET /api/{family}/{path}`` whose 200 answer is ``{"data": [ {$ref} ]}`` and whose path has
no ``{`` is a list endpoint (an *entity*); ``purchase-orders.line-items`` is left to the six
entities' own handling. An entity in both families takes the union of both schemas' fields
(erp's order first; in these files the shared schemas are equal).

A field's *kind* says what values the sandbox generates for it. The schemas type nearly
everything ``string``, so names decide first, as the contract describes money, timestamps and
dates (:data:`NAME_RULES`): ``key``/``*Key`` keys, ``*Keys`` lists of keys, ``*At``
timestamps, ``date``/``*Date`` dates, ``is*``/``has*`` booleans, money and quantities decimal
strings, ``lat``/``lng`` coordinates, ``*Count`` integers. Then structure: a ``$ref`` to an
object schema is a nested object, to a schema without properties (``Dimension``) an open
object, an array of ``$ref`` a list of objects, any other array a list of strings; declared
``boolean``/``integer``/``number`` are those; the rest is text.

Where the files contradict themselves, the sandbox sends the shape the rest of the files use
(:data:`SHAPE_CORRECTIONS`, :data:`ENDPOINT_SCHEMAS`, each with its evidence).

Loading parses ~1.3 MB of JSON (~12 ms); it happens on first use (:func:`load_catalogue`),
not at start-up, so a sandbox that only serves the six v1 entities never pays for it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson

#: family -> OpenAPI file in ``makini_sandbox/openapi/``; erp's schemas win in a merge
FAMILY_FILES: dict[str, str] = {"erp": "oas3_erp.json", "eam": "oas3_eam.json"}
#: the flat line listing of purchase orders, served apart from the entities
LINE_ITEMS_PATH = "purchase-orders.line-items"
REF_PREFIX = "#/components/schemas/"
#: nested objects deeper than this are sent as null (lists of objects as [])
MAX_DEPTH = 3

# field kinds
KEY = "key"
KEYS = "keys"
TIMESTAMP = "timestamp"
DATE = "date"
BOOL = "bool"
DECIMAL = "decimal"
COORDINATE = "coordinate"
COUNT = "count"
INTEGER = "integer"
NUMBER = "number"
TEXT = "text"
OBJECT = "object"
OPEN_OBJECT = "open_object"
OBJECT_LIST = "object_list"
SCALAR_LIST = "scalar_list"

#: (kind, name pattern), first match wins
NAME_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (KEY, re.compile(r"^key$|[a-z0-9]Key$")),
    (KEYS, re.compile(r"[a-z0-9]Keys$")),
    (TIMESTAMP, re.compile(r"[a-z0-9]At$")),
    (DATE, re.compile(r"^date$|[a-z0-9]Date$")),
    (BOOL, re.compile(r"^(is|has)[A-Z]")),
    (
        DECIMAL,
        re.compile(
            r"^(quantity|price|discount|cost|rate|budget|reading|reorderPoint)$"
            r"|^quantity[A-Z]"
            r"|[a-z](Value|Quantity|Price|Cost|Amount|Rate|Discount|Percentage|Level|Reading)$"
        ),
    ),
    (COORDINATE, re.compile(r"^(lat|lng|latitude|longitude)$")),
    (COUNT, re.compile(r"[a-z0-9]Count$")),
)

#: ``Schema.field`` -> the property schema used instead of the declared one, and why
SHAPE_CORRECTIONS: dict[str, tuple[dict[str, Any], str]] = {
    "Customer.addresses": (
        {"type": "array", "items": {"$ref": REF_PREFIX + "Address"}},
        "declared string; a list of Address in Company and Organization",
    ),
    "Customer.billingAddress": (
        {"$ref": REF_PREFIX + "Address"},
        "declared string; an Address in Company, Organization, Site and PurchaseOrder",
    ),
    "PreventiveMaintenance.documents": (
        {"type": "array", "items": {"$ref": REF_PREFIX + "Document"}},
        "declared an array without items; a list of Document in every other schema",
    ),
    "SupplyOption.partNumber": (
        {"type": "string"},
        "declared array, but singular and a string wherever else it occurs",
    ),
    "Address.addressLines": (
        {"type": "array", "items": {"type": "string"}},
        "declared string; the v1 contract says an array of strings",
    ),
}
#: list path -> (schema its records have, why), where the declared item schema is not it
ENDPOINT_SCHEMAS: dict[str, tuple[str, str]] = {
    "work-orders/materials": (
        "MaterialItem",
        (
            "declared WorkOrder, but it lists work-order materials: its per-record siblings "
            "(work-orders/{key}/materials, assets/{key}/materials, ...) are MaterialItem"
        ),
    ),
}
#: key prefixes of the six v1 entities (the others derive theirs from the path)
V1_KEY_PREFIXES: dict[str, str] = {
    "purchase-orders": "PO-",
    "vendors": "V-",
    "materials": "MAT-",
    "sites": "SITE-",
    "assets": "AST-",
    "work-orders": "WO-",
}


@dataclass(frozen=True)
class FieldShape:
    """One field of a record.

    Attributes:
        name: the field's name as sent.
        kind: what its values are (module constants ``KEY``, ``TIMESTAMP``...).
        fields: members of a nested object or of each list element.
    """

    name: str
    kind: str
    fields: tuple[FieldShape, ...] = ()


@dataclass(frozen=True)
class EntityShape:
    """One list endpoint and its records.

    Attributes:
        path: the entity path (``invoices``, ``statuses/purchase-orders``).
        families: the families that publish it (``erp``, ``eam``).
        schema: the schema of its records.
        fields: its fields in schema order.
    """

    path: str
    families: tuple[str, ...]
    schema: str
    fields: tuple[FieldShape, ...]

    @functools.cached_property
    def names(self) -> tuple[str, ...]:
        """Top-level field names in schema order."""
        return tuple(f.name for f in self.fields)

    def has(self, name: str) -> bool:
        """Whether the records have a top-level field ``name``."""
        return name in self.names

    @functools.cached_property
    def decimal_names(self) -> frozenset[str]:
        """Names of decimal fields at any depth (money, quantities)."""
        out: set[str] = set()

        def walk(fields: tuple[FieldShape, ...]) -> None:
            for f in fields:
                if f.kind == DECIMAL:
                    out.add(f.name)
                walk(f.fields)

        walk(self.fields)
        return frozenset(out)

    @property
    def key_prefix(self) -> str:
        """Prefix of generated keys: the six keep theirs (``PO-``), others use the path
        (``statuses/purchase-orders`` -> ``STATUSES-PURCHASE-ORDERS-``), so keys never
        collide across entities of a connection."""
        return key_prefix(self.path)


def key_prefix(path: str) -> str:
    """Prefix of the generated keys of entity ``path``."""
    return V1_KEY_PREFIXES.get(path) or re.sub(r"[^A-Z0-9]+", "-", path.upper()) + "-"


@dataclass(frozen=True)
class Catalogue:
    """Every list endpoint of both families.

    Attributes:
        entities: entity shapes by path, sorted by path.
    """

    entities: dict[str, EntityShape]

    def family_paths(self, family: str) -> frozenset[str]:
        """Paths a family publishes."""
        return frozenset(p for p, e in self.entities.items() if family in e.families)

    def resolve(self, rest: str) -> tuple[str, str | None] | None:
        """Split what follows ``/api/{family}/`` into (entity path, record key or ``None``).

        A listing path wins over a record key (``work-orders/materials`` is the listing of
        work-order materials, not the work order keyed ``materials``); otherwise the longest
        entity path followed by ``/`` takes the rest as the key.
        """
        if rest in self.entities:
            return rest, None
        prefixes = [p for p in self.entities if rest.startswith(p + "/") and len(rest) > len(p) + 1]
        if not prefixes:
            return None
        best = max(prefixes, key=len)
        return best, rest[len(best) + 1 :]


def read_openapi(filename: str) -> dict[str, Any]:
    """One of the packaged OpenAPI documents, parsed."""
    raw = (resources.files("makini_sandbox") / "openapi" / filename).read_bytes()
    document: dict[str, Any] = orjson.loads(raw)
    return document


def _ref_name(prop: dict[str, Any]) -> str | None:
    ref = prop.get("$ref")
    if isinstance(ref, str) and ref.startswith(REF_PREFIX):
        return ref[len(REF_PREFIX) :]
    return None


class _ShapeReader:
    """Turns one document's schemas into field shapes."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.schemas: dict[str, Any] = document.get("components", {}).get("schemas", {})

    def properties(self, schema: str) -> dict[str, Any] | None:
        found = self.schemas.get(schema)
        if isinstance(found, dict) and isinstance(found.get("properties"), dict):
            props: dict[str, Any] = found["properties"]
            return props
        return None

    def fields(self, schema: str, depth: int) -> tuple[FieldShape, ...]:
        props = self.properties(schema) or {}
        return tuple(self.field(schema, name, prop, depth) for name, prop in props.items())

    def field(self, owner: str, name: str, prop: dict[str, Any], depth: int) -> FieldShape:
        corrected = SHAPE_CORRECTIONS.get(f"{owner}.{name}")
        if corrected is not None:
            prop = corrected[0]
        for kind, pattern in NAME_RULES:
            if pattern.search(name):
                return FieldShape(name, kind)
        target = _ref_name(prop)
        if target is not None:
            if self.properties(target) is None:
                return FieldShape(name, OPEN_OBJECT)
            nested = self.fields(target, depth + 1) if depth < MAX_DEPTH else ()
            return FieldShape(name, OBJECT, nested)
        declared = prop.get("type")
        if declared == "array":
            item = _ref_name(prop.get("items") or {})
            if item is not None and self.properties(item) is not None:
                nested = self.fields(item, depth + 1) if depth < MAX_DEPTH else ()
                return FieldShape(name, OBJECT_LIST, nested)
            return FieldShape(name, SCALAR_LIST)
        return FieldShape(
            name, {"boolean": BOOL, "integer": INTEGER, "number": NUMBER}.get(str(declared), TEXT)
        )


def _list_endpoints(family: str, document: dict[str, Any]) -> list[tuple[str, str]]:
    """(path, item schema) of a family's list endpoints, in file order."""
    prefix = f"/api/{family}/"
    found = []
    for url, operations in document.get("paths", {}).items():
        if "get" not in operations or not url.startswith(prefix):
            continue
        path = url[len(prefix) :]
        if "{" in path or path == LINE_ITEMS_PATH:
            continue
        response = operations["get"].get("responses", {}).get("200", {})
        body = response.get("content", {}).get("application/json", {}).get("schema", {})
        data = body.get("properties", {}).get("data", {})
        schema = _ref_name(data.get("items") or {}) if data.get("type") == "array" else None
        if schema is None:
            continue
        found.append((path, ENDPOINT_SCHEMAS.get(path, (schema, ""))[0]))
    return found


def _merge(first: tuple[FieldShape, ...], other: tuple[FieldShape, ...]) -> tuple[FieldShape, ...]:
    names = {f.name for f in first}
    return first + tuple(f for f in other if f.name not in names)


@functools.lru_cache(maxsize=1)
def load_catalogue() -> Catalogue:
    """Every list endpoint of both families with its record shape (parsed once per process)."""
    shapes: dict[str, EntityShape] = {}
    for family, filename in FAMILY_FILES.items():
        document = read_openapi(filename)
        reader = _ShapeReader(document)
        for path, schema in _list_endpoints(family, document):
            fields = reader.fields(schema, 0)
            known = shapes.get(path)
            if known is None:
                shapes[path] = EntityShape(path, (family,), schema, fields)
            else:
                shapes[path] = EntityShape(
                    path, (*known.families, family), known.schema, _merge(known.fields, fields)
                )
        del document, reader
    return Catalogue(dict(sorted(shapes.items())))


def entity_paths() -> tuple[str, ...]:
    """Every entity path of both families, sorted."""
    return tuple(load_catalogue().entities)


__all__ = [
    "Catalogue",
    "EntityShape",
    "FieldShape",
    "key_prefix",
    "load_catalogue",
    "read_openapi",
]
