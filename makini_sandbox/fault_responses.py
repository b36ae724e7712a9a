"""What fired fault rules do to an HTTP answer (the rules themselves: :mod:`.faults`).

Three stages, in this order for one request (:class:`~makini_sandbox.responses.ApiBase`
runs them):

1. :func:`replacement`: a rule that answers instead of the handler (an error status, a proxy
   page, a reset, an endless body, exact bytes, an error quoting the request's token).
2. :func:`alter_records`: rules that change a page's records (``bad_record``,
   ``extra_field``); the handlers apply them, and read :func:`echo_value` and
   :func:`has_kind` for the cursor and page-shape rules.
3. :func:`finish_response`: rules that change the finished answer, whichever it is: bytes
   appended, headers set or removed, the request id replaced, then the body cut off
   (``truncate``) or sent slowly (``drip``).

The unusual bodies are :class:`starlette.responses.Response` subclasses that talk to the
ASGI server directly; they need uvicorn's per-request cycle object (its transport and
``disconnected`` flag), which :class:`~makini_sandbox.responses.RequestIdMiddleware` puts
into the request scope.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import socket
import struct
import time
from collections.abc import Callable, Mapping
from email.utils import formatdate
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from . import jsontext
from .errors import ERROR_BY_STATUS, ApiError, ValidationFailed
from .faults import FaultRule, echo_places

JSON = "application/json"
_PROXY_HTML = (
    b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
    b"<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>\n"
)
_ENDLESS_PREFIX = b'{"data":['
_ENDLESS_CHUNK = 64 * 1024
_TEMPLATE = re.compile(r"\{(now|now_ms|http_date)([+-]\d+)?\}")
#: renders an API error in the request's dialect: (error, request id, headers) -> response
ErrorRenderer = Callable[[ApiError, str, Mapping[str, str]], Response]


def _cycle(scope: Scope) -> Any:
    """uvicorn's per-request cycle object (``transport``, ``disconnected``), or ``None``."""
    return scope.get("state", {}).get("sandbox_cycle")


def _disconnected(cycle: Any) -> bool:
    return bool(getattr(cycle, "disconnected", False))


async def _wait_disconnected(cycle: Any, timeout: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not getattr(cycle, "disconnected", True) and loop.time() < deadline:
        await asyncio.sleep(0.005)


def _headers_with_length(response: Response, length: int | None) -> list[tuple[bytes, bytes]]:
    """The response's raw headers with ``Content-Length`` replaced (``None``: removed)."""
    headers = [(k, v) for k, v in response.raw_headers if k.lower() != b"content-length"]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return headers


class TruncatedResponse(Response):
    """An answer whose ``Content-Length`` announces the full body, of which only ``fraction``
    is sent before the connection closes."""

    def __init__(self, original: Response, fraction: float) -> None:
        super().__init__(b"", status_code=original.status_code)
        self.raw_headers = _headers_with_length(original, len(original.body))
        self.full_body = bytes(original.body)
        self.fraction = fraction

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = self.full_body
        cut = int(len(body) * self.fraction)
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        await send({"type": "http.response.body", "body": body[:cut], "more_body": True})
        cycle = _cycle(scope)
        transport = getattr(cycle, "transport", None)
        if transport is None:
            raise ConnectionAbortedError("truncate fault: closing mid-body")
        transport.close()
        await _wait_disconnected(cycle)


class DripResponse(Response):
    """An answer whose headers (with the full ``Content-Length``) go out at once and whose
    body follows at ``bytes_per_second``, in chunks of a tenth of a second's worth (at least
    one byte), until it is complete or the client disconnects."""

    def __init__(self, original: Response, bytes_per_second: float) -> None:
        super().__init__(b"", status_code=original.status_code)
        self.raw_headers = _headers_with_length(original, len(original.body))
        self.full_body = bytes(original.body)
        self.rate = bytes_per_second

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cycle = _cycle(scope)
        body = self.full_body
        chunk = max(1, int(self.rate / 10))
        pause = chunk / self.rate
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        sent = 0
        while sent < len(body) and not _disconnected(cycle):
            await asyncio.sleep(pause)
            part = body[sent : sent + chunk]
            sent += len(part)
            more = sent < len(body)
            await send({"type": "http.response.body", "body": part, "more_body": more})


class EndlessResponse(Response):
    """``status`` without ``Content-Length`` (chunked) whose body never ends: a JSON prefix
    (``{"data":[``), then filler records, as fast as the client reads, until it disconnects
    (or ``max_bytes`` were sent, then the connection closes; 0: no limit)."""

    def __init__(self, status: int, content_type: str, max_bytes: int) -> None:
        super().__init__(b"", status_code=status, media_type=content_type)
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cycle = _cycle(scope)
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        record = b'{"key":"FILLER","note":"' + b"x" * 200 + b'"},'
        filler = record * (_ENDLESS_CHUNK // len(record))
        await send({"type": "http.response.body", "body": _ENDLESS_PREFIX, "more_body": True})
        sent = len(_ENDLESS_PREFIX)
        while not _disconnected(cycle) and not (self.max_bytes and sent >= self.max_bytes):
            await send({"type": "http.response.body", "body": filler, "more_body": True})
            sent += len(filler)
            await asyncio.sleep(0)  # uvicorn's send returns at once while its buffer has room
        transport = getattr(cycle, "transport", None)
        if transport is not None:
            transport.close()
        await _wait_disconnected(cycle)


class ResetResponse(Response):
    """Drops the TCP connection without sending anything (RST when possible)."""

    def __init__(self) -> None:
        super().__init__(b"")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cycle = _cycle(scope)
        transport = getattr(cycle, "transport", None)
        if transport is None:
            raise ConnectionResetError("reset fault")
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        await _wait_disconnected(cycle)


#: answers that talk to the transport themselves (not counted by status, not finished)
STREAMING = (TruncatedResponse, DripResponse, EndlessResponse, ResetResponse)


def authorization_of(request: Request) -> str:
    """The request's ``Authorization`` header value, as it arrived (``""`` if none)."""
    return request.headers.get("authorization", "")


def has_kind(rules: list[FaultRule], kind: str) -> bool:
    """Whether one of ``rules`` is of ``kind``."""
    return any(rule.kind == kind for rule in rules)


def echo_value(rules: list[FaultRule], request: Request, place: str) -> str | None:
    """The ``Authorization`` value when an ``echo_auth`` rule quotes it at ``place``."""
    for rule in rules:
        if rule.kind == "echo_auth" and place in echo_places(rule.params):
            return authorization_of(request)
    return None


# -- stage 1: answers instead of the handler ---------------------------------------------------


def replacement(
    rule: FaultRule,
    request: Request,
    request_id: str,
    headers: Mapping[str, str],
    error: ErrorRenderer,
) -> Response:
    """The answer a response-replacing rule (``rule.replaces``) gives.

    Args:
        rule: the rule.
        request: the request (``echo_auth`` quotes its ``Authorization``).
        request_id: the request id (error bodies of v1 repeat it).
        headers: headers of every answer (rate limits).
        error: renders an error in the request's dialect.
    """
    kind, params = rule.kind, rule.params
    if kind in ("status", "headers", "echo_auth"):
        default = {"status": 503, "headers": 429, "echo_auth": 500}[kind]
        status = int(params.get("status", default))
        message = params.get("message")
        if kind == "echo_auth":
            auth = authorization_of(request)
            message = f"The upstream system refused the request (Authorization: {auth})."
            if "request_id" in echo_places(params):
                request_id = auth  # v1 error bodies repeat the request id
        exc: ApiError
        if status == 422:
            field = str(params.get("field", "filter"))
            exc = ValidationFailed({field: [message or ValidationFailed.default_message]})
        else:
            exc = ERROR_BY_STATUS[status](message)
            exc.laravel_message = message
        if params.get("retry_after") is not None:
            exc.headers["Retry-After"] = str(params["retry_after"])
        return error(exc, request_id, headers)
    if kind == "html":
        return Response(
            _PROXY_HTML,
            status_code=int(params.get("status", 502)),
            headers=dict(headers),
            media_type="text/html",
        )
    if kind == "non_json":
        return Response(
            str(params.get("body", "upstream said: OK (not JSON)")).encode(),
            status_code=200,
            headers=dict(headers),
            media_type=str(params.get("content_type", JSON)),
        )
    if kind == "raw_body":
        if "body_base64" in params:
            body = base64.b64decode(str(params["body_base64"]))
        else:
            body = str(params["body"]).encode("utf-8", "surrogatepass")
        return Response(
            body,
            status_code=int(params.get("status", 200)),
            headers=dict(headers),
            media_type=str(params.get("content_type", JSON)),
        )
    if kind == "endless":
        response = EndlessResponse(
            int(params.get("status", 200)),
            str(params.get("content_type", JSON)),
            int(params.get("max_bytes", 0)),
        )
        response.raw_headers += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        return response
    return ResetResponse()


# -- stage 2: a page's records -------------------------------------------------------------------


def _target(record: Any, path: str | None) -> Any:
    """The object at a dotted path inside a record (``lineItems.0``), or ``None``."""
    node = record
    for part in (path or "").split(".") if path else ():
        if (
            isinstance(node, list)
            and part.lstrip("-").isdigit()
            and -len(node) <= int(part) < len(node)
        ):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return None
    return node


def _alter_record(data: bytes, rule: FaultRule, dialect: str) -> bytes:
    """One record changed as a ``bad_record`` rule says (any JSON values, exact)."""
    record = orjson.loads(data)
    params = rule.params
    node = _target(record, params.get("target"))
    if not isinstance(node, dict):
        return data
    drop = params.get("drop_field")
    if drop is not None:
        node.pop(drop, None)
    node.update(params.get("set_field") or {})
    custom = params.get("custom_fields")
    if custom:
        if dialect == "v1":  # v1 carries them in the customFields object
            merged = node.get("customFields")
            node["customFields"] = {**(merged if isinstance(merged, dict) else {}), **custom}
        else:  # the unified dialect: extra top-level keys
            node.update(custom)
    raw = params.get("raw_fields") or {}
    marks = {}
    for i, (name, text) in enumerate(raw.items()):
        mark = f"\x00raw-field-{i}\x00"
        node[name] = mark
        marks[jsontext.dumps(mark)] = str(text).encode("utf-8", "surrogatepass")
    out = jsontext.dumps(record)
    for mark_json, text in marks.items():
        out = out.replace(mark_json, text)
    return out


def alter_records(
    items: list[bytes], post: list[FaultRule], dialect: str = "unified"
) -> list[bytes]:
    """Apply the ``bad_record`` and ``extra_field`` rules to a page's serialized records.

    Args:
        items: the records as JSON bytes.
        post: the rules that fired and did not replace the answer.
        dialect: ``"v1"`` or ``"unified"`` (where ``custom_fields`` go).
    """
    for rule in post:
        if rule.kind == "bad_record" and items:
            index = rule.params.get("index", 0)
            if index == "all":
                items = [_alter_record(item, rule, dialect) for item in items]
            else:
                i = min(max(int(index), -len(items)), len(items) - 1)
                items[i] = _alter_record(items[i], rule, dialect)
        elif rule.kind == "extra_field":
            extra = b',"' + str(rule.params.get("field", "unexpectedField")).encode() + b'":'
            extra += jsontext.dumps(rule.params.get("value", "surprise")) + b"}"
            items = [b[:-1] + extra for b in items]
    return items


# -- stage 3: the finished answer ----------------------------------------------------------------


def expand_header(value: Any) -> str:
    """A header value of a ``headers`` rule, templates filled: ``{now}`` (Unix seconds),
    ``{now_ms}`` (Unix milliseconds), ``{http_date}`` (RFC 7231 date), each optionally with
    an offset in seconds (``{now+86400}``, ``{http_date-3600}``); wall-clock time."""

    def fill(m: re.Match[str]) -> str:
        at = time.time() + int(m.group(2) or 0)
        if m.group(1) == "now":
            return str(int(at))
        if m.group(1) == "now_ms":
            return str(int(at * 1000))
        return formatdate(at, usegmt=True)

    return _TEMPLATE.sub(fill, str(value))


def finish_response(response: Response, rules: list[FaultRule], request: Request) -> Response:
    """Apply the rules that change a finished answer (see the module docstring, stage 3).

    Streaming answers (``reset``, ``endless``) are returned as they are.
    """
    if isinstance(response, STREAMING):
        return response
    for rule in rules:
        params = rule.params
        if rule.kind == "raw_body" and "append" in params:
            response.body = bytes(response.body) + str(params["append"]).encode(
                "utf-8", "surrogatepass"
            )
            response.headers["content-length"] = str(len(response.body))
        elif rule.kind == "echo_auth" and "request_id" in echo_places(params):
            response.headers["x-request-id"] = authorization_of(request)
        elif rule.kind == "headers":
            for name, value in params["headers"].items():
                if name.lower() in response.headers:
                    del response.headers[name.lower()]
                if value is not None:
                    response.headers.append(name, expand_header(value))
    for rule in rules:
        if rule.kind == "truncate":
            return TruncatedResponse(response, float(rule.params.get("fraction", 0.5)))
        if rule.kind == "drip":
            return DripResponse(response, float(rule.params.get("bytes_per_second", 10)))
    return response


__all__ = [
    "DripResponse",
    "EndlessResponse",
    "ResetResponse",
    "TruncatedResponse",
    "alter_records",
    "echo_value",
    "expand_header",
    "finish_response",
    "has_kind",
    "replacement",
]
