"""Makini's two dialects, and how a connection's dialect (and family) is found.

`auto` asks each connection once per run: the unified dialect's
`/api/integrations/current` first, then v1's `/api/v1/sync-status`; the first that answers
decides, and its answer is the run's sync point (no request is spent twice).
"""

from __future__ import annotations

import orjson

from makini_source.client import MakiniClient
from makini_source.dialects.base import Dialect, SyncPoint
from makini_source.dialects.unified import UnifiedDialect
from makini_source.dialects.v1 import V1Dialect
from makini_source.exceptions import ConfigurationError, NotFoundError

DIALECTS = ("auto", "v1", "unified")
FAMILIES = ("erp", "eam")
# a path both families serve, to find which family a connection's system belongs to
_FAMILY_PROBE = "vendors"

__all__ = ["DIALECTS", "FAMILIES", "Dialect", "SyncPoint", "detect", "read_any_error"]


def read_any_error(body: bytes) -> tuple[str | None, str | None, str | None]:
    """Reads an error body of either dialect (while the dialect is not known yet)."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None, None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        return V1Dialect().read_error(body)
    return UnifiedDialect("erp").read_error(body)


def detect(client: MakiniClient, dialect: str, family: str | None) -> tuple[Dialect, SyncPoint]:
    """The connection's dialect and its sync point.

    Args:
        client: The connection's client (its error reader is set to the dialect's).
        dialect: `auto`, `v1` or `unified`.
        family: `erp` or `eam` when configured; None to find out (unified only).

    Raises:
        ConfigurationError: An unknown dialect or family.
        MakiniAPIError: The connection answers neither dialect, or its token is refused.
    """
    if dialect not in DIALECTS:
        raise ConfigurationError(f"dialect must be one of {', '.join(DIALECTS)}, got {dialect!r}")
    if family is not None and family not in FAMILIES:
        raise ConfigurationError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
    client.errors = read_any_error
    if dialect in ("auto", "unified"):
        unified = UnifiedDialect(family or "erp")
        try:
            point = unified.sync_point(client)
        except NotFoundError:
            if dialect == "unified":
                raise
        else:
            unified.family = family or _family(client)
            client.errors = unified.read_error
            return unified, point
    v1 = V1Dialect()
    point = v1.sync_point(client)
    client.errors = v1.read_error
    return v1, point


def _family(client: MakiniClient) -> str:
    """The family whose paths the connection serves (the other family's answer 404)."""
    for family in FAMILIES:
        try:
            client.get(f"/api/{family}/{_FAMILY_PROBE}", {"per_page": 1}, entity=_FAMILY_PROBE)
        except NotFoundError:
            continue
        return family
    raise NotFoundError(
        f"connection {client.connection!r} serves neither /api/erp nor /api/eam",
        connection=client.connection,
        entity=_FAMILY_PROBE,
        status=404,
    )
