"""Small helpers both dialects use: decoding a list answer, reading a sync status, contract
errors, sync times."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from makini_source.client import MakiniClient, Response
from makini_source.columnar import DecodedPage, NotAListAnswer, PageDecoder, read_json_page
from makini_source.dialects.base import REAUTHORIZATION_REQUIRED, UNKNOWN
from makini_source.exceptions import (
    ConfigurationError,
    ContractViolationError,
    ReauthorizationRequired,
)
from makini_source.jsonbody import InvalidJSON
from makini_source.redact import shown
from makini_source.window import format_timestamp


def contract_error(
    message: str, client: MakiniClient, response: Response, entity: str, field: str | None
) -> ContractViolationError:
    """A contract violation of one answer, with its full context."""
    return ContractViolationError(
        message,
        connection=client.connection,
        entity=entity,
        status=response.status,
        request_id=response.request_id,
        url=response.url,
        field=field,
    )


def decode_page(
    decode: PageDecoder | None, client: MakiniClient, label: str, response: Response
) -> DecodedPage:
    """A list answer's records and envelope.

    A body that arrived whole (the client checks its length) but does not parse is a
    contract violation, never retried: another try would get the same bytes.

    Args:
        decode: The entity's decoder; None parses the records as plain JSON.
        client: The connection's client.
        label: What was listed, for errors (the entity's name, `raw-tables/EKKO`).
        response: The answer.

    Raises:
        ContractViolationError: Not JSON, or not an object with a `data` array.
    """
    try:
        return decode(response.body) if decode is not None else read_json_page(response.body)
    except NotAListAnswer as exc:
        raise contract_error(str(exc), client, response, label, "data") from None
    except InvalidJSON as exc:
        raise contract_error(
            f"{response.status} answer ({response.headers.get('content-type')}) is {exc}",
            client,
            response,
            label,
            "body",
        ) from None


def sync_time(
    value: object, client: MakiniClient, response: Response, field: str, entity: str
) -> str | None:
    """A sync status time as RFC 3339 UTC (Laravel's `2024-06-01 10:15:00` is UTC too).

    Raises:
        ContractViolationError: The value is not a time.
    """
    if value is None:
        return None
    try:
        if not isinstance(value, str):
            raise ConfigurationError("not text")
        return format_timestamp(value)
    except ConfigurationError:
        raise contract_error(
            f"{field} {shown(value)} is not a timestamp", client, response, entity, field
        ) from None


@dataclass(frozen=True)
class SyncStatusAnswer:
    """A sync status answer read the same way in both dialects."""

    data: dict[str, Any]
    state: str
    reported: str | None
    time: str | None
    system: str | None


def read_sync_status(
    client: MakiniClient,
    path: str,
    entity: str,
    fields: tuple[str, str, str],
    states: dict[str, str],
    reauthorization: str,
) -> SyncStatusAnswer:
    """GETs a sync status and reads its `data` object.

    Args:
        client: The connection's client.
        path: The sync status path.
        entity: Its name in errors.
        fields: The names of its status, time and system fields.
        states: The dialect's status words -> normalized states.
        reauthorization: Why a status asking for reauthorization fails the connection.

    Raises:
        ReauthorizationRequired: The status asks for reauthorization.
        ContractViolationError: No `data` object, or an unreadable time.
    """
    status_field, time_field, system_field = fields
    response = client.get(path, entity=entity)
    body = response.json(entity, client.connection)
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        raise contract_error(
            f"{entity} answer has no 'data' object", client, response, entity, "data"
        )
    reported = data.get(status_field)
    state = states.get(reported, UNKNOWN) if isinstance(reported, str) else UNKNOWN
    if state == REAUTHORIZATION_REQUIRED:
        raise ReauthorizationRequired(
            f"connection {client.connection!r} needs reauthorization ({reauthorization})",
            connection=client.connection,
            entity=entity,
            request_id=response.request_id,
        )
    system = data.get(system_field)
    return SyncStatusAnswer(
        data,
        state,
        reported if isinstance(reported, str) else None,
        sync_time(data.get(time_field), client, response, time_field, entity),
        system if isinstance(system, str) else None,
    )
