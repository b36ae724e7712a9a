"""Configuration of a sandbox: its connections and how their data is generated."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

CUSTOM_FIELD_TYPES = ("string", "integer", "number", "boolean")


@dataclass
class ConnectionConfig:
    """One connection (one customer's connected system) of the sandbox.

    Attributes:
        name: short name, e.g. ``"acme"``; the sync-status ``connection_id`` is ``f"conn_{name}"``.
        token: bearer token of this connection.
        system: name of the connected system reported by sync-status.
        purchase_orders: number of generated purchase orders.
        vendors: number of generated vendors.
        materials: number of generated materials.
        sites: number of generated sites.
        assets: number of generated assets.
        work_orders: number of generated work orders.
        lines_per_po: (min, max) line items per generated purchase order.
        custom_fields: custom field name -> ``"string"|"integer"|"number"|"boolean"``;
            ``None`` generates a set from the seed and the connection name.
        rate_limit: requests per window; 0 means unlimited (rate-limit headers are still sent).
        rate_window_seconds: length of the rate-limit window.
        retry_after_format: ``"seconds"`` or ``"http-date"`` for ``Retry-After`` on 429.
    """

    name: str
    token: str
    system: str = "SAP S/4HANA"
    purchase_orders: int = 50
    vendors: int = 20
    materials: int = 30
    sites: int = 5
    assets: int = 20
    work_orders: int = 30
    lines_per_po: tuple[int, int] = (1, 9)
    custom_fields: dict[str, str] | None = None
    rate_limit: int = 0
    rate_window_seconds: float = 60.0
    retry_after_format: str = "seconds"

    def __post_init__(self) -> None:
        self.lines_per_po = (int(self.lines_per_po[0]), int(self.lines_per_po[1]))
        if not self.name or "/" in self.name:
            raise ValueError(f"invalid connection name {self.name!r}")
        if not self.token:
            raise ValueError(f"connection {self.name!r} needs a token")
        lo, hi = self.lines_per_po
        if lo < 0 or hi < lo:
            raise ValueError(f"invalid lines_per_po {self.lines_per_po!r}")
        for entity_count in (
            self.purchase_orders,
            self.vendors,
            self.materials,
            self.sites,
            self.assets,
            self.work_orders,
        ):
            if entity_count < 0:
                raise ValueError("entity counts must be >= 0")
        if self.custom_fields is not None:
            for cf_name, cf_type in self.custom_fields.items():
                if cf_type not in CUSTOM_FIELD_TYPES:
                    raise ValueError(f"custom field {cf_name!r}: unknown type {cf_type!r}")
        if self.retry_after_format not in ("seconds", "http-date"):
            raise ValueError("retry_after_format must be 'seconds' or 'http-date'")
        if self.rate_limit < 0 or self.rate_window_seconds <= 0:
            raise ValueError("invalid rate limit")

    def counts(self) -> dict[str, int]:
        """Generated record counts by entity path (``purchase-orders``...)."""
        return {
            "purchase-orders": self.purchase_orders,
            "vendors": self.vendors,
            "materials": self.materials,
            "sites": self.sites,
            "assets": self.assets,
            "work-orders": self.work_orders,
        }


def default_connections() -> list[ConnectionConfig]:
    """The three default connections.

    They use different systems and different custom fields (names with spaces, camelCase,
    punctuation; ``"Cost Center"`` is a string at acme but an integer at initech), and their
    record keys collide (``PO-000001`` exists in each).
    """
    return [
        ConnectionConfig(
            name="acme",
            token="mk_test_acme",
            system="SAP S/4HANA",
            custom_fields={
                "Cost Center": "string",
                "projectCode": "string",
                "Priority Level": "integer",
                "approved": "boolean",
            },
        ),
        ConnectionConfig(
            name="globex",
            token="mk_test_globex",
            system="Oracle NetSuite",
            custom_fields={
                "cost_center": "string",
                "Budget Amount": "number",
                "isUrgent": "boolean",
                "Region": "string",
            },
        ),
        ConnectionConfig(
            name="initech",
            token="mk_test_initech",
            system="IBM Maximo",
            custom_fields={
                "Cost Center": "integer",
                "TPS Report #": "string",
                "weight (kg)": "number",
                "flagged": "boolean",
            },
        ),
    ]


@dataclass
class SandboxConfig:
    """Configuration of a whole sandbox.

    Attributes:
        seed: seed of all generated data (same seed and config -> same records, byte for byte).
        connections: the connections; default: ``acme``, ``globex``, ``initech``.
        tie_group: generated records share ``updatedAt`` in groups of about this size.
        page_delay_seconds: sleep before answering each list request.
        big_tie_group: size of one extra-large group of records sharing one ``updatedAt``
            (larger than any page), generated in entities with at least 4x that many records;
            0 disables it.
        cursor_ttl_seconds: lifetime of a cursor (the contract promises at least one hour).
        cache_mb: upper bound for the cache of serialized generated records.
        history_start: first day of generated ``createdAt`` values.
        history_end: generated ``updatedAt`` values are before this day.
    """

    seed: int = 42
    connections: list[ConnectionConfig] = field(default_factory=default_connections)
    tie_group: int = 3
    page_delay_seconds: float = 0.0
    big_tie_group: int = 250
    cursor_ttl_seconds: float = 3600.0
    cache_mb: int = 2048
    history_start: str = "2023-01-01"
    history_end: str = "2025-06-01"

    def __post_init__(self) -> None:
        names = [c.name for c in self.connections]
        if len(set(names)) != len(names):
            raise ValueError("connection names must be unique")
        tokens = [c.token for c in self.connections]
        if len(set(tokens)) != len(tokens):
            raise ValueError("connection tokens must be unique")
        if self.tie_group < 1:
            raise ValueError("tie_group must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict (the body ``POST /_admin/reset`` accepts)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SandboxConfig:
        """Build a config from a JSON-like dict; missing keys take their defaults.

        Raises:
            ValueError: unknown keys or invalid values.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        kwargs = dict(data)
        if "connections" in kwargs:
            kwargs["connections"] = [
                c if isinstance(c, ConnectionConfig) else connection_from_dict(c)
                for c in kwargs["connections"]
            ]
        return cls(**kwargs)


def connection_from_dict(data: dict[str, Any]) -> ConnectionConfig:
    """Build a :class:`ConnectionConfig` from a JSON-like dict.

    Raises:
        ValueError: unknown keys or invalid values.
    """
    known = {f.name for f in dataclasses.fields(ConnectionConfig)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown connection keys: {sorted(unknown)}")
    try:
        return ConnectionConfig(**data)
    except TypeError as exc:
        raise ValueError(str(exc)) from exc
