"""Client-side pacing from the `X-RateLimit-*` headers of one connection."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping

# An `X-RateLimit-Reset` this large is a Unix time, not a number of seconds (and this large,
# in milliseconds).
_EPOCH_THRESHOLD = 10**8
_EPOCH_MS_THRESHOLD = 10**11


class RateLimiter:
    """Spaces one connection's requests so they fit the limit the server announces.

    After each response the server says how many requests remain (`X-RateLimit-Remaining`)
    and in how many seconds the window resets (`X-RateLimit-Reset`). The limiter spreads the
    remaining requests evenly over the rest of the window, and once none remain it holds the
    next request until the window has certainly ended. So a long listing runs at nearly the
    full allowed rate without being answered 429, whatever the window length.

    `X-RateLimit-Reset` is usually whole seconds rounded up, so one answer only says that the
    window ends within the second before `received + reset`. The limiter intersects these
    intervals over the answers of one window: a few answers pin the end down to a fraction of
    a second, and it waits until the latest possible end (never earlier, so no 429), not a
    whole extra second.

    One limiter serves one connection (one token); connections never share one, so one
    connection's limit never slows another. It is thread-safe: concurrent listings of one
    connection share its pace.
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
        self._hold_until = 0.0
        # the current window's end lies in (_end_low, _end_high], on this limiter's clock
        self._end_low: float | None = None
        self._end_high: float | None = None
        self._remaining: float | None = None
        self._seen_remaining: float | None = None  # the last Remaining of any answer
        self._window_start: float | None = None  # when the current window's first request went
        self._window_length: float | None = None  # learned from a reset, where none is sent
        self._backoff_until = 0.0  # the part of the hold that is a backoff, not the pace
        self.waited_seconds = 0.0
        self.backoff_seconds = 0.0

    def now(self) -> float:
        """The limiter's clock (pass its value as `observe(..., sent_at=)`)."""
        return self._clock()

    def acquire(self) -> float:
        """Blocks until this connection may send its next request.

        Returns:
            The seconds waited for the rate limit (a backoff's wait is counted apart, in
            `backoff_seconds`: it is not throttling).
        """
        with self._lock:
            now = self._clock()
            slot = max(now, self._next_slot, self._hold_until)
            self._next_slot = slot + self._interval
            backoff = max(0.0, min(slot, self._backoff_until) - now)
        delay = slot - now
        if delay > 0:
            self._sleep(delay)
            with self._lock:
                self.waited_seconds += delay - backoff
                self.backoff_seconds += backoff
        return max(delay - backoff, 0.0)

    def observe(self, headers: Mapping[str, str], sent_at: float | None = None) -> None:
        """Sets the pace from a response's rate-limit headers (absent headers: no change).

        `X-RateLimit-Reset` is seconds until the window resets (v1), or a Unix time in seconds
        or milliseconds (Laravel: the unified dialect, which sends it only with a 429). Without
        it, the window's length is learned from the first 429 (from the window's first request
        to its reset) and the pace follows from then on.

        Args:
            headers: The response headers (case-insensitive mapping).
            sent_at: When the request was sent, on `now()`'s clock (default: now). It bounds
                the window's end from below, which helps tell windows apart.
        """
        remaining = _number(headers.get("x-ratelimit-remaining"))
        reset = _number(headers.get("x-ratelimit-reset"))
        if remaining is None:
            return
        if reset is not None and reset > _EPOCH_MS_THRESHOLD:
            reset = max(0.0, reset / 1000 - time.time())  # a Unix time in milliseconds
        elif reset is not None and reset > _EPOCH_THRESHOLD:
            reset = max(0.0, reset - time.time())  # a Unix time
        with self._lock:
            now = self._clock()
            sent = now if sent_at is None else min(sent_at, now)
            if self._window_start is None or (
                self._seen_remaining is not None and remaining > self._seen_remaining
            ):
                self._window_start = sent  # the count went up: a new window began
            self._seen_remaining = remaining
            if reset is None:
                if self._window_length is None:
                    return  # no way to know the window's end yet
                reset = max(0.0, self._window_start + self._window_length - now)
                granularity = 0.0
            else:
                if remaining <= 0 and self._window_start is not None:
                    self._window_length = max(0.5, now + reset - self._window_start)
                granularity = 1.0 if reset == math.floor(reset) else 0.0  # whole seconds
            low, high = sent + reset - granularity, now + reset
            same_window = (
                self._end_high is not None
                and self._end_low is not None
                and self._remaining is not None
                and remaining <= self._remaining
                and low < self._end_high
                and high > self._end_low
            )
            if same_window:
                assert self._end_low is not None and self._end_high is not None
                self._end_low = max(self._end_low, low)
                self._end_high = min(self._end_high, high)
            else:
                self._end_low, self._end_high = low, high
            self._remaining = remaining
            left = max(0.0, self._end_high - now)
            if remaining <= 0:
                # nothing left in this window: the next request waits until it has ended
                self._interval = 0.0
                self._next_slot = now + left
            else:
                # `remaining` more requests fit before the end, and the one after them goes
                # at the end: remaining + 1 equal steps
                self._interval = left / (remaining + 1)
                self._next_slot = now + self._interval

    def hold(self) -> float:
        """Seconds until this connection's next request may go."""
        with self._lock:
            return max(0.0, max(self._next_slot, self._hold_until) - self._clock())

    def pause(self, seconds: float, rate_limited: bool = False) -> None:
        """Holds this connection's next request for `seconds`.

        Args:
            seconds: How long to hold (a backoff, or the server's `Retry-After`).
            rate_limited: The wait is a 429's `Retry-After`: the server knows its window better
                than our estimate, so the next request goes exactly then, and the estimate
                starts afresh. Otherwise the pace still applies on top of the hold.
        """
        with self._lock:
            until = self._clock() + seconds
            if rate_limited:
                self._hold_until = self._next_slot = until
                self._end_low = self._end_high = self._remaining = None
            else:
                self._hold_until = max(self._hold_until, until)
                self._backoff_until = max(self._backoff_until, until)


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None
