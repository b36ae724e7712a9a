"""Timestamps as integer microseconds since the Unix epoch (UTC): parsing and formatting.

The store keeps every timestamp as an ``int`` of microseconds so that ordering and range
filters are plain integer comparisons; records carry them as RFC 3339 strings.
"""

from __future__ import annotations

import re
import time
from datetime import date, datetime, timezone
from email.utils import formatdate

US_PER_SECOND = 1_000_000
US_PER_DAY = 86_400 * US_PER_SECOND
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()

_DATE_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_DATETIME_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,12}))?([Zz]|[+-]\d{2}:\d{2})$"
)

_day_cache: dict[int, str] = {}


def parse_timestamp(value: str) -> int:
    """Parse ``YYYY-MM-DD`` or an RFC 3339 timestamp into epoch microseconds.

    Fractions finer than a microsecond are rounded up, which keeps both ``>= value`` and
    ``< value`` comparisons exact for microsecond timestamps.

    Args:
        value: the text, e.g. ``2024-01-01``, ``2024-01-01T00:00:00Z``,
            ``2024-01-01T02:00:00.5+02:00``.

    Returns:
        Microseconds since 1970-01-01T00:00:00Z.

    Raises:
        ValueError: the text is not one of the accepted formats or not a valid date/time.
    """
    m = _DATE_RE.match(value)
    if m:
        y, mo, d = (int(g) for g in m.groups())
        return (date(y, mo, d).toordinal() - _EPOCH_ORDINAL) * US_PER_DAY
    m = _DATETIME_RE.match(value)
    if not m:
        raise ValueError(f"not a YYYY-MM-DD date or an RFC 3339 timestamp: {value!r}")
    y, mo, d, hh, mi, ss = (int(g) for g in m.groups()[:6])
    frac, tz = m.group(7), m.group(8)
    # validates ranges (month 13, hour 25, Feb 30...)
    datetime(y, mo, d, hh, mi, ss)
    us = (date(y, mo, d).toordinal() - _EPOCH_ORDINAL) * US_PER_DAY
    us += ((hh * 60 + mi) * 60 + ss) * US_PER_SECOND
    if frac:
        scale = 10 ** len(frac)
        us += -((-int(frac) * US_PER_SECOND) // scale)  # ceil
    if tz not in ("Z", "z"):
        sign = 1 if tz[0] == "+" else -1
        oh, om = int(tz[1:3]), int(tz[4:6])
        if oh > 23 or om > 59:
            raise ValueError(f"invalid UTC offset in {value!r}")
        us -= sign * (oh * 60 + om) * 60 * US_PER_SECOND
    return us


def parse_timestamp_exact(value: str) -> tuple[int, bool]:
    """:func:`parse_timestamp`, and whether the value is exactly that many microseconds.

    A fraction finer than a microsecond (``.0000005``) is rounded up and so not exact; the
    unified filters need to know that to compare ``>`` and ``<=`` exactly.

    Raises:
        ValueError: as :func:`parse_timestamp`.
    """
    us = parse_timestamp(value)
    m = _DATETIME_RE.match(value)
    frac = (m.group(7) if m else None) or ""
    return us, not frac[6:].strip("0")


def format_timestamp(us: int) -> str:
    """Format epoch microseconds as RFC 3339 UTC.

    Whole seconds print without a fraction (``2024-03-05T14:07:09Z``), whole milliseconds with
    three digits, anything else with six.
    """
    days, rem = divmod(us, US_PER_DAY)
    day = _day_cache.get(days)
    if day is None:
        day = date.fromordinal(days + _EPOCH_ORDINAL).isoformat()
        _day_cache[days] = day
    secs, frac = divmod(rem, US_PER_SECOND)
    hms = f"{day}T{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}"
    if frac == 0:
        return f"{hms}Z"
    if frac % 1000 == 0:
        return f"{hms}.{frac // 1000:03d}Z"
    return f"{hms}.{frac:06d}Z"


def format_laravel(us: int) -> str:
    """Format epoch microseconds as Laravel's default ``YYYY-MM-DD HH:MM:SS`` (UTC).

    The fraction is dropped (rounded down), so the time never lies after ``us``.
    """
    return format_timestamp(us - us % US_PER_SECOND)[:19].replace("T", " ")


def format_laravel_iso(us: int) -> str:
    """Format epoch microseconds as Laravel's JSON form of a date, ``2024-06-01T10:15:00.000000Z``."""
    secs = us - us % US_PER_SECOND
    return f"{format_timestamp(secs)[:19]}.{us % US_PER_SECOND:06d}Z"


def format_date(us: int) -> str:
    """Format epoch microseconds as the UTC calendar date ``YYYY-MM-DD``."""
    days = us // US_PER_DAY
    day = _day_cache.get(days)
    if day is None:
        day = date.fromordinal(days + _EPOCH_ORDINAL).isoformat()
        _day_cache[days] = day
    return day


def to_us(dt: datetime) -> int:
    """Convert an aware (or naive-as-UTC) datetime to epoch microseconds."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    delta = dt - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * US_PER_SECOND + delta.microseconds


def real_now_us() -> int:
    """Current real UTC time in epoch microseconds."""
    return time.time_ns() // 1000


def http_date(epoch_seconds: float) -> str:
    """Format an epoch time as an HTTP-date (``Wed, 21 Oct 2026 07:28:00 GMT``)."""
    return formatdate(epoch_seconds, usegmt=True)
