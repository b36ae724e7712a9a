"""HTTP handlers of the unified dialect: Laravel-style listings, errors and account API.

Paths (see ``makini_sandbox/README.md`` for the decisions behind them):

* ``GET /api/{erp|eam}/{entity}``: page-numbered listing (``page``, ``per_page``) in the
  Laravel envelope ``{"data", "links", "meta"}``, with ``filter[...]``, ``filterMatch`` and
  ``sort[...]`` (state side: :mod:`makini_sandbox.unified_listing`), for every list endpoint
  of Makini's OpenAPI files (``entity`` may contain ``/``: ``statuses/purchase-orders``).
* ``GET /api/{erp|eam}/{entity}/{key}``: one record, ``{"data": {...}}``.
* ``GET /api/{erp|eam}/purchase-orders.line-items``: lines, flat.
* ``GET /api/integrations/current``: the sync status.
* ``POST /link/token``, ``GET /api/system/connections``,
  ``POST /api/system/connections/{key}/token``: account credentials and minted tokens.

Records are the stored records reshaped at response time
(:meth:`~makini_sandbox.unified_records.UnifiedEntity.render`). Errors
are Laravel's bodies; the rate limiter, fault rules, stats and request ids are the ones v1
uses (:class:`~makini_sandbox.responses.ApiBase`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from .errors import (
    LARAVEL_MESSAGES,
    ApiError,
    AuthenticationFailed,
    NotFound,
    OAuthError,
    PermissionDenied,
    ValidationFailed,
)
from .fault_responses import alter_records, has_kind
from .faults import FaultRule
from .limits import UNLIMITED, RateDecision
from .models import ConnectionState, Filters, Store
from .openapi_schemas import LINE_ITEMS_PATH, load_catalogue
from .raw_tables import RawCondition, select, tables_of
from .responses import (
    JSON,
    ApiBase,
    Dialect,
    json_response,
    ok_response,
    request_id_of,
    stat_of,
)
from .schema_records import SchemaRecordFactory
from .timeutil import format_laravel, format_timestamp, parse_timestamp, parse_timestamp_exact
from .unified_listing import Condition, ListQuery, list_page, unified_visible
from .unified_records import Filler, UnifiedEntity, unified_entity

PO = "purchase-orders"
LINE_ITEMS = LINE_ITEMS_PATH
#: the stats' and fault rules' connection name of account-API requests
ACCOUNT = "_account"
#: label of the raw tables in fault rules, permissions and stats (``raw-tables/EKKO``: data)
RAW_TABLES = "raw-tables"
FAMILIES = ("erp", "eam")
DEFAULT_PER_PAGE = 15
MAX_PER_PAGE = 100
_OPS = ("eq", "gt", "gteq", "lt", "lted", "lteq", "contains", "startsWith")
_INT_RE = re.compile(r"^[0-9]{1,9}$")
_FILTER_RE = re.compile(r"^filter\[([^\[\]:]*)(?::([^\[\]]*))?\]$")
_SORT_RE = re.compile(r"^sort\[([^\[\]]*)\]$")
_ANON_HEADERS = {"X-RateLimit-Limit": str(UNLIMITED), "X-RateLimit-Remaining": str(UNLIMITED)}
_REDIRECT_HTML = """<!DOCTYPE html>
<html>
    <head>
        <meta charset="UTF-8" />
        <meta http-equiv="refresh" content="0;url='{url}'" />
        <title>Redirecting to {url}</title>
    </head>
    <body>
        Redirecting to <a href="{url}">{url}</a>.
    </body>
</html>"""


# -- rendering -----------------------------------------------------------------------------------


def laravel_error_response(
    exc: ApiError, request_id: str, headers: Mapping[str, str] | None = None
) -> Response:
    """Laravel's error body for ``exc``: ``{"message": ...}`` (+ ``errors`` on 422)."""
    message = exc.laravel_message or LARAVEL_MESSAGES.get(exc.status) or exc.message
    body: dict[str, Any] = {"message": message}
    if isinstance(exc, ValidationFailed):
        body["errors"] = exc.errors
    hdrs = dict(headers or {})
    hdrs.update(exc.headers)
    hdrs["X-Request-Id"] = request_id
    return Response(orjson.dumps(body), status_code=exc.status, headers=hdrs, media_type=JSON)


def wants_json(request: Request) -> bool:
    """Laravel's ``expectsJson()``: an ``Accept`` naming JSON, or an XHR accepting anything."""
    accept = request.headers.get("accept", "")
    if "/json" in accept or "+json" in accept:
        return True
    xhr = request.headers.get("x-requested-with", "") == "XMLHttpRequest"
    return xhr and accept.strip() in ("", "*/*")


class UnifiedDialect(Dialect):
    """The unified dialect's (Laravel's) error bodies and rate-limit headers.

    Args:
        store: the state (for the login URL of the 302 answer).
    """

    name = "unified"

    def __init__(self, store: Store) -> None:
        self.store = store

    def error(
        self, exc: ApiError, request_id: str, headers: Mapping[str, str] | None = None
    ) -> Response:
        return laravel_error_response(exc, request_id, headers)

    def rate_headers(self, decision: RateDecision) -> dict[str, str]:
        return decision.laravel_headers()

    def retry_headers(self, decision: RateDecision) -> dict[str, str]:
        return decision.laravel_retry_headers()

    def unauthenticated(self, request: Request, exc: ApiError, request_id: str) -> Response:
        """401 for a client that wants JSON, else Laravel's redirect to the login page (on
        another host: a client must not follow it with its token)."""
        if wants_json(request):
            return self.error(exc, request_id, _ANON_HEADERS)
        url = self.store.config.login_url
        return Response(
            _REDIRECT_HTML.format(url=url).encode(),
            status_code=302,
            headers={**_ANON_HEADERS, "Location": url},
            media_type="text/html; charset=UTF-8",
        )


def paged_body(
    items: list[bytes],
    total: int,
    page: int,
    per_page: int,
    path: str,
    claim_more: bool = False,
) -> bytes:
    """The Laravel envelope ``{"data", "links", "meta"}``; links carry only ``page``.

    ``claim_more`` (the ``empty_pages`` fault): every page claims a next one
    (``links.next``, ``meta.last_page`` at least the next page), even past the end.
    """
    last_page = max(1, math.ceil(total / per_page))
    if claim_more:
        last_page = max(last_page, page + 1)
    start = (page - 1) * per_page
    count = len(items)

    def link(n: int) -> str:
        return f"{path}?page={n}"

    links = {
        "first": link(1),
        "last": link(last_page),
        "prev": link(page - 1) if page > 1 else None,
        "next": link(page + 1) if page < last_page else None,
    }
    meta = {
        "current_page": page,
        "from": start + 1 if count else None,
        "last_page": last_page,
        "path": path,
        "per_page": per_page,
        "to": start + count if count else None,
        "total": total,
    }
    return b"".join(
        (
            b'{"data":[',
            b",".join(items),
            b'],"links":',
            orjson.dumps(links),
            b',"meta":',
            orjson.dumps(meta),
            b"}",
        )
    )


def listing_page(
    request: Request,
    items: list[bytes],
    total: int,
    page: int,
    per_page: int,
    post: list[FaultRule],
) -> bytes:
    """One page of a listing as the client gets it: the faults applied to its records (`post`),
    the Laravel envelope around them."""
    return paged_body(
        alter_records(items, post),
        total,
        page,
        per_page,
        _path_url(request),
        has_kind(post, "empty_pages"),
    )


def _path_url(request: Request) -> str:
    """The request's absolute URL without query (from the Host it was sent to)."""
    url = request.url
    return f"{url.scheme}://{url.netloc}{url.path}"


# -- parameters ----------------------------------------------------------------------------------


def _invalid(param: str, message: str) -> ValidationFailed:
    return ValidationFailed({param: [message]})


def parse_paging(query: Mapping[str, str]) -> tuple[int, int]:
    """``page`` (default 1) and ``per_page`` (default 15, clamped to 100).

    Raises:
        ValidationFailed: not an integer, or below 1.
    """
    values = {}
    for name, default, label in (
        ("page", 1, "page"),
        ("per_page", DEFAULT_PER_PAGE, "per page"),
    ):
        raw = query.get(name) or ""
        if raw == "":
            values[name] = default
            continue
        if not _INT_RE.match(raw):
            raise _invalid(name, f"The {label} field must be an integer.")
        if int(raw) < 1:
            raise _invalid(name, f"The {label} field must be at least 1.")
        values[name] = int(raw)
    return values["page"], min(values["per_page"], MAX_PER_PAGE)


def _condition(name: str, field: str, op: str, value: str) -> Condition:
    """One filter parameter as a :class:`Condition` (op already validated)."""
    if field == "key":
        if op == "contains":
            return Condition(field, contains=value)
        if op == "startsWith":
            return Condition(field, starts_with=value)
        low = {"eq": (value, True), "gt": (value, False), "gteq": (value, True)}.get(op)
        high = {"eq": (value, True), "lt": (value, False), "lted": (value, True)}.get(op)
        return Condition(field, low=low, high=high)
    if op in ("contains", "startsWith"):
        raise _invalid("filter", f"The operator {op!r} of {name} applies to key only.")
    try:
        us, exact = parse_timestamp_exact(value)
    except ValueError:
        raise _invalid(
            "filter",
            f"The {name} value must be a date (YYYY-MM-DD) or an ISO 8601 UTC timestamp, "
            f"got {value!r}.",
        ) from None
    # half-open [low, high) in µs; a value between two µs (inexact) is rounded up already
    if op == "eq":
        return Condition(field, low=(us, True), high=(us + 1 if exact else us, False))
    if op == "gt":
        return Condition(field, low=(us + 1 if exact else us, True))
    if op == "gteq":
        return Condition(field, low=(us, True))
    if op == "lt":
        return Condition(field, high=(us, False))
    return Condition(field, high=(us + 1 if exact else us, False))  # lted


#: one filter parameter after the syntax checks: (parameter name, field, operator, value)
FilterParam = tuple[str, str, str, str]


def split_query(
    query_items: list[tuple[str, str]], allowed: Sequence[str]
) -> tuple[list[FilterParam], bool, tuple[tuple[str, bool], ...]]:
    """The ``filter[...]``, ``filterMatch`` and ``sort[...]`` parameters of a listing, checked
    for syntax, fields (``allowed``) and operators (``lteq`` becomes ``lted``).

    A parameter given twice keeps its first position and its last value (PHP's rule).

    Returns:
        (filters, match_any, sort as (field, descending) pairs).

    Raises:
        ValidationFailed: malformed parameter, unknown field or operator.
    """
    filters: dict[str, str] = {}
    sorts: dict[str, str] = {}
    match = "all"
    for name, value in query_items:
        if name.startswith("filter["):
            filters[name] = value
        elif name.startswith("sort["):
            sorts[name] = value
        elif name == "filterMatch":
            match = value
        elif name in ("filter", "sort"):
            raise _invalid(name, f"The {name} field must be an array ({name}[field]=...).")
    if match not in ("all", "any"):
        raise _invalid("filterMatch", "The selected filter match is invalid (all or any).")
    checked: list[FilterParam] = []
    for name, value in filters.items():
        m = _FILTER_RE.match(name)
        if m is None:
            raise _invalid("filter", f"Malformed filter parameter {name!r}.")
        field, op = m.group(1), m.group(2) or "eq"
        if field not in allowed:
            raise _invalid(
                "filter", f"Filtering by {field!r} is not allowed; allowed: {', '.join(allowed)}."
            )
        if op not in _OPS:
            raise _invalid("filter", f"Unknown filter operator {op!r}; one of {', '.join(_OPS)}.")
        checked.append((name, field, "lted" if op == "lteq" else op, value))
    sort = []
    for name, value in sorts.items():
        m = _SORT_RE.match(name)
        if m is None:
            raise _invalid("sort", f"Malformed sort parameter {name!r}.")
        field = m.group(1)
        if field not in allowed:
            raise _invalid(
                "sort", f"Sorting by {field!r} is not allowed; allowed: {', '.join(allowed)}."
            )
        if value not in ("0", "1"):
            raise _invalid("sort", f"{name} must be 0 (ascending) or 1 (descending).")
        sort.append((field, value == "1"))
    return checked, match == "any", tuple(sort)


def parse_query(
    query_items: list[tuple[str, str]], allowed: tuple[str, ...]
) -> tuple[tuple[Condition, ...], bool, tuple[tuple[str, bool], ...]]:
    """Filters, ``filterMatch`` and sort of an entity listing (see :func:`split_query`).

    Args:
        query_items: the query string's (name, value) pairs in order.
        allowed: the fields the listing filters and sorts on.

    Returns:
        (conditions, match_any, sort).

    Raises:
        ValidationFailed: unknown field or operator, bad value.
    """
    filters, match_any, sort = split_query(query_items, allowed)
    conditions = tuple(_condition(*param) for param in filters)
    return conditions, match_any, sort


# -- handlers ------------------------------------------------------------------------------------


class UnifiedApi(ApiBase):
    """The unified dialect's handlers bound to a store.

    Args:
        store: the state.
        prefetch: read ahead after pages sorted by ``updatedAt`` ascending (the order of the
            generated data), so a reader walking that order mostly hits the cache.
    """

    def __init__(self, store: Store, prefetch: bool = True) -> None:
        super().__init__(store, prefetch)
        self.dialect = UnifiedDialect(store)

    def not_found(self, request: Request) -> Response:
        """404 for a path that does not exist (no auth needed, as Laravel's router)."""
        self.store.stats.record(None, None, 404, self.dialect.name)
        return laravel_error_response(
            NotFound(f"Unknown path {request.url.path!r}."), request_id_of(request), _ANON_HEADERS
        )

    async def entity_path(self, request: Request) -> Response:
        """``GET /api/{family}/{rest}``: a listing, one record, or the flat PO lines."""
        family = request.path_params["family"]
        rest = request.path_params["rest"]
        if family in FAMILIES and rest == LINE_ITEMS:
            return await self.list_line_items(request, family)
        route = load_catalogue().resolve(rest) if family in FAMILIES else None
        ue = None if route is None else unified_entity(route[0])
        if route is None or ue is None:
            return self.not_found(request)
        key = route[1]
        if key is None:
            return await self.list_records(request, family, ue)
        return await self.get_record(request, family, ue, key)

    @staticmethod
    def _family_check(family: str, ue: UnifiedEntity) -> Callable[[ConnectionState], None]:
        """The route check of a family path: the connection serves that family, and the
        family publishes the entity."""

        def check(conn: ConnectionState) -> None:
            if conn.profile.family != family or family not in ue.families:
                raise NotFound(f"{conn.name} does not serve /api/{family}/{ue.path}.")

        return check

    def _filler(self, conn: ConnectionState, ue: UnifiedEntity) -> Filler | None:
        """Values of the schema fields ``ue``'s stored records lack (cached per store)."""
        if not ue.fill:
            return None
        es = self.store.entity(conn, ue.path)
        filler = es.derived.get("unified_filler")
        if filler is None:
            factory = SchemaRecordFactory(
                self.store.config.seed, conn.name, ue.shape, self.store.key_refs(conn)
            )
            filler = factory.fill
            es.derived["unified_filler"] = filler
        return filler  # type: ignore[no-any-return]

    async def list_records(self, request: Request, family: str, ue: UnifiedEntity) -> Response:
        """``GET /api/{family}/{entity}``."""
        store = self.store
        entity = ue.path

        async def respond(
            conn: ConnectionState, headers: dict[str, str], post: list[FaultRule]
        ) -> Response:
            page, per_page = parse_paging(request.query_params)
            allowed = ue.query_fields(store.config.unified_key_queries)
            conditions, match_any, sort = parse_query(request.query_params.multi_items(), allowed)
            query = ListQuery(conditions, match_any, sort, (page - 1) * per_page, per_page)
            with store.lock:
                es = store.entity(conn, entity)
                rows, total = list_page(
                    es,
                    query,
                    store.config.seed,
                    next(store.request_counter),
                    soft_delete=ue.soft_delete,
                )
                money = conn.profile.money_as_numbers
                filler = self._filler(conn, ue)
            items = [ue.render(r, money, filler) for r in rows]
            body = listing_page(request, items, total, page, per_page, post)
            response = ok_response(body, headers)
            if rows and sort[:1] == (("updatedAt", False),):
                last = orjson.loads(rows[-1])
                after = (parse_timestamp(last["updatedAt"]), last["key"])
                self.read_ahead(conn, entity, after, Filters(include_deleted=True), per_page)
            return response

        return await self.guarded(
            request,
            self.dialect,
            entity,
            respond,
            route_check=self._family_check(family, ue),
            is_list=True,
        )

    async def list_line_items(self, request: Request, family: str) -> Response:
        """``GET /api/{family}/purchase-orders.line-items``: the lines of the listed purchase
        orders, flat, in the purchase orders' creation order (paging only; it reads every
        purchase order, so it is meant for small data sets)."""
        store = self.store
        po = unified_entity(PO)
        assert po is not None

        async def respond(
            conn: ConnectionState, headers: dict[str, str], post: list[FaultRule]
        ) -> Response:
            page, per_page = parse_paging(request.query_params)
            with store.lock:
                es = store.entity(conn, PO)
                rows, _ = list_page(
                    es, ListQuery(limit=1 << 62), store.config.seed, 0, soft_delete=False
                )
                money = conn.profile.money_as_numbers
            lines = [
                orjson.dumps(line)
                for row in rows
                for line in orjson.loads(row).get("lineItems") or []
            ]
            start = (page - 1) * per_page
            # lines as embedded in lineItems (they keep createdAt and deletedAt)
            items = [
                po.numbers(line) if money else line for line in lines[start : start + per_page]
            ]
            body = listing_page(request, items, len(lines), page, per_page, post)
            return ok_response(body, headers)

        return await self.guarded(
            request,
            self.dialect,
            PO,
            respond,
            route_check=self._family_check(family, po),
            is_list=True,
        )

    async def get_record(
        self, request: Request, family: str, ue: UnifiedEntity, key: str
    ) -> Response:
        """``GET /api/{family}/{entity}/{key}``: ``{"data": record}`` or 404."""
        store = self.store
        entity = ue.path

        async def respond(
            conn: ConnectionState, headers: dict[str, str], post: list[FaultRule]
        ) -> Response:
            with store.lock:
                version = store.entity(conn, entity).current(key)
                if version is None or not unified_visible(version, ue.soft_delete):
                    raise NotFound(f"No {entity} record with key {key!r}.")
                data = version.data
                money = conn.profile.money_as_numbers
                filler = self._filler(conn, ue)
            body = b'{"data":' + ue.render(data, money, filler) + b"}"
            return ok_response(body, headers)

        return await self.guarded(
            request, self.dialect, entity, respond, route_check=self._family_check(family, ue)
        )

    # -- raw tables ----------------------------------------------------------------------------

    async def raw_tables(self, request: Request) -> Response:
        """``GET /api/raw/tables``: ``{"data": [{"name", "description", "columns": [{"name",
        "type"}], "rows"}]}``, the connected system's raw tables (not paged)."""

        async def respond(
            conn: ConnectionState, headers: dict[str, str], post: list[FaultRule]
        ) -> Response:
            count = conn.config.raw_table_rows
            items = [
                orjson.dumps(t.describe(count)) for t in tables_of(conn.profile.family).values()
            ]
            body = b'{"data":[' + b",".join(alter_records(items, post)) + b"]}"
            return ok_response(body, headers)

        return await self.guarded(request, self.dialect, RAW_TABLES, respond, is_list=True)

    async def raw_table_data(self, request: Request) -> Response:
        """``GET /api/raw/tables/{table}/data``: the table's rows as untyped objects in the
        Laravel envelope; ``page``/``per_page``, ``filter[column(:op)]``, ``filterMatch`` and
        ``sort[column]`` as on entity listings, on any column (404: no such table)."""
        table = request.path_params["table"]
        store = self.store

        def route_check(conn: ConnectionState) -> None:
            if table not in tables_of(conn.profile.family):
                raise NotFound(f"{conn.name} has no raw table {table!r}.")

        async def respond(
            conn: ConnectionState, headers: dict[str, str], post: list[FaultRule]
        ) -> Response:
            page, per_page = parse_paging(request.query_params)
            columns = [c.name for c in tables_of(conn.profile.family)[table].columns]
            filters, match_any, sort = split_query(request.query_params.multi_items(), columns)
            conditions = [RawCondition(field, op, value) for _, field, op, value in filters]
            rows = select(store.raw_table_rows(conn, table), conditions, match_any, sort)
            start = (page - 1) * per_page
            items = [orjson.dumps(row) for row in rows[start : start + per_page]]
            body = listing_page(request, items, len(rows), page, per_page, post)
            return ok_response(body, headers)

        return await self.guarded(
            request,
            self.dialect,
            f"{RAW_TABLES}/{table}",
            respond,
            route_check=route_check,
            is_list=True,
        )

    async def integrations_current(self, request: Request) -> Response:
        """``GET /api/integrations/current``: the connection's sync status."""
        store = self.store

        async def respond(
            conn: ConnectionState, headers: dict[str, str], post: list[FaultRule]
        ) -> Response:
            with store.lock:
                body = orjson.dumps({"data": integration(conn)})
            return ok_response(body, headers)

        return await self.guarded(request, self.dialect, "integrations", respond)

    # -- account API ---------------------------------------------------------------------------

    def _account_auth(self, request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not self.store.accounts.account_token_valid(token.strip()):
            raise AuthenticationFailed()

    async def _account_call(
        self,
        request: Request,
        label: str,
        work: Callable[[list[FaultRule]], Awaitable[Response]],
        *,
        authenticated: bool = True,
        connection: str = ACCOUNT,
        is_list: bool = False,
    ) -> Response:
        """An account-API request: auth (401 / 302) when ``authenticated``, fault rules
        (matched as ``connection``/``label``), then ``work(page-altering rules)``."""
        rid = request_id_of(request)
        stats = self.store.stats
        if authenticated:
            try:
                self._account_auth(request)
            except ApiError as exc:
                stats.record(None, label, exc.status, "account")
                return self.dialect.unauthenticated(request, exc, rid)

        async def build(post: list[FaultRule]) -> Response:
            try:
                return await work(post)
            except ApiError as exc:
                return laravel_error_response(exc, rid, _ANON_HEADERS)

        rules = self.store.faults.fire(connection, label, is_list=is_list, has_cursor=False)
        response = await self.run_faults(request, self.dialect, rules, rid, _ANON_HEADERS, build)
        stats.record(ACCOUNT, label, stat_of(response), "account")
        return response

    async def link_token(self, request: Request) -> Response:
        """``POST /link/token``: client credentials -> account token (OAuth 2 body)."""
        rid = request_id_of(request)

        async def work(post: list[FaultRule]) -> Response:
            try:
                body = await _credentials(request)
                issued = self.store.accounts.issue_account_token(
                    body.get("grant_type"), body.get("client_id"), body.get("client_secret")
                )
            except OAuthError as exc:
                return json_response(
                    {"error": exc.code, "error_description": exc.message, "message": exc.message},
                    exc.status,
                    {"X-Request-Id": rid},
                )
            return json_response(
                {
                    "access_token": issued.token,
                    "token_type": "bearer",
                    "expires_in": issued.expires_in,
                },
                headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
            )

        return await self._account_call(request, "link-token", work, authenticated=False)

    async def system_connections(self, request: Request) -> Response:
        """``GET /api/system/connections`` (account token): the account's connections, paged."""
        store = self.store

        async def work(post: list[FaultRule]) -> Response:
            page, per_page = parse_paging(request.query_params)
            with store.lock:
                conns = list(store.connections.values())
                start = (page - 1) * per_page
                items = [
                    orjson.dumps(c.profile.listing(c.config.system, store.config.client_id))
                    for c in conns[start : start + per_page]
                ]
            body = listing_page(request, items, len(conns), page, per_page, post)
            return Response(body, media_type=JSON, headers=_ANON_HEADERS)

        return await self._account_call(request, "system-connections", work, is_list=True)

    async def mint_token(self, request: Request) -> Response:
        """``POST /api/system/connections/{key}/token`` (account token): a connection token."""
        store = self.store
        key = request.path_params["key"]

        async def work(post: list[FaultRule]) -> Response:
            with store.lock:
                conn = store.connection_by_key(key)
                status = conn.profile.connection_status
                if status == "inactive":
                    raise ValidationFailed(
                        {"connection": [f"The connection {conn.profile.key} is inactive."]}
                    )
                if status == "reauthorization_required" or conn.revoked:
                    raise PermissionDenied("The connection must be reauthorized.")
                issued = store.accounts.mint(conn.name)
            store.stats.record_mint(conn.name)
            return json_response(
                {"data": {"token": issued.token, "expires_in": issued.expires_in}},
                headers=_ANON_HEADERS,
            )

        # fault rules see the connection the token is for (when the key is known)
        target = next((c.name for c in store.connections.values() if c.profile.key == key), ACCOUNT)
        return await self._account_call(request, "connection-token", work, connection=target)


def integration(conn: ConnectionState) -> dict[str, Any]:
    """The ``data`` of ``GET /api/integrations/current``, derived from the v1 sync state.

    ``active`` -> ``done`` (``fulldone`` after an admin sync with ``full_sync``), with
    ``sync_updated_at`` = ``last_sync_at``; ``syncing`` -> ``inprogress``, ``error`` ->
    ``error``, ``reauthorization_required`` -> ``fail``, each with ``sync_updated_at`` = when
    that status began.
    """
    profile = conn.profile
    if conn.status == "active":
        status = "fulldone" if conn.full_sync_done else "done"
        since = conn.last_sync_at
    else:
        status = {"syncing": "inprogress", "error": "error"}.get(conn.status, "fail")
        since = conn.status_since if conn.status_since is not None else conn.last_sync_at
    fmt = format_laravel if profile.sync_updated_at_format == "laravel" else format_timestamp
    updated = max(t for t in (conn.last_sync_at, conn.status_since, profile.updated_at) if t)
    return {
        "id": f"int_{conn.name}",
        "company_name": profile.display_name,
        "email": profile.email,
        "provider": profile.provider,
        "updated_at": format_timestamp(updated),
        "sync_status": status,
        "sync_updated_at": conn.shown_sync_time(since, fmt),
    }


async def _credentials(request: Request) -> dict[str, Any]:
    """The token request's parameters: a JSON object or a form (as OAuth clients send)."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        return {k: v for k, v in form.items() if isinstance(v, str)}
    raw = await request.body()
    try:
        body = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError:
        raise OAuthError("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise OAuthError("The request body must be a JSON object.")
    return body


__all__ = [
    "UnifiedApi",
    "UnifiedDialect",
    "integration",
    "laravel_error_response",
    "paged_body",
    "parse_paging",
    "parse_query",
]
