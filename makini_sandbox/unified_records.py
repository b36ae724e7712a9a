"""How the unified dialect serves each entity: record shape, query fields, deletes.

Every entity of the unified dialect is one of Makini's list endpoints, described by its
OpenAPI schema (:mod:`makini_sandbox.openapi_schemas`). :class:`UnifiedEntity` derives from
that schema what the dialect needs:

* the record as sent: stored records are reshaped at response time (:meth:`render`). The six
  v1 entities are stored in their v1 shape: fields the unified schema lacks are dropped
  (purchase orders' ``createdAt``/``deletedAt``, materials' ``inventories``), fields only the
  unified schema has are generated per record (materials' ``siteKeys``, ``drawings``...).
  Custom fields (v1's ``customFields`` object) become top-level keys after the schema's
  fields. Catalogue entities are stored in their unified shape already.
* the fields listings filter and sort on: ``key``, ``updatedAt``, ``createdAt``, where the
  schema has them.
* deletes: an entity whose schema has ``deletedAt`` soft-deletes (the record stays listed
  with ``deletedAt`` set); one without it (purchase orders, uom, receipts...) has nowhere
  to say so, and a deleted record vanishes.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

import orjson

from .generator import DECIMAL_FIELDS, FIELDS
from .openapi_schemas import EntityShape, FieldShape, load_catalogue
from .timeutil import parse_timestamp

#: fields the unified dialect filters and sorts on, where an entity has them
QUERY_FIELDS = ("key", "updatedAt", "createdAt")
#: money, quantity and measure fields of the six entities' v1 records (nested ones included)
#: sent as JSON numbers when a connection wants that; every schema's decimals are added
NUMERIC_FIELDS = DECIMAL_FIELDS | {
    "uomQuantity",
    "minQuantity",
    "maxQuantity",
    "length",
    "width",
    "height",
    "rate",
    "cost",
}

#: values of schema fields a stored record lacks: (fields, key, createdAt µs, updatedAt µs)
Filler = Callable[[tuple[FieldShape, ...], str, int, int], dict]


def _numeric_pattern(names: frozenset[str]) -> re.Pattern[bytes]:
    """Matches ``"name":"1234.5000"`` for the given field names."""
    alternatives = b"|".join(re.escape(n).encode() for n in sorted(names))
    return re.compile(rb'"(' + alternatives + rb')":"(-?[0-9]+(?:\.[0-9]+)?)"')


class UnifiedEntity:
    """One entity as the unified dialect serves it.

    Args:
        shape: the entity's schema shape.
    """

    def __init__(self, shape: EntityShape) -> None:
        self.shape = shape
        self.path = shape.path
        names = frozenset(shape.names)
        stored = FIELDS.get(shape.path)  # the six are stored in their v1 shape
        self.drop: frozenset[str]
        if stored is None:
            # key-less schemas (work-orders/custom-fields): the key is the store's only
            self.drop = frozenset() if "key" in names else frozenset({"key"})
            self.fill: tuple[FieldShape, ...] = ()
        else:
            self.drop = frozenset(stored) - names - {"customFields"}
            self.fill = tuple(f for f in shape.fields if f.name not in stored)
        self.soft_delete = "deletedAt" in names
        self.numeric = _numeric_pattern(NUMERIC_FIELDS | shape.decimal_names)

    @property
    def families(self) -> tuple[str, ...]:
        """The families that publish this entity."""
        return self.shape.families

    def query_fields(self, key_queries: bool) -> tuple[str, ...]:
        """The fields listings may filter and sort on (``key`` only if ``key_queries``)."""
        return tuple(f for f in QUERY_FIELDS if self.shape.has(f) and (key_queries or f != "key"))

    def render(self, data: bytes, money_as_numbers: bool, filler: Filler | None) -> bytes:
        """A stored record (JSON bytes) as the unified dialect sends it.

        Args:
            data: the stored record.
            money_as_numbers: send money and quantities as JSON numbers written with the
                string's exact digits (``"1234.5000"`` -> ``1234.5000``); a value that is not
                a plain decimal stays a string.
            filler: values of schema fields the stored record lacks (needed when
                :attr:`fill` is not empty).
        """
        record = orjson.loads(data)
        custom = record.pop("customFields", None) or {}
        for name in self.drop:
            record.pop(name, None)
        if self.fill and filler is not None:
            missing = tuple(f for f in self.fill if f.name not in record)
            if missing:
                created = _time_of(record.get("createdAt"))
                updated = _time_of(record.get("updatedAt"), created)
                record.update(filler(missing, str(record.get("key")), created, updated))
            order = self.shape.names
            ordered = {name: record.pop(name) for name in order if name in record}
            ordered.update(record)
            record = ordered
        if isinstance(custom, dict):
            for name, value in custom.items():
                record.setdefault(name, value)
        out = orjson.dumps(record)
        return self.numbers(out) if money_as_numbers else out

    def numbers(self, data: bytes) -> bytes:
        """``data`` with this entity's money and quantities as JSON numbers."""
        return self.numeric.sub(rb'"\1":\2', data)


def _time_of(value: object, default: int = 0) -> int:
    """Epoch µs of a record's timestamp field, or ``default``."""
    if isinstance(value, str):
        try:
            return parse_timestamp(value)
        except ValueError:
            pass
    return default


@functools.cache
def unified_entity(path: str) -> UnifiedEntity | None:
    """The unified view of entity ``path`` (``None``: no such list endpoint)."""
    shape = load_catalogue().entities.get(path)
    return None if shape is None else UnifiedEntity(shape)


def family_paths(family: str) -> frozenset[str]:
    """Entity paths a family publishes."""
    return load_catalogue().family_paths(family)


__all__ = ["NUMERIC_FIELDS", "QUERY_FIELDS", "UnifiedEntity", "family_paths", "unified_entity"]
