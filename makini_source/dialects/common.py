"""Small helpers both dialects use: decoding a list answer, contract errors, sync times."""

from __future__ import annotations

import orjson

from makini_source.client import MakiniClient, Response
from makini_source.columnar import DecodedPage, NotAListAnswer, PageDecoder, read_json_page
from makini_source.exceptions import ConfigurationError, ContractViolationError
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
    except (orjson.JSONDecodeError, ValueError, UnicodeDecodeError) as exc:
        raise contract_error(
            f"{response.status} answer is not valid JSON ({response.headers.get('content-type')}"
            f", {len(response.body)} bytes: {exc})",
            client,
            response,
            label,
            "body",
        ) from None


def sync_time(value: object, client: MakiniClient, response: Response, field: str) -> str | None:
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
            f"{field} {value!r} is not a timestamp", client, response, "sync-status", field
        ) from None
