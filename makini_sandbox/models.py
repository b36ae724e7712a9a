"""The sandbox state, apart from HTTP: connections -> entities -> records.

* :class:`Store` holds every connection, its records, sync state, tokens, permissions,
  rate-limit and page-shape settings, the fault rules and request statistics.
* :class:`EntityStore` holds one entity of one connection: the generated records (described
  by a :class:`~makini_sandbox.generator.Layout`, bodies built lazily and cached as JSON
  bytes) plus an overlay of versions written through the admin API, and answers keyset
  listings ordered by (``updatedAt``, ``key``).
* :class:`Clock` issues strictly increasing ``updatedAt`` values for mutations.

Visibility rule: a version written with ``pending=True`` is kept aside and not listed until
the connection's next sync (:meth:`Store.sync`). Otherwise writes are visible at once, and
``last_sync_at`` stays where it is: Makini lists what a sync under way has already copied,
newer than its last complete point. Only a sync (:meth:`Store.sync`) moves ``last_sync_at``.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import itertools
import os
import threading
from array import array
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from . import jsontext
from .accounts import Accounts, ConnectionProfile
from .config import ConnectionConfig, SandboxConfig
from .errors import InvalidCursor, InvalidParameter, NotFound
from .faults import FaultEngine
from .generator import (
    DECIMAL_FIELDS,
    ENTITIES,
    MAX_LIMIT,
    Layout,
    RecordFactory,
    build_layout,
    empty_line,
    empty_record,
    line_total,
    po_totals,
)
from .limits import RateLimiter, RequestStats
from .openapi_schemas import EntityShape, load_catalogue
from .raw_tables import tables_of
from .schema_records import KeyRefs, SchemaRecordFactory
from .schema_records import empty_record as empty_schema_record
from .timeutil import US_PER_SECOND, format_timestamp, parse_timestamp, real_now_us

DEFAULT_LIMIT = 100
#: generated data's ``last_sync_at`` is this long after the newest generated ``updatedAt``
SYNC_LAG_US = 15 * 60 * US_PER_SECOND
SYNC_STATUSES = ("active", "syncing", "error", "reauthorization_required")


class Clock:
    """The store clock.

    :meth:`now` returns ``max(real UTC now + offset, last issued + 1 µs)``, so timestamps it
    issues strictly increase and are newer than any generated data.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0
        self.offset_us = 0

    def now(self) -> int:
        """Issue a new timestamp (epoch µs), strictly greater than every one issued before."""
        with self._lock:
            t = real_now_us() + self.offset_us
            if t <= self._last:
                t = self._last + 1
            self._last = t
            return t

    def peek(self) -> int:
        """The current time (epoch µs) without issuing it."""
        return max(real_now_us() + self.offset_us, self._last)

    def advance(self, seconds: float) -> None:
        """Move the clock forward (e.g. to expire cursors in tests)."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self.offset_us += int(seconds * US_PER_SECOND)


@dataclass(frozen=True)
class Filters:
    """Filters of one listing; timestamps in epoch µs, ``None`` when not given.

    Attributes:
        modified_after: ``updatedAt >= modified_after``.
        modified_before: ``updatedAt < modified_before``.
        created_after: ``createdAt >= created_after``.
        created_before: ``createdAt < created_before``.
        include_deleted: also list tombstones.
    """

    modified_after: int | None = None
    modified_before: int | None = None
    created_after: int | None = None
    created_before: int | None = None
    include_deleted: bool = False

    def to_json(self) -> list[Any]:
        """Compact form carried inside cursors."""
        return [
            self.modified_after,
            self.modified_before,
            self.created_after,
            self.created_before,
            self.include_deleted,
        ]

    @classmethod
    def from_json(cls, data: Any) -> Filters:
        """Inverse of :meth:`to_json`.

        Raises:
            ValueError: malformed data.
        """
        if not isinstance(data, list) or len(data) != 5:
            raise TypeError("bad filters")
        *bounds, deleted = data
        for b in bounds:
            if b is not None and (not isinstance(b, int) or isinstance(b, bool)):
                raise TypeError("bad filter bound")
        if not isinstance(deleted, bool):
            raise TypeError("bad include_deleted")
        ma, mb, ca, cb = bounds
        return cls(ma, mb, ca, cb, include_deleted=deleted)

    def created_ok(self, created: int) -> bool:
        """Whether a ``createdAt`` passes the created filters."""
        ca, cb = self.created_after, self.created_before
        return (ca is None or created >= ca) and (cb is None or created < cb)


class Version:
    """One version of a record written through the admin API (or materialized for it).

    ``hard`` marks a hard delete: v1 lists it as a tombstone like any delete, the unified
    dialect no longer lists it at all.
    """

    __slots__ = ("_bytes", "created", "deleted", "hard", "key", "record", "updated")

    def __init__(
        self, record: dict[str, Any], updated: int, created: int, *, hard: bool = False
    ) -> None:
        self.key: str = record["key"]
        self.record = record
        self.updated = updated
        self.created = created
        self.deleted = record.get("deletedAt") is not None
        self.hard = hard and self.deleted
        self._bytes: bytes | None = None

    @property
    def data(self) -> bytes:
        """The record serialized as JSON (cached)."""
        if self._bytes is None:
            self._bytes = bytes(memoryview(jsontext.dumps(self.record)))
        return self._bytes


@dataclass(frozen=True)
class RecordTraits:
    """What writes need to know about an entity's records.

    Attributes:
        created_at: records carry ``createdAt``.
        updated_at: records carry ``updatedAt`` (an admin write sets it).
        empty: a record with every field empty, for a key created through the admin API.
    """

    created_at: bool
    updated_at: bool
    empty: Callable[[str], dict[str, Any]]

    @classmethod
    def v1(cls, entity: str) -> RecordTraits:
        """Traits of one of the six v1 entities."""
        return cls(True, True, lambda key: empty_record(entity, key))

    @classmethod
    def of_shape(cls, shape: EntityShape) -> RecordTraits:
        """Traits of a catalogue entity (records as its schema has them)."""
        return cls(
            shape.has("createdAt"),
            shape.has("updatedAt"),
            lambda key: empty_schema_record(shape, key),
        )


class CacheBudget:
    """Byte budget shared by the caches of serialized generated records."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0


#: one listed row: (updatedAt µs, key, JSON bytes)
Row = tuple[int, str, bytes]


class EntityStore:
    """Records of one entity of one connection.

    Generated records live at layout positions; a generated record that was changed through
    the admin API is *superseded* and its current version lives in the overlay, which is
    indexed by (``updatedAt``, ``key``). Listings merge both in (``updatedAt``, ``key``) order.

    Args:
        entity: entity path.
        layout: the generated records' layout.
        factory: builds generated record bodies (``make(entity, pos)``).
        budget: shared byte budget of the serialized-record cache.
        traits: what writes need to know about the records (default: a v1 entity's).
    """

    def __init__(
        self,
        entity: str,
        layout: Layout,
        factory: RecordFactory | SchemaRecordFactory,
        budget: CacheBudget,
        traits: RecordTraits | None = None,
    ) -> None:
        self.entity = entity
        self.layout = layout
        self.factory = factory
        self.budget = budget
        self.traits = traits or RecordTraits.v1(entity)
        # a list indexed by position, not a dict: int keys scattered over the heap would pin
        # memory arenas of the generator's short-lived objects (RSS would double)
        self.cache: list[bytes | None] = [None] * layout.count
        self.superseded = bytearray(layout.count)
        self.superseded_positions: list[int] = []
        self.overlay: dict[str, Version] = {}
        self.overlay_index: list[tuple[int, str]] = []
        self.pending: dict[str, Version] = {}
        #: bumped whenever the visible records change (keys caches of derived indexes)
        self.revision = 0
        #: indexes other modules derive from this store (``unified_listing``), by name
        self.derived: dict[str, Any] = {}

    # -- record access ------------------------------------------------------------------------

    def base_bytes(self, pos: int) -> bytes:
        """Serialized generated record at ``pos`` (generated on first use, then cached)."""
        data = self.cache[pos]
        if data is None:
            # orjson's result keeps a larger allocation behind it; an exact-size copy halves
            # the memory a full cache of generated records takes
            data = bytes(memoryview(orjson.dumps(self.factory.make(self.entity, pos))))
            budget = self.budget
            if budget.used + len(data) <= budget.max_bytes:
                self.cache[pos] = data
                budget.used += len(data)
        return data

    def base_pos(self, key: str) -> int | None:
        """Layout position of generated ``key`` if it is not superseded, else ``None``."""
        n = self.layout.num_of_key(key)
        if n is None:
            return None
        pos = self.layout.pos_of_num[n - 1]
        return None if self.superseded[pos] else pos

    def current(self, key: str) -> Version | None:
        """The visible version of ``key`` (materialized if generated), or ``None``."""
        v = self.overlay.get(key)
        if v is not None:
            return v
        pos = self.base_pos(key)
        if pos is None:
            return None
        record = orjson.loads(self.base_bytes(pos))
        return Version(record, self.layout.updated[pos], self.layout.created[pos])

    def visible_count(self) -> tuple[int, int]:
        """(live records, tombstones) currently visible."""
        tomb = sum(1 for v in self.overlay.values() if v.deleted)
        live = self.layout.count - len(self.superseded_positions) + len(self.overlay) - tomb
        return live, tomb

    # -- mutation -----------------------------------------------------------------------------

    def publish(self, version: Version) -> None:
        """Make ``version`` the visible version of its key (moving it in the order)."""
        key = version.key
        old = self.overlay.get(key)
        if old is not None:
            i = bisect_left(self.overlay_index, (old.updated, key))
            del self.overlay_index[i]
        else:
            pos = self.base_pos(key)
            if pos is not None:
                self.superseded[pos] = 1
                insort(self.superseded_positions, pos)
                data = self.cache[pos]
                self.cache[pos] = None
                if data is not None:
                    self.budget.used -= len(data)
        self.overlay[key] = version
        insort(self.overlay_index, (version.updated, key))
        self.revision += 1

    # -- listing ------------------------------------------------------------------------------

    def _base_start(self, after: tuple[int, str] | None, mod_after: int | None) -> int:
        upd = self.layout.updated
        if after is None:
            return 0 if mod_after is None else bisect_left(upd, mod_after)
        return self.layout.position_after(*after)

    def scan(
        self, after: tuple[int, str] | None, flt: Filters, n: int, *, data: bool = True
    ) -> list[Row]:
        """Up to ``n`` visible records after keyset position ``after`` that pass ``flt``.

        Args:
            after: (``updatedAt``, ``key``) of the last record already returned, or ``None``.
            flt: the listing's filters.
            n: maximum number of rows.
            data: include the serialized records (else rows carry ``b""``).

        Returns:
            Rows in (``updatedAt``, ``key``) order.
        """
        out: list[Row] = []
        if n <= 0:
            return out
        lay = self.layout
        upd, crt = lay.updated, lay.created
        count = lay.count
        sup = self.superseded
        ma, mb = flt.modified_after, flt.modified_before
        check_created = flt.created_after is not None or flt.created_before is not None
        created_ok = flt.created_ok
        include_deleted = flt.include_deleted
        bpos = self._base_start(after, ma)
        oindex = self.overlay_index
        if after is None:
            oi = 0 if ma is None else bisect_left(oindex, (ma, ""))
        else:
            oi = bisect_right(oindex, after)
            if ma is not None and oi < len(oindex) and oindex[oi][0] < ma:
                oi = bisect_left(oindex, (ma, ""))
        if ma is not None and bpos < count and upd[bpos] < ma:
            bpos = bisect_left(upd, ma)
        olen = len(oindex)
        overlay = self.overlay
        ov: Version | None = None
        while len(out) < n:
            # next eligible generated record
            while bpos < count and (sup[bpos] or (check_created and not created_ok(crt[bpos]))):
                bpos += 1
            if bpos < count and mb is not None and upd[bpos] >= mb:
                bpos = count
            # next eligible overlay version
            while ov is None and oi < olen:
                ts, key = oindex[oi]
                if mb is not None and ts >= mb:
                    oi = olen
                    break
                cand = overlay[key]
                if (include_deleted or not cand.deleted) and (
                    not check_created or created_ok(cand.created)
                ):
                    ov = cand
                else:
                    oi += 1
            if bpos >= count:
                if ov is None:
                    break
                take_base = False
            elif ov is None:
                take_base = True
            else:
                bts = upd[bpos]
                take_base = bts < ov.updated or (bts == ov.updated and lay.key_at(bpos) < ov.key)
            if take_base:
                out.append((upd[bpos], lay.key_at(bpos), self.base_bytes(bpos) if data else b""))
                bpos += 1
            else:
                assert ov is not None
                out.append((ov.updated, ov.key, ov.data if data else b""))
                ov = None
                oi += 1
        return out

    def count(self, flt: Filters) -> int:
        """Number of visible records that pass ``flt`` now."""
        upd, crt = self.layout.updated, self.layout.created
        ma, mb = flt.modified_after, flt.modified_before
        lo = 0 if ma is None else bisect_left(upd, ma)
        hi = len(upd) if mb is None else bisect_left(upd, mb)
        total = 0
        if hi > lo:
            sp = self.superseded_positions
            if flt.created_after is None and flt.created_before is None:
                total = hi - lo - (bisect_left(sp, hi) - bisect_left(sp, lo))
            else:
                ca = flt.created_after if flt.created_after is not None else -(1 << 62)
                cb = flt.created_before if flt.created_before is not None else 1 << 62
                total = sum(1 for c in crt[lo:hi] if ca <= c < cb)
                total -= sum(
                    1 for p in sp[bisect_left(sp, lo) : bisect_left(sp, hi)] if ca <= crt[p] < cb
                )
        oindex = self.overlay_index
        i = 0 if ma is None else bisect_left(oindex, (ma, ""))
        for ts, key in oindex[i:]:
            if mb is not None and ts >= mb:
                break
            v = self.overlay[key]
            if (flt.include_deleted or not v.deleted) and flt.created_ok(v.created):
                total += 1
        return total


@dataclass
class ConnectionState:
    """Runtime state of one connection.

    Attributes:
        config: the connection's config.
        token: current bearer token.
        revoked: whether the token is revoked (every request gets 401).
        status: sync-status ``status``.
        initial_sync_completed: sync-status ``initial_sync_completed``.
        last_sync_at: sync-status ``last_sync_at`` (epoch µs) or ``None``.
        last_sync_status: sync-status ``last_sync_status``.
        denied: entity paths that answer 403.
        short_every: every Nth page of a listing is short (0: never).
        empty_every: every Nth page of a listing is empty but has a next cursor (0: never).
        null_total_count: answer ``total_count: null`` (the system cannot tell).
        limiter: the connection's rate limiter.
        entities: entity stores by path: the six from the start, catalogue entities added on
            first use (:meth:`Store.entity`).
        budget: the sandbox's cache budget (shared by every entity store).
        custom_fields: the connection's custom field names and types.
        profile: the connection as the account API and the unified dialect see it.
        full_sync_done: the last admin sync was a full sync (unified ``fulldone``).
        status_since: when ``status`` last changed (epoch µs; ``None``: since the start).
        key_refs: keys of every entity's generated records (built on first use).
        raw_rows: rows of the raw tables read so far, by table name.
        sync_time_raw: ``(value,)``: ``last_sync_at`` and the unified ``sync_updated_at``
            are sent as ``value`` verbatim (any JSON value, e.g. an unparseable text);
            ``None``: the real times.
    """

    config: ConnectionConfig
    token: str
    limiter: RateLimiter
    entities: dict[str, EntityStore]
    budget: CacheBudget
    custom_fields: dict[str, str]
    profile: ConnectionProfile
    revoked: bool = False
    status: str = "active"
    initial_sync_completed: bool = True
    last_sync_at: int | None = None
    last_sync_status: str | None = "success"
    denied: set[str] = field(default_factory=set)
    short_every: int = 0
    empty_every: int = 0
    null_total_count: bool = False
    full_sync_done: bool = False
    status_since: int | None = None
    key_refs: KeyRefs | None = None
    raw_rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    sync_time_raw: tuple[Any] | None = None

    @property
    def name(self) -> str:
        """Connection name."""
        return self.config.name

    @property
    def connection_id(self) -> str:
        """Sync-status ``connection_id``."""
        return f"conn_{self.config.name}"

    def sync_status(self) -> dict[str, Any]:
        """The ``data`` object of ``GET /api/v1/sync-status``."""
        return {
            "connection_id": self.connection_id,
            "system": self.config.system,
            "status": self.status,
            "initial_sync_completed": self.initial_sync_completed,
            "last_sync_at": self.shown_sync_time(self.last_sync_at, format_timestamp),
            "last_sync_status": self.last_sync_status,
        }

    def shown_sync_time(self, us: int | None, fmt: Callable[[int], str]) -> Any:
        """A sync time as the API sends it: formatted with ``fmt``, null, or the admin's raw
        override (:attr:`sync_time_raw`)."""
        if self.sync_time_raw is not None:
            return self.sync_time_raw[0]
        return None if us is None else fmt(us)

    def set_status(self, status: str, now: int) -> None:
        """Set the sync ``status``, remembering when it changed."""
        if status != self.status:
            self.status = status
            self.status_since = now


@dataclass
class Page:
    """One page of a listing.

    Attributes:
        rows: the page's records.
        next_cursor: cursor of the next page, ``None`` on the last page.
        total_count: matching records when the listing began (``None``: not told).
        page_no: 1-based page number within the listing.
        cursor: the cursor this page was requested with (``None`` for the first page).
        filters: the listing's filters.
        limit: the page size used.
    """

    rows: list[Row]
    next_cursor: str | None
    total_count: int | None
    page_no: int
    cursor: str | None
    filters: Filters
    limit: int


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Store:
    """All sandbox state; thread-safe (one re-entrant lock).

    Args:
        config: the sandbox config; ``None`` uses :class:`SandboxConfig` defaults.
    """

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.lock = threading.RLock()
        self.clock = Clock()
        self._secret = os.urandom(32)
        self.config: SandboxConfig = config or SandboxConfig()
        self.connections: dict[str, ConnectionState] = {}
        self.faults = FaultEngine(self.config.seed)
        self.stats = RequestStats()
        self.accounts = Accounts(self.config, self.clock.peek)
        #: numbers unified listing requests; seeds the order of their ties
        self.request_counter = itertools.count()
        self.reset(self.config)

    # -- setup --------------------------------------------------------------------------------

    def reset(self, config: SandboxConfig | None = None) -> None:
        """Regenerate all state from ``config`` (default: the current config).

        Clears fault rules, request statistics and every admin change.
        """
        config = config or self.config
        start_us = parse_timestamp(config.history_start)
        end_us = parse_timestamp(config.history_end)
        if end_us <= start_us:
            raise ValueError("history_end must be after history_start")
        budget = CacheBudget(config.cache_mb * 1024 * 1024)
        connections: dict[str, ConnectionState] = {}
        for cc in config.connections:
            layouts = {
                entity: build_layout(
                    config.seed,
                    cc.name,
                    entity,
                    count,
                    config.tie_group,
                    config.big_tie_group,
                    start_us,
                    end_us,
                )
                for entity, count in cc.counts().items()
            }
            factory = RecordFactory(config.seed, cc, layouts)
            entities = {e: EntityStore(e, layouts[e], factory, budget) for e in ENTITIES}
            newest = max((lay.max_updated() or start_us) for lay in layouts.values())
            connections[cc.name] = ConnectionState(
                config=cc,
                token=cc.token,
                limiter=RateLimiter(cc.rate_limit, cc.rate_window_seconds, cc.retry_after_format),
                entities=entities,
                budget=budget,
                custom_fields=dict(factory.custom_fields),
                profile=ConnectionProfile.from_config(cc, start_us),
                last_sync_at=newest + SYNC_LAG_US,
            )
        with self.lock:
            self.config = config
            self.connections = connections
            self.faults = FaultEngine(config.seed)
            self.stats = RequestStats()
            self.accounts = Accounts(config, self.clock.peek)
            self.request_counter = itertools.count()

    # -- lookup -------------------------------------------------------------------------------

    def connection(self, name: str) -> ConnectionState:
        """The connection named ``name``.

        Raises:
            NotFound: no such connection.
        """
        conn = self.connections.get(name)
        if conn is None:
            raise NotFound(f"Unknown connection {name!r}.")
        return conn

    def entity(self, conn: ConnectionState, entity: str) -> EntityStore:
        """The entity store of ``conn`` for path ``entity``.

        The six v1 entities exist from the start; a catalogue entity (``invoices``,
        ``statuses/purchase-orders``...) gets its store on first use: its layout is computed
        then, its records are built when read, as for the six.

        Raises:
            NotFound: unknown entity path.
        """
        es = conn.entities.get(entity)
        if es is None:
            with self.lock:
                es = conn.entities.get(entity) or self._catalogue_entity(conn, entity)
        return es

    def _catalogue_entity(self, conn: ConnectionState, path: str) -> EntityStore:
        shape = load_catalogue().entities.get(path)
        if shape is None:
            raise NotFound(f"Unknown entity {path!r}.")
        config = self.config
        count = conn.config.count_of(path)
        layout = build_layout(
            config.seed,
            conn.name,
            path,
            count,
            # a few records each: smaller tie groups, so that they spread over the history
            # and still share timestamps now and then
            max(1, min(config.tie_group, count // 2)),
            config.big_tie_group,
            parse_timestamp(config.history_start),
            parse_timestamp(config.history_end),
            prefix=shape.key_prefix,
        )
        if not shape.has("updatedAt"):
            # createdAt is the only time (if any): let it carry the bulk-update ties
            layout.created = array("q", layout.updated)
        factory = SchemaRecordFactory(config.seed, conn.name, shape, self.key_refs(conn), layout)
        es = EntityStore(path, layout, factory, conn.budget, RecordTraits.of_shape(shape))
        conn.entities[path] = es
        return es

    def raw_table_rows(self, conn: ConnectionState, table: str) -> list[dict[str, Any]]:
        """The rows of one of ``conn``'s raw tables (generated on first read).

        Raises:
            NotFound: the connection's system has no such table.
        """
        with self.lock:
            rows = conn.raw_rows.get(table)
            if rows is None:
                found = tables_of(conn.profile.family).get(table)
                if found is None:
                    raise NotFound(f"No raw table {table!r}.")
                rows = found.rows(self.config.seed, conn.name, conn.config.raw_table_rows)
                conn.raw_rows[table] = rows
            return rows

    def key_refs(self, conn: ConnectionState) -> KeyRefs:
        """Keys of ``conn``'s generated records by entity, for reference fields."""
        if conn.key_refs is None:
            paths = load_catalogue().entities
            conn.key_refs = KeyRefs({p: conn.config.count_of(p) for p in paths})
        return conn.key_refs

    def authenticate(self, token: str) -> ConnectionState | None:
        """The connection of ``token``, else ``None``.

        ``token`` is either a connection's static token or an unexpired token minted for it
        (:class:`~makini_sandbox.accounts.Accounts`); a revoked connection has no valid token.
        """
        for conn in self.connections.values():
            if conn.token == token:
                return None if conn.revoked else conn
        name = self.accounts.connection_of(token)
        minted = None if name is None else self.connections.get(name)
        return None if minted is None or minted.revoked else minted

    def connection_by_key(self, key: str) -> ConnectionState:
        """The connection whose account-API ``key`` is ``key``.

        Raises:
            NotFound: no such connection.
        """
        for conn in self.connections.values():
            if conn.profile.key == key:
                return conn
        raise NotFound(f"Unknown connection key {key!r}.")

    @property
    def tokens(self) -> dict[str, str]:
        """Connection name -> current token."""
        return {name: c.token for name, c in self.connections.items()}

    # -- cursors ------------------------------------------------------------------------------

    def _encode_cursor(self, payload: dict[str, Any]) -> str:
        raw = orjson.dumps(payload)
        sig = hmac.new(self._secret, raw, hashlib.sha256).digest()[:12]
        return f"{_b64e(raw)}.{_b64e(sig)}"

    def _decode_cursor(self, cursor: str) -> dict[str, Any]:
        try:
            body, sig = cursor.split(".")
            raw = _b64d(body)
            good = hmac.new(self._secret, raw, hashlib.sha256).digest()[:12]
            if not hmac.compare_digest(good, _b64d(sig)):
                raise ValueError("bad signature")
            payload = orjson.loads(raw)
            if not isinstance(payload, dict) or payload.get("v") != 1:
                raise ValueError("bad payload")
            return payload
        except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
            raise InvalidCursor("The cursor is malformed or was tampered with.") from exc

    # -- listing ------------------------------------------------------------------------------

    def list_page(
        self,
        conn: ConnectionState,
        entity: str,
        *,
        filters: Filters | None = None,
        cursor: str | None = None,
        limit: int | None = None,
        empty: bool = False,
    ) -> Page:
        """One page of a keyset listing.

        Args:
            conn: the authenticated connection.
            entity: entity path.
            filters: the filters of a new listing (ignored when ``cursor`` is given).
            cursor: ``next_cursor`` of the previous page, continuing that listing.
            limit: page size (already validated); ``None``: the cursor's previous limit, or 100.
            empty: answer an empty page whose ``next_cursor`` continues at the same position
                (the ``empty_pages`` fault; each such cursor is new: page number, issue time).

        Returns:
            The :class:`Page`.

        Raises:
            NotFound: unknown entity.
            InvalidCursor: malformed, tampered, expired or foreign cursor.
        """
        with self.lock:
            es = self.entity(conn, entity)
            now = self.clock.peek()
            after: tuple[int, str] | None
            if cursor is not None:
                p = self._decode_cursor(cursor)
                try:
                    if p["c"] != conn.name or p["e"] != entity:
                        raise InvalidCursor("The cursor belongs to another listing.")
                    issued = int(p["i"])
                    flt = Filters.from_json(p["f"])
                    k = p["k"]
                    after = None if k is None else (int(k[0]), str(k[1]))
                    total = int(p["t"])
                    page_no = int(p["n"])
                    started = int(p["s"])
                    prev_limit = int(p["l"])
                except (KeyError, TypeError, ValueError, IndexError) as exc:
                    raise InvalidCursor("The cursor is malformed.") from exc
                if now - issued > self.config.cursor_ttl_seconds * US_PER_SECOND:
                    raise InvalidCursor("The cursor has expired.")
                lim = limit or prev_limit
            else:
                flt = filters or Filters()
                after = None
                total = es.count(flt)
                page_no = 1
                started = now
                lim = limit or DEFAULT_LIMIT
            lim = max(1, min(lim, MAX_LIMIT[entity]))

            def make_cursor(pos: tuple[int, str] | None) -> str:
                return self._encode_cursor(
                    {
                        "v": 1,
                        "c": conn.name,
                        "e": entity,
                        "f": flt.to_json(),
                        "k": None if pos is None else [pos[0], pos[1]],
                        "t": total,
                        "n": page_no + 1,
                        "s": started,
                        "i": now,
                        "l": lim,
                    }
                )

            shown_total = None if conn.null_total_count else total
            if empty or (conn.empty_every > 1 and page_no % conn.empty_every == 0):
                return Page([], make_cursor(after), shown_total, page_no, cursor, flt, lim)
            take = lim
            if conn.short_every > 1 and page_no % conn.short_every == 0:
                take = max(1, lim // 3)
            rows = es.scan(after, flt, take + 1)
            has_more = len(rows) > take
            if has_more:
                del rows[take:]
                next_cursor: str | None = make_cursor((rows[-1][0], rows[-1][1]))
            else:
                next_cursor = None
            return Page(rows, next_cursor, shown_total, page_no, cursor, flt, lim)

    def prefetch(
        self, conn: ConnectionState, entity: str, after: tuple[int, str], flt: Filters, n: int
    ) -> tuple[int, str] | None:
        """Build and cache the serialized records following ``after`` (read-ahead).

        Returns:
            Position of the last record touched, or ``None`` when the listing is exhausted.
        """
        with self.lock:
            es = conn.entities.get(entity)
            if es is None:
                return None
            rows = es.scan(after, flt, n)
            if len(rows) < n:
                return None
            return rows[-1][0], rows[-1][1]

    def prewarm(self, connection: str | None = None, entity: str | None = None) -> int:
        """Build and cache every generated record up front (within the cache budget).

        Benchmarks can call this so that no listing pays for generation.

        Args:
            connection: only this connection (default: all).
            entity: only this entity path (default: all).

        Returns:
            Number of records built.
        """
        built = 0
        names = [connection] if connection else list(self.connections)
        for name in names:
            conn = self.connection(name)
            for path, es in conn.entities.items():
                if entity is not None and path != entity:
                    continue
                for pos in range(es.layout.count):
                    if es.budget.used >= es.budget.max_bytes:
                        return built
                    with self.lock:
                        if not es.superseded[pos] and es.cache[pos] is None:
                            es.base_bytes(pos)
                            built += 1
        return built

    # -- mutations ----------------------------------------------------------------------------

    def _parse_ts(self, value: Any, name: str) -> int:
        if not isinstance(value, str):
            raise InvalidParameter(f"{name} must be an RFC 3339 string.")
        try:
            return parse_timestamp(value)
        except ValueError as exc:
            raise InvalidParameter(f"{name}: {exc}") from exc

    def get_record(self, conn_name: str, entity: str, key: str) -> dict[str, Any]:
        """The visible and pending versions of a record.

        Returns:
            ``{"data": record | None, "pending": record | None}``.

        Raises:
            NotFound: unknown connection, entity or key.
        """
        with self.lock:
            es = self.entity(self.connection(conn_name), entity)
            cur = es.current(key)
            pend = es.pending.get(key)
            if cur is None and pend is None:
                raise NotFound(f"No {entity} record with key {key!r}.")
            return {
                "data": None if cur is None else copy.deepcopy(cur.record),
                "pending": None if pend is None else copy.deepcopy(pend.record),
            }

    def put_record(
        self,
        conn_name: str,
        entity: str,
        key: str,
        fields: dict[str, Any],
        *,
        pending: bool = False,
        now: int | None = None,
    ) -> dict[str, Any]:
        """Create or update a record (admin ``PUT``).

        ``fields`` are merged into the record's latest version (its pending version if it has
        one): top-level fields replace, ``customFields`` merge key by key, unknown fields are
        added as they are. A new key creates a record with every field of its entity defaulted
        and ``createdAt = updatedAt = now``. ``updatedAt`` becomes the clock's now unless
        ``fields`` gives it. For purchase orders ``lineItems`` replaces the whole list (see
        :meth:`_merge_lines`) and the totals are recomputed unless given.

        Args:
            conn_name: connection name.
            entity: entity path.
            key: record key.
            fields: fields to merge.
            pending: keep the change invisible until the next sync.
            now: timestamp to use instead of the clock (used by bulk changes).

        Returns:
            The written version.

        Raises:
            NotFound: unknown connection or entity.
            InvalidParameter: malformed fields.
        """
        if not isinstance(fields, dict):
            raise InvalidParameter("The body must be a JSON object of record fields.")
        with self.lock:
            conn = self.connection(conn_name)
            es = self.entity(conn, entity)
            base = es.pending.get(key) or es.current(key)
            ts = now if now is not None else self.clock.now()
            if "updatedAt" in fields:
                ts = self._parse_ts(fields["updatedAt"], "updatedAt")
            ts_s = format_timestamp(ts)
            traits = es.traits
            if base is None:
                record = traits.empty(key)
                created = ts
                if "createdAt" not in fields and traits.created_at:
                    record["createdAt"] = ts_s
            else:
                record = copy.deepcopy(base.record)
                created = base.created
            if "createdAt" in fields:
                created = self._parse_ts(fields["createdAt"], "createdAt")
            for name, value in fields.items():
                if name in ("key", "lineItems", "updatedAt"):
                    continue
                if name == "customFields":
                    if not isinstance(value, dict):
                        raise InvalidParameter("customFields must be an object.")
                    merged = dict(record.get("customFields") or {})
                    merged.update(value)
                    record["customFields"] = merged
                elif name == "deletedAt" and value is not None:
                    self._parse_ts(value, "deletedAt")
                    record[name] = value
                else:
                    record[name] = value
            record["key"] = key
            if traits.updated_at:
                record["updatedAt"] = ts_s
            if entity == "purchase-orders" and "lineItems" in fields:
                record["lineItems"] = self._merge_lines(
                    key, record.get("lineItems") or [], fields["lineItems"], ts_s
                )
                net, gross = po_totals(record["lineItems"])
                if "totalNetValue" not in fields:
                    record["totalNetValue"] = net
                if "totalGrossValue" not in fields:
                    record["totalGrossValue"] = gross
            version = Version(record, ts, created)
            self._write(conn, es, version, pending)
            return copy.deepcopy(record)

    def _merge_lines(
        self, po_key: str, old: list[dict[str, Any]], new: Any, ts_s: str
    ) -> list[dict[str, Any]]:
        """Replace a PO's line list.

        Each given line is merged into the existing line with the same ``key`` (its
        ``updatedAt`` becomes the PO's new ``updatedAt`` if any field changed, unless the
        line gives a different ``updatedAt`` of its own), or created
        (key ``f"{po_key}-L{lineNo}"`` if missing). Lines not given are removed; to keep a
        removed line as a tombstone, give it with ``deletedAt`` set. ``lineTotalValue`` is
        recomputed from quantity, price and discount when one of those is given without it.
        """
        if not isinstance(new, list) or not all(isinstance(x, dict) for x in new):
            raise InvalidParameter("lineItems must be an array of objects.")
        by_key = {line.get("key"): line for line in old}
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        for i, patch in enumerate(new, start=1):
            line_no = patch.get("lineNo")
            lk = patch.get("key") or f"{po_key}-L{line_no if line_no is not None else i * 10}"
            if lk in seen:
                raise InvalidParameter(f"Duplicate line key {lk!r}.")
            seen.add(lk)
            for name in DECIMAL_FIELDS & patch.keys():
                value = patch[name]
                if value is not None and not isinstance(value, str):
                    raise InvalidParameter(f"line {lk}: {name} must be a decimal string or null.")
            prev = by_key.get(lk)
            if prev is None:
                line = empty_line(lk, str(line_no if line_no is not None else i * 10))
                line["createdAt"] = ts_s
                line["updatedAt"] = ts_s
                changed = True
            else:
                line = copy.deepcopy(prev)
                changed = any(
                    line.get(k) != v for k, v in patch.items() if k not in ("updatedAt", "key")
                )
            explicit = "updatedAt" in patch and (
                prev is None or patch["updatedAt"] != prev.get("updatedAt")
            )
            line.update(patch)
            line["key"] = lk
            if ("quantity" in patch or "price" in patch or "discount" in patch) and (
                "lineTotalValue" not in patch
            ):
                line["lineTotalValue"] = line_total(line)
            if changed and not explicit:
                line["updatedAt"] = ts_s
            out.append(line)
        return out

    def delete_record(
        self,
        conn_name: str,
        entity: str,
        key: str,
        *,
        pending: bool = False,
        deleted_at: str | None = None,
        now: int | None = None,
        hard: bool = False,
    ) -> dict[str, Any]:
        """Tombstone a record: ``deletedAt = updatedAt = now`` (or ``deleted_at``).

        The tombstone keeps the record's last state (a PO keeps its ``lineItems``). v1 lists
        it with ``include_deleted``; the unified dialect lists it (``deletedAt`` set) unless it
        is a purchase order or ``hard`` is set: those vanish from unified listings.

        Raises:
            NotFound: unknown connection, entity or key.
        """
        with self.lock:
            conn = self.connection(conn_name)
            es = self.entity(conn, entity)
            base = es.pending.get(key) or es.current(key)
            if base is None:
                raise NotFound(f"No {entity} record with key {key!r}.")
            ts = now if now is not None else self.clock.now()
            if deleted_at is not None:
                ts = self._parse_ts(deleted_at, "deletedAt")
            record = copy.deepcopy(base.record)
            ts_s = format_timestamp(ts)
            if es.traits.updated_at:
                record["updatedAt"] = ts_s
            # kept on records whose schema lacks it too: it marks the tombstone (unified
            # listings drop such records: without deletedAt there is no soft delete)
            record["deletedAt"] = ts_s
            version = Version(record, ts, base.created, hard=hard)
            self._write(conn, es, version, pending)
            return copy.deepcopy(record)

    def _write(
        self, conn: ConnectionState, es: EntityStore, version: Version, pending: bool
    ) -> None:
        if pending:
            es.pending[version.key] = version
            return
        es.pending.pop(version.key, None)
        es.publish(version)

    def bulk(
        self,
        conn_name: str,
        entity: str,
        *,
        keys: Iterable[str] | None = None,
        count: int | None = None,
        fields: dict[str, Any] | None = None,
        delete: bool = False,
        pending: bool = False,
        updated_at: str | None = None,
        hard: bool = False,
    ) -> dict[str, Any]:
        """Change many records at one shared ``updatedAt`` (a bulk update in the source system).

        Args:
            conn_name: connection name.
            entity: entity path.
            keys: keys to change (created when missing).
            count: alternatively, change this many existing records, spread evenly over the
                current (``updatedAt``, ``key``) order (deterministic).
            fields: fields merged into each record (as in :meth:`put_record`).
            delete: tombstone the records instead.
            pending: keep the changes invisible until the next sync.
            updated_at: explicit shared ``updatedAt`` (default: the clock's now).
            hard: with ``delete``, hard deletes (see :meth:`delete_record`).

        Returns:
            ``{"changed": n, "keys": [...], "updatedAt": ...}``.
        """
        with self.lock:
            conn = self.connection(conn_name)
            es = self.entity(conn, entity)
            if keys is None:
                if count is None or count < 0:
                    raise InvalidParameter("Give 'keys' or a non-negative 'count'.")
                live = [r[1] for r in es.scan(None, Filters(), 1 << 62, data=False)]
                step = max(1, len(live) // max(count, 1))
                keys = live[::step][:count]
            key_list = list(keys)
            ts = self.clock.now()
            if updated_at is not None:
                ts = self._parse_ts(updated_at, "updatedAt")
            body = dict(fields or {})
            body.pop("updatedAt", None)
            for key in key_list:
                if delete:
                    self.delete_record(conn_name, entity, key, pending=pending, now=ts, hard=hard)
                else:
                    self.put_record(conn_name, entity, key, body, pending=pending, now=ts)
            return {"changed": len(key_list), "keys": key_list, "updatedAt": format_timestamp(ts)}

    def sync(
        self,
        conn_name: str,
        *,
        last_sync_at: str | None = None,
        status: str | None = None,
        initial_sync_completed: bool | None = None,
        last_sync_status: str | None = None,
        publish: bool = True,
        full_sync: bool = False,
    ) -> dict[str, Any]:
        """A sync: publish pending versions and set the sync state.

        Args:
            conn_name: connection name.
            last_sync_at: new ``last_sync_at`` (RFC 3339); default: the clock's now.
            status: new ``status`` (``active``, ``syncing``, ``error``,
                ``reauthorization_required``).
            initial_sync_completed: new ``initial_sync_completed``.
            last_sync_status: new ``last_sync_status``.
            publish: publish the pending versions (default) or leave them pending.
            full_sync: this sync was a full one (the unified ``sync_status`` says
                ``fulldone`` instead of ``done`` until the next admin sync call).

        Returns:
            The sync-status ``data`` object and ``published`` (number of versions published).
        """
        with self.lock:
            conn = self.connection(conn_name)
            if status is not None and status not in SYNC_STATUSES:
                raise InvalidParameter(f"status must be one of {', '.join(SYNC_STATUSES)}.")
            ts = None if last_sync_at is None else self._parse_ts(last_sync_at, "last_sync_at")
            published = 0
            if publish:
                for es in conn.entities.values():
                    for version in sorted(es.pending.values(), key=lambda v: (v.updated, v.key)):
                        es.publish(version)
                        published += 1
                    es.pending.clear()
                conn.last_sync_at = ts if ts is not None else self.clock.now()
            elif ts is not None:
                conn.last_sync_at = ts
            if status is not None:
                conn.set_status(status, self.clock.now())
            conn.full_sync_done = bool(full_sync)
            if initial_sync_completed is not None:
                conn.initial_sync_completed = bool(initial_sync_completed)
            if last_sync_status is not None:
                conn.last_sync_status = last_sync_status
            return {**conn.sync_status(), "published": published}

    def set_sync_time_raw(self, conn_name: str, value: Any, *, clear: bool = False) -> Any:
        """Send ``value`` verbatim as ``last_sync_at`` (v1) and ``sync_updated_at`` (unified),
        e.g. ``"yesterday"`` or ``""``; ``clear`` goes back to the real times.

        Returns:
            The v1 sync-status ``data`` object.
        """
        with self.lock:
            conn = self.connection(conn_name)
            conn.sync_time_raw = None if clear else (value,)
            return conn.sync_status()

    # -- settings -----------------------------------------------------------------------------

    def set_token(
        self,
        conn_name: str,
        *,
        token: str | None = None,
        revoked: bool | None = None,
        status: str | None = None,
    ) -> dict[str, Any]:
        """Change a connection's token, revoke or restore it, or set its ``status``.

        Revoking sets ``status`` to ``reauthorization_required`` and restoring to ``active``
        unless ``status`` is given.
        """
        with self.lock:
            conn = self.connection(conn_name)
            if status is not None and status not in SYNC_STATUSES:
                raise InvalidParameter(f"status must be one of {', '.join(SYNC_STATUSES)}.")
            if token is not None:
                if not isinstance(token, str) or not token:
                    raise InvalidParameter("token must be a non-empty string.")
                if any(c.token == token and c is not conn for c in self.connections.values()):
                    raise InvalidParameter("token already used by another connection.")
                conn.token = token
            if revoked is not None:
                conn.revoked = bool(revoked)
                now = self.clock.now()
                conn.set_status("reauthorization_required" if revoked else "active", now)
            if status is not None:
                conn.set_status(status, self.clock.now())
            return {
                "name": conn.name,
                "token": conn.token,
                "revoked": conn.revoked,
                "status": conn.status,
            }

    def set_profile(self, conn_name: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Change a connection's profile (account API and unified settings).

        Args:
            conn_name: connection name.
            fields: any of :attr:`ConnectionProfile.SETTABLE`.

        Returns:
            The profile.

        Raises:
            NotFound: unknown connection.
            InvalidParameter: unknown field, invalid value, or a key another connection has.
        """
        with self.lock:
            conn = self.connection(conn_name)
            key = fields.get("key")
            if key is not None and any(
                c.profile.key == key and c is not conn for c in self.connections.values()
            ):
                raise InvalidParameter("key already used by another connection.")
            conn.profile.update(fields, self.clock.now())
            return conn.profile.describe()

    def describe(self) -> list[dict[str, Any]]:
        """Admin view of every connection (``counts`` covers every entity, the catalogue
        entities included; those not used yet are counted without building their store)."""
        paths = [*ENTITIES, *(p for p in load_catalogue().entities if p not in ENTITIES)]
        with self.lock:
            out = []
            for conn in self.connections.values():
                counts = {}
                for entity in paths:
                    es = conn.entities.get(entity)
                    if es is None:
                        n = conn.config.count_of(entity)
                        counts[entity] = {"generated": n, "visible": n, "deleted": 0, "pending": 0}
                        continue
                    live, tomb = es.visible_count()
                    counts[entity] = {
                        "generated": es.layout.count,
                        "visible": live,
                        "deleted": tomb,
                        "pending": len(es.pending),
                    }
                out.append(
                    {
                        "name": conn.name,
                        "connection_id": conn.connection_id,
                        "token": conn.token,
                        "revoked": conn.revoked,
                        "system": conn.config.system,
                        "custom_fields": conn.custom_fields,
                        "counts": counts,
                        "sync": conn.sync_status(),
                        "denied": sorted(conn.denied),
                        "rate_limit": conn.limiter.describe(),
                        "pages": {
                            "short_every": conn.short_every,
                            "empty_every": conn.empty_every,
                            "null_total_count": conn.null_total_count,
                        },
                        "profile": conn.profile.describe(),
                        "unified_sync": {
                            "full_sync_done": conn.full_sync_done,
                            "status_since": None
                            if conn.status_since is None
                            else format_timestamp(conn.status_since),
                        },
                        "minted_tokens": self.accounts.minted(conn.name),
                    }
                )
            return out
