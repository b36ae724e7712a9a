"""Makini's unified dialect (its API reference's): `/api/{erp|eam}/...`, page numbers.

* Listings: `GET /api/{family}/{entity}?filter[...]&sort[...]&page=&per_page=` in a Laravel
  envelope (`data`, `links`, `meta`). Pages are offsets computed at request time, so the walk
  is `paginator.KeysetWalk`: always page 1 of a filter that moves past the last record read
  (by its time and key; by key alone for an entity without a time). Records without a key
  (`work-orders/custom-fields`) are read by page number (`paginator.PageWalk`), whole.
* Raw tables: `GET /api/raw/tables` lists the connected system's tables,
  `GET /api/raw/tables/{table}/data` pages one's rows (no key either: `PageWalk`).
* Sync status: `GET /api/integrations/current`; `sync_updated_at` of a `done`/`fulldone`
  status is the complete point; `inprogress`/`error` guarantee nothing; `fail` means the
  connection must be reauthorized.
* No tombstones: a deleted record vanishes (see `deletes.py`); `GET .../{key}` answers 404.
* Errors: Laravel bodies, `{"message": ...}` (+ `errors` on 422); no request id documented.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import orjson

from makini_source.catalogue import Entity
from makini_source.client import MakiniClient, Response
from makini_source.columnar import DecodedPage, PageDecoder
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
from makini_source.exceptions import BadRequestError, ContractViolationError, NotFoundError
from makini_source.paginator import KeysetWalk, PageWalk
from makini_source.settings import MAX_EMPTY_PAGES, UNIFIED_LOOKBACK_SECONDS
from makini_source.window import Window

SYNC_STATUS_PATH = "/api/integrations/current"
RAW_TABLES_PATH = "/api/raw/tables"
# asked on every listing; the server clamps it to its maximum and says so in meta.per_page
ASK_PER_PAGE = 1_000
_STATES = {
    "done": COMPLETE,
    "fulldone": COMPLETE,
    "inprogress": SYNCING,
    "error": ERROR,
    "fail": REAUTHORIZATION_REQUIRED,
}


class UnifiedDialect:
    """The unified dialect for one connection of one family.

    Args:
        family: `erp` or `eam`: the family of the connection's system.
    """

    name = "unified"
    custom_fields_at_top_level = True
    has_tombstones = False
    default_lookback_seconds = float(UNIFIED_LOOKBACK_SECONDS)

    def __init__(self, family: str) -> None:
        self.family: str | None = family
        self._key_queries = True  # until the server refuses a filter or sort on `key`

    def read_error(self, body: bytes) -> tuple[str | None, str | None, str | None]:
        """`{"message": ..., "errors": {"field": ["..."]}}`."""
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None, None, None
        if not isinstance(parsed, dict):
            return None, None, None
        message = parsed.get("message")
        errors = parsed.get("errors")
        if isinstance(errors, dict) and errors:
            details = "; ".join(
                f"{name}: {' '.join(map(str, texts)) if isinstance(texts, list) else texts}"
                for name, texts in errors.items()
            )
            message = f"{message} ({details})" if isinstance(message, str) else details
        return None, message if isinstance(message, str) else None, None

    def sync_point(self, client: MakiniClient) -> SyncPoint:
        """`GET /api/integrations/current`.

        Raises:
            ReauthorizationRequired: `sync_status` is `fail` (the connected system's
                credentials are invalid).
            ContractViolationError: No `data` object, or an unreadable `sync_updated_at`.
        """
        answer = read_sync_status(
            client,
            SYNC_STATUS_PATH,
            "integrations",
            ("sync_status", "sync_updated_at", "provider"),
            _STATES,
            "sync_status 'fail': the connected system's credentials are invalid",
        )
        # only a finished sync guarantees anything; in progress or failed: keep the stored point
        complete = answer.time if answer.state == COMPLETE else None
        return SyncPoint(answer.state, complete, answer.reported, answer.time, answer.system)

    def serves(self, entity: Entity) -> bool:
        return self.family in entity.families

    def max_page_size(self, entity: Entity) -> int:
        return ASK_PER_PAGE

    def pages(
        self,
        client: MakiniClient,
        entity: Entity,
        window: Window,
        page_size: int,
        decode: PageDecoder,
        max_empty_pages: int = MAX_EMPTY_PAGES,
    ) -> Iterator[Page]:
        """Walks `window` exactly (`KeysetWalk`), yielding only records new to the walk.

        An entity without a time field is walked by `key` alone (its window is always the
        whole listing); one whose records have no key by page number (`PageWalk`). No walk
        follows `links.next`: an empty page ends it, whatever it claims (`max_empty_pages` has
        nothing to bound).
        """
        if entity.primary_key is None:
            path = self._path(entity)
            yield from self._pages_without_keys(client, entity.name, path, page_size, decode)
            return
        time_field = entity.cursor_field
        walk = KeysetWalk(
            time_field,
            window.modified_after,
            window.modified_before,
            page_size,
            key_queries=self._key_queries,
        )
        path = self._path(entity)
        while walk.has_next:
            params = walk.request_params()
            try:
                response = client.get(path, params, entity=entity.name)
            except BadRequestError:
                if not walk.key_queries:
                    raise
                # the server cannot filter or sort on `key`: read ties by equality walks
                self._key_queries = False
                walk.without_key_queries()
                continue
            page = self._page(client, entity.name, response, decode)
            meta = page.decoded.envelope.get("meta") or {}
            try:
                fresh = walk.update(
                    page.decoded.keys_and_times(time_field),
                    _integer(meta.get("per_page")),
                    page.total,
                )
            except ValueError as exc:
                raise contract_error(str(exc), client, response, entity.name, time_field) from None
            if not all(fresh):
                page.decoded = page.decoded.only(fresh)
            yield page

    def probe(self, client: MakiniClient, entity: Entity, window: Window) -> Probe | None:
        """One record of the window, oldest first: its time and `meta.total`."""
        time_field = entity.cursor_field or "updatedAt"
        params: dict[str, Any] = {f"sort[{time_field}]": 0, "page": 1, "per_page": 1}
        if window.modified_after:
            params[f"filter[{time_field}:gteq]"] = window.modified_after
        if window.modified_before:
            params[f"filter[{time_field}:lt]"] = window.modified_before
        response = client.get(self._path(entity), params, entity=entity.name)
        page = self._page(client, entity.name, response, None)
        times = page.decoded.keys_and_times(time_field)
        if not times or page.total is None or not isinstance(times[0][1], str):
            return None
        return Probe(times[0][1], page.total)

    def count(
        self, client: MakiniClient, entity: Entity, after: str | None, before: str | None
    ) -> int:
        """How many records have their time in `[after, before)` now (`meta.total`)."""
        time_field = entity.cursor_field or "updatedAt"
        # sorted on the filtered field, as the listings are: a server can answer from its
        # index (the sandbox without a sort scans every record: 57 ms against 1.4 ms a count)
        params: dict[str, Any] = {f"sort[{time_field}]": 0, "page": 1, "per_page": 1}
        if after:
            params[f"filter[{time_field}:gteq]"] = after
        if before:
            params[f"filter[{time_field}:lt]"] = before
        response = client.get(self._path(entity), params, entity=entity.name)
        page = self._page(client, entity.name, response, None)
        if page.total is None:
            raise contract_error(
                "list answer has no meta.total", client, response, entity.name, "meta"
            )
        return page.total

    def get_record(self, client: MakiniClient, entity: Entity, key: str) -> dict[str, Any] | None:
        """The record with `key` now, or None if it no longer exists (404)."""
        try:
            response = client.get(f"{self._path(entity)}/{key}", entity=entity.name)
        except NotFoundError:
            return None
        body = response.json(entity.name, client.connection)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            raise contract_error(
                "record answer has no 'data' object", client, response, entity.name, "data"
            )
        return data

    def raw_tables(self, client: MakiniClient) -> dict[str, dict[str, str]]:
        """The connected system's raw tables (`GET /api/raw/tables`): name -> the types
        the listing gives its columns (`string`, `integer`, `mixed`...; empty where it
        gives none).

        Raises:
            ContractViolationError: The answer is not a `data` list of tables with names.
        """
        label = raw_label(None)
        response = client.get(RAW_TABLES_PATH, entity=label)
        body = response.json(label, client.connection)
        tables = body.get("data") if isinstance(body, dict) else None
        if not isinstance(tables, list):
            raise contract_error(
                "raw tables answer has no 'data' list", client, response, label, "data"
            )
        result: dict[str, dict[str, str]] = {}
        for table in tables:
            name = table.get("name") if isinstance(table, dict) else None
            if not isinstance(name, str) or not name:
                raise contract_error(
                    "a raw table has no 'name'", client, response, label, "data.name"
                )
            columns = table.get("columns")
            result[name] = {
                str(column["name"]): str(column.get("type"))
                for column in (columns if isinstance(columns, list) else [])
                if isinstance(column, dict) and isinstance(column.get("name"), str)
            }
        return result

    def raw_rows(self, client: MakiniClient, table: str) -> list[dict[str, Any]]:
        """Every row of a raw table, read whole (`GET /api/raw/tables/{table}/data`).

        Raises:
            ContractViolationError: An answer is not a listing of row objects, or the
                table keeps changing while it is read.
        """
        path = f"{RAW_TABLES_PATH}/{quote(table, safe='')}/data"
        label = raw_label(table)
        rows: list[dict[str, Any]] = []
        for page in self._pages_without_keys(client, label, path, ASK_PER_PAGE, None):
            records = page.decoded.records
            if not all(isinstance(record, dict) for record in records):
                raise ContractViolationError(
                    "a raw table row is not a JSON object",
                    field="data",
                    connection=client.connection,
                    entity=label,
                    request_id=page.request_id,
                    url=page.url,
                )
            rows.extend(records)
        return rows

    def _pages_without_keys(
        self,
        client: MakiniClient,
        label: str,
        path: str,
        page_size: int,
        decode: PageDecoder | None,
    ) -> Iterator[Page]:
        """Every page of a listing whose records have no key, read whole (`PageWalk`): kept
        until the walk is over, so that a walk begun again drops them."""
        walk = PageWalk(page_size)
        kept: list[Page] = []
        while walk.has_next:
            response = client.get(path, walk.request_params(), entity=label)
            page = self._page(client, label, response, decode)
            meta = page.decoded.envelope.get("meta") or {}
            try:
                again = walk.update(len(page.decoded), _integer(meta.get("per_page")), page.total)
            except ValueError as exc:
                raise contract_error(str(exc), client, response, label, "meta.total") from None
            if again:
                kept.clear()
            else:
                kept.append(page)
        yield from kept

    def _path(self, entity: Entity) -> str:
        return f"/api/{self.family}/{entity.path}"

    def _page(
        self,
        client: MakiniClient,
        label: str,
        response: Response,
        decode: PageDecoder | None,
    ) -> Page:
        decoded: DecodedPage = decode_page(decode, client, label, response)
        meta = decoded.envelope.get("meta")
        if not isinstance(meta, dict):
            raise contract_error(
                "list answer has no 'meta' object", client, response, label, "meta"
            )
        return Page(decoded, response.request_id, response.url, _integer(meta.get("total")))


def raw_label(table: str | None) -> str:
    """What raw-table requests are called in errors and rate-limit counters."""
    return "raw-tables" if table is None else f"raw-tables/{table}"


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None
