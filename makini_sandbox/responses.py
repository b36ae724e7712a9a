"""HTTP plumbing shared by both dialects, and the handlers of the Makini v1 API.

Shared: request ids (:class:`RequestIdMiddleware`) and :class:`ApiBase`, the steps every
data request goes through: bearer auth (401), the connection's rate limit (429), a route
check (404), fault rules (:meth:`ApiBase.run_faults`, with :mod:`.fault_responses`),
permissions (403), then the handler (parameters, page). A :class:`Dialect` says how
errors and rate-limit headers look; :data:`V1` is v1's (``unified.py`` has the other).

v1 (:class:`Api`): list endpoints and sync status. Every response carries ``X-Request-Id``
and the ``X-RateLimit-*`` headers.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import jsontext
from .errors import (
    ApiError,
    AuthenticationFailed,
    InvalidParameter,
    NotFound,
    PermissionDenied,
    RateLimitExceeded,
)
from .fault_responses import (
    ResetResponse,
    alter_records,
    echo_value,
    finish_response,
    has_kind,
    replacement,
)
from .faults import FaultRule
from .generator import MAX_LIMIT
from .limits import UNLIMITED, RateDecision
from .models import ConnectionState, Filters, Page, Store
from .timeutil import parse_timestamp

JSON = "application/json"
_LIMIT_RE = re.compile(r"^[0-9]{1,9}$")
_ANON_RATE_HEADERS = {
    "X-RateLimit-Limit": str(UNLIMITED),
    "X-RateLimit-Remaining": str(UNLIMITED),
    "X-RateLimit-Reset": "60",
}
_SYNC_LABELS = frozenset({"sync-status", "integrations"})


def new_request_id() -> str:
    """A fresh request id: ``req_`` + 24 hex digits."""
    return "req_" + secrets.token_hex(12)


def request_id_of(request: Request) -> str:
    """The request id assigned by :class:`RequestIdMiddleware`."""
    rid = request.scope.get("state", {}).get("request_id")
    return rid or new_request_id()


class RequestIdMiddleware:
    """Pure ASGI middleware: assigns a request id and adds ``X-Request-Id`` to every response.

    It also remembers uvicorn's per-request cycle object (the owner of ``send``) so that the
    ``reset`` and ``truncate`` faults can reach the TCP transport.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = new_request_id()
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        state["sandbox_cycle"] = getattr(send, "__self__", None)
        rid_header = (b"x-request-id", rid.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"x-request-id" for k, _ in headers):
                    headers.append(rid_header)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


def error_response(
    exc: ApiError, request_id: str, headers: Mapping[str, str] | None = None
) -> Response:
    """The contract's JSON error response for ``exc``."""
    body = orjson.dumps(
        {"error": {"code": exc.code, "message": exc.message, "request_id": request_id}}
    )
    hdrs = dict(headers or {})
    hdrs.update(exc.headers)
    hdrs["X-Request-Id"] = request_id
    return Response(body, status_code=exc.status, headers=hdrs, media_type=JSON)


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """A JSON response (any value the admin API accepts: big integers stay exact)."""
    return Response(
        jsontext.dumps(data), status_code=status, headers=dict(headers or {}), media_type=JSON
    )


def _parse_bool(name: str, value: str) -> bool:
    v = value.lower()
    if v == "true":
        return True
    if v == "false":
        return False
    raise InvalidParameter(f"{name} must be 'true' or 'false', got {value!r}.")


def _parse_time(name: str, value: str) -> int:
    try:
        return parse_timestamp(value)
    except ValueError:
        raise InvalidParameter(
            f"{name} must be YYYY-MM-DD or an RFC 3339 timestamp with a UTC offset "
            f"(a '+' must be sent as %2B), got {value!r}."
        ) from None


def parse_limit(entity: str, value: str | None) -> int | None:
    """Validate ``limit``: an integer within 1..the entity's max; ``None`` when absent.

    Raises:
        InvalidParameter: not an integer or out of range.
    """
    if value is None:
        return None
    max_limit = MAX_LIMIT[entity]
    if not _LIMIT_RE.match(value) or not 1 <= int(value) <= max_limit:
        raise InvalidParameter(f"limit must be an integer from 1 to {max_limit}, got {value!r}.")
    return int(value)


def parse_filters(query: Mapping[str, str]) -> Filters:
    """The filters of a new listing from its query parameters.

    Raises:
        InvalidParameter: a malformed timestamp or boolean.
    """
    bounds: dict[str, int | None] = {}
    for name in ("modified_after", "modified_before", "created_after", "created_before"):
        value = query.get(name)
        bounds[name] = _parse_time(name, value) if value else None
    inc = query.get("include_deleted")
    return Filters(
        **bounds,
        include_deleted=_parse_bool("include_deleted", inc) if inc else False,
    )


def page_body(page: Page, post: list[FaultRule], next_cursor: str | None) -> bytes:
    """Serialize a page with ``next_cursor``, applying the ``bad_record``/``extra_field``
    faults to its records."""
    items = alter_records([row[2] for row in page.rows], post, "v1")
    return b"".join(
        (
            b'{"data":[',
            b",".join(items),
            b'],"next_cursor":',
            orjson.dumps(next_cursor),
            b',"total_count":',
            b"null" if page.total_count is None else str(page.total_count).encode(),
            b"}",
        )
    )


def is_denied(denied: set[str], label: str) -> bool:
    """Whether a permission set denies a label; ``raw-tables`` denies every raw table's data
    (``raw-tables/EKKO``) too."""
    return label in denied or (label.startswith("raw-tables/") and "raw-tables" in denied)


class Dialect:
    """How an API dialect renders errors and rate-limit headers (this base: v1's way).

    Attributes:
        name: ``"v1"`` or ``"unified"`` (as counted in the stats).
    """

    name = "v1"

    def error(
        self, exc: ApiError, request_id: str, headers: Mapping[str, str] | None = None
    ) -> Response:
        """The error response for ``exc``."""
        return error_response(exc, request_id, headers)

    def rate_headers(self, decision: RateDecision) -> dict[str, str]:
        """The rate-limit headers every answer of an authenticated request carries."""
        return decision.headers()

    def retry_headers(self, decision: RateDecision) -> dict[str, str]:
        """What a 429 adds to :meth:`rate_headers`."""
        return {"Retry-After": decision.retry_after}

    def unauthenticated(self, request: Request, exc: ApiError, request_id: str) -> Response:
        """The answer to a request without a valid token."""
        return self.error(exc, request_id, _ANON_RATE_HEADERS)


V1 = Dialect()

#: builds the answer of an authenticated request that passed the common steps:
#: (connection, rate-limit headers, page-altering fault rules) -> response
Responder = Callable[[ConnectionState, dict[str, str], list[FaultRule]], Awaitable[Response]]


class ApiBase:
    """The steps every data request of either dialect goes through, bound to a store.

    Per request: bearer auth (401) -> the connection's rate limit (429) -> a route check
    (e.g. unknown entity, 404) -> fault rules -> permissions (403) -> the responder
    (parameters, then the page). Answers are counted in the stats.

    After a page is served, the records that follow it in (``updatedAt``, ``key``) order can
    be built in the idle time of the event loop (read-ahead, :meth:`read_ahead`), so a
    sequential reader mostly hits the cache.

    Args:
        store: the state.
        prefetch: enable read-ahead.
    """

    def __init__(self, store: Store, prefetch: bool = True) -> None:
        self.store = store
        self.prefetch_enabled = prefetch
        self._prefetch_tasks: dict[tuple[str, str], asyncio.Task[None]] = {}

    def read_ahead(
        self, conn: ConnectionState, entity: str, after: tuple[int, str], flt: Filters, n: int
    ) -> None:
        """Build the ``n`` records after keyset position ``after`` in the background
        (replacing the connection's previous read-ahead of ``entity``)."""
        if not self.prefetch_enabled:
            return
        budget = conn.entities[entity].budget
        if budget.used >= budget.max_bytes:
            return
        key = (conn.name, entity)
        old = self._prefetch_tasks.get(key)
        if old is not None and not old.done():
            old.cancel()
        self._prefetch_tasks[key] = asyncio.get_running_loop().create_task(
            self._prefetch(conn, entity, after, flt, n)
        )

    async def _prefetch(
        self, conn: ConnectionState, entity: str, after: tuple[int, str], flt: Filters, n: int
    ) -> None:
        await asyncio.sleep(0.001)  # let the current response go out first
        left = n
        pos: tuple[int, str] | None = after
        while left > 0 and pos is not None:
            step = min(16, left)
            pos = self.store.prefetch(conn, entity, pos, flt, step)
            left -= step
            await asyncio.sleep(0)

    def _authenticate(self, request: Request) -> ConnectionState:
        header = request.headers.get("authorization")
        if not header:
            raise AuthenticationFailed("Missing 'Authorization: Bearer <token>' header.")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationFailed("The Authorization header must be 'Bearer <token>'.")
        conn = self.store.authenticate(token.strip())
        if conn is None:
            raise AuthenticationFailed()
        return conn

    async def run_faults(
        self,
        request: Request,
        dialect: Dialect,
        rules: list[FaultRule],
        request_id: str,
        headers: dict[str, str],
        build: Callable[[list[FaultRule]], Awaitable[Response]],
    ) -> Response:
        """The answer of a request for which ``rules`` fired: delays first, then the first
        response-replacing rule's answer, else ``build(rules)`` (the handler, which applies
        the page-altering rules), then the rules that change a finished answer."""
        for rule in rules:
            if rule.kind == "delay":
                await asyncio.sleep(float(rule.params.get("seconds", 5)))
        replacing = next((rule for rule in rules if rule.replaces), None)
        if replacing is not None:
            response = replacement(replacing, request, request_id, headers, dialect.error)
        else:
            response = await build([rule for rule in rules if rule.kind != "delay"])
        return finish_response(response, rules, request) if rules else response

    async def guarded(
        self,
        request: Request,
        dialect: Dialect,
        label: str | None,
        respond: Responder,
        *,
        route_check: Callable[[ConnectionState], None] | None = None,
        is_list: bool = False,
        has_cursor: bool = False,
    ) -> Response:
        """Run the common steps, then ``respond``.

        Args:
            request: the request.
            dialect: renders errors and headers.
            label: entity path, ``"sync-status"``, ``"integrations"``, ``"raw-tables"``
                or ``"raw-tables/<TABLE>"``: matched by fault rules and permissions,
                counted in the stats; ``None`` for other paths (no faults, no permission
                check).
            respond: builds the answer once every step passed.
            route_check: raises (e.g. :class:`NotFound`) when the path does not exist for
                this connection; runs after the rate limit, before faults.
            is_list: a list request (page-altering faults apply).
            has_cursor: the request carries a cursor (``repeat_cursor`` applies).
        """
        rid = request_id_of(request)
        store = self.store
        try:
            conn = self._authenticate(request)
        except ApiError as exc:
            store.stats.record(None, label, exc.status, dialect.name)
            return dialect.unauthenticated(request, exc, rid)
        decision = conn.limiter.hit()
        headers = dialect.rate_headers(decision)
        try:
            if not decision.allowed:
                raise RateLimitExceeded(headers=dialect.retry_headers(decision))
            if route_check is not None:
                route_check(conn)
        except ApiError as exc:
            store.stats.record(conn.name, label, exc.status, dialect.name)
            return dialect.error(exc, rid, headers)

        async def build(post: list[FaultRule]) -> Response:
            try:
                if label is not None and is_denied(conn.denied, label):
                    what = "the sync status" if label in _SYNC_LABELS else label
                    raise PermissionDenied(f"The connected account may not read {what}.")
                return await respond(conn, headers, post)
            except ApiError as exc:
                return dialect.error(exc, rid, headers)

        rules: list[FaultRule] = []
        if label is not None:
            rules = store.faults.fire(conn.name, label, is_list=is_list, has_cursor=has_cursor)
        response = await self.run_faults(request, dialect, rules, rid, headers, build)
        store.stats.record(conn.name, label, stat_of(response), dialect.name)
        return response


class Api(ApiBase):
    """The ``/api/v1`` handlers bound to a :class:`~makini_sandbox.models.Store`.

    Args:
        store: the state.
        prefetch: read ahead the next page's records (see :class:`ApiBase`).
    """

    # -- endpoints ----------------------------------------------------------------------------

    async def list_records(self, request: Request) -> Response:
        """``GET /api/v1/{entity}``."""
        entity = request.path_params["entity"]
        query = request.query_params
        cursor = query.get("cursor") or None
        store = self.store

        def route_check(conn: ConnectionState) -> None:
            if entity not in MAX_LIMIT:
                raise NotFound(f"Unknown entity path '/api/v1/{entity}'.")

        async def respond(
            conn: ConnectionState, headers: dict[str, str], post: list[FaultRule]
        ) -> Response:
            limit = parse_limit(entity, query.get("limit") or None)
            filters = None if cursor is not None else parse_filters(query)
            page = store.list_page(
                conn,
                entity,
                filters=filters,
                cursor=cursor,
                limit=limit,
                empty=has_kind(post, "empty_pages"),
            )
            delay = store.config.page_delay_seconds
            if delay > 0:
                await asyncio.sleep(delay)
            next_cursor = page.cursor if has_kind(post, "repeat_cursor") else page.next_cursor
            echoed = echo_value(post, request, "cursor")
            if echoed is not None:
                next_cursor = echoed
            response = ok_response(page_body(page, post, next_cursor), headers)
            if page.rows and page.next_cursor is not None:
                last = page.rows[-1]
                self.read_ahead(conn, entity, (last[0], last[1]), page.filters, page.limit)
            return response

        return await self.guarded(
            request,
            V1,
            entity,
            respond,
            route_check=route_check,
            is_list=True,
            has_cursor=cursor is not None,
        )

    async def sync_status(self, request: Request) -> Response:
        """``GET /api/v1/sync-status``."""
        store = self.store

        async def respond(
            conn: ConnectionState, headers: dict[str, str], post: list[FaultRule]
        ) -> Response:
            with store.lock:
                body = orjson.dumps({"data": conn.sync_status()})
            return ok_response(body, headers)

        return await self.guarded(request, V1, "sync-status", respond)

    async def unknown_api_path(self, request: Request) -> Response:
        """Any other ``/api/v1/...`` path: 401 without a valid token, else 404."""

        def route_check(conn: ConnectionState) -> None:
            raise NotFound(f"Unknown path {request.url.path!r}.")

        async def respond(
            conn: ConnectionState, headers: dict[str, str], post: list[FaultRule]
        ) -> Response:
            raise AssertionError("unreachable: route_check always raises")

        return await self.guarded(request, V1, None, respond, route_check=route_check)


def ok_response(body: bytes, headers: Mapping[str, str]) -> Response:
    """The 200 JSON answer."""
    return Response(body, status_code=200, headers=dict(headers), media_type=JSON)


def stat_of(response: Response) -> int | str:
    """How the stats count an answer: its status, or "reset" for a dropped connection."""
    return "reset" if isinstance(response, ResetResponse) else response.status_code
