"""A small httpx client for the sandbox's ``/_admin`` endpoints (for tests and scripts)."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from .config import SandboxConfig

if TYPE_CHECKING:
    from typing_extensions import Self


class SandboxAdminError(RuntimeError):
    """An admin call answered with an error status.

    Attributes:
        status: HTTP status.
        body: decoded JSON body (or text).
    """

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"admin call failed with {status}: {body}")
        self.status = status
        self.body = body


class SandboxAdmin:
    """Client of the admin endpoints.

    Args:
        base_url: the sandbox URL, e.g. ``server.url``.
        timeout: request timeout in seconds.
    """

    def __init__(self, base_url: str, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout)

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        resp = self._client.request(
            method, path, json=body if body is not None else None, params=params
        )
        try:
            data = resp.json()
        except ValueError:
            data = resp.text
        if resp.status_code >= 400:
            raise SandboxAdminError(resp.status_code, data)
        return data["data"] if isinstance(data, dict) and "data" in data else data

    @staticmethod
    def _rec_path(connection: str, entity: str, key: str) -> str:
        return f"/_admin/connections/{quote(connection, safe='')}/{entity}/{quote(key, safe='')}"

    # -- state --------------------------------------------------------------------------------

    def reset(self, config: SandboxConfig | dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Regenerate all state (optionally from a new config); returns :meth:`connections`."""
        body = config.to_dict() if isinstance(config, SandboxConfig) else config
        return self._call("POST", "/_admin/reset", body)

    def prewarm(self, connection: str | None = None, entity: str | None = None) -> dict[str, Any]:
        """Build and cache every generated record now; returns ``{"built", "seconds"}``."""
        body = {k: v for k, v in (("connection", connection), ("entity", entity)) if v}
        return self._call("POST", "/_admin/prewarm", body)

    def config(self) -> dict[str, Any]:
        """The current config as JSON."""
        return self._call("GET", "/_admin/config")

    def connections(self) -> list[dict[str, Any]]:
        """Every connection: name, token, counts, sync state, settings."""
        return self._call("GET", "/_admin/connections")

    def get_record(self, connection: str, entity: str, key: str) -> dict[str, Any]:
        """``{"data": visible record or None, "pending": pending record or None}``."""
        return self._client_get_raw(self._rec_path(connection, entity, key))

    def _client_get_raw(self, path: str) -> dict[str, Any]:
        resp = self._client.get(path)
        if resp.status_code >= 400:
            raise SandboxAdminError(resp.status_code, resp.json())
        return resp.json()

    def put_record(
        self,
        connection: str,
        entity: str,
        key: str,
        fields: dict[str, Any],
        *,
        pending: bool = False,
    ) -> dict[str, Any]:
        """Create or update a record; returns the written version."""
        params = {"pending": "true"} if pending else None
        return self._call("PUT", self._rec_path(connection, entity, key), fields, params)

    def delete_record(
        self,
        connection: str,
        entity: str,
        key: str,
        *,
        pending: bool = False,
        deleted_at: str | None = None,
        hard: bool = False,
    ) -> dict[str, Any]:
        """Tombstone a record; returns the tombstone.

        ``hard=True`` hard-deletes: the record vanishes from the unified dialect (v1 still
        lists its tombstone with ``include_deleted``). Deleted purchase orders always vanish
        from the unified dialect; other entities stay listed there with ``deletedAt`` set.
        """
        params = {"pending": "true"} if pending else {}
        if hard:
            params["hard"] = "true"
        body = {"deletedAt": deleted_at} if deleted_at else None
        return self._call("DELETE", self._rec_path(connection, entity, key), body, params or None)

    def bulk(
        self,
        connection: str,
        entity: str,
        *,
        keys: list[str] | None = None,
        count: int | None = None,
        set: dict[str, Any] | None = None,
        delete: bool = False,
        pending: bool = False,
        updated_at: str | None = None,
        hard: bool = False,
    ) -> dict[str, Any]:
        """Change many records at one shared ``updatedAt``; returns ``{"changed", "keys", "updatedAt"}``.

        ``delete=True, hard=True`` hard-deletes them (see :meth:`delete_record`).
        """
        body: dict[str, Any] = {"delete": delete, "pending": pending, "hard": hard}
        if keys is not None:
            body["keys"] = keys
        if count is not None:
            body["count"] = count
        if set is not None:
            body["set"] = set
        if updated_at is not None:
            body["updatedAt"] = updated_at
        return self._call(
            "POST", f"/_admin/connections/{quote(connection, safe='')}/{entity}/_bulk", body
        )

    def sync(
        self,
        connection: str,
        *,
        last_sync_at: str | None = None,
        status: str | None = None,
        initial_sync_completed: bool | None = None,
        last_sync_status: str | None = None,
        publish: bool = True,
        full_sync: bool = False,
    ) -> dict[str, Any]:
        """Publish pending records and set the sync state; returns the sync status.

        A status change is timestamped (the unified ``sync_updated_at`` of ``inprogress``,
        ``error`` and ``fail``); ``full_sync=True`` makes the unified ``sync_status``
        ``fulldone`` instead of ``done`` until the next call.
        """
        body: dict[str, Any] = {"publish": publish, "full_sync": full_sync}
        for name, value in (
            ("last_sync_at", last_sync_at),
            ("status", status),
            ("initial_sync_completed", initial_sync_completed),
            ("last_sync_status", last_sync_status),
        ):
            if value is not None:
                body[name] = value
        return self._call("POST", f"/_admin/connections/{quote(connection, safe='')}/sync", body)

    def set_sync_time_raw(
        self, connection: str, value: Any = None, *, clear: bool = False
    ) -> dict[str, Any]:
        """Send ``value`` verbatim (any JSON value, e.g. ``"not a time"``) as the connection's
        ``last_sync_at`` (v1) and ``sync_updated_at`` (unified), without a sync; ``clear``
        goes back to the real times. Returns the v1 sync status."""
        body: dict[str, Any] = {"clear_sync_time_raw": True} if clear else {"sync_time_raw": value}
        return self._call("POST", f"/_admin/connections/{quote(connection, safe='')}/sync", body)

    def set_token(
        self,
        connection: str,
        *,
        token: str | None = None,
        revoked: bool | None = None,
        status: str | None = None,
    ) -> dict[str, Any]:
        """Replace, revoke or restore a connection's token, or set its sync ``status``."""
        body = {
            k: v
            for k, v in (("token", token), ("revoked", revoked), ("status", status))
            if v is not None
        }
        return self._call("POST", f"/_admin/connections/{quote(connection, safe='')}/token", body)

    def set_profile(
        self,
        connection: str,
        *,
        family: str | None = None,
        connection_status: str | None = None,
        tags: list[str] | None = None,
        display_name: str | None = None,
        email: str | None = None,
        key: str | None = None,
        money_as_numbers: bool | None = None,
        sync_updated_at_format: str | None = None,
    ) -> dict[str, Any]:
        """Change how a connection appears to the account API and the unified dialect.

        Args:
            connection: connection name.
            family: ``"erp"`` or ``"eam"``.
            connection_status: ``"active"``, ``"inactive"`` or ``"reauthorization_required"``.
            tags: tags listed by ``GET /api/system/connections``.
            display_name: the connection's ``name`` there (and ``company_name``).
            email: contact e-mail.
            key: the connection's key in the account API.
            money_as_numbers: send money and quantities as JSON numbers in the unified dialect.
            sync_updated_at_format: ``"iso"`` or ``"laravel"``.

        Returns:
            The profile.
        """
        body = {
            name: value
            for name, value in (
                ("family", family),
                ("connection_status", connection_status),
                ("tags", tags),
                ("display_name", display_name),
                ("email", email),
                ("key", key),
                ("money_as_numbers", money_as_numbers),
                ("sync_updated_at_format", sync_updated_at_format),
            )
            if value is not None
        }
        return self._call("POST", f"/_admin/connections/{quote(connection, safe='')}/profile", body)

    def minted_tokens(self, connection: str) -> dict[str, int]:
        """``{"minted": tokens minted so far, "live": unexpired ones}`` for a connection."""
        return self._call("GET", f"/_admin/connections/{quote(connection, safe='')}/tokens")

    def revoke_minted_tokens(self, connection: str) -> dict[str, int]:
        """Revoke every token minted for a connection (their requests get 401)."""
        return self._call("DELETE", f"/_admin/connections/{quote(connection, safe='')}/tokens")

    def revoke_token(self, connection: str) -> dict[str, Any]:
        """Revoke a connection's token (its requests get 401)."""
        return self.set_token(connection, revoked=True)

    def set_permissions(self, connection: str, denied: list[str]) -> dict[str, Any]:
        """Entities (or ``sync-status``) that answer 403 for this connection."""
        return self._call(
            "POST",
            f"/_admin/connections/{quote(connection, safe='')}/permissions",
            {"denied": denied},
        )

    def set_rate_limit(
        self,
        connection: str,
        limit: int,
        window_seconds: float | None = None,
        retry_after_format: str | None = None,
    ) -> dict[str, Any]:
        """Set a connection's rate limit (0 = unlimited) and restart its window."""
        body: dict[str, Any] = {"limit": limit}
        if window_seconds is not None:
            body["window_seconds"] = window_seconds
        if retry_after_format is not None:
            body["retry_after_format"] = retry_after_format
        return self._call(
            "POST", f"/_admin/connections/{quote(connection, safe='')}/rate-limit", body
        )

    def set_pages(
        self,
        connection: str,
        short_every: int = 0,
        empty_every: int = 0,
        null_total_count: bool = False,
    ) -> dict[str, Any]:
        """Make every Nth page short / empty (0 = off); optionally send ``total_count: null``."""
        return self._call(
            "POST",
            f"/_admin/connections/{quote(connection, safe='')}/pages",
            {
                "short_every": short_every,
                "empty_every": empty_every,
                "null_total_count": null_total_count,
            },
        )

    def set_faults(self, rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Replace the fault rules (see :mod:`makini_sandbox.faults`)."""
        return self._call("POST", "/_admin/faults", {"rules": rules})

    def faults(self) -> list[dict[str, Any]]:
        """Current fault rules with their ``matched``/``fired`` counters."""
        return self._call("GET", "/_admin/faults")

    def clear_faults(self) -> None:
        """Remove all fault rules."""
        self._call("DELETE", "/_admin/faults")

    def stats(self) -> dict[str, Any]:
        """Request statistics: ``{"connections": {name: {...}}, "total": {...}}``."""
        return self._call("GET", "/_admin/stats")

    def clear_stats(self) -> None:
        """Reset the request statistics."""
        self._call("DELETE", "/_admin/stats")

    def clock(self) -> str:
        """The store clock's current time (RFC 3339)."""
        return self._call("GET", "/_admin/clock")["now"]

    def advance_clock(self, seconds: float) -> str:
        """Move the store clock forward (expires cursors, ages timestamps)."""
        return self._call("POST", "/_admin/clock", {"advance_seconds": seconds})["now"]
