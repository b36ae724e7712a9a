"""Makini account credentials: one client id and secret for every connection of an account.

* `POST /link/token` (client credentials) gives an account token (it lives an hour).
* `GET /api/system/connections` (account token) lists the account's connections: their key,
  name, status, tags...: discovery. A discovered connection lands under its key (stable across
  renames).
* `POST /api/system/connections/{key}/token` (account token) mints a short-lived token for
  one connection. `MintedToken` mints one on first use and again when it expires or the API
  refuses it (401), so a listing goes on where it was.

`expires_in` comes as seconds or as a Unix time, a number or a string: a value above 10^9 is a
Unix time (the contract's rule). Every secret (client secret, account token, minted tokens) is
registered with `redact` the moment it is seen.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from makini_source.client import MakiniClient, RetryPolicy, check_token
from makini_source.dialects import read_any_error
from makini_source.exceptions import (
    BadRequestError,
    ConfigurationError,
    ContractViolationError,
    FatalAPIError,
    NotFoundError,
    PermissionDeniedError,
    ReauthorizationRequired,
)
from makini_source.redact import register_secret

logger = logging.getLogger("makini_source")

TOKEN_PATH = "/link/token"
CONNECTIONS_PATH = "/api/system/connections"
# an `expires_in` above this is a Unix time, not seconds
_UNIX_TIME_THRESHOLD = 10**9
# a token is renewed this long before it expires (a request in flight must not outlive it)
_RENEW_MARGIN_SECONDS = 15.0


class ConnectionInactive(FatalAPIError):
    """The connection is inactive in Makini: no token can be minted for it."""


@dataclass(frozen=True)
class DiscoveredConnection:
    """One connection of the account, as `GET /api/system/connections` lists it."""

    key: str
    name: str | None = None
    email: str | None = None
    status: str | None = None
    integration_name: str | None = None
    tags: tuple[str, ...] = ()
    connected_at: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def active(self) -> bool:
        return self.status in (None, "active")


def expires_at(value: Any, now: float | None = None) -> float:
    """The Unix time a token expires, from an `expires_in` in seconds or as a Unix time.

    Raises:
        ValueError: Not a number (or a number as text).
    """
    number = float(value)
    current = time.time() if now is None else now
    return number if number > _UNIX_TIME_THRESHOLD else current + number


class _NoToken:
    """The token source of a request that carries no bearer token (`/link/token`)."""

    def token(self) -> str | None:
        return None

    def renew(self, refused: str) -> bool:
        return False


class _ExpiringToken:
    """A token obtained by `fetch()` and fetched again when it expires or is refused."""

    def __init__(self, fetch: Callable[[], tuple[str, float]], label: str) -> None:
        self._fetch = fetch
        self._label = label
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self.renewals = 0

    def token(self) -> str:
        with self._lock:
            if self._token is None or time.time() > self._expires_at - _RENEW_MARGIN_SECONDS:
                self._renew()
            assert self._token is not None
            return self._token

    def renew(self, refused: str) -> bool:
        with self._lock:
            if self._token == refused:  # another request may have renewed it already
                self._renew()
            return True

    def _renew(self) -> None:
        token, until = self._fetch()
        register_secret(token)
        if self._token is not None:
            self.renewals += 1
            logger.info("%s: a new token was minted", self._label)
        self._token, self._expires_at = token, until

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._label}, ***)"


class Account:
    """A Makini account, reached with its client credentials.

    Args:
        base_url: Makini API root.
        client_id: The account's client id.
        client_secret: The account's client secret.
        retry: Retry and limits policy of its requests.
        transport: An httpx transport (tests, proxies).
        allow_insecure_http: Accept plain http to hosts other than loopback.
    """

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        allow_insecure_http: bool = False,
    ) -> None:
        self._client_id = check_token(client_id, "account (client_id)")
        self._secret = check_token(client_secret, "account (client_secret)")
        self._base_url = base_url
        self._retry = retry
        self._transport = transport
        self._insecure = allow_insecure_http
        self._login = self._client(_NoToken())
        self._token = _ExpiringToken(self._account_token, "account")
        self._api = self._client(self._token)

    def _client(self, token: Any) -> MakiniClient:
        return MakiniClient(
            self._base_url,
            token,
            "account",
            retry=self._retry,
            transport=self._transport,
            allow_insecure_http=self._insecure,
            errors=read_any_error,
        )

    def close(self) -> None:
        """Closes the account's HTTP clients."""
        self._login.close()
        self._api.close()

    def connections(
        self, keys: Iterable[str] | None = None, tags: Iterable[str] | None = None
    ) -> list[DiscoveredConnection]:
        """Every connection of the account (`GET /api/system/connections`, all pages).

        Args:
            keys: Only these keys.
            tags: Only connections carrying at least one of these tags.

        Raises:
            MakiniAPIError: The credentials are refused, or the listing fails.
        """
        found: dict[str, DiscoveredConnection] = {}
        page = 1
        while True:
            response = self._api.get(
                CONNECTIONS_PATH, {"page": page, "per_page": 100}, entity="system-connections"
            )
            body = response.json("system-connections", "account")
            records = body.get("data") if isinstance(body, dict) else None
            if not isinstance(records, list):
                raise ContractViolationError(
                    "connection list has no 'data' array",
                    connection="account",
                    entity="system-connections",
                    request_id=response.request_id,
                    url=response.url,
                    field="data",
                )
            for record in records:
                connection = _discovered(record)
                found.setdefault(connection.key, connection)  # offsets may repeat a record
            meta = body.get("meta") or {}
            last = meta.get("last_page")
            if not records or not isinstance(last, int) or page >= last:
                break
            page += 1
        wanted_keys = set(keys) if keys else None
        wanted_tags = set(tags) if tags else None
        return [
            connection
            for connection in found.values()
            if (wanted_keys is None or connection.key in wanted_keys)
            and (wanted_tags is None or wanted_tags & set(connection.tags))
        ]

    def token_for(self, key: str) -> _ExpiringToken:
        """The token source of one connection: minted on first use, minted again when it
        expires or the API refuses it."""
        return _ExpiringToken(lambda: self._mint(key), f"connection {key}")

    def _account_token(self) -> tuple[str, float]:
        body = {
            "grant_type": "client_credentials",
            "client_id": self._client_id,
            "client_secret": self._secret,
        }
        try:
            response = self._login.post(TOKEN_PATH, body, entity="link-token")
        except (ReauthorizationRequired, BadRequestError) as exc:
            raise ConfigurationError(
                "Makini refused the account's client credentials (client_id, client_secret): "
                f"{exc.message}"
            ) from None
        answer = response.json("link-token", "account")
        token = answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise ContractViolationError(
                "the token answer has no access_token",
                connection="account",
                entity="link-token",
                request_id=response.request_id,
                field="access_token",
            )
        register_secret(token)
        return token, _expiry(answer.get("expires_in"), 3600.0)

    def _mint(self, key: str) -> tuple[str, float]:
        path = f"{CONNECTIONS_PATH}/{key}/token"
        try:
            response = self._api.post(path, {}, entity="connection-token")
        except PermissionDeniedError as exc:
            raise ReauthorizationRequired(
                f"connection {key!r} needs reauthorization in Makini (no token minted: "
                f"{exc.message})",
                **exc._context_without("connection"),
                connection=key,
            ) from None
        except BadRequestError as exc:
            raise ConnectionInactive(
                f"connection {key!r} is inactive in Makini (no token minted: {exc.message})",
                **exc._context_without("connection"),
                connection=key,
            ) from None
        except NotFoundError as exc:
            raise ConnectionInactive(
                f"connection {key!r} is no longer in the account",
                **exc._context_without("connection"),
                connection=key,
            ) from None
        answer = response.json("connection-token", key)
        data = answer.get("data") if isinstance(answer, dict) else None
        token = data.get("token") if isinstance(data, dict) else None
        if not isinstance(data, dict) or not isinstance(token, str) or not token:
            raise ContractViolationError(
                "the minted token answer has no data.token",
                connection=key,
                entity="connection-token",
                request_id=response.request_id,
                field="data.token",
            )
        register_secret(token)
        return token, _expiry(data.get("expires_in"), 300.0)


def _expiry(value: Any, default_seconds: float) -> float:
    try:
        return expires_at(value)
    except (TypeError, ValueError):
        logger.warning("unreadable expires_in %r; assuming %ss", value, default_seconds)
        return time.time() + default_seconds


def _discovered(record: Any) -> DiscoveredConnection:
    if not isinstance(record, dict) or not isinstance(record.get("key"), str) or not record["key"]:
        raise ContractViolationError(
            "a listed connection has no key",
            connection="account",
            entity="system-connections",
            field="key",
        )
    tags = record.get("tags")
    return DiscoveredConnection(
        key=record["key"],
        name=_text(record.get("name")),
        email=_text(record.get("email")),
        status=_text(record.get("status")),
        integration_name=_text(record.get("integration_name")),
        tags=tuple(str(tag) for tag in tags) if isinstance(tags, list) else (),
        connected_at=_text(record.get("connected_at")),
        raw=record,
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
