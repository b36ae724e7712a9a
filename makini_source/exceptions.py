"""Errors raised by the Makini source.

Every error that comes from a request names the connection, the entity, the HTTP status,
Makini's error code and the request id (where the server sends one; otherwise the request
itself: method, path and page), and never a token: every message passes `redact.scrub`::

    MakiniError
    ├── ConfigurationError            bad arguments or configuration; nothing was requested
    ├── ConnectionsFailed             after a run: the connections that failed, and why
    ├── LoadFailed                    a load package was aborted or kept failed jobs
    ├── MakiniAPIError                the API answered with an error, or not at all
    │   ├── RetriableAPIError         worth another try: 429, 5xx, timeouts, cut-off bodies
    │   │   ├── RateLimitError        429, carries the server's Retry-After
    │   │   └── UnreachableError      no connection to the host (refused, DNS): fails fast
    │   └── FatalAPIError             retrying cannot help
    │       ├── BadRequestError       400/422: a bad parameter, filter or cursor
    │       ├── ReauthorizationRequired   401: the token is invalid, expired or revoked
    │       ├── PermissionDeniedError 403: the account may not read this entity
    │       ├── NotFoundError         404: unknown path (or a record that no longer exists)
    │       └── WaitTooLongError      the server asked for a wait longer than allowed
    ├── ContractViolationError        a 200 answer that breaks the contract (bad record, body or cursor)
    └── TooManyColumnsError           a connection's records would give a table too many columns
"""

from __future__ import annotations

from makini_source.redact import neutralize, scrub


class MakiniError(Exception):
    """Base class of every error this package raises."""


class ConfigurationError(MakiniError):
    """The source was configured wrongly (no connections, unknown entity, bad date...)."""


class ConnectionsFailed(MakiniError):
    """Some connections failed during a run; the others were loaded and committed.

    Attributes:
        failures: Connection name -> the error that stopped it.
    """

    def __init__(self, failures: dict[str, MakiniError]) -> None:
        self.failures = dict(failures)
        lines = [f"  {name}: {scrub(str(error))}" for name, error in sorted(self.failures.items())]
        super().__init__(
            f"{len(self.failures)} connection(s) failed; the others were loaded:\n"
            + "\n".join(lines)
        )

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.failures,))


class _ContextError(MakiniError):
    """An error with the request context in its message."""

    def __init__(
        self,
        message: str,
        *,
        connection: str | None = None,
        entity: str | None = None,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        url: str | None = None,
    ) -> None:
        # whatever a server sent (messages, request ids, codes, record values) is shown with
        # secrets scrubbed and control characters escaped
        self.message = neutralize(scrub(message))
        self.connection = connection
        self.entity = entity
        self.status = status
        self.code = neutralize(scrub(code)) if code else code
        self.request_id = neutralize(scrub(request_id)) if request_id else request_id
        self.url = neutralize(scrub(url)) if url else url
        super().__init__(self._render())

    def _render(self) -> str:
        parts = [
            f"connection={self.connection}" if self.connection else None,
            f"entity={self.entity}" if self.entity else None,
            f"status={self.status}" if self.status is not None else None,
            f"code={self.code}" if self.code else None,
            f"request_id={self.request_id}" if self.request_id else None,
            f"request={self.url}" if self.url else None,
        ]
        context = ", ".join(p for p in parts if p)
        return scrub(f"{self.message} [{context}]" if context else self.message)

    def _context(self) -> dict:  # type: ignore[type-arg]
        return {
            "connection": self.connection,
            "entity": self.entity,
            "status": self.status,
            "code": self.code,
            "request_id": self.request_id,
            "url": self.url,
        }

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # keyword-only arguments need help to survive pickling (dlt pickles step exceptions)
        return (_rebuild, (type(self), self.message, self._context()))

    def _context_without(self, *names: str) -> dict:  # type: ignore[type-arg]
        """The context as keyword arguments, without `names` (to raise a derived error)."""
        return {k: v for k, v in self._context().items() if k not in names}


def _rebuild(cls: type, message: str, context: dict) -> _ContextError:  # type: ignore[type-arg]
    return cls(message, **context)  # type: ignore[no-any-return]


class MakiniAPIError(_ContextError):
    """The API answered with an error status, or the request failed on the way."""


class RetriableAPIError(MakiniAPIError):
    """A transient failure: retried with backoff until attempts or time run out.

    Attributes:
        retry_after: Seconds the server asked us to wait (`Retry-After` of a 429 or 503), if it said.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, **context) -> None:  # type: ignore[no-untyped-def]
        self.retry_after = retry_after
        super().__init__(message, **context)

    def _context(self) -> dict:  # type: ignore[type-arg]
        return {**super()._context(), "retry_after": self.retry_after}


class RateLimitError(RetriableAPIError):
    """429: the connection's rate limit was hit; `retry_after` is the server's `Retry-After`."""


class UnreachableError(RetriableAPIError):
    """The host could not be reached (connection refused, DNS failure, connect timeout).

    Retried like any transient failure once the server has answered this run; before that
    (a wrong host or port), the connection fails at once, naming the host.
    """


class FatalAPIError(MakiniAPIError):
    """A failure that another try cannot fix."""


class BadRequestError(FatalAPIError):
    """400: INVALID_PARAMETER or INVALID_CURSOR."""


class ReauthorizationRequired(FatalAPIError):
    """401: the connection's token is invalid, expired or revoked."""


class PermissionDeniedError(FatalAPIError):
    """403: the connected account may not read this entity."""


class NotFoundError(FatalAPIError):
    """404: the API does not know this path (or the record no longer exists)."""


class WaitTooLongError(FatalAPIError):
    """The server asked for a wait (Retry-After, a rate-limit hold) longer than
    `max_wait_seconds`: the connection fails at once instead of sleeping for it."""


class ContractViolationError(_ContextError):
    """A successful response that breaks the API contract.

    Attributes:
        field: The offending field, when one is to blame.
    """

    def __init__(self, message: str, *, field: str | None = None, **context) -> None:  # type: ignore[no-untyped-def]
        self.field = field
        self.bare_message = message
        if field:
            message = f"{message} (field {field!r})"
        super().__init__(message, **context)

    def _context(self) -> dict:  # type: ignore[type-arg]
        return {**super()._context(), "field": self.field}

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (_rebuild, (type(self), self.bare_message, self._context()))


class TooManyColumnsError(_ContextError):
    """A connection's records (their custom fields, usually) would give a table more columns
    than `max_columns_per_table`: the connection stops before the destination is asked to
    take them (a table too wide for it would fail the load of every connection)."""


class LoadFailed(MakiniError):
    """A load package was aborted, kept failed jobs or could not be loaded.

    Attributes:
        pipeline_name: The dlt pipeline.
        load_id: The package; `dlt pipeline <name> load-package <load_id>` shows it.
        aborted: The package is gone (the state rewound to before it): nothing is pending.
    """

    def __init__(
        self, message: str, *, pipeline_name: str, load_id: str | None, aborted: bool = False
    ) -> None:
        self.pipeline_name = pipeline_name
        self.load_id = load_id
        self.aborted = aborted
        super().__init__(message)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (_rebuild_load_failed, (str(self), self.pipeline_name, self.load_id, self.aborted))


def _rebuild_load_failed(
    message: str, pipeline_name: str, load_id: str | None, aborted: bool = False
) -> LoadFailed:
    return LoadFailed(message, pipeline_name=pipeline_name, load_id=load_id, aborted=aborted)
