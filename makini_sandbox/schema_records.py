"""Generated records of the catalogue entities, shaped by their OpenAPI schemas.

:class:`SchemaRecordFactory` builds a record of any list endpoint from its
:class:`~makini_sandbox.openapi_schemas.EntityShape`: every field of the schema, nested
objects and lists of objects (0-3 elements) included, with values of the field's kind
(decimal strings for money, ``YYYY-MM-DD`` for dates, RFC 3339 for timestamps...). Values are
deterministic: a record depends only on (seed, connection, entity, record number).

Fields that refer to other records (``vendorKey``, ``siteKeys``...) carry keys of generated
records of the entity they name when there is one (:class:`KeyRefs`), so joins find rows.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from typing import Any

from .generator import fmt4, key_width, seed_int
from .openapi_schemas import (
    BOOL,
    COORDINATE,
    COUNT,
    DATE,
    DECIMAL,
    INTEGER,
    KEY,
    KEYS,
    NUMBER,
    OBJECT,
    OBJECT_LIST,
    OPEN_OBJECT,
    SCALAR_LIST,
    TIMESTAMP,
    EntityShape,
    FieldShape,
    key_prefix,
)
from .timeutil import US_PER_DAY, US_PER_SECOND, format_date, format_timestamp

#: a ``*Key`` field whose name does not lead to an entity by the plural rule
_REF_ALIASES = {
    "po": "purchase-orders",
    "assetDowntime": "assets-downtime",
    "rateBase": "uom",
    "requester": "users",
    "assembly": "materials",
}
_WORDS = (
    "pump", "valve", "bearing", "gasket", "filter", "motor", "sensor", "cable", "bracket",
    "seal", "coupling", "impeller", "compressor", "belt", "nozzle", "relay", "panel", "hose",
)  # fmt: skip
_ADJECTIVES = ("spare", "industrial", "steel", "standard", "annual", "urgent", "north", "main")
_CHOICES = {
    "status": ("open", "active", "pending", "closed", "cancelled"),
    "type": ("standard", "internal", "external", "service"),
    "scope": ("global", "site", "organization"),
    "priority": ("low", "normal", "high"),
    "severity": ("low", "normal", "high", "emergency"),
    "criticality": ("low", "medium", "high", "critical"),
    "category": ("corrective", "preventive", "inspection", "general"),
    "role": ("Mechanic", "Electrician", "Buyer", "Planner"),
    "method": ("ground", "air", "sea", "pickup"),
    "terms": ("NET30", "NET45", "NET60"),
}
_CURRENCIES = ("USD", "EUR", "GBP", "JPY")
_COUNTRIES = ("US", "DE", "GB", "FR", "JP")
_CITIES = ("Springfield", "München", "Leeds", "Lyon", "大阪市")
_FIRST_NAMES = ("Alice", "Bob", "Chen", "Dana", "Émile", "Farah")
_LAST_NAMES = ("Martin", "Okafor", "Wei", "Schmidt", "Durand", "Khan")
_UOMS = ("EA", "KG", "M", "L", "BOX", "HR")
_CODES = ("sku", "upc", "ean", "isbn")
_CAMEL_RE = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


class KeyRefs:
    """Keys of a connection's generated records, picked by the name of a referring field.

    ``vendorKey`` -> ``vendors``, ``userApprovedKey`` -> ``users``, ``fromLocationKey`` ->
    ``locations``, ``parentKey`` -> the record's own entity, ``statusKey`` ->
    ``statuses/<entity>`` where that exists: the whole name in kebab case, then each of its
    words, as is or as a plural (``s``, ``es``, ``y`` -> ``ies``). A name that leads nowhere
    gets a made-up key (``REQUESTER-0042``).

    Args:
        counts: generated records per entity path (every entity of the connection).
    """

    def __init__(self, counts: Mapping[str, int]) -> None:
        self.counts = dict(counts)
        self._targets: dict[tuple[str, str], str | None] = {}

    def target(self, field: str, own_path: str) -> str | None:
        """The entity path a ``*Key``/``*Keys`` field refers to, or ``None``."""
        cached = (field, own_path)
        if cached in self._targets:
            return self._targets[cached]
        base = re.sub(r"Keys?$", "", field)
        found: str | None = None
        if base == "parent":
            found = own_path
        elif base == "status" and f"statuses/{own_path}" in self.counts:
            found = f"statuses/{own_path}"
        elif base in _REF_ALIASES:
            found = _REF_ALIASES[base]
        else:
            words = [w.lower() for w in _CAMEL_RE.findall(base)]
            for stem in ["-".join(words), *words]:
                plurals = (stem, stem + "s", stem + "es", stem[:-1] + "ies")
                found = next((p for p in plurals if p in self.counts), None)
                if found is not None:
                    break
        self._targets[cached] = found
        return found

    def pick(self, rng: random.Random, field: str, own_path: str) -> str | None:
        """A key for ``field`` (``None`` when the entity it names has no records)."""
        path = self.target(field, own_path)
        if path is None:
            base = re.sub(r"Keys?$", "", field) or "ref"
            return f"{base.upper()}-{1 + int(rng.random() * 9999):04d}"
        count = self.counts.get(path, 0)
        if count <= 0:
            return None
        return f"{key_prefix(path)}{1 + int(rng.random() * count):0{key_width(count)}d}"


def empty_record(shape: EntityShape, key: str) -> dict[str, Any]:
    """A record of ``shape`` with every field empty (``None``; lists ``[]``), keyed ``key``.

    The key is kept even when the schema has no ``key`` field (the store needs one); the
    unified rendering leaves it out then.
    """
    record: dict[str, Any] = {
        f.name: [] if f.kind in (KEYS, OBJECT_LIST, SCALAR_LIST) else None for f in shape.fields
    }
    record["key"] = key
    return record


class SchemaRecordFactory:
    """Builds records of one catalogue entity of one connection.

    Args:
        seed: the sandbox seed.
        connection: the connection's name.
        shape: the entity's shape.
        refs: keys of the connection's records, for reference fields.
        layout: the entity's layout (timestamps by position), for :meth:`make`.
    """

    def __init__(
        self,
        seed: int,
        connection: str,
        shape: EntityShape,
        refs: KeyRefs,
        layout: Any = None,
    ) -> None:
        self.seed = seed
        self.connection = connection
        self.shape = shape
        self.refs = refs
        self.layout = layout

    def make(self, entity: str, pos: int) -> dict[str, Any]:
        """The generated record at layout position ``pos`` (:class:`EntityStore` interface)."""
        lay = self.layout
        n = lay.num[pos]
        rng = random.Random(seed_int(self.seed, self.connection, entity, n))
        key = lay.key_of_num(n)
        return self._object(rng, self.shape.fields, key, lay.created[pos], lay.updated[pos], 0)

    def fill(
        self, fields: tuple[FieldShape, ...], key: str, created: int, updated: int
    ) -> dict[str, Any]:
        """Values for ``fields`` of the record ``key`` (for records stored without them)."""
        rng = random.Random(seed_int(self.seed, self.connection, self.shape.path, key, "fill"))
        return self._object(rng, fields, key, created, updated, 0)

    # -- values -------------------------------------------------------------------------------

    def _object(
        self,
        rng: random.Random,
        fields: tuple[FieldShape, ...],
        key: str,
        created: int,
        updated: int,
        depth: int,
    ) -> dict[str, Any]:
        return {f.name: self._value(rng, f, key, created, updated, depth) for f in fields}

    def _value(
        self, rng: random.Random, f: FieldShape, key: str, created: int, updated: int, depth: int
    ) -> Any:
        r = rng.random
        kind, name = f.kind, f.name
        if kind == TIMESTAMP:
            if name == "createdAt":
                return format_timestamp(created)
            if name == "updatedAt":  # nested elements last changed with or before the record
                return format_timestamp(updated if depth == 0 or r() < 0.5 else created)
            if name == "deletedAt" or r() < 0.3:
                return None
            return format_timestamp(created + int(r() * 60 * 86400) * US_PER_SECOND)
        if kind == KEY:
            if name == "key":
                return key
            return None if r() < 0.15 else self.refs.pick(rng, name, self.shape.path)
        if kind == KEYS:
            picked = (self.refs.pick(rng, name, self.shape.path) for _ in range(int(r() * 4)))
            return [k for k in picked if k is not None]
        if kind == DATE:
            return None if r() < 0.15 else format_date(created + int(r() * 90) * US_PER_DAY)
        if kind == BOOL:
            return r() < 0.7
        if kind == DECIMAL:
            return None if r() < 0.1 else self._decimal(rng, name)
        if kind == COORDINATE:
            span = 140 if name.startswith("lat") else 340
            return f"{r() * span - span / 2:.6f}"
        if kind in (COUNT, INTEGER):
            return int(r() * 20)
        if kind == NUMBER:
            return round(r() * 1000, 2)
        # nested shapes end at openapi_schemas.MAX_DEPTH: an object without fields is null
        if kind == OBJECT:
            if not f.fields or r() < 0.1:
                return None
            nested_key = f"{key}-{name[:1].upper()}"
            return self._object(rng, f.fields, nested_key, created, updated, depth + 1)
        if kind == OPEN_OBJECT:  # a schema without properties (Dimension): keys not published
            if r() < 0.3:
                return None
            return {"length": fmt4(int(r() * 5_000_000)), "width": fmt4(int(r() * 5_000_000))}
        if kind == OBJECT_LIST:
            if not f.fields:
                return []
            prefix = f"{key}-{name[:1].upper()}"
            return [
                self._object(rng, f.fields, f"{prefix}{i}", created, updated, depth + 1)
                for i in range(1, 1 + int(r() * 4))
            ]
        if kind == SCALAR_LIST:
            return [f"{name[:3].upper()}-{int(r() * 900) + 100}" for _ in range(int(r() * 4))]
        return self._text(rng, name)

    @staticmethod
    def _decimal(rng: random.Random, name: str) -> str:
        r = rng.random
        lname = name.lower()
        if "quantity" in lname or "level" in lname or "reorder" in lname or "reading" in lname:
            return fmt4((1 + int(r() * 500)) * (10000 if r() < 0.7 else 1000))
        if "rate" in lname or "percentage" in lname:
            return fmt4(int(r() * 250_000))
        return fmt4((100 + int(r() * 5_000_000)) * 100 if r() < 0.8 else 1 + int(r() * 10**9))

    @staticmethod
    def _text(rng: random.Random, name: str) -> str | None:
        """Plausible text for a field, by what its name says."""
        r = rng.random
        lname = name.lower()

        def pick(seq: tuple[str, ...]) -> str:
            return seq[int(r() * len(seq))]

        if "email" in lname:
            return f"{pick(_FIRST_NAMES).lower()}@example.com"
        if "phone" in lname:
            return f"+1-555-{int(r() * 9000) + 1000}"
        if lname == "contenttype":
            return "application/pdf" if r() < 0.7 else "image/jpeg"
        if "url" in lname:
            return f"https://files.example.com/{int(r() * 10**6)}.pdf"
        if "currency" in lname:
            return pick(_CURRENCIES)
        if "country" in lname:
            return pick(_COUNTRIES)
        if "city" in lname:
            return pick(_CITIES)
        if lname == "uom" or "uomname" in lname:
            return pick(_UOMS)
        if lname in ("firstname", "middlename", "lastname", "addressee", "contactperson"):
            return pick(_FIRST_NAMES if lname != "lastname" else _LAST_NAMES)
        for word, choices in _CHOICES.items():
            if word in lname:
                return pick(choices)
        if "code" in lname or "number" in lname or lname.endswith("no") or lname in _CODES:
            return str(10_000_000 + int(r() * 90_000_000))
        if any(w in lname for w in ("description", "notes", "note", "instructions", "remarks")):
            if r() < 0.4:
                return None
            return " ".join(pick(_WORDS) for _ in range(2 + int(r() * 6))).capitalize()
        if "name" in lname or "title" in lname:
            return f"{pick(_ADJECTIVES).capitalize()} {pick(_WORDS)} {int(r() * 900) + 100}"
        return None if r() < 0.1 else f"{pick(_ADJECTIVES)} {pick(_WORDS)}"


__all__ = ["KeyRefs", "SchemaRecordFactory", "empty_record"]
