"""Listings of the unified dialect over an :class:`~makini_sandbox.models.EntityStore`.

The unified dialect pages by offset (``page``/``per_page``), computed at request time over
the current result set, with filters on ``key``/``updatedAt``/``createdAt`` and a sort on
those fields. A record that changes between two requests moves, so a ``page += 1`` walk
skips or repeats records, as on the real server.

How a request stays cheap on 100,000 records: the generated records are kept in three base
orders, each by (field, ``key``): by ``updatedAt`` (the layout itself), by ``key`` (the
record number) and by ``createdAt`` (sorted once, on first use). A listing picks the order of
its first sort field and walks it; records changed through the admin API are *holes* in the
base order (superseded) plus a small sorted list of overlay versions merged in. Without other
filters than a range on the first sort field, counting and skipping to an offset are
bisections (O(log n + overlay)); other filters are tested record by record (O(n)).

Ties: records equal on every sort field come in an order that changes between requests. The
tie groups that touch the requested page are shuffled with an RNG seeded from (sandbox seed,
request number, group value), so runs are reproducible but two requests differ. Sorting by
``key`` (unique within a connection) gives a total order.
"""

from __future__ import annotations

import random
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .models import EntityStore, Version

#: fields the unified dialect filters and sorts on
QUERY_FIELDS = ("key", "updatedAt", "createdAt")
#: order of a listing without ``sort``: creation order
DEFAULT_SORT: tuple[tuple[str, bool], ...] = (("createdAt", False), ("key", False))

#: a listed record: a generated record's layout position, or an overlay version
Ref = Any


def unified_visible(version: Version, soft_delete: bool) -> bool:
    """Whether the unified dialect lists ``version``.

    Hard-deleted records vanish, and so do deleted records of an entity without soft
    deletes (``soft_delete=False``: its schema has no ``deletedAt``, e.g. purchase orders);
    other deleted records stay listed with ``deletedAt`` set.
    """
    return not version.deleted or (not version.hard and soft_delete)


@dataclass(frozen=True)
class Condition:
    """One filter: a range on a field, or a substring test on ``key``.

    Range bounds are ``(value, inclusive)`` or ``None``; timestamps are epoch µs, ``key``
    compares as a string.

    Attributes:
        field: ``key``, ``updatedAt`` or ``createdAt``.
        low: lower bound.
        high: upper bound.
        contains: ``key`` contains this text.
        starts_with: ``key`` starts with this text.
    """

    field: str
    low: tuple[Any, bool] | None = None
    high: tuple[Any, bool] | None = None
    contains: str | None = None
    starts_with: str | None = None

    @property
    def is_range(self) -> bool:
        """A range (usable as bounds of an order on its field)."""
        return self.contains is None and self.starts_with is None

    def compile(self) -> Callable[[Any], bool]:
        """A test of a value of :attr:`field` (built once per request, called per record)."""
        text, prefix = self.contains, self.starts_with
        if text is not None:
            return lambda v: text in v
        if prefix is not None:
            return lambda v: bool(v.startswith(prefix))
        lv, lincl = self.low if self.low is not None else (None, True)
        hv, hincl = self.high if self.high is not None else (None, True)

        def test(v: Any) -> bool:
            if lv is not None and (v < lv or (v == lv and not lincl)):
                return False
            return hv is None or v < hv or (v == hv and hincl)

        return test


@dataclass(frozen=True)
class ListQuery:
    """A unified listing request, already validated.

    Attributes:
        conditions: the filters.
        match_any: combine them with OR (``filterMatch=any``) instead of AND.
        sort: (field, descending) pairs in the order given; empty: creation order.
        offset: records to skip.
        limit: page size.
    """

    conditions: tuple[Condition, ...] = ()
    match_any: bool = False
    sort: tuple[tuple[str, bool], ...] = ()
    offset: int = 0
    limit: int = 15


# -- base orders --------------------------------------------------------------------------------


class _BaseOrder:
    """The generated records of an entity ordered by (field, ``key``): index -> position."""

    def __init__(self, es: EntityStore) -> None:
        self.lay = es.layout
        self.n = es.layout.count

    def pos(self, i: int) -> int:
        """Layout position of index ``i``."""
        raise NotImplementedError

    def positions(self, lo: int, hi: int) -> Sequence[int]:
        """Layout positions of indexes ``lo .. hi - 1``."""
        raise NotImplementedError

    def locate(self, value: Any, right: bool) -> int:
        """First index whose value is ``>= value`` (``> value`` when ``right``)."""
        raise NotImplementedError

    def after(self, value: Any, key: str) -> int:
        """First index whose (value, key) is greater than (``value``, ``key``)."""
        raise NotImplementedError

    def index_of_pos(self, positions: Sequence[int]) -> list[int]:
        """Sorted indexes of layout positions."""
        raise NotImplementedError


class _ByUpdated(_BaseOrder):
    """The layout's own order (``updatedAt``, ``key``): index = position."""

    def pos(self, i: int) -> int:
        return i

    def positions(self, lo: int, hi: int) -> Sequence[int]:
        return range(lo, hi)

    def locate(self, value: Any, right: bool) -> int:
        return (bisect_right if right else bisect_left)(self.lay.updated, value)

    def after(self, value: Any, key: str) -> int:
        return self.lay.position_after(value, key)

    def index_of_pos(self, positions: Sequence[int]) -> list[int]:
        return list(positions)


class _ByKey(_BaseOrder):
    """Key order: generated keys are one prefix plus zero-padded numbers, so index = number-1."""

    def pos(self, i: int) -> int:
        return self.lay.pos_of_num[i]

    def positions(self, lo: int, hi: int) -> Sequence[int]:
        return self.lay.pos_of_num[lo:hi]

    def locate(self, value: Any, right: bool) -> int:
        key_of = self.lay.key_of_num
        bis = bisect_right if right else bisect_left
        return bis(range(self.n), value, key=lambda i: key_of(i + 1))

    def after(self, value: Any, key: str) -> int:
        return self.locate(key, True)

    def index_of_pos(self, positions: Sequence[int]) -> list[int]:
        num = self.lay.num
        return sorted(num[p] - 1 for p in positions)


class _ByCreated(_BaseOrder):
    """(``createdAt``, ``key``) order, sorted once per entity store on first use."""

    def __init__(self, es: EntityStore) -> None:
        super().__init__(es)
        crt, num = self.lay.created, self.lay.num
        self.order = sorted(range(self.n), key=lambda p: (crt[p], num[p]))
        self.rank = [0] * self.n
        for i, p in enumerate(self.order):
            self.rank[p] = i

    def pos(self, i: int) -> int:
        return self.order[i]

    def positions(self, lo: int, hi: int) -> Sequence[int]:
        return self.order[lo:hi]

    def locate(self, value: Any, right: bool) -> int:
        bis = bisect_right if right else bisect_left
        return bis(self.order, value, key=self.lay.created.__getitem__)

    def after(self, value: Any, key: str) -> int:
        crt, key_at = self.lay.created, self.lay.key_at
        return bisect_right(self.order, (value, key), key=lambda p: (crt[p], key_at(p)))

    def index_of_pos(self, positions: Sequence[int]) -> list[int]:
        rank = self.rank
        return sorted(rank[p] for p in positions)


def _version_value(v: Version, name: str) -> Any:
    if name == "updatedAt":
        return v.updated
    if name == "createdAt":
        return v.created
    return v.key


@dataclass
class _Overlay:
    """Unified-visible overlay versions sorted by (field value, key), and where each goes in
    the base order (computed on demand, kept until the entity store changes)."""

    order: _BaseOrder
    values: list[Any]
    keys: list[str]
    versions: list[Version]
    _at: dict[int, int] = field(default_factory=dict)

    def at(self, j: int) -> int:
        """Base index before which entry ``j`` goes."""
        i = self._at.get(j)
        if i is None:
            i = self.order.after(self.values[j], self.keys[j])
            self._at[j] = i
        return i


@dataclass
class _Indexes:
    """What unified listings derive from one entity store (cached on it, ``es.derived``):
    the createdAt order (for the store's life), holes and overlay lists per field (until the
    store's ``revision`` changes)."""

    created: _ByCreated | None = None
    revision: int = -1
    holes: dict[str, list[int]] = field(default_factory=dict)
    overlays: dict[str, _Overlay] = field(default_factory=dict)


class _EntityView:
    """One entity store seen by the unified dialect: base orders, holes, overlay lists."""

    def __init__(self, es: EntityStore, soft_delete: bool) -> None:
        self.es = es
        self.soft_delete = soft_delete
        ix = es.derived.get("unified")
        if not isinstance(ix, _Indexes):
            ix = _Indexes()
            es.derived["unified"] = ix
        if ix.revision != es.revision:
            ix.revision = es.revision
            ix.holes.clear()
            ix.overlays.clear()
        self.ix = ix

    def order(self, name: str) -> _BaseOrder:
        """The base order by (``name``, key)."""
        if name == "updatedAt":
            return _ByUpdated(self.es)
        if name == "key":
            return _ByKey(self.es)
        if self.ix.created is None:
            self.ix.created = _ByCreated(self.es)
        return self.ix.created

    def holes(self, name: str, order: _BaseOrder) -> list[int]:
        """Sorted indexes of ``order`` whose generated record was superseded."""
        holes = self.ix.holes.get(name)
        if holes is None:
            holes = order.index_of_pos(self.es.superseded_positions)
            self.ix.holes[name] = holes
        return holes

    def overlay(self, name: str, order: _BaseOrder) -> _Overlay:
        """The overlay versions the unified dialect lists, by (``name``, key)."""
        ov = self.ix.overlays.get(name)
        if ov is None:
            entries = sorted(
                (_version_value(v, name), v.key, v)
                for v in self.es.overlay.values()
                if unified_visible(v, self.soft_delete)
            )
            ov = _Overlay(
                order, [e[0] for e in entries], [e[1] for e in entries], [e[2] for e in entries]
            )
            self.ix.overlays[name] = ov
        return ov

    def value(self, ref: Ref, name: str) -> Any:
        """The value of field ``name`` of a listed record."""
        if isinstance(ref, int):
            lay = self.es.layout
            if name == "updatedAt":
                return lay.updated[ref]
            if name == "createdAt":
                return lay.created[ref]
            return lay.key_at(ref)
        return _version_value(ref, name)

    def data(self, ref: Ref) -> bytes:
        """The record's v1 JSON bytes."""
        return self.es.base_bytes(ref) if isinstance(ref, int) else ref.data


# -- result sequences -----------------------------------------------------------------------


class _Seq:
    """A listing's matching records in (first sort field, ``key``) ascending order."""

    total: int

    def take(self, start: int, count: int) -> list[Ref]:
        """The records at positions ``start .. start + count - 1``."""
        raise NotImplementedError

    def rank(self, value: Any, right: bool) -> int:
        """How many records have a first-field value ``< value`` (``<= value`` if ``right``)."""
        raise NotImplementedError


class _RangeSeq(_Seq):
    """A base-order index range minus holes, merged with an overlay slice: counting and
    skipping to an offset are bisections."""

    def __init__(
        self, order: _BaseOrder, holes: list[int], bounds: tuple[int, int, int, int], ov: _Overlay
    ) -> None:
        self.order, self.holes, self.ov = order, holes, ov
        self.blo, self.bhi, self.olo, self.ohi = bounds
        self.total = self._vis(self.blo, self.bhi) + (self.ohi - self.olo)

    def _vis(self, a: int, b: int) -> int:
        """Visible base records at indexes ``a .. b - 1``."""
        h = self.holes
        return (b - a) - (bisect_left(h, b) - bisect_left(h, a))

    def _advance(self, p: int, r: int) -> int:
        """The smallest index q with ``r`` visible base records in ``p .. q - 1``."""
        h = self.holes
        lo = p + r
        hi = min(self.bhi, p + r + len(h) - bisect_left(h, p))
        while lo < hi:
            mid = (lo + hi) // 2
            if self._vis(p, mid) >= r:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def _ov_at(self, oi: int) -> int:
        """Base index (within the range) before which overlay entry ``oi`` goes."""
        if oi >= self.ohi:
            return self.bhi
        return min(max(self.ov.at(oi), self.blo), self.bhi)

    def take(self, start: int, count: int) -> list[Ref]:
        if start >= self.total:
            return []
        # the first overlay entry at or after merged position `start` (binary search: an
        # entry's merged position is its rank in the overlay plus the base records before it)
        lo, hi = self.olo, self.ohi
        while lo < hi:
            mid = (lo + hi) // 2
            if (mid - self.olo) + self._vis(self.blo, self._ov_at(mid)) >= start:
                hi = mid
            else:
                lo = mid + 1
        oi = lo
        p = self._advance(self.blo, start - (oi - self.olo))
        out: list[Ref] = []
        holes, pos, bhi, ohi = self.holes, self.order.pos, self.bhi, self.ohi
        hi_, nh = bisect_left(holes, p), len(holes)
        next_ov = self._ov_at(oi)
        versions = self.ov.versions
        while len(out) < count:
            if p < bhi and p < next_ov:
                while hi_ < nh and holes[hi_] < p:
                    hi_ += 1
                if not (hi_ < nh and holes[hi_] == p):
                    out.append(pos(p))
                p += 1
            elif oi < ohi:
                out.append(versions[oi])
                oi += 1
                next_ov = self._ov_at(oi)
            else:
                break
        return out

    def rank(self, value: Any, right: bool) -> int:
        q = min(max(self.order.locate(value, right), self.blo), self.bhi)
        bis = bisect_right if right else bisect_left
        o = bis(self.ov.values, value, self.olo, self.ohi)
        return self._vis(self.blo, q) + (o - self.olo)


class _ListSeq(_Seq):
    """The matching records materialized (filters that no base order can bound)."""

    def __init__(self, refs: list[Ref], value: Callable[[Ref], Any]) -> None:
        self.refs, self.value = refs, value
        self.total = len(refs)

    def take(self, start: int, count: int) -> list[Ref]:
        return self.refs[start : start + count]

    def rank(self, value: Any, right: bool) -> int:
        return (bisect_right if right else bisect_left)(self.refs, value, key=self.value)


# -- the listing ------------------------------------------------------------------------------


Predicate = Callable[[int, int, str], bool]


def _predicate(conditions: Sequence[Condition], match_any: bool) -> tuple[Predicate, bool]:
    """A test of (updatedAt, createdAt, key) for ``conditions``, and whether it reads ``key``."""
    slot = {"updatedAt": 0, "createdAt": 1, "key": 2}
    tests = [(slot[c.field], c.compile()) for c in conditions]
    needs_key = any(c.field == "key" for c in conditions)
    if len(tests) == 1:  # the common case, without a loop per record
        i, test = tests[0]
        if i == 0:
            return (lambda u, c, k: test(u)), needs_key
        if i == 1:
            return (lambda u, c, k: test(c)), needs_key
        return (lambda u, c, k: test(k)), needs_key

    def pred(updated: int, created: int, key: str) -> bool:
        values = (updated, created, key)
        for i, test in tests:
            if test(values[i]) == match_any:
                return match_any
        return not match_any

    return pred, needs_key


def _bounds(
    order: _BaseOrder, ov: _Overlay, ranges: Sequence[Condition]
) -> tuple[int, int, int, int]:
    """Index ranges of the base order and of the overlay list that satisfy every range."""
    blo, bhi, olo, ohi = 0, order.n, 0, len(ov.values)
    for c in ranges:
        if c.low is not None:
            value, incl = c.low
            blo = max(blo, order.locate(value, not incl))
            olo = max(olo, (bisect_left if incl else bisect_right)(ov.values, value))
        if c.high is not None:
            value, incl = c.high
            bhi = min(bhi, order.locate(value, incl))
            ohi = min(ohi, (bisect_right if incl else bisect_left)(ov.values, value))
    return blo, max(blo, bhi), olo, max(olo, ohi)


def _sequence(view: _EntityView, primary: str, query: ListQuery) -> _Seq:
    """The matching records in (``primary``, key) order."""
    order = view.order(primary)
    holes = view.holes(primary, order)
    ov = view.overlay(primary, order)
    conds = query.conditions
    usable = not query.match_any or len(conds) == 1
    ranges = [c for c in conds if usable and c.field == primary and c.is_range]
    rest = [c for c in conds if not any(c is r for r in ranges)]
    blo, bhi, olo, ohi = bounds = _bounds(order, ov, ranges)
    if not rest:
        return _RangeSeq(order, holes, bounds, ov)
    pred, needs_key = _predicate(rest, query.match_any and len(conds) > 1)
    lay = view.es.layout
    upd, crt, sup, key_at = lay.updated, lay.created, view.es.superseded, lay.key_at
    # base matches as (index, position); index order is the listing's order
    base = [
        (i, p)
        for i, p in enumerate(order.positions(blo, bhi), blo)
        if not sup[p] and pred(upd[p], crt[p], key_at(p) if needs_key else "")
    ]
    overlay = [
        (ov.at(j), v)
        for j, v in enumerate(ov.versions[olo:ohi], olo)
        if pred(v.updated, v.created, v.key)
    ]
    refs: list[Ref] = []
    a = b = 0
    while a < len(base) or b < len(overlay):
        if b >= len(overlay) or (a < len(base) and base[a][0] < overlay[b][0]):
            refs.append(base[a][1])
            a += 1
        else:
            refs.append(overlay[b][1])
            b += 1
    return _ListSeq(refs, lambda r: view.value(r, primary))


def _order_ties(
    view: _EntityView,
    group: list[Ref],
    rest: Sequence[tuple[str, bool]],
    rng: random.Random,
) -> list[Ref]:
    """Order one tie group (equal first sort field) by the other sort fields; records equal
    on those too are shuffled."""
    members = list(group)
    if not any(name == "key" for name, _ in rest):
        rng.shuffle(members)
    for name, desc in reversed(rest):
        members.sort(key=lambda r, n=name: view.value(r, n), reverse=desc)  # type: ignore[misc]
    return members


def list_page(
    es: EntityStore, query: ListQuery, seed: int, request_no: int, *, soft_delete: bool
) -> tuple[list[bytes], int]:
    """One page of a unified listing (call with the store lock held).

    Args:
        es: the entity store.
        query: filters, sort and window.
        seed: the sandbox seed (ties are shuffled reproducibly).
        request_no: the request's number (ties are shuffled differently per request).
        soft_delete: deleted records stay listed (see :func:`unified_visible`).

    Returns:
        The page's records as v1 JSON bytes, and the number of matching records.
    """
    view = _EntityView(es, soft_delete)
    sort = query.sort or DEFAULT_SORT
    primary, desc = sort[0]
    rest: list[tuple[str, bool]] = []
    if primary != "key":  # key is unique: nothing after it matters
        for name, d in sort[1:]:
            rest.append((name, d))
            if name == "key":
                break
    seq = _sequence(view, primary, query)
    total = seq.total
    offset, limit = query.offset, query.limit
    if offset >= total or limit <= 0:
        return [], total
    if desc:
        a, b = max(total - offset - limit, 0), total - offset
    else:
        a, b = offset, min(offset + limit, total)
    if primary == "key" or rest == [("key", desc)]:
        refs = seq.take(a, b - a)  # the base order is the requested order
        if desc:
            refs.reverse()
        return [view.data(r) for r in refs], total
    # widen the window to whole tie groups, order each group, cut the page out again
    first = view.value(seq.take(a, 1)[0], primary)
    last = view.value(seq.take(b - 1, 1)[0], primary)
    ga, gb = seq.rank(first, False), seq.rank(last, True)
    groups: list[list[Ref]] = []
    prev: Any = None
    for ref in seq.take(ga, gb - ga):
        value = view.value(ref, primary)
        if not groups or value != prev:
            groups.append([])
            prev = value
        groups[-1].append(ref)
    ordered = [
        _order_ties(
            view,
            group,
            rest,
            random.Random(f"{seed}:{request_no}:{primary}:{view.value(group[0], primary)}"),
        )
        for group in groups
    ]
    if desc:
        ordered.reverse()
    flat = [ref for group in ordered for ref in group]
    start = offset - ((total - gb) if desc else ga)
    return [view.data(r) for r in flat[start : start + limit]], total
