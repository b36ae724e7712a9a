"""Makini's v1 dialect (the integration FAQ's): `/api/v1/...`, keyset cursors, tombstones.

* Listings: `GET /api/v1/{entity}?modified_after=&modified_before=&include_deleted=true&limit=`,
  then `cursor=<next_cursor>` until it is null; records ordered by (`updatedAt`, `key`).
* Sync status: `GET /api/v1/sync-status`, whose `last_sync_at` is the complete point.
* Errors: `{"error": {"code", "message", "request_id"}}`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from makini_source.catalogue import Entity
from makini_source.client import MakiniClient, Response
from makini_source.columnar import NotAListAnswer, PageDecoder
from makini_source.dialects.base import (
    COMPLETE,
    ERROR,
    REAUTHORIZATION_REQUIRED,
    SYNCING,
    Page,
    Probe,
    SyncPoint,
)
from makini_source.dialects.common import contract_error, decode_page, read_sync_status
from makini_source.paginator import CursorPaginator
from makini_source.settings import MAX_EMPTY_PAGES
from makini_source.window import Window

PREFIX = "/api/v1"
SYNC_STATUS_PATH = f"{PREFIX}/sync-status"
_STATES = {
    "active": COMPLETE,
    "syncing": SYNCING,
    "error": ERROR,
    "reauthorization_required": REAUTHORIZATION_REQUIRED,
}


class V1Dialect:
    """The v1 dialect for one connection."""

    name = "v1"
    family: str | None = None
    custom_fields_at_top_level = False
    has_tombstones = True
    default_lookback_seconds = 0.0

    def read_error(self, body: bytes) -> tuple[str | None, str | None, str | None]:
        """`{"error": {"code", "message", "request_id"}}`."""
        try:
            error = orjson.loads(body).get("error")
        except (orjson.JSONDecodeError, AttributeError):
            return None, None, None
        if not isinstance(error, dict):
            return None, None, None
        return (
            _text(error.get("code")),
            _text(error.get("message")),
            _text(error.get("request_id")),
        )

    def sync_point(self, client: MakiniClient) -> SyncPoint:
        """`GET /api/v1/sync-status`; `last_sync_at` is the complete point whatever the status.

        Raises:
            ReauthorizationRequired: The status says the connection must be reauthorized.
            ContractViolationError: The answer has no `data` object or an unreadable time.
        """
        answer = read_sync_status(
            client,
            SYNC_STATUS_PATH,
            "sync-status",
            ("status", "last_sync_at", "system"),
            _STATES,
            "sync status",
        )
        return SyncPoint(answer.state, answer.time, answer.reported, answer.time, answer.system)

    def serves(self, entity: Entity) -> bool:
        return entity.in_v1

    def max_page_size(self, entity: Entity) -> int:
        assert entity.v1_max_page_size is not None
        return entity.v1_max_page_size

    def pages(
        self,
        client: MakiniClient,
        entity: Entity,
        window: Window,
        page_size: int,
        decode: PageDecoder,
        max_empty_pages: int = MAX_EMPTY_PAGES,
    ) -> Iterator[Page]:
        """Follows `next_cursor` through the listing of `window`, tombstones included.

        Raises:
            ContractViolationError: A cursor repeats, is not text, or `max_empty_pages`
                empty pages came in a row.
        """
        paginator = CursorPaginator(_filters(window), page_size, max_empty_pages)
        path = f"{PREFIX}/{entity.path}"
        while paginator.has_next:
            response = client.get(path, paginator.request_params(), entity=entity.name)
            page = self._page(client, entity, response, decode)
            try:
                paginator.update(page.decoded.envelope.get("next_cursor"), len(page.decoded))
            except ValueError as exc:
                raise contract_error(
                    str(exc), client, response, entity.name, "next_cursor"
                ) from None
            yield page

    def probe(self, client: MakiniClient, entity: Entity, window: Window) -> Probe | None:
        """One record of the window (`limit=1`): its `updatedAt` and `total_count`."""
        path = f"{PREFIX}/{entity.path}"
        response = client.get(path, {**_filters(window), "limit": 1}, entity=entity.name)
        page = self._page(client, entity, response, None)
        times = page.decoded.keys_and_times("updatedAt")
        if not times or page.total is None or not isinstance(times[0][1], str):
            return None
        return Probe(times[0][1], page.total)

    def _page(
        self,
        client: MakiniClient,
        entity: Entity,
        response: Response,
        decode: PageDecoder | None,
    ) -> Page:
        decoded = decode_page(decode, client, entity.name, response)
        if "next_cursor" not in decoded.envelope:
            raise contract_error(
                "list answer has no 'next_cursor'", client, response, entity.name, "next_cursor"
            )
        total = decoded.envelope.get("total_count")
        return Page(
            decoded,
            response.request_id,
            response.url,
            total if isinstance(total, int) and not isinstance(total, bool) else None,
        )


def _filters(window: Window) -> dict[str, Any]:
    params: dict[str, Any] = {"include_deleted": "true"}
    if window.modified_after:
        params["modified_after"] = window.modified_after
    if window.modified_before:
        params["modified_before"] = window.modified_before
    return params


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


__all__ = ["NotAListAnswer", "V1Dialect"]
