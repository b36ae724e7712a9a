"""The Makini entity catalogue: every published list endpoint, as typed data.

`catalogue.json` (next to this module) is generated from Makini's OpenAPI files by
`scripts/generate_catalogue.py`, whose docstring holds the rules; do not edit it by hand. This
module only reads it: `load_catalogue()` parses it once, on first use.

    >>> from makini_source.catalogue import select
    >>> [entity.table for entity in select("purchase_orders, vendors")]
    ['purchase_orders', 'vendors']
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any, Literal, cast

FieldType = Literal[
    "text", "bigint", "double", "bool", "decimal", "timestamp", "date", "object", "json"
]
Family = Literal["erp", "eam"]
FAMILIES: tuple[Family, ...] = ("erp", "eam")
#: the column that numbers the elements of a child list without keys (1-based)
POSITION_COLUMN = "list_position"


@dataclass(frozen=True)
class Field:
    """One field of a record.

    Attributes:
        name: The field's name in the API (camelCase).
        type: Its destination type. `decimal` is DECIMAL(38, 9); `timestamp` is UTC; `date`
            has date-only semantics; `object` is flattened into `<name>__<sub>` columns;
            `json` lands as JSON text.
        fields: An object's fields (empty for an open object).
        open: An object whose keys are not known in advance (`customFields`): its columns
            come from the keys that arrive.
        v1_only: Sent by the v1 dialect only (the unified schema lacks it).
    """

    name: str
    type: FieldType
    fields: tuple[Field, ...] = ()
    open: bool = False
    v1_only: bool = False


@dataclass(frozen=True)
class Child:
    """A nested list of objects that lands in a table of its own.

    Attributes:
        field: The list's field on the parent record (`lineItems`).
        table: The child table.
        parent_key_column: Column holding the parent's `key`.
        parent_version_column: Column holding the parent's `updatedAt`, or None when the
            parent has none.
        identity: `key` when a child is identified by its own `key` within its parent,
            `position` when by its 1-based place in the list (`POSITION_COLUMN`).
        schema: The OpenAPI schema of one element.
        fields: The fields of one element.
        v1_only: Sent by the v1 dialect only.
    """

    field: str
    table: str
    parent_key_column: str
    parent_version_column: str | None
    identity: Literal["key", "position"]
    schema: str
    fields: tuple[Field, ...]
    v1_only: bool = False

    @property
    def identity_column(self) -> str:
        """The column that tells two children of one parent apart."""
        return "key" if self.identity == "key" else POSITION_COLUMN


@dataclass(frozen=True)
class Entity:
    """One list endpoint of Makini and the tables it lands in.

    Attributes:
        name: Name used in configuration and errors (`purchase_orders`).
        path: Path after `/api/{family}/` (and after `/api/v1/` for v1 entities).
        families: The unified families that serve it.
        schema: The OpenAPI schema of its records in the unified dialect.
        table: Destination table.
        default: One of the entities read when none are named.
        v1_max_page_size: Largest `limit` of the v1 dialect; None when v1 lacks the entity.
        v1_schema: The schema the v1 contract names for it; None when v1 lacks it.
        cursor_field: The field incremental loads follow (`updatedAt`, or `createdAt` when
            that is its only time); None: the whole table is replaced each run.
        deleted_field: The soft-delete field of the unified shape, if any.
        primary_key: The field identifying a record within a connection; None if there is none.
        fields: Its fields, in column order (children excluded).
        children: Its nested lists of objects.
    """

    name: str
    path: str
    families: tuple[Family, ...]
    schema: str
    table: str
    default: bool
    v1_max_page_size: int | None
    v1_schema: str | None
    cursor_field: str | None
    deleted_field: str | None
    primary_key: str | None
    fields: tuple[Field, ...]
    children: tuple[Child, ...]

    @property
    def tables(self) -> tuple[str, ...]:
        """Its table, then its child tables."""
        return (self.table, *(child.table for child in self.children))

    @property
    def in_v1(self) -> bool:
        """Whether the v1 dialect serves it (otherwise it is unified only)."""
        return self.v1_max_page_size is not None

    def field(self, name: str) -> Field:
        """The field called `name`.

        Raises:
            KeyError: The entity has no such field.
        """
        for candidate in self.fields:
            if candidate.name == name:
                return candidate
        raise KeyError(f"entity {self.name} has no field {name!r}")

    def child(self, field: str) -> Child:
        """The child read from the list field `field`.

        Raises:
            KeyError: The entity has no such child.
        """
        for candidate in self.children:
            if candidate.field == field:
                return candidate
        raise KeyError(f"entity {self.name} has no child list {field!r}")


@cache
def load_catalogue() -> Mapping[str, Entity]:
    """Every entity of the catalogue by name, sorted by name (parsed once, then cached).

    Returns:
        A read-only mapping; the same object on every call.
    """
    text = resources.files(__package__).joinpath("catalogue.json").read_text(encoding="utf-8")
    document = json.loads(text)
    entities = (_entity(raw) for raw in document["entities"])
    # read-only: every caller shares this one object
    return MappingProxyType({entity.name: entity for entity in entities})


def default_entities() -> list[Entity]:
    """The entities read when none are named: the six of the v1 contract."""
    return [entity for entity in load_catalogue().values() if entity.default]


def entities_of_family(family: str) -> list[Entity]:
    """The entities a family serves.

    Raises:
        ValueError: `family` is not `erp` or `eam`.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}: expected one of {', '.join(FAMILIES)}")
    return [entity for entity in load_catalogue().values() if family in entity.families]


def select(spec: str | Iterable[str]) -> list[Entity]:
    """The entities a selection names, in catalogue order, each once.

    Args:
        spec: Comma-separated text or a list of items; each item is `all`, `default`,
            `erp:*`, `eam:*`, an entity name (`purchase_orders`) or a path
            (`purchase-orders`, `statuses/purchase-orders`).

    Returns:
        The entities in the order the selection names them (`all`, `default` and families
        in catalogue order).

    Raises:
        ValueError: An item names no entity (the message lists close matches), or the
            selection is empty.
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    catalogue = load_catalogue()
    by_path = {entity.path: entity for entity in catalogue.values()}
    chosen: dict[str, None] = {}  # an ordered set
    for item in (item.strip() for item in items):
        if not item:
            continue
        if item == "all":
            names = list(catalogue)
        elif item == "default":
            names = [entity.name for entity in default_entities()]
        elif item.endswith(":*"):
            names = [entity.name for entity in entities_of_family(item[:-2])]
        elif item in catalogue:
            names = [item]
        elif item in by_path:
            names = [by_path[item].name]
        else:
            raise ValueError(_unknown(item, [*catalogue, *by_path]))
        chosen.update(dict.fromkeys(names))
    if not chosen:
        raise ValueError(f"the entity selection {spec!r} names no entity")
    return [catalogue[name] for name in chosen]


def _unknown(item: str, known: list[str]) -> str:
    close = difflib.get_close_matches(item, sorted(set(known)), n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return (
        f"unknown entity {item!r}{hint} (names, paths, 'all', 'default', 'erp:*' and "
        "'eam:*' are accepted)"
    )


def _field(raw: Mapping[str, Any]) -> Field:
    return Field(
        name=raw["name"],
        type=cast(FieldType, raw["type"]),
        fields=tuple(_field(sub) for sub in raw.get("fields", ())),
        open=raw.get("open", False),
        v1_only=raw.get("v1_only", False),
    )


def _child(raw: Mapping[str, Any]) -> Child:
    return Child(
        field=raw["field"],
        table=raw["table"],
        parent_key_column=raw["parent_key_column"],
        parent_version_column=raw["parent_version_column"],
        identity=raw["identity"],
        schema=raw["schema"],
        fields=tuple(_field(sub) for sub in raw["fields"]),
        v1_only=raw.get("v1_only", False),
    )


def _entity(raw: Mapping[str, Any]) -> Entity:
    v1 = raw["v1"] or {}
    return Entity(
        name=raw["name"],
        path=raw["path"],
        families=tuple(raw["families"]),
        schema=raw["schema"],
        table=raw["table"],
        default=raw["default"],
        v1_max_page_size=v1.get("max_page_size"),
        v1_schema=v1.get("schema"),
        cursor_field=raw["cursor_field"],
        deleted_field=raw["deleted_field"],
        primary_key=raw["primary_key"],
        fields=tuple(_field(sub) for sub in raw["fields"]),
        children=tuple(_child(sub) for sub in raw["children"]),
    )
