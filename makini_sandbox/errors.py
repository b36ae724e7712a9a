"""API errors, one class per error code.

Every class carries the HTTP ``status`` and the v1 contract ``code``. The v1 dialect turns a
raised :class:`ApiError` into ``{"error": {"code", "message", "request_id"}}``; the unified
dialect into Laravel's ``{"message": ...}`` (:data:`LARAVEL_MESSAGES`, plus ``errors`` for a
:class:`ValidationFailed`); the token endpoint into an OAuth body (:class:`OAuthError`).
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
        #: message of the unified dialect's body when it must not be the standard one for
        #: the status (validation errors, fault rules with a ``message``)
        self.laravel_message: str | None = None
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


class ValidationFailed(ApiError):
    """422 (unified dialect): invalid query parameters, Laravel's validation error.

    Args:
        errors: parameter name -> messages, e.g. ``{"per_page": ["The per page field must be
            an integer."]}``; the body's ``message`` is the first one.
    """

    status = 422
    code = "VALIDATION_FAILED"
    default_message = "The given data was invalid."

    def __init__(self, errors: dict[str, list[str]]) -> None:
        first = next((msgs[0] for msgs in errors.values() if msgs), self.default_message)
        more = sum(len(m) for m in errors.values()) - 1
        message = first if more <= 0 else f"{first} (and {more} more error{'s' * (more > 1)})"
        super().__init__(message)
        self.errors = errors
        self.laravel_message = message


class OAuthError(ApiError):
    """An error of ``POST /link/token``, answered with an OAuth 2 body
    ``{"error": code, "error_description": ..., "message": ...}`` (Laravel Passport's form)."""

    status = 400
    code = "invalid_request"
    default_message = "The request is missing a required parameter or is malformed."


class InvalidClient(OAuthError):
    """401: unknown client id or wrong secret."""

    status = 401
    code = "invalid_client"
    default_message = "Client authentication failed"


class UnsupportedGrantType(OAuthError):
    """400: ``grant_type`` is not ``client_credentials``."""

    status = 400
    code = "unsupported_grant_type"
    default_message = "The authorization grant type is not supported by the authorization server."


#: the unified dialect's (Laravel's) ``message`` by HTTP status
LARAVEL_MESSAGES: dict[int, str] = {
    400: "Bad Request.",
    401: "Unauthenticated.",
    403: "This action is unauthorized.",
    404: "Not Found.",
    405: "Method Not Allowed.",
    429: "Too Many Attempts.",
    500: "Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}

#: error class by HTTP status, for the 5xx codes a fault rule may produce
ERROR_BY_STATUS: dict[int, type[ApiError]] = {
    cls.status: cls
    for cls in (
        InvalidParameter,
        AuthenticationFailed,
        PermissionDenied,
        NotFound,
        RateLimitExceeded,
        ValidationFailed,
        InternalError,
        ConnectedSystemError,
        ServiceUnavailable,
    )
}

__all__ = [
    "ERROR_BY_STATUS",
    "LARAVEL_MESSAGES",
    "ApiError",
    "AuthenticationFailed",
    "ConnectedSystemError",
    "InternalError",
    "InvalidClient",
    "InvalidCursor",
    "InvalidParameter",
    "NotFound",
    "OAuthError",
    "PermissionDenied",
    "RateLimitExceeded",
    "ServiceUnavailable",
    "UnsupportedGrantType",
    "ValidationFailed",
]
