"""Client-side pacing from the `X-RateLimit-*` headers of one connection."""

from __future__ import annotations

import threading
import time
from typing import Callable, Mapping, Optional


class RateLimiter:
    """Spaces one connection's requests so they fit the limit the server announces.

    After each response the server says how many requests remain (`X-RateLimit-Remaining`)
    and in how many seconds the window resets (`X-RateLimit-Reset`). The limiter spreads the
    remaining requests evenly over the rest of the window, so a long listing runs at nearly
    the full allowed rate without being answered 429. It works with any window length.
    One limiter serves one connection; it is thread-safe, so concurrent entity listings of a
    connection share it.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_slot = 0.0
        self._interval = 0.0
        self.waited_seconds = 0.0

    def acquire(self) -> float:
        """Blocks until this connection may send its next request.

        Returns:
            The seconds waited.
        """
        with self._lock:
            now = self._clock()
            slot = max(now, self._next_slot)
            self._next_slot = slot + self._interval
        delay = slot - now
        if delay > 0:
            self._sleep(delay)
            with self._lock:
                self.waited_seconds += delay
        return delay

    def observe(self, headers: Mapping[str, str]) -> None:
        """Adjusts the pace from a response's rate-limit headers (absent headers: no change)."""
        remaining = _number(headers.get("x-ratelimit-remaining"))
        reset = _number(headers.get("x-ratelimit-reset"))
        if remaining is None or reset is None:
            return
        with self._lock:
            now = self._clock()
            if remaining <= 0:
                # nothing left in this window: the next request waits for the reset
                self._interval = 0.0
                self._next_slot = max(self._next_slot, now + reset)
            else:
                self._interval = reset / remaining
                self._next_slot = max(self._next_slot, now + self._interval)

    def pause(self, seconds: float) -> None:
        """Holds every request of this connection for `seconds` (after a 429's Retry-After)."""
        with self._lock:
            self._next_slot = max(self._next_slot, self._clock() + seconds)


def _number(value: Optional[str]) -> Optional[float]:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None
