"""Configuration of a sandbox: its connections and how their data is generated."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from .openapi_schemas import V1_KEY_PREFIXES, load_catalogue

CUSTOM_FIELD_TYPES = ("string", "integer", "number", "boolean")
#: product families of the unified dialect (``/api/erp/...``, ``/api/eam/...``)
FAMILIES = ("erp", "eam")
#: account-level status of a connection (``GET /api/system/connections``), apart from its sync
CONNECTION_STATUSES = ("active", "inactive", "reauthorization_required")
#: forms of ``sync_updated_at`` in ``GET /api/integrations/current``
SYNC_TIME_FORMATS = ("iso", "laravel")
#: which dialects a sandbox serves
DIALECTS = ("v1", "unified", "both")
#: forms of ``expires_in`` in token responses (``mixed`` cycles through the other forms)
EXPIRES_IN_FORMATS = ("seconds", "unix", "string", "mixed")

# words in a system's name that make it an EAM/CMMS (the other systems are ERPs)
_EAM_WORDS = frozenset(
    {"maximo", "ifs", "eam", "cmms", "fiix", "upkeep", "limble", "emaint", "mp2", "hxgn"}
)
# provider slugs by a word of the system's name, first match wins ("Oracle NetSuite" -> netsuite)
_PROVIDER_WORDS = (
    ("netsuite", "netsuite"),
    ("sap", "sap"),
    ("maximo", "maximo"),
    ("ifs", "ifs"),
    ("dynamics", "dynamics365"),
    ("odoo", "odoo"),
    ("oracle", "oracle"),
)


def _words(system: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", system.lower())


def default_family(system: str) -> str:
    """The product family of a connected system: ``"eam"`` for Maximo/IFS/EAM/CMMS-like names,
    else ``"erp"``."""
    return "eam" if _EAM_WORDS.intersection(_words(system)) else "erp"


def default_provider(system: str) -> str:
    """The ``provider`` slug of a connected system (``"SAP S/4HANA"`` -> ``"sap"``)."""
    words = _words(system)
    for word, slug in _PROVIDER_WORDS:
        if word in words:
            return slug
    return "".join(words) or "unknown"


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
        family: product family served in the unified dialect, ``"erp"`` or ``"eam"``;
            ``None`` derives it from ``system`` (see :func:`default_family`).
        key: the connection's key in the account API (``GET /api/system/connections``);
            ``None``: ``f"conn_{name}"``.
        display_name: the connection's ``name`` in the account API and ``company_name`` in
            ``/api/integrations/current``; ``None``: ``name`` capitalized.
        email: contact e-mail; ``None``: ``f"ops@{name}.example"``.
        provider: provider slug of ``/api/integrations/current``; ``None`` derives it from
            ``system``.
        tags: tags listed by the account API.
        connection_status: ``"active"``, ``"inactive"`` or ``"reauthorization_required"``:
            the account-level status, apart from the sync status; only active connections
            get minted tokens.
        money_as_numbers: the unified dialect sends money and quantities as JSON numbers
            (same digits as the strings, e.g. ``1234.5000``) instead of JSON strings.
        sync_updated_at_format: ``"iso"`` (``2024-06-01T10:15:00Z``) or ``"laravel"``
            (``2024-06-01 10:15:00``, UTC, whole seconds) for ``sync_updated_at``.
        extra_count: generated records of every catalogue entity beyond the six (invoices,
            receipts, ``statuses/purchase-orders``...; the unified dialect only).
        extra_counts: per catalogue entity path, a count instead of ``extra_count``.
        raw_table_rows: rows of each raw table (``/api/raw/tables``).
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
    family: str | None = None
    key: str | None = None
    display_name: str | None = None
    email: str | None = None
    provider: str | None = None
    tags: list[str] = field(default_factory=list)
    connection_status: str = "active"
    money_as_numbers: bool = False
    sync_updated_at_format: str = "iso"
    extra_count: int = 5
    extra_counts: dict[str, int] = field(default_factory=dict)
    raw_table_rows: int = 25

    def __post_init__(self) -> None:
        self.lines_per_po = (int(self.lines_per_po[0]), int(self.lines_per_po[1]))
        if self.family is None:
            self.family = default_family(self.system)
        if self.key is None:
            self.key = f"conn_{self.name}"
        if self.display_name is None:
            self.display_name = self.name[:1].upper() + self.name[1:]
        if self.email is None:
            self.email = f"ops@{self.name}.example"
        if self.provider is None:
            self.provider = default_provider(self.system)
        self.tags = list(self.tags)
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        if not self.key or "/" in self.key:
            raise ValueError(f"invalid connection key {self.key!r}")
        if not all(isinstance(t, str) for t in self.tags):
            raise ValueError("tags must be strings")
        if self.connection_status not in CONNECTION_STATUSES:
            raise ValueError(f"connection_status must be one of {CONNECTION_STATUSES}")
        if self.sync_updated_at_format not in SYNC_TIME_FORMATS:
            raise ValueError(f"sync_updated_at_format must be one of {SYNC_TIME_FORMATS}")
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
        self.extra_counts = dict(self.extra_counts)
        if self.extra_count < 0 or any(n < 0 for n in self.extra_counts.values()):
            raise ValueError("entity counts must be >= 0")
        if self.raw_table_rows < 0:
            raise ValueError("entity counts must be >= 0")
        if self.extra_counts:
            _check_extra_paths(self.extra_counts)
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

    def count_of(self, path: str) -> int:
        """Generated records of any entity path (one of the six or a catalogue entity)."""
        six = self.counts()
        if path in six:
            return six[path]
        return self.extra_counts.get(path, self.extra_count)


def _check_extra_paths(extra_counts: dict[str, int]) -> None:
    """``extra_counts`` names catalogue entities beyond the six (reads the OpenAPI files)."""
    for path in extra_counts:
        if path in V1_KEY_PREFIXES:
            raise ValueError(
                f"extra_counts: {path!r} is one of the six entities; set "
                f"{path.replace('-', '_')}=... instead"
            )
        if path not in load_catalogue().entities:
            raise ValueError(f"extra_counts: unknown entity path {path!r}")


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
        dialect: ``"v1"``, ``"unified"`` or ``"both"``: which API dialects are served; the
            other dialect's paths answer 404.
        unified_key_queries: the unified dialect filters and sorts on ``key`` (besides
            ``updatedAt``/``createdAt``); ``False`` emulates a server that only filters and
            sorts on timestamps (``key`` gives 422).
        client_id: account client id for ``POST /link/token``.
        client_secret: account client secret for ``POST /link/token``.
        account_token_ttl_seconds: lifetime of account tokens (store clock).
        connection_token_ttl_seconds: lifetime of minted connection tokens (store clock).
        expires_in_format: form of ``expires_in`` in token responses: ``"seconds"`` (a number
            of seconds), ``"unix"`` (a Unix time, store clock), ``"string"`` (seconds as a
            JSON string) or ``"mixed"`` (cycles seconds, unix, seconds as string, unix as
            string, one step per token issued).
        login_url: where the unified dialect redirects (302) a request with a bad token that
            does not accept JSON (Laravel's default); on another host on purpose.
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
    dialect: str = "both"
    unified_key_queries: bool = True
    client_id: str = "mk_client_demo"
    client_secret: str = "mk_secret_demo"
    account_token_ttl_seconds: float = 3600.0
    connection_token_ttl_seconds: float = 300.0
    expires_in_format: str = "seconds"
    login_url: str = "https://login.makini.example/login"

    def __post_init__(self) -> None:
        names = [c.name for c in self.connections]
        if len(set(names)) != len(names):
            raise ValueError("connection names must be unique")
        keys = [c.key for c in self.connections]
        if len(set(keys)) != len(keys):
            raise ValueError("connection keys must be unique")
        if self.dialect not in DIALECTS:
            raise ValueError(f"dialect must be one of {DIALECTS}, got {self.dialect!r}")
        if self.expires_in_format not in EXPIRES_IN_FORMATS:
            raise ValueError(f"expires_in_format must be one of {EXPIRES_IN_FORMATS}")
        if self.account_token_ttl_seconds <= 0 or self.connection_token_ttl_seconds <= 0:
            raise ValueError("token lifetimes must be > 0")
        if not self.client_id or not self.client_secret:
            raise ValueError("client_id and client_secret must be non-empty")
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
