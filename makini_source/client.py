"""HTTP access to the Makini API for one connection: auth, pacing, retries, limits, errors.

The client knows HTTP and the transport rules both dialects share; what a dialect's error
bodies look like is handed to it (`ErrorReader`). It knows nothing about paging or dlt.
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import orjson
from typing_extensions import Self

from makini_source import jsonbody
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
    UnreachableError,
    WaitTooLongError,
)
from makini_source.ratelimit import RateLimiter
from makini_source.redact import register_secret, server_text

logger = logging.getLogger("makini_source")

USER_AGENT = "makini-source/0.1 (+dlt)"
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures are retried, and how long and large one request may be.

    Attributes:
        max_attempts: Attempts per request, the first included.
        max_elapsed_seconds: Give up once this much time went into one request's retries.
        backoff_base_seconds: First backoff; doubles with each attempt (full jitter).
        backoff_max_seconds: Upper bound of one backoff.
        timeout_seconds: Read timeout of one request (the longest silence between bytes).
        connect_timeout_seconds: Connect timeout of one request.
        deadline_seconds: Wall-clock limit of one request, body included (a server that
            trickles its answer byte by byte is cut off); retried as transient.
        max_response_bytes: Largest answer read; a bigger one is cut off and retried.
        max_wait_seconds: Longest wait the server may ask for (`Retry-After`, a rate-limit
            hold announced by `X-RateLimit-Remaining: 0` and `X-RateLimit-Reset`); a longer one
            fails the connection at once, naming the wait, instead of sleeping for it.
        min_wait_seconds: Shortest wait before a retry the server asked for: a smaller
            positive `Retry-After` is raised to it. A `Retry-After` of 0, negative or in the
            past says nothing usable: the retry backs off as if there were none (a struggling
            server is not hammered).
    """

    max_attempts: int = 8
    max_elapsed_seconds: float = 300.0
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 30.0
    timeout_seconds: float = 60.0
    connect_timeout_seconds: float = 10.0
    deadline_seconds: float = 180.0
    max_response_bytes: int = 256 * 1024 * 1024
    max_wait_seconds: float = 300.0
    min_wait_seconds: float = 0.2

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Jittered exponential backoff before retry number `attempt` (1-based).

        The ceiling doubles with each attempt (`base * 2**(attempt-1)`, at most
        `backoff_max_seconds`); the wait is drawn uniformly from its upper half, so retries
        of many clients spread out but never come back sooner than half the ceiling.
        """
        ceiling = min(self.backoff_max_seconds, self.backoff_base_seconds * 2 ** (attempt - 1))
        return rng.uniform(ceiling / 2, ceiling)


@dataclass
class Response:
    """A successful (2xx) answer, read whole.

    Attributes:
        status: The HTTP status.
        body: The body.
        headers: The headers.
        request_id: The answer's `X-Request-Id`, if any.
        url: Method, path and query of the request (for errors; no secrets travel in URLs).
    """

    status: int
    body: bytes
    headers: httpx.Headers
    request_id: str | None
    url: str

    def json(self, entity: str, connection: str) -> Any:
        """The body as JSON.

        Raises:
            ContractViolationError: The body is not strict JSON (a complete body: never retried).
        """
        try:
            return jsonbody.loads(self.body)
        except jsonbody.InvalidJSON as exc:
            raise ContractViolationError(
                f"{self.status} answer ({self.headers.get('content-type')}) is {exc}",
                connection=connection,
                entity=entity,
                status=self.status,
                request_id=self.request_id,
                url=self.url,
                field="body",
            ) from None


class ErrorReader(Protocol):
    """Reads a dialect's error body: (Makini's error code, message, request id)."""

    def __call__(self, body: bytes) -> tuple[str | None, str | None, str | None]: ...


def no_error_details(body: bytes) -> tuple[str | None, str | None, str | None]:
    """An `ErrorReader` for answers whose error bodies carry nothing to read."""
    return None, None, None


class TokenSource(Protocol):
    """Where a connection's bearer token comes from.

    A configured token never changes; a minted one (account credentials) is minted again
    when it expires or the server refuses it.
    """

    def token(self) -> str | None:
        """The token to send now (None: send none)."""
        ...

    def renew(self, refused: str) -> bool:
        """The server refused `refused` (401): get a new token if possible.

        Returns:
            True when a new token is ready and the request is worth sending again.
        """
        ...


class StaticToken:
    """A configured token."""

    def __init__(self, token: str) -> None:
        self._token = token

    def token(self) -> str:
        return self._token

    def renew(self, refused: str) -> bool:
        return False

    def __repr__(self) -> str:
        return "StaticToken(***)"


def check_token(token: Any, connection: str) -> str:
    """Validates a configured token without ever printing it.

    Raises:
        ConfigurationError: Not a non-empty string, or surrounded by whitespace or holding
            control characters (as read from a file with its newline).
    """
    if not isinstance(token, str) or not token:
        raise ConfigurationError(f"connection {connection!r} has an empty or non-string token")
    if token != token.strip() or any(ord(c) < 32 or ord(c) == 127 for c in token):
        raise ConfigurationError(
            f"the token of connection {connection!r} has surrounding whitespace or control "
            "characters (a newline read from a file?); remove them"
        )
    register_secret(token)
    return token


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


@dataclass
class ClientStats:
    """Counters of one client, for progress and summaries.

    Attributes:
        requests: Requests sent, retries included.
        retries: Requests that were retries of a failed one.
        rate_limited: 429 answers.
        throttle_seconds: Time waited for the rate limit: pacing and holds from the rate-limit
            headers, and the `Retry-After` of 429s.
        backoff_seconds: Time waited before other retries (exponential backoff, a 503's
            `Retry-After`).
        waiting_until: While a request waits to go: until when (`time.monotonic()`); else 0.
    """

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    throttle_seconds: float = 0.0
    backoff_seconds: float = 0.0
    waiting_until: float = 0.0

    def waiting_seconds(self) -> float:
        """How much longer the current wait lasts (0 when no request is waiting)."""
        return max(0.0, self.waiting_until - time.monotonic())


class _Auth(httpx.Auth):
    """Adds the connection's current token as a bearer header. Never shows the token."""

    def __init__(self, source: TokenSource) -> None:
        self.source = source

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.source.token()
        if token is not None:  # None: a request that carries no token (an account login)
            request.headers["Authorization"] = f"Bearer {token}"
        yield request

    def __repr__(self) -> str:
        return "BearerAuth(token=***)"


class MakiniClient:
    """Sends one Makini connection's requests.

    Args:
        base_url: API root, e.g. `https://api.makini.io` or a sandbox's `http://127.0.0.1:8765`.
        token: The connection's bearer token, or where it comes from (`TokenSource`).
        connection: The connection's name, used in errors and logs.
        retry: Retry, timeout and size policy.
        transport: An httpx transport to use instead of the network (tests, proxies).
        allow_insecure_http: Accept plain http to hosts other than loopback.
        limiter: Pacing shared by every request of this connection.
        errors: Reads the error bodies of the connection's dialect.
        sleep: Sleep function (injectable for tests).
    """

    def __init__(
        self,
        base_url: str,
        token: str | TokenSource,
        connection: str,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        allow_insecure_http: bool = False,
        limiter: RateLimiter | None = None,
        errors: ErrorReader = no_error_details,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if isinstance(token, str):
            token = StaticToken(check_token(token, connection))
        self.connection = connection
        self.retry = retry or RetryPolicy()
        self.limiter = limiter or RateLimiter(sleep=sleep)
        self.stats = ClientStats()
        self.errors = errors
        self.base_url = check_base_url(base_url, allow_insecure_http)
        self._sleep = sleep
        self._rng = random.Random()
        self._auth = _Auth(token)
        self._answered = False  # whether the server ever answered this client
        # a rate-limit hold over max_wait_seconds announced by an answer (which one, for the
        # error the next request raises instead of sleeping)
        self._announced_hold: dict[str, Any] | None = None
        self._http = httpx.Client(
            base_url=self.base_url,
            auth=self._auth,
            transport=transport,
            timeout=httpx.Timeout(
                self.retry.timeout_seconds, connect=self.retry.connect_timeout_seconds
            ),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            follow_redirects=False,  # never carry the token to another host
            verify=True,
        )

    @property
    def host(self) -> str:
        """The API's host, for messages."""
        return urlsplit(self.base_url).netloc

    def close(self) -> None:
        """Closes the connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- public API -------------------------------------------------------------------

    def get(self, path: str, params: Mapping[str, Any] | None = None, *, entity: str) -> Response:
        """GET with pacing and retries.

        Transient failures (429, 5xx, timeouts, resets, cut-off bodies, a deadline passed) are
        retried: a `Retry-After` (429, 503) is waited as asked (within `max_wait_seconds`),
        anything else backs off exponentially with jitter. Retries stop after `max_attempts`
        attempts or once the next wait would take the request past `max_elapsed_seconds`;
        the error then says how many attempts were made. A minted token that the server
        refuses (401) is minted again once.

        Raises:
            MakiniAPIError: The request failed for good.
        """
        return self._send("GET", path, params or {}, None, entity)

    def post(self, path: str, body: Any, *, entity: str) -> Response:
        """POST a JSON body; retried like `get`."""
        return self._send("POST", path, {}, body, entity)

    # --- internals --------------------------------------------------------------------

    def _send(
        self, method: str, path: str, params: Mapping[str, Any], body: Any, entity: str
    ) -> Response:
        started = time.monotonic()
        attempt = 0
        renewals = 0
        while True:
            attempt += 1
            try:
                return self._send_once(method, path, params, body, entity)
            except ReauthorizationRequired as exc:
                refused = self._auth.source.token()
                # a minted token may expire between minting and use: twice, not forever
                if renewals >= 2 or refused is None or not self._auth.source.renew(refused):
                    raise
                renewals += 1
                logger.info("%s: token refused, minted a new one: %s", self.connection, exc)
            except RetriableAPIError as exc:
                elapsed = time.monotonic() - started
                if isinstance(exc, RateLimitError):
                    self.stats.rate_limited += 1
                server_asked = exc.retry_after is not None and exc.retry_after > 0
                if server_asked:
                    assert exc.retry_after is not None
                    if exc.retry_after > self.retry.max_wait_seconds:
                        raise WaitTooLongError(
                            f"{exc.message}; the server asks to wait {exc.retry_after:,.0f}s "
                            "(Retry-After), more than max_wait_seconds="
                            f"{self.retry.max_wait_seconds:g}",
                            **exc._context_without("retry_after"),
                        ) from None
                    delay = max(exc.retry_after, self.retry.min_wait_seconds)
                else:
                    # no Retry-After, or one of 0, negative or in the past: back off
                    delay = self.retry.backoff(attempt, self._rng)
                if isinstance(exc, UnreachableError) and not self._answered:
                    raise  # never reached the server this run: a wrong host or port
                if (
                    attempt >= self.retry.max_attempts
                    or elapsed + delay > self.retry.max_elapsed_seconds
                ):
                    raise type(exc)(
                        f"{exc.message}; gave up after {attempt} attempts in {elapsed:.1f}s",
                        **exc._context_without(),
                    ) from None
                self.stats.retries += 1
                logger.warning("%s; retry %d in %.2fs", exc, attempt, delay)
                # the limiter holds this connection's next request: exactly as a 429's
                # Retry-After asks, or for the backoff (counted in ClientStats.backoff_seconds,
                # not as throttling)
                self.limiter.pause(
                    delay, rate_limited=server_asked and isinstance(exc, RateLimitError)
                )

    def _send_once(
        self, method: str, path: str, params: Mapping[str, Any], body: Any, entity: str
    ) -> Response:
        url = _describe(method, path, params)
        context: dict[str, Any] = {"connection": self.connection, "entity": entity, "url": url}
        self._wait_for_turn(context)
        self.stats.requests += 1
        sent_at = self.limiter.now()
        deadline = time.monotonic() + self.retry.deadline_seconds
        request = self._http.build_request(
            method,
            path,
            params=dict(params),
            content=None if body is None else orjson.dumps(body),
            headers=None if body is None else {"Content-Type": "application/json"},
        )
        try:
            response = self._http.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise UnreachableError(
                f"cannot connect to {self.host} ({type(exc).__name__}: {server_text(str(exc))})",
                **context,
            ) from None
        except httpx.TimeoutException as exc:
            raise RetriableAPIError(
                f"request to {self.host} timed out ({type(exc).__name__})", **context
            ) from None
        except httpx.TransportError as exc:
            # connection refused/reset, DNS failure, or a malformed answer
            raise RetriableAPIError(
                f"transport error talking to {self.host} ({type(exc).__name__}: "
                f"{server_text(str(exc))})",
                **context,
            ) from None
        try:
            self._answered = True
            request_id = response.headers.get("x-request-id")
            context.update(status=response.status_code, request_id=request_id)
            self.limiter.observe(response.headers, sent_at=sent_at)
            self._note_hold(response.headers, context)
            content = self._read_body(response, deadline, context)
        finally:
            response.close()
        if 200 <= response.status_code < 300:
            return Response(response.status_code, content, response.headers, request_id, url)
        raise self._error(response, content, context)

    def _wait_for_turn(self, context: dict[str, Any]) -> None:
        """Waits until the limiter lets the next request go, or fails at once when a hold
        announced by the server lasts longer than `max_wait_seconds`.

        Args:
            context: The request's context (for the error).

        Raises:
            WaitTooLongError: The server's rate-limit headers hold the next request too long.
        """
        hold = self.limiter.hold()
        announced = self._announced_hold
        if announced is not None and hold > self.retry.max_wait_seconds:
            raise WaitTooLongError(
                f"the server's rate limit holds the next request for {hold:,.0f}s "
                f"({announced['headers']} on the answer to {announced['url']}), more than "
                f"max_wait_seconds={self.retry.max_wait_seconds:g}; stopped instead of waiting",
                connection=self.connection,
                entity=context["entity"],
                status=announced["status"],
                request_id=announced["request_id"],
                url=context["url"],
            )
        self._announced_hold = None
        self.stats.waiting_until = time.monotonic() + hold if hold > 0 else 0.0
        try:
            self.stats.throttle_seconds += self.limiter.acquire()
        finally:
            self.stats.waiting_until = 0.0
        self.stats.backoff_seconds = self.limiter.backoff_seconds

    def _note_hold(self, headers: httpx.Headers, context: dict[str, Any]) -> None:
        """Remembers an answer whose rate-limit headers hold the next request longer than
        allowed: the next request fails naming it (this answer's data is still used)."""
        if self.limiter.hold() <= self.retry.max_wait_seconds:
            return
        shown = ", ".join(
            f"{name}: {server_text(headers[name], 40)}"
            for name in ("X-RateLimit-Remaining", "X-RateLimit-Reset")
            if name in headers
        )
        self._announced_hold = {
            "headers": shown or "rate-limit headers",
            "url": context["url"],
            "status": context.get("status"),
            "request_id": context.get("request_id"),
        }

    def _read_body(
        self, response: httpx.Response, deadline: float, context: dict[str, Any]
    ) -> bytes:
        """The whole body, within the request's deadline and the size limit."""
        declared = response.headers.get("content-length")
        limit = self.retry.max_response_bytes
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise RetriableAPIError(
                f"answer of {int(declared):,} bytes is over max_response_bytes={limit:,}",
                **context,
            )
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > limit:
                    raise RetriableAPIError(
                        f"answer is over max_response_bytes={limit:,}; cut off", **context
                    )
                if time.monotonic() > deadline:
                    raise RetriableAPIError(
                        f"answer still arriving after deadline_seconds="
                        f"{self.retry.deadline_seconds:g}; cut off",
                        **context,
                    )
                chunks.append(chunk)
        except httpx.TimeoutException:
            raise RetriableAPIError("answer stopped arriving (read timeout)", **context) from None
        except (httpx.TransportError, httpx.DecodingError) as exc:
            raise RetriableAPIError(f"answer cut off ({type(exc).__name__})", **context) from None
        return b"".join(chunks)

    def _error(
        self, response: httpx.Response, content: bytes, context: dict[str, Any]
    ) -> MakiniAPIError:
        """Maps an error answer to the exception class of its status."""
        status = response.status_code
        code, message, request_id = self.errors(content)
        context["request_id"] = context.get("request_id") or request_id
        context["code"] = code
        if message is None:
            kind = response.headers.get("content-type", "no content type")
            message = f"{response.reason_phrase or 'error'} ({kind} body)"
        text = server_text(message)
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        if status == 429:
            return RateLimitError(f"rate limited: {text}", retry_after=retry_after, **context)
        if status >= 500 or status == 408:
            return RetriableAPIError(f"server error: {text}", retry_after=retry_after, **context)
        if 300 <= status < 400:
            return ReauthorizationRequired(
                f"connection {self.connection!r}: the server redirected ({status}) instead of "
                "answering (a refused token is answered that way); not followed",
                **context,
            )
        if status in (400, 422):
            return BadRequestError(f"bad request: {text}", **context)
        if status == 401:
            return ReauthorizationRequired(
                f"connection {self.connection!r} needs reauthorization: {text}", **context
            )
        if status == 403:
            return PermissionDeniedError(f"permission denied: {text}", **context)
        if status == 404:
            return NotFoundError(f"not found: {text}", **context)
        return FatalAPIError(f"unexpected HTTP {status}: {text}", **context)


def _describe(method: str, path: str, params: Mapping[str, Any]) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{method} {path}" + (f"?{query}" if query else "")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds or an HTTP-date.

    Returns:
        The delay (never negative), or None when the header is absent or unreadable.
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)
