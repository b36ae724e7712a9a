"""Which `updatedAt` window a run reads, and what it stores for the next run.

Makini's copy of a connected system is complete up to the connection's `last_sync_at`:
records newer than that may still arrive later with older `updatedAt` values. So a run reads
the window `[previous last_sync_at, current last_sync_at)` and stores the current
`last_sync_at` as the next run's lower bound. Bounding the window above also means a record
changed during the listing is never read twice in one run: its new version lies beyond the
window and is read, whole, by the next run.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import date, datetime, timezone

import pendulum

from makini_source.exceptions import ConfigurationError

TDateLike = str | date | datetime | None


@dataclass(frozen=True)
class Window:
    """One listing's bounds (RFC 3339 UTC strings) and the watermark to store after it.

    Attributes:
        modified_after: Inclusive lower bound, or None for everything.
        modified_before: Exclusive upper bound, or None for no bound.
        next_watermark: Lower bound for the next run, or None to leave state as it is.
    """

    modified_after: str | None
    modified_before: str | None
    next_watermark: str | None

    @property
    def is_empty(self) -> bool:
        """True when the window cannot hold any record."""
        if self.modified_after is None or self.modified_before is None:
            return False
        return to_datetime(self.modified_after) >= to_datetime(self.modified_before)


def plan_window(
    watermark: str | None,
    start_date: TDateLike,
    end_date: TDateLike,
    last_sync_at: str | None,
) -> Window:
    """Chooses the window of one connection and entity.

    Args:
        watermark: What the previous run stored (None on the first run).
        start_date: Lower bound of the first run (or of a backfill).
        end_date: Upper bound of a backfill; a backfill never touches the stored watermark.
        last_sync_at: The connection's current `last_sync_at` (None while Makini cannot tell).
    """
    if end_date is not None:
        return Window(format_timestamp(start_date), format_timestamp(end_date), None)
    lower = watermark if watermark is not None else format_timestamp(start_date)
    upper = format_timestamp(last_sync_at)
    return Window(lower, upper, upper)


def split_window(window: Window, first_updated_at: str, parts: int) -> list[Window]:
    """Cuts a window into `parts` consecutive slices of equal time, to be read at once.

    The first slice keeps the window's own lower bound (so nothing before the first record
    seen is lost); the cuts lie between `first_updated_at` and the upper bound. Each slice
    is a listing of its own: `[after, before)` with the window's watermark.

    Returns:
        The slices, or the window alone when it has no upper bound or is too short to cut.
    """
    if window.modified_before is None or parts < 2:
        return [window]
    start = to_datetime(first_updated_at)
    if window.modified_after is not None:
        start = max(start, to_datetime(window.modified_after))
    end = to_datetime(window.modified_before)
    step = (end - start) / parts
    if step.total_seconds() < 1:
        return [window]
    cuts = [format_timestamp(start + step * i) for i in range(1, parts)]
    bounds = [window.modified_after, *cuts, window.modified_before]
    return [
        Window(after, before, window.next_watermark) for after, before in itertools.pairwise(bounds)
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
