"""Account-level state of the unified dialect: connection profiles, credentials, tokens.

* :class:`ConnectionProfile`: how one connection appears to the account API
  (``GET /api/system/connections``) and in the unified dialect (family, money form, sync time
  form). Admin-settable; rebuilt from the config on reset.
* :class:`Accounts`: the account's client credentials, the account tokens that
  ``POST /link/token`` issues and the connection tokens that
  ``POST /api/system/connections/{key}/token`` mints. Every lifetime is measured on the store
  clock, so ``POST /_admin/clock`` expires tokens at once.

No HTTP here; ``unified.py`` serves it.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .config import (
    CONNECTION_STATUSES,
    FAMILIES,
    SYNC_TIME_FORMATS,
    ConnectionConfig,
    SandboxConfig,
)
from .errors import InvalidClient, InvalidParameter, UnsupportedGrantType
from .timeutil import US_PER_SECOND, format_laravel_iso

#: ``expires_in`` values above this are Unix times, below it seconds (the contract's rule)
UNIX_TIME_THRESHOLD = 10**9
#: the forms ``expires_in_format="mixed"`` cycles through, one step per token issued
_MIXED_FORMS = ("seconds", "unix", "seconds-string", "unix-string")
#: minted tokens kept before expired ones are dropped (bounds memory in long benchmarks)
_PURGE_AT = 10_000


@dataclass
class ConnectionProfile:
    """One connection as the account API and the unified dialect see it.

    Attributes:
        key: the connection's key (``/api/system/connections/{key}/token``).
        display_name: ``name`` in the account API, ``company_name`` in integrations/current.
        email: contact e-mail.
        provider: provider slug.
        tags: tags.
        connection_status: ``active``, ``inactive`` or ``reauthorization_required``.
        family: ``erp`` or ``eam``: the unified paths this connection serves.
        money_as_numbers: send money and quantities as JSON numbers in the unified dialect.
        sync_updated_at_format: ``iso`` or ``laravel``.
        created_at: epoch µs, ``created_at`` in the account API.
        connected_at: epoch µs, ``connected_at`` in the account API.
        updated_at: epoch µs of the last profile change.
    """

    key: str
    display_name: str
    email: str
    provider: str
    tags: list[str]
    connection_status: str
    family: str
    money_as_numbers: bool
    sync_updated_at_format: str
    created_at: int
    connected_at: int
    updated_at: int

    #: fields :meth:`update` accepts
    SETTABLE = (
        "key",
        "display_name",
        "email",
        "tags",
        "connection_status",
        "family",
        "money_as_numbers",
        "sync_updated_at_format",
    )

    @classmethod
    def from_config(cls, cc: ConnectionConfig, created_at: int) -> ConnectionProfile:
        """The profile a connection starts with (after a reset)."""
        assert cc.key and cc.display_name and cc.email and cc.provider and cc.family
        connected = created_at + 3600 * US_PER_SECOND
        return cls(
            key=cc.key,
            display_name=cc.display_name,
            email=cc.email,
            provider=cc.provider,
            tags=list(cc.tags),
            connection_status=cc.connection_status,
            family=cc.family,
            money_as_numbers=cc.money_as_numbers,
            sync_updated_at_format=cc.sync_updated_at_format,
            created_at=created_at,
            connected_at=connected,
            updated_at=connected,
        )

    def update(self, fields: dict[str, Any], now: int) -> None:
        """Change settable fields (validated all before any is changed).

        Raises:
            InvalidParameter: an unknown field or an invalid value.
        """
        unknown = set(fields) - set(self.SETTABLE)
        if unknown:
            raise InvalidParameter(
                f"Unknown profile fields {sorted(unknown)}; allowed: {list(self.SETTABLE)}."
            )
        choices = {
            "connection_status": CONNECTION_STATUSES,
            "family": FAMILIES,
            "sync_updated_at_format": SYNC_TIME_FORMATS,
        }
        for name, value in fields.items():
            if name in choices and value not in choices[name]:
                raise InvalidParameter(f"{name} must be one of {list(choices[name])}.")
            if name in ("key", "display_name", "email") and (
                not isinstance(value, str) or not value or (name == "key" and "/" in value)
            ):
                raise InvalidParameter(f"{name} must be a non-empty string.")
            if name == "tags" and (
                not isinstance(value, list) or not all(isinstance(t, str) for t in value)
            ):
                raise InvalidParameter("tags must be an array of strings.")
            if name == "money_as_numbers" and not isinstance(value, bool):
                raise InvalidParameter("money_as_numbers must be true or false.")
        for name, value in fields.items():
            setattr(self, name, list(value) if name == "tags" else value)
        self.updated_at = now

    def describe(self) -> dict[str, Any]:
        """The profile as JSON for the admin API."""
        return {name: getattr(self, name) for name in (*self.SETTABLE, "provider")}

    def listing(self, integration_name: str, client_id: str) -> dict[str, Any]:
        """The connection's entry in ``GET /api/system/connections``."""
        return {
            "key": self.key,
            "name": self.display_name,
            "email": self.email,
            "status": self.connection_status,
            "integration_name": integration_name,
            "tags": list(self.tags),
            "client_id": client_id,
            "created_at": format_laravel_iso(self.created_at),
            "updated_at": format_laravel_iso(self.updated_at),
            "connected_at": format_laravel_iso(self.connected_at),
        }


@dataclass
class IssuedToken:
    """A token issued by :class:`Accounts`.

    Attributes:
        token: the bearer token.
        ttl_seconds: its lifetime.
        expires_in: the ``expires_in`` value sent (seconds or Unix time, number or string).
    """

    token: str
    ttl_seconds: int
    expires_in: int | str


@dataclass
class Accounts:
    """The account's client credentials and every token issued with them.

    Args:
        config: the sandbox config (credentials, lifetimes, ``expires_in`` form).
        now: the store clock's current time in epoch µs (read, not issued).
    """

    config: SandboxConfig
    now: Callable[[], int]
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _account_tokens: dict[str, int] = field(default_factory=dict)
    _minted: dict[str, tuple[str, int]] = field(default_factory=dict)
    _mint_counts: dict[str, int] = field(default_factory=dict)
    _issued: int = 0

    def _expires_in(self, ttl_seconds: int, now_us: int) -> int | str:
        fmt = self.config.expires_in_format
        if fmt == "mixed":
            fmt = _MIXED_FORMS[self._issued % len(_MIXED_FORMS)]
        self._issued += 1
        unix = now_us // US_PER_SECOND + ttl_seconds
        if fmt == "seconds":
            return ttl_seconds
        if fmt == "unix":
            return unix
        if fmt in ("string", "seconds-string"):
            return str(ttl_seconds)
        return str(unix)

    def issue_account_token(
        self, grant_type: Any, client_id: Any, client_secret: Any
    ) -> IssuedToken:
        """``POST /link/token``: an account token for the client credentials grant.

        Raises:
            UnsupportedGrantType: ``grant_type`` is not ``client_credentials``.
            InvalidClient: unknown client or wrong secret.
        """
        if grant_type != "client_credentials":
            raise UnsupportedGrantType()
        good_id = secrets.compare_digest(str(client_id or ""), self.config.client_id)
        good_secret = secrets.compare_digest(str(client_secret or ""), self.config.client_secret)
        if not (good_id and good_secret):
            raise InvalidClient()
        ttl = int(self.config.account_token_ttl_seconds)
        with self._lock:
            now = self.now()
            token = "mk_acct_" + secrets.token_hex(20)
            self._account_tokens[token] = now + int(
                self.config.account_token_ttl_seconds * US_PER_SECOND
            )
            return IssuedToken(token, ttl, self._expires_in(ttl, now))

    def account_token_valid(self, token: str) -> bool:
        """Whether ``token`` is an unexpired account token."""
        expiry = self._account_tokens.get(token)
        return expiry is not None and self.now() < expiry

    def mint(self, connection: str) -> IssuedToken:
        """A new connection token for ``connection`` (a connection name)."""
        ttl_s = self.config.connection_token_ttl_seconds
        ttl = int(ttl_s)
        with self._lock:
            now = self.now()
            if len(self._minted) >= _PURGE_AT:
                self._minted = {t: v for t, v in self._minted.items() if v[1] > now}
            token = "mk_conn_" + secrets.token_hex(20)
            self._minted[token] = (connection, now + int(ttl_s * US_PER_SECOND))
            self._mint_counts[connection] = self._mint_counts.get(connection, 0) + 1
            return IssuedToken(token, ttl, self._expires_in(ttl, now))

    def connection_of(self, token: str) -> str | None:
        """The connection name of an unexpired minted token, else ``None``."""
        entry = self._minted.get(token)
        if entry is None or self.now() >= entry[1]:
            return None
        return entry[0]

    def revoke_minted(self, connection: str) -> int:
        """Forget every token minted for ``connection``; returns how many were live."""
        with self._lock:
            now = self.now()
            mine = [t for t, (c, _) in self._minted.items() if c == connection]
            live = sum(1 for t in mine if self._minted[t][1] > now)
            for t in mine:
                del self._minted[t]
            return live

    def minted(self, connection: str) -> dict[str, int]:
        """``{"minted": tokens minted so far, "live": unexpired ones}`` for ``connection``."""
        with self._lock:
            now = self.now()
            live = sum(1 for c, exp in self._minted.values() if c == connection and exp > now)
            return {"minted": self._mint_counts.get(connection, 0), "live": live}
