"""API errors of the Makini v1 contract, one class per error code.

Every class carries the HTTP ``status`` and the contract ``code``; the app turns a raised
:class:`ApiError` into ``{"error": {"code", "message", "request_id"}}`` with that status.
"""

from __future__ import annotations


class ApiError(Exception):
    """Base class of all API errors.

    Attributes:
        status: HTTP status code of the response.
        code: machine-readable error code of the contract (``INVALID_PARAMETER``...).
        message: human-readable message sent in the error body.
        headers: extra response headers (e.g. ``Retry-After``).
    """

    status: int = 500
    code: str = "INTERNAL_ERROR"
    default_message: str = "Internal error."

    def __init__(self, message: str | None = None, headers: dict[str, str] | None = None) -> None:
        self.message = message or self.default_message
        self.headers = dict(headers or {})
        super().__init__(self.message)


class InvalidParameter(ApiError):
    """400: a query parameter is malformed or out of range."""

    status = 400
    code = "INVALID_PARAMETER"
    default_message = "Invalid parameter."


class InvalidCursor(ApiError):
    """400: the cursor is malformed, tampered with, expired or from another listing."""

    status = 400
    code = "INVALID_CURSOR"
    default_message = "The cursor is invalid or expired."


class AuthenticationFailed(ApiError):
    """401: the bearer token is missing, unknown or revoked."""

    status = 401
    code = "AUTHENTICATION_FAILED"
    default_message = "The access token is invalid, expired or revoked."


class PermissionDenied(ApiError):
    """403: the connected account may not read this entity."""

    status = 403
    code = "PERMISSION_DENIED"
    default_message = "The connected account may not read this entity."


class NotFound(ApiError):
    """404: unknown path or entity."""

    status = 404
    code = "NOT_FOUND"
    default_message = "Not found."


class RateLimitExceeded(ApiError):
    """429: the connection's request limit for the current window is used up."""

    status = 429
    code = "RATE_LIMIT_EXCEEDED"
    default_message = "Rate limit exceeded; retry after the time given in Retry-After."


class InternalError(ApiError):
    """500: transient server error."""

    status = 500
    code = "INTERNAL_ERROR"
    default_message = "Internal error."


class ConnectedSystemError(ApiError):
    """502: the customer's connected system failed."""

    status = 502
    code = "CONNECTED_SYSTEM_ERROR"
    default_message = "The connected system returned an error."


class ServiceUnavailable(ApiError):
    """503: the service is temporarily unavailable."""

    status = 503
    code = "SERVICE_UNAVAILABLE"
    default_message = "The service is temporarily unavailable."


#: error class by HTTP status, for the 5xx codes a fault rule may produce
ERROR_BY_STATUS: dict[int, type[ApiError]] = {
    cls.status: cls
    for cls in (
        InvalidParameter,
        AuthenticationFailed,
        PermissionDenied,
        NotFound,
        RateLimitExceeded,
        InternalError,
        ConnectedSystemError,
        ServiceUnavailable,
    )
}

__all__ = [
    "ERROR_BY_STATUS",
    "ApiError",
    "AuthenticationFailed",
    "ConnectedSystemError",
    "InternalError",
    "InvalidCursor",
    "InvalidParameter",
    "NotFound",
    "PermissionDenied",
    "RateLimitExceeded",
    "ServiceUnavailable",
]
