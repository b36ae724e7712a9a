"""HTTP access to the Makini API for one connection: auth, pacing, retries, error mapping.

The client knows HTTP and the contract's transport rules; it knows nothing about dlt.
"""

from __future__ import annotations

import dataclasses
import email.utils
import logging
import random
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from typing_extensions import Self

from makini_source.exceptions import (
    BadRequestError,
    ConfigurationError,
    ContractViolationError,
    FatalAPIError,
    MakiniAPIError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ReauthorizationRequired,
    RetriableAPIError,
)
from makini_source.paginator import CursorPaginator
from makini_source.ratelimit import RateLimiter
from makini_source.settings import API_PREFIX, SYNC_STATUS_PATH

logger = logging.getLogger("makini_source")

USER_AGENT = "makini-source/0.1 (+dlt)"
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures are retried.

    Attributes:
        max_attempts: Attempts per request, the first included.
        max_elapsed_seconds: Give up once this much time went into one request's retries.
        backoff_base_seconds: First backoff; doubles with each attempt (full jitter).
        backoff_max_seconds: Upper bound of one backoff.
        timeout_seconds: Read timeout of one request.
        connect_timeout_seconds: Connect timeout of one request.
    """

    max_attempts: int = 8
    max_elapsed_seconds: float = 300.0
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 30.0
    timeout_seconds: float = 60.0
    connect_timeout_seconds: float = 10.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Jittered exponential backoff before retry number `attempt` (1-based).

        The ceiling doubles with each attempt (`base * 2**(attempt-1)`, at most
        `backoff_max_seconds`); the wait is drawn uniformly from its upper half, so retries
        of many clients spread out but never come back sooner than half the ceiling.
        """
        ceiling = min(self.backoff_max_seconds, self.backoff_base_seconds * 2 ** (attempt - 1))
        return rng.uniform(ceiling / 2, ceiling)


@dataclass
class Page:
    """One page of a listing.

    Attributes:
        records: The `data` array: parsed JSON, or whatever a `PageDecoder` made of it.
        next_cursor: The cursor of the next page; None on the last page.
        total_count: Matching records when the listing began, if the server says.
        request_id: The answer's `X-Request-Id`.
    """

    records: Any
    next_cursor: str | None
    total_count: int | None
    request_id: str | None


# Reads a 200 list answer's body into a Page (request_id left None), or returns None to leave
# the body to the client's own JSON parsing, which also reports a malformed answer.
PageDecoder = Callable[[bytes], "Page | None"]


@dataclass
class SyncStatus:
    """The connection's `GET /sync-status` answer."""

    connection_id: str | None
    system: str | None
    status: str | None
    initial_sync_completed: bool | None
    last_sync_at: str | None
    last_sync_status: str | None


@dataclass
class ClientStats:
    """Counters of one client, for progress and summaries."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    throttle_seconds: float = 0.0


class BearerAuth(httpx.Auth):
    """Adds the connection's token as a bearer header. Its repr never shows the token."""

    def __init__(self, token: str) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request

    def __repr__(self) -> str:
        return "BearerAuth(token=***)"


def check_base_url(base_url: str, allow_insecure_http: bool = False) -> str:
    """Validates the API base URL and returns it without a trailing slash.

    Raises:
        ConfigurationError: Not http(s), or plain http to a non-loopback host without opt-in.
    """
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"base_url must be an http(s) URL, got {base_url!r}")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS and not allow_insecure_http:
        raise ConfigurationError(
            f"base_url {base_url!r} is plain http to a non-loopback host; use https or set "
            "allow_insecure_http=true"
        )
    return base_url.rstrip("/")


class MakiniClient:
    """Reads one Makini connection.

    Args:
        base_url: API root, e.g. `https://api.makini.io` or a sandbox's `http://127.0.0.1:8765`.
        token: The connection's bearer token.
        connection: The connection's configured name, used in errors and logs.
        retry: Retry and timeout policy.
        transport: An httpx transport to use instead of the network (tests, proxies).
        allow_insecure_http: Accept plain http to hosts other than loopback.
        limiter: Pacing shared by every request of this connection.
        sleep: Sleep function (injectable for tests).
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        connection: str,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        allow_insecure_http: bool = False,
        limiter: RateLimiter | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not token:
            raise ConfigurationError(f"connection {connection!r} has no token")
        self.connection = connection
        self.retry = retry or RetryPolicy()
        self.limiter = limiter or RateLimiter(sleep=sleep)
        self.stats = ClientStats()
        self._sleep = sleep
        self._rng = random.Random()
        self._http = httpx.Client(
            base_url=check_base_url(base_url, allow_insecure_http),
            auth=BearerAuth(token),
            transport=transport,
            timeout=httpx.Timeout(
                self.retry.timeout_seconds, connect=self.retry.connect_timeout_seconds
            ),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            verify=True,
        )

    def close(self) -> None:
        """Closes the connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- public API -------------------------------------------------------------------

    def sync_status(self) -> SyncStatus:
        """Reads the connection's sync status.

        Raises:
            MakiniAPIError: The request failed (after retries for transient failures).
            ContractViolationError: The answer lacks the `data` object.
        """
        body, request_id = self._get_json(SYNC_STATUS_PATH, {}, entity="sync-status")
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            raise ContractViolationError(
                "sync-status answer has no 'data' object",
                connection=self.connection,
                entity="sync-status",
                request_id=request_id,
            )
        return SyncStatus(
            connection_id=data.get("connection_id"),
            system=data.get("system"),
            status=data.get("status"),
            initial_sync_completed=data.get("initial_sync_completed"),
            last_sync_at=data.get("last_sync_at"),
            last_sync_status=data.get("last_sync_status"),
        )

    def iter_pages(
        self,
        entity: str,
        path: str,
        params: Mapping[str, Any],
        page_size: int,
        decode: PageDecoder | None = None,
    ) -> Generator[Page, None, None]:
        """Yields every page of one listing, following `next_cursor` until it is null.

        Args:
            entity: Entity name for errors.
            path: Entity path segment (`purchase-orders`).
            params: Filters of the first request (`modified_after`, ...).
            page_size: `limit` of every request.
            decode: Reads each body into a page (e.g. straight into Arrow) instead of the
                client's JSON parsing; it runs on the thread that iterates.
        """
        paginator = CursorPaginator(params, page_size)
        url = f"{API_PREFIX}/{path}"
        while paginator.has_next:
            body, request_id = self._get_json(
                url, paginator.request_params(), entity=entity, decode=decode
            )
            if isinstance(body, Page):
                page = dataclasses.replace(body, request_id=request_id)
            else:
                page = self._parse_page(body, entity, request_id)
            try:
                paginator.update(page.next_cursor)
            except ValueError as exc:
                raise ContractViolationError(
                    str(exc),
                    connection=self.connection,
                    entity=entity,
                    request_id=request_id,
                    field="next_cursor",
                ) from None
            yield page

    # --- internals --------------------------------------------------------------------

    def _parse_page(self, body: Any, entity: str, request_id: str | None) -> Page:
        context = {"connection": self.connection, "entity": entity, "request_id": request_id}
        if not isinstance(body, dict):
            raise ContractViolationError("list answer is not a JSON object", **context)
        records = body.get("data")
        if not isinstance(records, list):
            raise ContractViolationError("list answer has no 'data' array", field="data", **context)
        if "next_cursor" not in body:
            raise ContractViolationError(
                "list answer has no 'next_cursor'", field="next_cursor", **context
            )
        total = body.get("total_count")
        return Page(
            records, body["next_cursor"], total if isinstance(total, int) else None, request_id
        )

    def _get_json(
        self,
        url: str,
        params: Mapping[str, Any],
        entity: str,
        decode: PageDecoder | None = None,
    ) -> tuple[Any, str | None]:
        """GET with pacing and retries; returns the parsed body and the request id.

        The body is parsed by `decode` when given and it accepts the body (a `Page`), else
        as JSON.

        Transient failures (429, 5xx, timeouts, resets, cut-off bodies) are retried: a
        `Retry-After` (429, 503) is waited exactly, anything else backs off exponentially with
        jitter. Retries stop after `max_attempts` attempts or once the next wait would take the
        request past `max_elapsed_seconds`; the error then says how many attempts were made.
        """
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._get_json_once(url, params, entity, decode)
            except RetriableAPIError as exc:
                elapsed = time.monotonic() - started
                if isinstance(exc, RateLimitError):
                    self.stats.rate_limited += 1
                if exc.retry_after is not None:
                    delay = exc.retry_after
                else:
                    delay = self.retry.backoff(attempt, self._rng)
                if (
                    attempt >= self.retry.max_attempts
                    or elapsed + delay > self.retry.max_elapsed_seconds
                ):
                    raise type(exc)(
                        f"{exc.message}; gave up after {attempt} attempts in {elapsed:.1f}s",
                        connection=exc.connection,
                        entity=exc.entity,
                        status=exc.status,
                        code=exc.code,
                        request_id=exc.request_id,
                        retry_after=exc.retry_after,
                    ) from None
                self.stats.retries += 1
                logger.warning("%s; retry %d in %.2fs", exc, attempt, delay)
                # the limiter holds this connection's next request: exactly the server's
                # Retry-After, or the backoff
                self.limiter.pause(delay, rate_limited=isinstance(exc, RateLimitError))

    def _get_json_once(
        self, url: str, params: Mapping[str, Any], entity: str, decode: PageDecoder | None
    ) -> tuple[Any, str | None]:
        self.stats.throttle_seconds += self.limiter.acquire()
        context: dict[str, Any] = {"connection": self.connection, "entity": entity}
        self.stats.requests += 1
        sent_at = self.limiter.now()
        try:
            response = self._http.get(url, params=dict(params))
        except httpx.TimeoutException as exc:
            raise RetriableAPIError(
                f"request timed out ({type(exc).__name__})", **context
            ) from None
        except httpx.TransportError as exc:
            # connection refused/reset, or the body was cut off mid-way
            raise RetriableAPIError(
                f"transport error ({type(exc).__name__}: {exc})", **context
            ) from None
        self.limiter.observe(response.headers, sent_at=sent_at)
        request_id = response.headers.get("x-request-id")
        context.update(status=response.status_code, request_id=request_id)
        if response.status_code == 200:
            if decode is not None and (page := decode(response.content)) is not None:
                return page, request_id
            try:
                return orjson.loads(response.content), request_id
            except orjson.JSONDecodeError:
                if response.content.lstrip()[:1] in (b"{", b"["):
                    # JSON that stops early: a body cut off on the way; another try helps
                    raise RetriableAPIError("200 answer is cut-off JSON", **context) from None
                # a complete answer that is not JSON at all breaks the contract: stop
                raise ContractViolationError(
                    "200 answer is not JSON "
                    f"({response.headers.get('content-type', 'no content type')}, "
                    f"{len(response.content)} bytes)",
                    field="body",
                    **context,
                ) from None
        raise _error_for(response, context)


def _error_for(response: httpx.Response, context: dict[str, Any]) -> MakiniAPIError:
    """Maps an error response to the exception class of its status."""
    status = response.status_code
    code, message = None, None
    try:
        error = orjson.loads(response.content).get("error") or {}
        code, message = error.get("code"), error.get("message")
        context["request_id"] = context.get("request_id") or error.get("request_id")
    except (orjson.JSONDecodeError, AttributeError):
        message = (
            f"non-JSON {status} body ({response.headers.get('content-type', 'no content type')})"
        )
    context["code"] = code
    text = message or response.reason_phrase
    if status == 429:
        return RateLimitError(
            f"rate limited: {text}",
            retry_after=parse_retry_after(response.headers.get("retry-after")),
            **context,
        )
    if status >= 500 or status == 408:
        return RetriableAPIError(
            f"server error: {text}",
            retry_after=parse_retry_after(response.headers.get("retry-after")),
            **context,
        )
    if status == 400:
        return BadRequestError(f"bad request: {text}", **context)
    if status == 401:
        return ReauthorizationRequired(
            f"connection {context['connection']!r} needs reauthorization: {text}", **context
        )
    if status == 403:
        return PermissionDeniedError(f"permission denied: {text}", **context)
    if status == 404:
        return NotFoundError(f"not found: {text}", **context)
    return FatalAPIError(f"unexpected HTTP {status}: {text}", **context)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds or an HTTP-date.

    Returns:
        The delay (never negative), or None when the header is absent or unreadable.
    """
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)
