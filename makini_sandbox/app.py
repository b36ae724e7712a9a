"""The Starlette application: the Makini v1 and unified APIs plus the ``/_admin`` endpoints.

``SandboxConfig.dialect`` says which API dialects answer; the other one's paths get the
served dialect's 404 (checked per request, so ``POST /_admin/reset`` can switch it). Admin
endpoints take no auth and speak JSON; errors use the v1 error body. See
``makini_sandbox/README.md`` for the full list and body shapes.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import jsontext
from .config import SandboxConfig
from .errors import ApiError, InternalError, InvalidParameter, NotFound
from .models import Store
from .openapi_schemas import load_catalogue
from .raw_tables import TABLES_BY_FAMILY
from .responses import Api, RequestIdMiddleware, error_response, json_response, request_id_of
from .timeutil import format_timestamp
from .unified import FAMILIES, RAW_TABLES, UnifiedApi

Endpoint = Callable[[Request], Awaitable[Response]]


async def _body(request: Request) -> Any:
    """The JSON body, parsed exactly (integers beyond int64 stay integers), or ``None``."""
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        return jsontext.loads(raw)
    except ValueError as exc:
        raise InvalidParameter(f"The body is not valid JSON: {exc}") from exc


def _obj(body: Any) -> dict[str, Any]:
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise InvalidParameter("The body must be a JSON object.")
    return body


def _flag(request: Request, name: str) -> bool:
    value = request.query_params.get(name)
    if value is None or value == "":
        return False
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise InvalidParameter(f"{name} must be true or false.")


class Admin:
    """The ``/_admin`` handlers bound to a store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def health(self, request: Request) -> Response:
        """``GET /_admin/health``."""
        return json_response({"ok": True})

    async def reset(self, request: Request) -> Response:
        """``POST /_admin/reset``: regenerate all state; body: optional SandboxConfig JSON."""
        body = await _body(request)
        try:
            config = None if body is None else SandboxConfig.from_dict(_obj(body))
            self.store.reset(config)
        except (ValueError, TypeError) as exc:
            raise InvalidParameter(str(exc)) from exc
        return json_response({"data": self.store.describe()})

    async def prewarm(self, request: Request) -> Response:
        """``POST /_admin/prewarm`` body ``{"connection"?, "entity"?}``: build all records now."""
        body = _obj(await _body(request))
        started = time.perf_counter()
        built = self.store.prewarm(body.get("connection"), body.get("entity"))
        return json_response({"data": {"built": built, "seconds": time.perf_counter() - started}})

    async def config(self, request: Request) -> Response:
        """``GET /_admin/config``: the current SandboxConfig as JSON."""
        return json_response({"data": self.store.config.to_dict()})

    async def connections(self, request: Request) -> Response:
        """``GET /_admin/connections``."""
        return json_response({"data": self.store.describe()})

    async def entity_path(self, request: Request) -> Response:
        """``/_admin/connections/{conn}/{entity}/{key}`` (GET, PUT, DELETE) and
        ``/_admin/connections/{conn}/{entity}/_bulk`` (POST); ``entity`` may contain ``/``
        (``statuses/purchase-orders``)."""
        rest = request.path_params["rest"]
        if rest.endswith("/_bulk") and request.method == "POST":
            return await self.bulk(request, rest[: -len("/_bulk")])
        route = load_catalogue().resolve(rest)
        if route is None or route[1] is None:
            raise NotFound(f"Unknown entity or missing key in {rest!r}.")
        if request.method == "POST":
            raise InvalidParameter("POST is for .../{entity}/_bulk; use PUT for one record.")
        return await self.record(request, route[0], route[1])

    async def record(self, request: Request, entity: str, key: str) -> Response:
        """``GET|PUT|DELETE /_admin/connections/{conn}/{entity}/{key}``."""
        conn = request.path_params["conn"]
        store = self.store
        if request.method == "GET":
            return json_response(store.get_record(conn, entity, key))
        pending = _flag(request, "pending")
        if request.method == "PUT":
            fields = _obj(await _body(request))
            rec = store.put_record(conn, entity, key, fields, pending=pending)
        else:
            body = _obj(await _body(request))
            deleted_at = body.get("deletedAt") or request.query_params.get("deleted_at")
            hard = _flag(request, "hard") or body.get("hard") is True
            rec = store.delete_record(
                conn, entity, key, pending=pending, deleted_at=deleted_at, hard=hard
            )
        return json_response({"data": rec, "pending": pending})

    async def bulk(self, request: Request, entity: str) -> Response:
        """``POST /_admin/connections/{conn}/{entity}/_bulk``."""
        body = _obj(await _body(request))
        allowed = {"keys", "count", "set", "delete", "pending", "updatedAt", "hard"}
        unknown = set(body) - allowed
        if unknown:
            raise InvalidParameter(f"Unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}.")
        keys = body.get("keys")
        if keys is not None and (
            not isinstance(keys, list) or not all(isinstance(k, str) for k in keys)
        ):
            raise InvalidParameter("keys must be an array of strings.")
        result = self.store.bulk(
            request.path_params["conn"],
            entity,
            keys=keys,
            count=body.get("count"),
            fields=_obj(body.get("set")),
            delete=bool(body.get("delete", False)),
            pending=bool(body.get("pending", False)),
            updated_at=body.get("updatedAt"),
            hard=bool(body.get("hard", False)),
        )
        return json_response({"data": result})

    async def sync(self, request: Request) -> Response:
        """``POST /_admin/connections/{conn}/sync``: a sync (publish pending writes, set the
        sync state); a body of only ``sync_time_raw`` / ``clear_sync_time_raw`` changes the
        sent sync time without a sync."""
        body = _obj(await _body(request))
        conn = request.path_params["conn"]
        raw_keys = {"sync_time_raw", "clear_sync_time_raw"}
        data: dict[str, Any] = {}
        if not body or set(body) - raw_keys:
            data = self.store.sync(
                conn,
                last_sync_at=body.get("last_sync_at"),
                status=body.get("status"),
                initial_sync_completed=body.get("initial_sync_completed"),
                last_sync_status=body.get("last_sync_status"),
                publish=bool(body.get("publish", True)),
                full_sync=bool(body.get("full_sync", False)),
            )
        if set(body) & raw_keys:
            clear = bool(body.get("clear_sync_time_raw"))
            shown = self.store.set_sync_time_raw(conn, body.get("sync_time_raw"), clear=clear)
            data = {**shown, "published": data.get("published", 0)}
        return json_response({"data": data})

    async def token(self, request: Request) -> Response:
        """``POST /_admin/connections/{conn}/token``."""
        body = _obj(await _body(request))
        data = self.store.set_token(
            request.path_params["conn"],
            token=body.get("token"),
            revoked=body.get("revoked"),
            status=body.get("status"),
        )
        return json_response({"data": data})

    async def profile(self, request: Request) -> Response:
        """``POST /_admin/connections/{conn}/profile``: account-API and unified settings
        (body: any of ``ConnectionProfile.SETTABLE``)."""
        body = _obj(await _body(request))
        return json_response({"data": self.store.set_profile(request.path_params["conn"], body)})

    async def tokens(self, request: Request) -> Response:
        """``GET|DELETE /_admin/connections/{conn}/tokens``: minted connection tokens
        (``{"minted", "live"}``); DELETE revokes every live one."""
        store = self.store
        conn = store.connection(request.path_params["conn"])
        revoked = store.accounts.revoke_minted(conn.name) if request.method == "DELETE" else 0
        data: dict[str, Any] = store.accounts.minted(conn.name)
        if request.method == "DELETE":
            data["revoked"] = revoked
        return json_response({"data": data})

    async def permissions(self, request: Request) -> Response:
        """``POST /_admin/connections/{conn}/permissions`` body ``{"denied": [...]}``."""
        body = _obj(await _body(request))
        denied = body.get("denied", [])
        raw = {RAW_TABLES} | {
            f"{RAW_TABLES}/{t.name}" for f in FAMILIES for t in TABLES_BY_FAMILY[f]
        }
        valid = set(load_catalogue().entities) | {"sync-status", "integrations"} | raw
        if not isinstance(denied, list) or not set(denied) <= valid:
            raise InvalidParameter(f"denied must be an array of {sorted(valid)}.")
        with self.store.lock:
            conn = self.store.connection(request.path_params["conn"])
            conn.denied = set(denied)
        return json_response({"data": {"denied": sorted(denied)}})

    async def rate_limit(self, request: Request) -> Response:
        """``POST /_admin/connections/{conn}/rate-limit``."""
        body = _obj(await _body(request))
        conn = self.store.connection(request.path_params["conn"])
        try:
            conn.limiter.configure(
                limit=body.get("limit"),
                window_seconds=body.get("window_seconds"),
                retry_after_format=body.get("retry_after_format"),
            )
        except (TypeError, ValueError) as exc:
            raise InvalidParameter(str(exc)) from exc
        return json_response({"data": conn.limiter.describe()})

    async def pages(self, request: Request) -> Response:
        """``POST /_admin/connections/{conn}/pages``.

        Body ``{"short_every": n, "empty_every": n, "null_total_count": bool}``.
        """
        body = _obj(await _body(request))
        values: dict[str, Any] = {}
        for name in ("short_every", "empty_every"):
            v = body.get(name, 0) or 0
            if not isinstance(v, int) or v < 0 or v == 1:
                raise InvalidParameter(f"{name} must be 0 (off) or an integer >= 2.")
            values[name] = v
        values["null_total_count"] = bool(body.get("null_total_count", False))
        with self.store.lock:
            conn = self.store.connection(request.path_params["conn"])
            conn.short_every = values["short_every"]
            conn.empty_every = values["empty_every"]
            conn.null_total_count = values["null_total_count"]
        return json_response({"data": values})

    async def faults(self, request: Request) -> Response:
        """``GET|POST|DELETE /_admin/faults``; POST body ``{"rules": [...]}``."""
        engine = self.store.faults
        if request.method == "POST":
            body = _obj(await _body(request))
            try:
                engine.set_rules(body.get("rules", []))
            except (TypeError, ValueError) as exc:
                raise InvalidParameter(str(exc)) from exc
        elif request.method == "DELETE":
            engine.clear()
        return json_response({"data": engine.describe()})

    async def stats(self, request: Request) -> Response:
        """``GET|DELETE /_admin/stats``."""
        if request.method == "DELETE":
            self.store.stats.__init__()  # type: ignore[misc]
        return json_response({"data": self.store.stats.snapshot()})

    async def clock(self, request: Request) -> Response:
        """``GET|POST /_admin/clock``; POST body ``{"advance_seconds": n}``."""
        clock = self.store.clock
        if request.method == "POST":
            body = _obj(await _body(request))
            try:
                clock.advance(float(body.get("advance_seconds", 0)))
            except (TypeError, ValueError) as exc:
                raise InvalidParameter(str(exc)) from exc
        return json_response({"data": {"now": format_timestamp(clock.peek())}})


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc, request_id_of(request))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(
            NotFound(f"Unknown path {request.url.path!r}."), request_id_of(request)
        )
    err = ApiError(exc.detail)
    err.status = exc.status_code
    err.code = "METHOD_NOT_ALLOWED" if exc.status_code == 405 else "HTTP_ERROR"
    return error_response(err, request_id_of(request), exc.headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    return error_response(
        InternalError(f"Unhandled {type(exc).__name__}: {exc}"), request_id_of(request)
    )


def _serving(store: Store, dialect: str, endpoint: Endpoint, otherwise: Endpoint) -> Endpoint:
    """``endpoint`` while ``store.config.dialect`` serves ``dialect``, else ``otherwise``."""

    async def handle(request: Request) -> Response:
        if store.config.dialect in (dialect, "both"):
            return await endpoint(request)
        return await otherwise(request)

    return handle


def build_app(store: Store, *, prefetch: bool = True) -> RequestIdMiddleware:
    """Build the ASGI app serving ``store``.

    Args:
        store: the state to serve.
        prefetch: enable read-ahead of the next page's records.

    Returns:
        The Starlette application wrapped in :class:`RequestIdMiddleware` (outermost, so that
        every response, including unhandled-error ones, carries ``X-Request-Id``; the
        Starlette app is its ``app`` attribute).
    """
    api = Api(store, prefetch=prefetch)
    uni = UnifiedApi(store, prefetch=prefetch)
    admin = Admin(store)

    async def v1_not_found(request: Request) -> Response:
        return error_response(
            NotFound(f"Unknown path {request.url.path!r}."), request_id_of(request)
        )

    async def unified_not_found(request: Request) -> Response:
        return uni.not_found(request)

    def v1(endpoint: Endpoint) -> Endpoint:
        return _serving(store, "v1", endpoint, unified_not_found)

    def unified(endpoint: Endpoint) -> Endpoint:
        return _serving(store, "unified", endpoint, v1_not_found)

    c = "/_admin/connections/{conn}"
    routes = [
        Route("/api/v1/sync-status", v1(api.sync_status), methods=["GET"]),
        Route("/api/v1/{entity}", v1(api.list_records), methods=["GET"]),
        Route("/api/v1/{rest:path}", v1(api.unknown_api_path), methods=["GET"]),
        Route("/link/token", unified(uni.link_token), methods=["POST"]),
        Route("/api/integrations/current", unified(uni.integrations_current), methods=["GET"]),
        Route("/api/system/connections", unified(uni.system_connections), methods=["GET"]),
        Route("/api/system/connections/{key}/token", unified(uni.mint_token), methods=["POST"]),
        Route("/api/raw/tables", unified(uni.raw_tables), methods=["GET"]),
        Route("/api/raw/tables/{table}/data", unified(uni.raw_table_data), methods=["GET"]),
        Route("/api/{family}/{rest:path}", unified(uni.entity_path), methods=["GET"]),
        Route("/api/{rest:path}", unified(unified_not_found), methods=["GET"]),
        Route("/_admin/health", admin.health, methods=["GET"]),
        Route("/_admin/reset", admin.reset, methods=["POST"]),
        Route("/_admin/config", admin.config, methods=["GET"]),
        Route("/_admin/prewarm", admin.prewarm, methods=["POST"]),
        Route("/_admin/connections", admin.connections, methods=["GET"]),
        Route(c + "/sync", admin.sync, methods=["POST"]),
        Route(c + "/token", admin.token, methods=["POST"]),
        Route(c + "/permissions", admin.permissions, methods=["POST"]),
        Route(c + "/rate-limit", admin.rate_limit, methods=["POST"]),
        Route(c + "/pages", admin.pages, methods=["POST"]),
        Route(c + "/profile", admin.profile, methods=["POST"]),
        Route(c + "/tokens", admin.tokens, methods=["GET", "DELETE"]),
        Route(c + "/{rest:path}", admin.entity_path, methods=["GET", "PUT", "DELETE", "POST"]),
        Route("/_admin/faults", admin.faults, methods=["GET", "POST", "DELETE"]),
        Route("/_admin/stats", admin.stats, methods=["GET", "DELETE"]),
        Route("/_admin/clock", admin.clock, methods=["GET", "POST"]),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
    )
    app.state.store = store
    return RequestIdMiddleware(app)
