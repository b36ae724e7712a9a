"""HTTP clients of one sandbox server, for the tests of the sandbox itself."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx

from makini_sandbox import SandboxAdmin, SandboxConfig


@contextmanager
def sandbox_clients(
    url: str,
    tokens: Mapping[str, str | None],
    *,
    accept_json: bool = True,
    plain: Iterable[str] = (),
) -> Iterator[dict[str, Any]]:
    """The admin client (`admin`) and one API client per name, closed at the end.

    Creating an httpx client costs ~0.1 s, so a test module shares these.

    Args:
        url: The server's root URL.
        tokens: Name -> bearer token (None: no `Authorization` header).
        accept_json: API clients send `Accept: application/json` (as the unified dialect wants).
        plain: Names of clients that send neither header.
    """
    headers = {"Accept": "application/json"} if accept_json else {}
    clients: dict[str, Any] = {"admin": SandboxAdmin(url)}
    for name, token in tokens.items():
        auth = {"Authorization": f"Bearer {token}"} if token else {}
        clients[name] = httpx.Client(base_url=url, headers={**headers, **auth}, timeout=10)
    for name in plain:
        clients[name] = httpx.Client(base_url=url, timeout=10)
    try:
        yield clients
    finally:
        for client in clients.values():
            client.close()


def reset_admin(clients: Mapping[str, Any], config: SandboxConfig) -> SandboxAdmin:
    """The module's admin client, after resetting the server to `config`."""
    admin: SandboxAdmin = clients["admin"]
    admin.reset(config)
    return admin
