"""Per-connection rate limiting and request statistics."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from .timeutil import format_timestamp, http_date

#: ``X-RateLimit-Limit`` reported for connections without a limit
UNLIMITED = 1_000_000


@dataclass(frozen=True)
class RateDecision:
    """Outcome of one request against a rate limiter.

    Attributes:
        allowed: whether the request may proceed.
        limit: ``X-RateLimit-Limit``.
        remaining: ``X-RateLimit-Remaining``.
        reset: ``X-RateLimit-Reset``: whole seconds (rounded up) until the window resets.
        retry_after: ``Retry-After`` value for a 429 (delta-seconds or HTTP-date).
    """

    allowed: bool
    limit: int
    remaining: int
    reset: int
    retry_after: str

    def headers(self) -> dict[str, str]:
        """The ``X-RateLimit-*`` headers."""
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }

    def laravel_headers(self) -> dict[str, str]:
        """The unified dialect's headers: ``X-RateLimit-Limit`` and ``-Remaining`` only."""
        return {"X-RateLimit-Limit": str(self.limit), "X-RateLimit-Remaining": str(self.remaining)}

    def laravel_retry_headers(self) -> dict[str, str]:
        """What the unified dialect adds to a 429: ``Retry-After`` in seconds and
        ``X-RateLimit-Reset`` as a Unix timestamp (Laravel), unlike v1's seconds-until."""
        return {
            "Retry-After": str(self.reset),
            "X-RateLimit-Reset": str(int(time.time()) + self.reset),
        }


class RateLimiter:
    """Fixed-window request limiter of one connection.

    A window opens with the first request after the previous window ended and lasts
    ``window_seconds``; at most ``limit`` requests pass in it. ``limit = 0`` never blocks and
    reports a limit of :data:`UNLIMITED`.

    Args:
        limit: requests per window; 0 = unlimited.
        window_seconds: window length.
        retry_after_format: ``"seconds"`` or ``"http-date"``.
    """

    def __init__(
        self, limit: int, window_seconds: float, retry_after_format: str = "seconds"
    ) -> None:
        self._lock = threading.Lock()
        self.limit = limit
        self.window_seconds = window_seconds
        self.retry_after_format = retry_after_format
        self._window_start = -math.inf
        self._count = 0

    def configure(
        self,
        limit: int | None = None,
        window_seconds: float | None = None,
        retry_after_format: str | None = None,
    ) -> None:
        """Change the settings; the current window is restarted.

        Raises:
            ValueError: invalid values.
        """
        with self._lock:
            if limit is not None:
                if int(limit) < 0:
                    raise ValueError("limit must be >= 0")
                self.limit = int(limit)
            if window_seconds is not None:
                if float(window_seconds) <= 0:
                    raise ValueError("window_seconds must be > 0")
                self.window_seconds = float(window_seconds)
            if retry_after_format is not None:
                if retry_after_format not in ("seconds", "http-date"):
                    raise ValueError("retry_after_format must be 'seconds' or 'http-date'")
                self.retry_after_format = retry_after_format
            self._window_start = -math.inf
            self._count = 0

    def hit(self) -> RateDecision:
        """Count one request and decide whether it passes."""
        with self._lock:
            now = time.monotonic()
            if now >= self._window_start + self.window_seconds:
                self._window_start = now
                self._count = 0
            left = self._window_start + self.window_seconds - now
            reset = max(1, math.ceil(left))
            if self.limit == 0:
                self._count += 1
                return RateDecision(True, UNLIMITED, max(0, UNLIMITED - self._count), reset, "")
            if self._count >= self.limit:
                if self.retry_after_format == "http-date":
                    retry = http_date(time.time() + reset)
                else:
                    retry = str(reset)
                return RateDecision(False, self.limit, 0, reset, retry)
            self._count += 1
            return RateDecision(True, self.limit, self.limit - self._count, reset, "")

    def describe(self) -> dict[str, Any]:
        """The settings as a JSON-able dict."""
        return {
            "limit": self.limit,
            "window_seconds": self.window_seconds,
            "retry_after_format": self.retry_after_format,
        }


class RequestStats:
    """Request counters per connection (``"_unauthenticated"`` for requests without one,
    ``"_account"`` for requests made with an account token) and connection-token mints."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._per: dict[str, dict[str, Any]] = {}
        self._mints: dict[str, int] = {}

    def record(
        self,
        connection: str | None,
        entity: str | None,
        status: int | str,
        dialect: str = "v1",
    ) -> None:
        """Count one API request.

        Args:
            connection: connection name, ``None`` when not authenticated.
            entity: entity path, ``"sync-status"`` or ``"integrations"``; ``None`` for other
                paths.
            status: HTTP status, or a fault name such as ``"reset"``.
            dialect: ``"v1"``, ``"unified"`` or ``"account"``.
        """
        now = time.time()
        name = connection or "_unauthenticated"
        with self._lock:
            s = self._per.get(name)
            if s is None:
                s = {
                    "requests": 0,
                    "status": {},
                    "entities": {},
                    "dialects": {},
                    "first": now,
                    "last": now,
                }
                self._per[name] = s
            s["requests"] += 1
            key = str(status)
            s["status"][key] = s["status"].get(key, 0) + 1
            if entity is not None:
                s["entities"][entity] = s["entities"].get(entity, 0) + 1
            s["dialects"][dialect] = s["dialects"].get(dialect, 0) + 1
            s["last"] = now

    def record_mint(self, connection: str) -> None:
        """Count one connection token minted for ``connection``."""
        with self._lock:
            self._mints[connection] = self._mints.get(connection, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        """Counters per connection plus totals, with first/last request times and rate."""

        def view(s: dict[str, Any]) -> dict[str, Any]:
            span = s["last"] - s["first"]
            return {
                "requests": s["requests"],
                "status": dict(s["status"]),
                "entities": dict(s["entities"]),
                "dialects": dict(s["dialects"]),
                "first_request_at": format_timestamp(int(s["first"] * 1e6)),
                "last_request_at": format_timestamp(int(s["last"] * 1e6)),
                "first_request_ts": s["first"],
                "last_request_ts": s["last"],
                "requests_per_second": (s["requests"] - 1) / span if span > 0 else None,
            }

        with self._lock:
            per = {name: view(s) for name, s in self._per.items()}
            total: dict[str, Any] = {
                "requests": 0,
                "status": {},
                "entities": {},
                "dialects": {},
                "token_mints": sum(self._mints.values()),
            }
            firsts = [s["first"] for s in self._per.values()]
            lasts = [s["last"] for s in self._per.values()]
            for s in self._per.values():
                total["requests"] += s["requests"]
                for k, v in s["status"].items():
                    total["status"][k] = total["status"].get(k, 0) + v
                for k, v in s["entities"].items():
                    total["entities"][k] = total["entities"].get(k, 0) + v
                for k, v in s["dialects"].items():
                    total["dialects"][k] = total["dialects"].get(k, 0) + v
            if firsts:
                first, last = min(firsts), max(lasts)
                total["first_request_ts"] = first
                total["last_request_ts"] = last
                total["first_request_at"] = format_timestamp(int(first * 1e6))
                total["last_request_at"] = format_timestamp(int(last * 1e6))
                total["requests_per_second"] = (
                    (total["requests"] - 1) / (last - first) if last > first else None
                )
            return {"connections": per, "total": total, "token_mints": dict(self._mints)}
