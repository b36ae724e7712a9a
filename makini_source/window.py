"""Which `updatedAt` window a run reads, and what it stores for the next run.

Makini's copy of a connected system is complete up to the connection's sync point (v1's
`last_sync_at`): every record changed before it is listed. Records changed after it may be
listed already (a sync under way has copied some of them) or may still arrive, later, with
`updatedAt` values older than ones already served. So a run reads everything from the stored
watermark on, with no upper bound (the run ends with what Makini lists now), and stores the
sync point it read at its start as the next watermark: the next run re-reads from there and so
catches every late arrival. It never stores the newest `updatedAt` it saw: that would skip late
arrivals older than it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

import pendulum

from makini_source.exceptions import ConfigurationError
from makini_source.settings import FUTURE_SYNC_POINT_TOLERANCE_SECONDS

TDateLike = str | date | datetime | None


@dataclass(frozen=True)
class Window:
    """One listing's bounds (RFC 3339 UTC strings) and the watermark to store after it.

    Attributes:
        modified_after: Inclusive lower bound, or None for everything.
        modified_before: Exclusive upper bound, or None for no bound.
        next_watermark: Lower bound for the next run, or None to leave state as it is.
        sync_point: The connection's complete point, if known (time slices are cut below it).
        note: Why the stored watermark does not move to the sync point, for the run summary.
    """

    modified_after: str | None
    modified_before: str | None
    next_watermark: str | None
    sync_point: str | None = None
    note: str | None = None

    @property
    def is_empty(self) -> bool:
        """True when the window cannot hold any record."""
        if self.modified_after is None or self.modified_before is None:
            return False
        return to_datetime(self.modified_after) >= to_datetime(self.modified_before)


@dataclass(frozen=True)
class Watermark:
    """What to store after a run, and why the stored point did not move (if it did not).

    Attributes:
        value: The next watermark, or None to leave the stored one as it is.
        note: A line for the run summary when the sync point was not taken as it came.
    """

    value: str | None
    note: str | None = None


def next_watermark(
    stored: str | None, sync_point: str | None, now: datetime | None = None
) -> Watermark:
    """Chooses the watermark to store from the sync point read at the start of a run.

    The sync point becomes the next watermark, except that a watermark never moves back (a sync
    point older than the stored one leaves it), and a sync point in the future (beyond now plus
    a small tolerance for clock skew) is not trusted: storing it would make every later run
    read nothing.

    Args:
        stored: The watermark the previous run stored, if any.
        sync_point: The connection's complete point (v1 `last_sync_at`), if known.
        now: The current time (default: the system clock).
    """
    if sync_point is None:
        return Watermark(None)
    point = to_datetime(sync_point)
    now = now or datetime.now(timezone.utc)
    if point > now + timedelta(seconds=FUTURE_SYNC_POINT_TOLERANCE_SECONDS):
        kept = f"kept at {stored}" if stored else "not stored"
        return Watermark(None, f"sync point {sync_point} is in the future: watermark {kept}")
    if stored is not None and point < to_datetime(stored):
        return Watermark(None, f"sync point {sync_point} is older than the watermark {stored}")
    return Watermark(format_timestamp(point))


def plan_window(
    watermark: str | None,
    start_date: TDateLike,
    end_date: TDateLike,
    sync_point: str | None,
    *,
    stop_at_sync_point: bool = False,
    lookback_seconds: float = 0.0,
    now: datetime | None = None,
) -> Window:
    """Chooses the window of one connection and entity, and the watermark to store after it.

    Args:
        watermark: What the previous run stored (None on the first run).
        start_date: Lower bound of the first run (or of a backfill).
        end_date: Upper bound of a backfill; a backfill never touches the stored watermark.
        sync_point: The connection's complete point (None while Makini cannot tell).
        stop_at_sync_point: Read only up to the sync point (a warehouse consistent as of one
            point in time, behind the API by up to a sync) instead of everything listed.
        lookback_seconds: Re-read this margin before the stored watermark (for sync points
            whose meaning is not verified).
        now: The current time, for the sanity check of the sync point.
    """
    if end_date is not None:
        return Window(format_timestamp(start_date), format_timestamp(end_date), None)
    if watermark is not None:
        lower = format_timestamp(to_datetime(watermark) - timedelta(seconds=lookback_seconds))
    else:
        lower = format_timestamp(start_date)
    decision = next_watermark(watermark, sync_point, now)
    upper = None
    if stop_at_sync_point and sync_point is not None:
        # an untrusted sync point reads nothing new rather than everything
        upper = decision.value if decision.value is not None else watermark
    return Window(lower, upper, decision.value, decision.value, decision.note)


def split_window(window: Window, first_updated_at: str, parts: int) -> list[Window]:
    """Cuts a first sync's window into slices to be read at once.

    The part below the sync point, `[lower, sync_point)`, is cut into `parts` slices of equal
    time; a last slice `[sync_point, upper)` reads what was listed after it (the window's own
    upper bound, usually none). The first slice keeps the window's own lower bound (so nothing
    before the first record seen is lost); the cuts lie between `first_updated_at` and the sync
    point. Each slice is a listing of its own with the window's watermark.

    Returns:
        The slices, or the window alone when it has no sync point or is too short to cut.
    """
    top = window.sync_point if window.modified_before is None else window.modified_before
    if top is None or parts < 2:
        return [window]
    start = to_datetime(first_updated_at)
    if window.modified_after is not None:
        start = max(start, to_datetime(window.modified_after))
    end = to_datetime(top)
    step = (end - start) / parts
    if step.total_seconds() < 1:
        return [window]
    cuts = [format_timestamp(start + step * i) for i in range(1, parts)]
    bounds = [window.modified_after, *cuts, top]
    if top != window.modified_before:
        bounds.append(window.modified_before)
    return [
        Window(after, before, window.next_watermark, window.sync_point)
        for after, before in itertools.pairwise(bounds)
    ]


def to_datetime(value: TDateLike) -> datetime:
    """Parses a date, RFC 3339 string or datetime into an aware UTC datetime.

    Raises:
        ConfigurationError: The value is not a date or timestamp.
    """
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    try:
        parsed = pendulum.parse(str(value), tz="UTC")
    except (ValueError, TypeError, pendulum.parsing.exceptions.ParserError) as exc:
        raise ConfigurationError(f"{value!r} is not a date or RFC 3339 timestamp") from exc
    if not isinstance(parsed, datetime):
        if isinstance(parsed, date):
            return datetime(parsed.year, parsed.month, parsed.day, tzinfo=timezone.utc)
        raise ConfigurationError(f"{value!r} is not a date or RFC 3339 timestamp")
    return parsed


def format_timestamp(value: TDateLike) -> str | None:
    """RFC 3339 UTC with microseconds (`2024-01-01T00:00:00.000000Z`), or None."""
    if value is None:
        return None
    return to_datetime(value).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
