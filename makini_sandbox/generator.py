"""Deterministic, lazily generated sandbox data.

Two parts:

* :func:`build_layout` computes, for one entity of one connection, every record's
  ``createdAt`` and ``updatedAt`` and the record order by (``updatedAt``, ``key``). It is
  cheap (a few integer arrays; about 0.1 s per 100,000 records) and done up front.
* :class:`RecordFactory` builds a record body on demand from (seed, connection, entity,
  record number) and the layout's timestamps. The same inputs always give the same body.

Keys are ``PREFIX-NNNNNN`` (``PO-000001``, ``V-000001``...), zero-padded to a fixed width per
entity, so their string order equals their number order and keys collide across connections.
"""

from __future__ import annotations

import hashlib
import random
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from .config import ConnectionConfig
from .openapi_schemas import V1_KEY_PREFIXES
from .timeutil import US_PER_DAY, US_PER_SECOND, format_date, format_timestamp

ENTITIES: tuple[str, ...] = (
    "purchase-orders",
    "vendors",
    "materials",
    "sites",
    "assets",
    "work-orders",
)

#: maximum ``limit`` per entity path
MAX_LIMIT: dict[str, int] = {
    "purchase-orders": 200,
    "vendors": 500,
    "materials": 500,
    "sites": 500,
    "assets": 250,
    "work-orders": 250,
}

#: key prefixes of the six entities (``PO-000001``...)
KEY_PREFIX: dict[str, str] = V1_KEY_PREFIXES

ADDRESS_FIELDS = (
    "country",
    "addressLines",
    "addressee",
    "state",
    "city",
    "postCode",
    "phone",
    "email",
)

#: line item fields in contract order
LINE_FIELDS: tuple[str, ...] = (
    "key",
    "lineNo",
    "code",
    "type",
    "name",
    "description",
    "lineRef",
    "materialKey",
    "productKey",
    "assetKey",
    "accountKey",
    "vendorKey",
    "locationKey",
    "storeroomKey",
    "statusKey",
    "quantity",
    "receivedQuantity",
    "uomKey",
    "currencyKey",
    "price",
    "discount",
    "lineTaxValue",
    "lineTotalValue",
    "notes",
    "deliveryAt",
    "dueAt",
    "createdAt",
    "updatedAt",
    "deletedAt",
)

#: record fields per entity, in output order; list-valued fields default to ``[]``
FIELDS: dict[str, tuple[str, ...]] = {
    "purchase-orders": (
        "key",
        "orderNo",
        "title",
        "description",
        "statusKey",
        "siteKey",
        "organizationKey",
        "vendorKey",
        "locationKey",
        "currencyKey",
        "orderDate",
        "dueAt",
        "approvedAt",
        "completedAt",
        "shipmentDate",
        "shippingMethod",
        "terms",
        "notes",
        "shipmentAddress",
        "billingAddress",
        "deliveryAddress",
        "totalNetValue",
        "totalGrossValue",
        "userRequestedKey",
        "userApprovedKey",
        "createdAt",
        "updatedAt",
        "deletedAt",
        "customFields",
        "lineItems",
    ),
    "vendors": (
        "key",
        "name",
        "code",
        "companyKey",
        "organizationKey",
        "createdAt",
        "updatedAt",
        "deletedAt",
        "customFields",
    ),
    "materials": (
        "key",
        "organizationKey",
        "parentKeys",
        "assetKeys",
        "code",
        "isAssembly",
        "partNumber",
        "name",
        "description",
        "notes",
        "criticality",
        "isActive",
        "manufacturerName",
        "uomKey",
        "supplyOptions",
        "priceLevels",
        "inventories",
        "dimensions",
        "createdAt",
        "updatedAt",
        "deletedAt",
        "customFields",
    ),
    "sites": (
        "key",
        "organizationKey",
        "name",
        "code",
        "description",
        "contact",
        "customerKey",
        "lat",
        "lng",
        "address",
        "billingAddress",
        "properties",
        "notes",
        "createdAt",
        "updatedAt",
        "deletedAt",
        "customFields",
    ),
    "assets": (
        "key",
        "siteKey",
        "parentKey",
        "vendorKey",
        "teamKey",
        "documents",
        "locationKey",
        "customerKey",
        "accountKeys",
        "name",
        "description",
        "makeCompanyKey",
        "assetTemplateKey",
        "isPhysical",
        "notes",
        "categoryName",
        "criticality",
        "isActive",
        "makeName",
        "modelName",
        "serialNumber",
        "activatedAt",
        "deactivatedAt",
        "createdAt",
        "updatedAt",
        "deletedAt",
        "customFields",
    ),
    "work-orders": (
        "key",
        "parentKey",
        "locationKey",
        "siteKey",
        "assetKey",
        "accountKey",
        "title",
        "serviceRequestKey",
        "code",
        "pmKey",
        "teamKey",
        "laborAssignedKey",
        "userApprovedKey",
        "assetDowntimeKey",
        "organizationKey",
        "instructions",
        "status",
        "statusKey",
        "severity",
        "estimatedTime",
        "roleName",
        "categoryName",
        "storeroomKey",
        "notes",
        "approvedAt",
        "dueAt",
        "scheduledAt",
        "actualTime",
        "completedAt",
        "completionRemarks",
        "tasks",
        "documents",
        "resources",
        "materialCount",
        "createdAt",
        "updatedAt",
        "deletedAt",
        "customFields",
    ),
}

LIST_FIELDS = frozenset(
    {
        "lineItems",
        "parentKeys",
        "assetKeys",
        "supplyOptions",
        "priceLevels",
        "inventories",
        "documents",
        "tasks",
        "resources",
    }
)

#: fields holding exact decimals as strings, on records and line items
DECIMAL_FIELDS = frozenset(
    {
        "totalNetValue",
        "totalGrossValue",
        "quantity",
        "receivedQuantity",
        "price",
        "discount",
        "lineTaxValue",
        "lineTotalValue",
    }
)

_CUSTOM_FIELD_POOL: tuple[tuple[str, str], ...] = (
    ("Cost Center", "string"),
    ("projectCode", "string"),
    ("Budget Code", "string"),
    ("region", "string"),
    ("Approval Level", "integer"),
    ("isCapex", "boolean"),
    ("Plant #", "string"),
    ("contractRef", "string"),
    ("Risk Score", "number"),
    ("needsReview", "boolean"),
    ("Headcount", "integer"),
    ("Exchange Rate", "number"),
)

_WORDS = (
    "pump", "valve", "bearing", "gasket", "filter", "motor", "sensor", "cable", "bracket",
    "seal", "coupling", "impeller", "compressor", "belt", "nozzle", "relay", "fuse", "panel",
    "hose", "clamp", "flange", "gear", "shaft", "spring", "housing",
)  # fmt: skip
_ADJ = (
    "spare", "industrial", "steel", "replacement", "heavy-duty", "standard", "custom",
    "annual", "urgent",
)  # fmt: skip
_COUNTRIES: tuple[tuple[str, tuple[tuple[str, str, str], ...]], ...] = (
    ("US", (("Springfield", "IL", "62701"), ("Austin", "TX", "73301"), ("Denver", "CO", "80202"))),
    ("DE", (("München", "BY", "80331"), ("Köln", "NW", "50667"))),
    ("GB", (("Manchester", "ENG", "M1 1AE"), ("Leeds", "ENG", "LS1 4AP"))),
    ("FR", (("Lyon", "ARA", "69001"),)),
    ("JP", (("大阪市", "Osaka", "530-0001"),)),
)
_STREETS = ("Main St", "Industrial Way", "Hafenstraße", "Rue de la Paix", "Harbour Rd", "Elm Ave")
_NAMES = ("Alice Martin", "Bob Okafor", "Chen Wei", "Dana Schmidt", "Émile Durand", "Farah Khan")
_CURRENCIES = ("USD", "EUR", "GBP", "JPY")
_PO_STATUS = ("draft", "approved", "sent", "partially_received", "received", "closed", "cancelled")
_SHIPPING = ("ground", "air", "sea", "pickup", None)
_TERMS = ("NET30", "NET45", "NET60", "2/10 NET30", None)
_UOMS = ("EA", "KG", "M", "L", "BOX", "HR")
_TAX_RATES = (0, 0, 700, 1900, 2000)  # basis points x 1/100: 7%, 19%, 20%
_CRITICALITY = ("low", "medium", "high", "critical", None)
_WO_STATUS = ("open", "scheduled", "in_progress", "on_hold", "completed", "cancelled")
_SEVERITY = ("low", "normal", "high", "emergency")

_MASK64 = (1 << 64) - 1


def seed_int(*parts: object) -> int:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def fmt4(units: int) -> str:
    """Format an amount given in units of 0.0001 as a decimal string with 4 places."""
    if units < 0:
        return "-" + fmt4(-units)
    q, r = divmod(units, 10000)
    return f"{q}.{r:04d}"


@dataclass
class Layout:
    """Timestamps and order of the generated records of one entity of one connection.

    Position ``p`` is the record's rank by (``updatedAt``, ``key``); ``num[p]`` is its record
    number (1-based; its key is ``prefix`` + zero-padded number).

    Attributes:
        entity: entity path.
        count: number of records.
        prefix: key prefix.
        width: zero-padded width of key numbers.
        updated: ``updatedAt`` (epoch µs) by position, non-decreasing.
        created: ``createdAt`` (epoch µs) by position.
        num: record number by position.
        pos_of_num: position by record number - 1.
    """

    entity: str
    count: int
    prefix: str
    width: int
    updated: array
    created: array
    num: array
    pos_of_num: array

    def key_of_num(self, n: int) -> str:
        """Key of record number ``n``."""
        return f"{self.prefix}{n:0{self.width}d}"

    def key_at(self, pos: int) -> str:
        """Key of the record at position ``pos``."""
        return f"{self.prefix}{self.num[pos]:0{self.width}d}"

    def num_of_key(self, key: str) -> int | None:
        """Record number of a generated key, or ``None`` if ``key`` is not generated here."""
        p = self.prefix
        if not key.startswith(p) or len(key) != len(p) + self.width:
            return None
        digits = key[len(p) :]
        if not digits.isdigit():
            return None
        n = int(digits)
        return n if 1 <= n <= self.count else None

    def position_after(self, updated: int, key: str) -> int:
        """Position of the first record after (``updated``, ``key``) in listing order."""
        lo, hi = bisect_left(self.updated, updated), bisect_right(self.updated, updated)
        while lo < hi:  # first position in the tie range whose key is > key
            mid = (lo + hi) // 2
            if self.key_at(mid) <= key:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def max_updated(self) -> int | None:
        """Newest generated ``updatedAt``, or ``None`` when empty."""
        return self.updated[-1] if self.count else None


def key_width(count: int) -> int:
    """Zero-padded width of generated key numbers for ``count`` records."""
    return max(6, len(str(count)))


def _with_fraction(us: int, r: float) -> int:
    """Round ``us`` to whole seconds, milliseconds or keep microseconds, by ``r`` in [0, 1)."""
    if r < 0.5:
        return us - us % US_PER_SECOND
    if r < 0.75:
        return us - us % 1000
    return us


def build_layout(
    seed: int,
    connection: str,
    entity: str,
    count: int,
    tie_group: int,
    big_tie_group: int,
    start_us: int,
    end_us: int,
    prefix: str | None = None,
) -> Layout:
    """Compute timestamps and (``updatedAt``, ``key``) order of an entity's generated records.

    ``createdAt`` grows with the record number over [start, start + 85% of the span];
    ``updatedAt`` is ``createdAt`` plus a skewed delay (zero for a fifth of the records),
    before ``end_us``. Records are then put in bulk-update groups of 1 to
    ``2 * tie_group - 1`` consecutive records (about ``tie_group`` on average) that share the
    group's newest ``updatedAt``; with at least ``4 * big_tie_group`` records one group in the
    middle has ``big_tie_group`` members. Some timestamps have whole seconds, some
    milliseconds, some microseconds.

    Args:
        seed: sandbox seed.
        connection: connection name.
        entity: entity path.
        count: number of records.
        tie_group: average size of groups sharing one ``updatedAt``.
        big_tie_group: size of the one big group (0: none).
        start_us: earliest ``createdAt``.
        end_us: every ``updatedAt`` is before this.
        prefix: key prefix; default: the six entities' (``PO-``...).

    Returns:
        The :class:`Layout`.
    """
    rng = random.Random(seed_int(seed, connection, entity, "layout"))
    r = rng.random
    span = end_us - start_us
    step = span * 0.85 / max(count, 1)
    created = [0] * count
    raw_upd = [0] * count
    limit_us = end_us - 3600 * US_PER_SECOND
    max_delay = 90 * US_PER_DAY
    for i in range(count):
        c = _with_fraction(start_us + int(step * i + r() * step), r())
        created[i] = c
        if r() < 0.2:
            u = c
        else:
            u = _with_fraction(c + int(r() ** 3 * max_delay) + US_PER_SECOND, r())
            if u > limit_us:
                u = max(c, limit_us)
        raw_upd[i] = u
    order = sorted(range(count), key=raw_upd.__getitem__)
    upd = [0] * count
    i = 0
    big_done = not (big_tie_group > 0 and count >= 4 * big_tie_group)
    max_group = max(1, 2 * tie_group - 1)
    while i < count:
        if not big_done and i >= count // 2:
            size = big_tie_group
            big_done = True
        else:
            size = 1 + int(r() * max_group)
        group = order[i : i + size]
        ts = raw_upd[group[-1]]
        for j in group:
            upd[j] = ts
        i += size
    by_pos = sorted(range(count), key=lambda j: (upd[j], j))
    pos_of_num = array("q", bytes(8 * count))
    for p, j in enumerate(by_pos):
        pos_of_num[j] = p
    return Layout(
        entity=entity,
        count=count,
        prefix=KEY_PREFIX[entity] if prefix is None else prefix,
        width=key_width(count),
        updated=array("q", (upd[j] for j in by_pos)),
        created=array("q", (created[j] for j in by_pos)),
        num=array("q", (j + 1 for j in by_pos)),
        pos_of_num=pos_of_num,
    )


def generate_custom_fields(seed: int, connection: str) -> dict[str, str]:
    """A connection's custom field set (3 to 5 fields of mixed types) from the seed."""
    rng = random.Random(seed_int(seed, connection, "custom-fields"))
    k = rng.randint(3, 5)
    return dict(rng.sample(_CUSTOM_FIELD_POOL, k))


class RecordFactory:
    """Builds generated record bodies of one connection.

    Args:
        seed: sandbox seed.
        conn: the connection's config.
        layouts: the connection's layouts by entity path (for timestamps and reference keys).
    """

    def __init__(self, seed: int, conn: ConnectionConfig, layouts: dict[str, Layout]) -> None:
        self.seed = seed
        self.conn = conn
        self.layouts = layouts
        cf = conn.custom_fields
        self.custom_fields: dict[str, str] = (
            dict(cf) if cf is not None else generate_custom_fields(seed, conn.name)
        )
        self._cf_items = tuple(self.custom_fields.items())
        self._bases = {e: seed_int(seed, conn.name, e) for e in ENTITIES}
        self._build_pools()
        self._makers: dict[str, Callable[[random.Random, int, int, int], dict[str, Any]]] = {
            "purchase-orders": self._purchase_order,
            "vendors": self._vendor,
            "materials": self._material,
            "sites": self._site,
            "assets": self._asset,
            "work-orders": self._work_order,
        }

    # -- public -----------------------------------------------------------------------------

    def make(self, entity: str, pos: int) -> dict[str, Any]:
        """The body of the generated record at ``pos`` of ``entity``'s layout."""
        lay = self.layouts[entity]
        n = lay.num[pos]
        rng = random.Random((self._bases[entity] ^ (n * 0x9E3779B97F4A7C15)) & _MASK64)
        return self._makers[entity](rng, n, lay.created[pos], lay.updated[pos])

    # -- helpers ----------------------------------------------------------------------------

    def _build_pools(self) -> None:
        """Precompute strings and amounts that records pick from (generation speed)."""
        rng = random.Random(seed_int(self.seed, self.conn.name, "pools"))
        r = rng.random
        nw = len(_WORDS)
        self._phrases = {
            k: [" ".join(_WORDS[int(r() * nw)] for _ in range(k)).capitalize() for _ in range(256)]
            for k in (1, 2, 3, 4, 5, 6, 7, 8, 10, 12)
        }
        self._locations = [f"LOC-{i:03d}" for i in range(1, 41)]
        self._accounts = [f"ACC-{i}" for i in range(4000, 4050)]
        self._storerooms = [f"SR-{i:02d}" for i in range(1, 9)]
        self._users = [f"USR-{i:04d}" for i in range(1, 201)]
        self._orgs = [f"ORG-{i:02d}" for i in range(1, 4)]
        self._codes = [str(10_000_000 + int(r() * 90_000_000)) for _ in range(4096)]
        qty: list[tuple[int, str]] = []
        for _ in range(512):
            x = r()
            if x < 0.5:
                q = (1 + int(r() * 100)) * 10000
            elif x < 0.8:
                q = (1 + int(r() * 40)) * 2500
            else:
                q = (1 + int(r() * 30)) * 1000  # 0.1000 steps: needs exact decimals
            qty.append((q, fmt4(q)))
        self._qty = qty
        price: list[tuple[int, str]] = []
        for _ in range(2048):
            x = r()
            if x < 0.05:
                v = 1000  # 0.1000
            elif x < 0.08:
                v = 12345678901  # 1234567.8901
            elif x < 0.3:
                v = 1 + int(r() * 50_000_000)  # 4 decimal places
            else:
                v = (100 + int(r() * 500_000)) * 100  # cents
            price.append((v, fmt4(v)))
        self._price = price
        self._addresses = [self._address(rng) for _ in range(256)]
        self._key_cache: dict[str, list[str]] = {}

    def _keys(self, entity: str) -> list[str]:
        keys = self._key_cache.get(entity)
        if keys is None:
            lay = self.layouts[entity]
            keys = [lay.key_of_num(i) for i in range(1, lay.count + 1)]
            self._key_cache[entity] = keys
        return keys

    def _ref(self, rng: random.Random, entity: str, p_null: float = 0.0) -> str | None:
        lay = self.layouts.get(entity)
        if lay is None or lay.count == 0:
            return None
        x = rng.random()
        if x < p_null:
            return None
        if lay.count > 20_000:
            return lay.key_of_num(1 + int(rng.random() * lay.count))
        keys = self._keys(entity)
        return keys[int(rng.random() * len(keys))]

    def _custom(self, rng: random.Random, n: int) -> dict[str, Any]:
        r = rng.random
        out: dict[str, Any] = {}
        for name, typ in self._cf_items:
            if r() < 0.15:
                out[name] = None
            elif typ == "string":
                out[name] = f"{name[:2].upper().strip()}-{int(r() * 900) + 100}"
            elif typ == "integer":
                out[name] = int(r() * 10) - 1
            elif typ == "number":
                out[name] = round(r() * 100000, 2) if r() < 0.8 else int(r() * 100)
            else:
                out[name] = r() < 0.5
        return out

    def _text(self, rng: random.Random, words: int) -> str:
        return self._phrases[words][int(rng.random() * 256)]

    @staticmethod
    def _pick(rng: random.Random, seq: list[Any] | tuple[Any, ...]) -> Any:
        return seq[int(rng.random() * len(seq))]

    def _addr(self, rng: random.Random, p_null: float) -> dict[str, Any] | None:
        if rng.random() < p_null:
            return None
        return self._addresses[int(rng.random() * 256)]

    @staticmethod
    def _address(rng: random.Random) -> dict[str, Any]:
        r = rng.random
        country, cities = _COUNTRIES[int(r() * len(_COUNTRIES))]
        city, state, post = cities[int(r() * len(cities))]
        lines = [f"{int(r() * 9000) + 1} {_STREETS[int(r() * len(_STREETS))]}"]
        if r() < 0.4:
            lines.append(f"Building {int(r() * 20) + 1}")
        name = _NAMES[int(r() * len(_NAMES))]
        return {
            "country": country,
            "addressLines": lines,
            "addressee": name,
            "state": state,
            "city": city,
            "postCode": post,
            "phone": f"+1-555-{int(r() * 9000) + 1000}" if r() < 0.7 else None,
            "email": f"{name.split()[0].lower()}@example.com" if r() < 0.6 else None,
        }

    @staticmethod
    def _ts_after(rng: random.Random, base: int, max_days: float, p_null: float) -> str | None:
        if rng.random() < p_null:
            return None
        return format_timestamp(base + int(rng.random() * max_days * 86400) * US_PER_SECOND)

    def _document(self, rng: random.Random, owner: str, i: int, created: int) -> dict[str, Any]:
        r = rng.random
        created_s = format_timestamp(created)
        return {
            "key": f"DOC-{owner}-{i}",
            "entityKeys": [owner],
            "name": f"{self._text(rng, 2)}.pdf",
            "url": f"https://files.example.com/{owner.lower()}/{i}.pdf",
            "type": "manual" if r() < 0.5 else "photo",
            "contentType": "application/pdf",
            "description": self._text(rng, 5) if r() < 0.6 else None,
            "notes": None,
            "createdAt": created_s,
            "updatedAt": created_s,
        }

    # -- entities ---------------------------------------------------------------------------

    def _po_pools(self) -> None:
        """Pools of purchase-order header and line parts (built on first use).

        A generated PO combines a header template and line templates picked from these pools
        with per-record keys, amounts, statuses and timestamps, which keeps generation cheap
        (about 100 µs per PO with 5 lines on a slow machine).
        """
        rng = random.Random(seed_int(self.seed, self.conn.name, "po-pools"))
        r = rng.random
        lines = []
        for _ in range(4096):
            line: dict[str, Any] = dict.fromkeys(LINE_FIELDS)
            line["code"] = self._codes[int(r() * 4096)]
            line["type"] = "material" if r() < 0.8 else "service"
            line["name"] = self._text(rng, 2)
            line["description"] = self._text(rng, 6) if r() < 0.5 else None
            line["materialKey"] = self._ref(rng, "materials", 0.2)
            line["assetKey"] = self._ref(rng, "assets", 0.7)
            line["accountKey"] = self._pick(rng, self._accounts)
            line["locationKey"] = self._pick(rng, self._locations) if r() < 0.6 else None
            line["storeroomKey"] = self._pick(rng, self._storerooms) if r() < 0.5 else None
            line["uomKey"] = self._pick(rng, _UOMS)
            line["notes"] = self._text(rng, 4) if r() < 0.15 else None
            lines.append(line)
        headers = []
        for _ in range(2048):
            head: dict[str, Any] = dict.fromkeys(FIELDS["purchase-orders"])
            head["title"] = f"{self._pick(rng, _ADJ).capitalize()} {self._text(rng, 2).lower()}"
            head["description"] = self._text(rng, 8) if r() < 0.6 else None
            head["organizationKey"] = self._pick(rng, self._orgs)
            head["locationKey"] = self._pick(rng, self._locations) if r() < 0.7 else None
            head["shippingMethod"] = self._pick(rng, _SHIPPING)
            head["terms"] = self._pick(rng, _TERMS)
            head["notes"] = self._text(rng, 10) if r() < 0.2 else None
            head["shipmentAddress"] = self._addr(rng, 0.3)
            head["billingAddress"] = self._addr(rng, 0.05)
            head["deliveryAddress"] = self._addr(rng, 0.6)
            head["userRequestedKey"] = self._pick(rng, self._users)
            headers.append(head)
        self._line_templates = lines
        self._po_templates = headers
        self._custom_pool = [self._custom(rng, 0) for _ in range(1024)]

    def _purchase_order(
        self, rng: random.Random, n: int, created: int, updated: int
    ) -> dict[str, Any]:
        if not hasattr(self, "_po_templates"):
            self._po_pools()
        r = rng.random
        lay = self.layouts["purchase-orders"]
        key = lay.key_of_num(n)
        status = _PO_STATUS[int(r() * len(_PO_STATUS))]
        currency = _CURRENCIES[int(r() * len(_CURRENCIES))] if r() < 0.3 else "USD"
        vendor = self._ref(rng, "vendors")
        tax_rate = _TAX_RATES[int(r() * len(_TAX_RATES))]
        lo, hi = self.conn.lines_per_po
        n_lines = lo + int(r() * (hi - lo + 1))
        created_s = format_timestamp(created)
        updated_s = format_timestamp(updated)
        due_s = self._ts_after(rng, created, 60, 0.2)
        ship_s = self._ts_after(rng, created, 30, 0.5)
        received = status in ("partially_received", "received", "closed")
        partial = status == "partially_received"
        qtys, prices, templates = self._qty, self._price, self._line_templates
        line_prefix = f"POL-{n:0{lay.width}d}-"
        lines = []
        net_total = 0
        tax_total = 0
        for j in range(1, n_lines + 1):
            line = templates[int(r() * 4096)].copy()
            qty, qty_s = qtys[int(r() * 512)]
            price, price_s = prices[int(r() * 2048)]
            amount = (qty * price + 5000) // 10000
            x = r()
            if x < 0.7:
                discount = 0
                discount_s: str | None = "0.0000"
            elif x < 0.8:
                discount = 0
                discount_s = None
            else:
                discount = amount * int(r() * 15) // 100
                discount_s = fmt4(discount)
            total = amount - discount
            x = r()
            if x < 0.05:
                tax_s = None
                tax = 0
            else:
                tax = (total * tax_rate + 5000) // 10000
                tax_s = fmt4(tax)
            x = r()
            line_deleted = x < 0.04
            if received:
                rq_s: str | None = qty_s if not partial or x < 0.5 else fmt4(qty // 2)
            else:
                rq_s = None if x < 0.7 else "0.0000"
            if not line_deleted:
                net_total += total
                tax_total += tax
            line_no = str(j * 10)
            line["key"] = f"{line_prefix}{j:02d}"
            line["lineNo"] = line_no
            if x > 0.7:
                line["lineRef"] = f"{key}/{line_no}"
            line["vendorKey"] = vendor
            line["statusKey"] = status
            line["quantity"] = qty_s
            line["receivedQuantity"] = rq_s
            line["currencyKey"] = currency
            line["price"] = price_s
            line["discount"] = discount_s
            line["lineTaxValue"] = tax_s
            line["lineTotalValue"] = fmt4(total)
            line["deliveryAt"] = ship_s
            line["dueAt"] = due_s
            line["createdAt"] = created_s
            line["updatedAt"] = updated_s if (line_deleted or x < 0.4) else created_s
            if line_deleted:
                line["deletedAt"] = updated_s
            lines.append(line)
        approved = status != "draft"
        po = self._po_templates[int(r() * 2048)].copy()
        po["key"] = key
        po["orderNo"] = f"45{n:08d}"
        po["statusKey"] = status
        po["siteKey"] = self._ref(rng, "sites")
        po["vendorKey"] = vendor
        po["currencyKey"] = currency
        po["orderDate"] = format_date(created)
        po["dueAt"] = due_s
        po["approvedAt"] = self._ts_after(rng, created, 3, 0.0) if approved else None
        po["completedAt"] = updated_s if status == "closed" else None
        po["shipmentDate"] = ship_s
        po["totalNetValue"] = fmt4(net_total)
        po["totalGrossValue"] = fmt4(net_total + tax_total)
        po["userApprovedKey"] = self._users[int(r() * 20)] if approved else None
        po["createdAt"] = created_s
        po["updatedAt"] = updated_s
        po["customFields"] = self._custom_pool[int(r() * 1024)]
        po["lineItems"] = lines
        return po

    def _vendor(self, rng: random.Random, n: int, created: int, updated: int) -> dict[str, Any]:
        r = rng.random
        word = _WORDS[int(r() * len(_WORDS))].capitalize()
        suffix = ("GmbH", "Inc.", "Ltd", "S.A.", "& Söhne", "Co., Ltd.")[int(r() * 6)]
        return {
            "key": self.layouts["vendors"].key_of_num(n),
            "name": f"{word} {_NAMES[int(r() * len(_NAMES))].split()[1]} {suffix}",
            "code": f"{int(r() * 90_000_000) + 10_000_000}",
            "companyKey": f"COMP-{int(r() * 10) + 1:03d}" if r() < 0.8 else None,
            "organizationKey": f"ORG-{int(r() * 3) + 1:02d}",
            "createdAt": format_timestamp(created),
            "updatedAt": format_timestamp(updated),
            "deletedAt": None,
            "customFields": self._custom(rng, n),
        }

    def _material(self, rng: random.Random, n: int, created: int, updated: int) -> dict[str, Any]:
        r = rng.random
        key = self.layouts["materials"].key_of_num(n)
        created_s = format_timestamp(created)
        uom = _UOMS[int(r() * len(_UOMS))]
        supply = [
            {
                "vendorKey": self._ref(rng, "vendors"),
                "partNumber": f"VP-{int(r() * 99999):05d}",
                "price": fmt4((100 + int(r() * 100_000)) * 100),
                "uomKey": uom,
                "currencyKey": "USD",
                "uomQuantity": fmt4(10000),
                "makePartNumber": f"MP-{int(r() * 9999):04d}" if r() < 0.5 else None,
                "reorderPoint": str(int(r() * 50)),
                "createdAt": created_s,
                "updatedAt": created_s,
            }
            for _ in range(int(r() * 3))
        ]
        levels = [
            {
                "name": name,
                "price": fmt4((100 + int(r() * 100_000)) * 100),
                "uomKey": uom,
                "uomQuantity": fmt4(10000),
                "currencyKey": "USD",
                "taxKey": "TAX-STD",
                "minQuantity": fmt4(lo * 10000),
                "maxQuantity": None,
                "updatedAt": created_s,
                "deletedAt": None,
            }
            for name, lo in (("list", 1), ("volume", 100))[: int(r() * 3)]
        ]
        inventories = [
            {
                "key": f"INV-{n:06d}-{i}",
                "code": f"BIN-{int(r() * 999):03d}",
                "name": f"Storeroom {i}",
                "quantity": int(r() * 500),
                "unitCost": int(r() * 900) + 1,
                "locationKey": f"LOC-{int(r() * 40) + 1:03d}",
                "updatedAt": format_timestamp(updated),
                "createdAt": created_s,
            }
            for i in range(1, 1 + int(r() * 3))
        ]
        return {
            "key": key,
            "organizationKey": f"ORG-{int(r() * 3) + 1:02d}",
            "parentKeys": [],
            "assetKeys": [k for k in (self._ref(rng, "assets", 0.7),) if k],
            "code": f"{int(r() * 90_000_000) + 10_000_000}",
            "isAssembly": r() < 0.1,
            "partNumber": f"PN-{int(r() * 999_999):06d}",
            "name": f"{_ADJ[int(r() * len(_ADJ))]} {self._text(rng, 2).lower()}",
            "description": self._text(rng, 7) if r() < 0.7 else None,
            "notes": None,
            "criticality": _CRITICALITY[int(r() * len(_CRITICALITY))],
            "isActive": r() < 0.9,
            "manufacturerName": _NAMES[int(r() * len(_NAMES))].split()[1] + " Manufacturing",
            "uomKey": uom,
            "supplyOptions": supply,
            "priceLevels": levels,
            "inventories": inventories,
            "dimensions": None
            if r() < 0.5
            else {
                "length": fmt4(int(r() * 5_000_000)),
                "width": fmt4(int(r() * 5_000_000)),
                "uom": "cm",
            },
            "createdAt": created_s,
            "updatedAt": format_timestamp(updated),
            "deletedAt": None,
            "customFields": self._custom(rng, n),
        }

    def _site(self, rng: random.Random, n: int, created: int, updated: int) -> dict[str, Any]:
        r = rng.random
        name = _NAMES[int(r() * len(_NAMES))]
        return {
            "key": self.layouts["sites"].key_of_num(n),
            "organizationKey": f"ORG-{int(r() * 3) + 1:02d}",
            "name": f"Plant {n}",
            "code": f"P{n:03d}",
            "description": self._text(rng, 5) if r() < 0.5 else None,
            "contact": {
                "name": name,
                "position": "Site manager",
                "phones": f"+1-555-{int(r() * 9000) + 1000}",
                "emails": f"{name.split()[0].lower()}@example.com",
                "isActive": True,
                "isDefault": r() < 0.5,
            },
            "customerKey": None,
            "lat": f"{r() * 140 - 70:.6f}",
            "lng": f"{r() * 340 - 170:.6f}",
            "address": self._addr(rng, 0.0),
            "billingAddress": self._addr(rng, 0.5),
            "properties": None,
            "notes": None,
            "createdAt": format_timestamp(created),
            "updatedAt": format_timestamp(updated),
            "deletedAt": None,
            "customFields": self._custom(rng, n),
        }

    def _asset(self, rng: random.Random, n: int, created: int, updated: int) -> dict[str, Any]:
        r = rng.random
        key = self.layouts["assets"].key_of_num(n)
        active = r() < 0.85
        return {
            "key": key,
            "siteKey": self._ref(rng, "sites"),
            "parentKey": self._ref(rng, "assets", 0.7),
            "vendorKey": self._ref(rng, "vendors", 0.3),
            "teamKey": f"TEAM-{int(r() * 6) + 1:02d}" if r() < 0.6 else None,
            "documents": [self._document(rng, key, i, created) for i in range(int(r() * 3))],
            "locationKey": f"LOC-{int(r() * 40) + 1:03d}",
            "customerKey": None,
            "accountKeys": f"ACC-{int(r() * 50) + 4000}" if r() < 0.5 else None,
            "name": f"{self._text(rng, 1)} #{n}",
            "description": self._text(rng, 6) if r() < 0.6 else None,
            "makeCompanyKey": None,
            "assetTemplateKey": None,
            "isPhysical": r() < 0.95,
            "notes": None,
            "categoryName": ("rotating", "static", "electrical", "vehicle")[int(r() * 4)],
            "criticality": _CRITICALITY[int(r() * len(_CRITICALITY))],
            "isActive": active,
            "makeName": ("Siemens", "ABB", "Grundfos", "Caterpillar")[int(r() * 4)],
            "modelName": f"M-{int(r() * 900) + 100}",
            "serialNumber": f"SN{int(r() * 1e9):09d}",
            "activatedAt": format_timestamp(created),
            "deactivatedAt": None if active else format_timestamp(updated),
            "createdAt": format_timestamp(created),
            "updatedAt": format_timestamp(updated),
            "deletedAt": None,
            "customFields": self._custom(rng, n),
        }

    def _work_order(self, rng: random.Random, n: int, created: int, updated: int) -> dict[str, Any]:
        r = rng.random
        key = self.layouts["work-orders"].key_of_num(n)
        status = _WO_STATUS[int(r() * len(_WO_STATUS))]
        created_s = format_timestamp(created)
        tasks = [
            {
                "key": f"{key}-T{i}",
                "parentKey": key,
                "code": f"T{i:02d}",
                "title": self._text(rng, 3),
                "description": self._text(rng, 6) if r() < 0.4 else None,
                "priority": ("low", "normal", "high")[int(r() * 3)],
                "checkList": [f"Step {s}" for s in range(1, 1 + int(r() * 3))],
            }
            for i in range(1, 1 + int(r() * 4))
        ]
        resources = [
            {
                "laborKey": f"LAB-{int(r() * 30) + 1:03d}",
                "vendorKey": None,
                "assetKey": None,
                "teamKey": None,
                "poKey": self._ref(rng, "purchase-orders", 0.8),
                "poLineItemKey": None,
                "accountKey": None,
                "name": "Labor",
                "description": None,
                "estimatedTime": str(int(r() * 8) + 1),
                "registeredTime": str(int(r() * 8)),
                "rate": fmt4((30 + int(r() * 90)) * 10000),
                "cost": fmt4(int(r() * 10_000_000)),
                "startedAt": created_s,
                "finishedAt": None,
                "createdAt": created_s,
                "updatedAt": created_s,
                "deletedAt": None,
            }
            for _ in range(int(r() * 2))
        ]
        done = status == "completed"
        return {
            "key": key,
            "parentKey": self._ref(rng, "work-orders", 0.9),
            "locationKey": f"LOC-{int(r() * 40) + 1:03d}",
            "siteKey": self._ref(rng, "sites"),
            "assetKey": self._ref(rng, "assets", 0.2),
            "accountKey": f"ACC-{int(r() * 50) + 4000}" if r() < 0.5 else None,
            "title": f"{('Inspect', 'Repair', 'Replace', 'Lubricate')[int(r() * 4)]} "
            f"{_WORDS[int(r() * len(_WORDS))]}",
            "serviceRequestKey": None,
            "code": f"WO{n:07d}",
            "pmKey": f"PM-{int(r() * 100):03d}" if r() < 0.3 else None,
            "teamKey": f"TEAM-{int(r() * 6) + 1:02d}",
            "laborAssignedKey": f"LAB-{int(r() * 30) + 1:03d}" if r() < 0.7 else None,
            "userApprovedKey": f"USR-{int(r() * 20) + 1:04d}" if r() < 0.5 else None,
            "assetDowntimeKey": None,
            "organizationKey": f"ORG-{int(r() * 3) + 1:02d}",
            "instructions": self._text(rng, 12) if r() < 0.5 else None,
            "status": status,
            "statusKey": status,
            "severity": _SEVERITY[int(r() * len(_SEVERITY))],
            "estimatedTime": str(int(r() * 16) + 1),
            "roleName": ("Mechanic", "Electrician", "Technician")[int(r() * 3)],
            "categoryName": ("corrective", "preventive", "inspection")[int(r() * 3)],
            "storeroomKey": None,
            "notes": None,
            "approvedAt": self._ts_after(rng, created, 2, 0.3),
            "dueAt": self._ts_after(rng, created, 30, 0.2),
            "scheduledAt": self._ts_after(rng, created, 20, 0.3),
            "actualTime": str(int(r() * 16)) if done else None,
            "completedAt": format_timestamp(updated) if done else None,
            "completionRemarks": self._text(rng, 5) if done and r() < 0.5 else None,
            "tasks": tasks,
            "documents": [self._document(rng, key, i, created) for i in range(int(r() * 2))],
            "resources": resources,
            "materialCount": str(int(r() * 6)),
            "createdAt": created_s,
            "updatedAt": format_timestamp(updated),
            "deletedAt": None,
            "customFields": self._custom(rng, n),
        }


# -- records written through the admin API ------------------------------------------------


def empty_record(entity: str, key: str) -> dict[str, Any]:
    """A record with every field of ``entity`` set to its default (``None``, ``[]``, ``{}``)."""
    rec: dict[str, Any] = {}
    for name in FIELDS[entity]:
        if name in LIST_FIELDS:
            rec[name] = []
        elif name == "customFields":
            rec[name] = {}
        else:
            rec[name] = None
    rec["key"] = key
    return rec


def empty_line(key: str, line_no: str) -> dict[str, Any]:
    """A purchase order line with default values."""
    line: dict[str, Any] = dict.fromkeys(LINE_FIELDS)
    line["key"] = key
    line["lineNo"] = line_no
    return line


def _dec(value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


_Q4 = Decimal("0.0001")


def line_total(line: dict[str, Any]) -> str | None:
    """``quantity * price - discount`` of a line as a 4-place decimal string, or ``None``."""
    q, p = _dec(line.get("quantity")), _dec(line.get("price"))
    if q is None or p is None:
        return None
    d = _dec(line.get("discount")) or Decimal(0)
    return str((q * p - d).quantize(_Q4, rounding=ROUND_HALF_UP))


def po_totals(lines: list[dict[str, Any]]) -> tuple[str, str]:
    """(``totalNetValue``, ``totalGrossValue``) of a purchase order from its live lines."""
    net = Decimal(0)
    tax = Decimal(0)
    for line in lines:
        if line.get("deletedAt") is not None:
            continue
        net += _dec(line.get("lineTotalValue")) or Decimal(0)
        tax += _dec(line.get("lineTaxValue")) or Decimal(0)
    return (
        str(net.quantize(_Q4, rounding=ROUND_HALF_UP)),
        str((net + tax).quantize(_Q4, rounding=ROUND_HALF_UP)),
    )
