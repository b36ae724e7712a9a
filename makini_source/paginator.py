"""The two ways through a Makini listing, each a small state object.

* `CursorPaginator` (v1): follows `next_cursor`, a keyset position kept by the server.
* `KeysetWalk` (unified): the unified dialect pages by offset (`page=N`), and offsets are
  computed over the current result set at request time, so a record that changes during a
  walk shifts every later one and a `page += 1` walk skips records. The walk never asks for
  page 2: it asks for page 1 of "records after the last one read", ordered by
  (`updatedAt`, `key`), and moves that filter on after every page: a keyset walk emulated with
  filters. Records equal on `updatedAt` (a bulk update, maybe many pages long) are told apart
  by `key`. Where the server cannot filter or sort on `key`, ties are read by walking the
  equality filter `updatedAt = t` page by page, again and again, until a whole pass finds no
  record it had not seen and the records seen cover the tie's count. An entity without a time
  (`uom`) is walked as one tie: by `key` alone (`filter[key:gt]`, `sort[key]`), or by passes.
* `PageWalk` (unified, records without a key): plain page numbers, read again from page 1
  whenever the listing's count changes under the walk, since nothing else can tell a shift.

Neither sends a request: each says what to ask next (`request_params`) and learns from the
answer (`update`); the dialect does the HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from makini_source.redact import shown
from makini_source.settings import MAX_EMPTY_PAGES
from makini_source.window import to_datetime


class CursorPaginator:
    """Follows `next_cursor` until the API says the listing is over.

    A page may be short or empty while `next_cursor` is still set: only `null` ends a
    listing. The filters of the first request travel inside the cursor, so later requests
    send only `cursor` and `limit`. A listing that keeps answering empty pages ends with an
    error after `max_empty_pages` of them in a row.

    Attributes:
        cursor: The cursor to send with the next request (`None` before the first page).
        has_next: Whether another page must be requested.
        pages: How many pages were consumed.
    """

    def __init__(
        self, first_params: Mapping[str, Any], limit: int, max_empty_pages: int = MAX_EMPTY_PAGES
    ) -> None:
        self._first_params = dict(first_params)
        self._limit = limit
        self._seen: set[str] = set()
        self._empty_in_a_row = 0
        self._max_empty = max_empty_pages
        self.cursor: str | None = None
        self.has_next = True
        self.pages = 0

    def request_params(self) -> dict[str, Any]:
        """Query parameters for the next page."""
        if self.cursor is None:
            return {**self._first_params, "limit": self._limit}
        return {"cursor": self.cursor, "limit": self._limit}

    def update(self, next_cursor: Any, records: int) -> None:
        """Advances past a consumed page.

        Args:
            next_cursor: The page's `next_cursor`.
            records: How many records the page held.

        Raises:
            ValueError: The cursor is not a string, repeats one already followed (the
                listing would loop forever), or too many empty pages came in a row.
        """
        self.pages += 1
        if next_cursor is None:
            self.has_next = False
            return
        if not isinstance(next_cursor, str) or not next_cursor:
            raise ValueError(
                f"next_cursor must be a non-empty string or null, got {shown(next_cursor)}"
            )
        if next_cursor in self._seen:
            raise ValueError(
                "next_cursor repeats a cursor already followed; the listing would loop"
            )
        self._empty_in_a_row = 0 if records else self._empty_in_a_row + 1
        if self._empty_in_a_row >= self._max_empty:
            raise ValueError(
                f"{self._empty_in_a_row} empty pages in a row, each with a new next_cursor: "
                f"the listing looks endless; stopped at max_empty_pages={self._max_empty}"
            )
        self._seen.add(next_cursor)
        self.cursor = next_cursor


class KeysetWalk:
    """An exact walk over offset pages, ordered by (`time_field`, `key`).

    Which records are new is decided by time and by the set of keys already read at the last
    time, never by comparing keys here: the server may collate keys differently. Keys are
    compared by the server only, in a tie read with `filter[key:gt]`.

    Args:
        time_field: The field the walk is ordered and filtered by (`updatedAt`); None for an
            entity without a time: the whole listing is then one tie, walked by `key`.
        lower: Inclusive lower bound (RFC 3339), or None (always None without a time field).
        upper: Exclusive upper bound, or None (always None without a time field).
        per_page: The page size to ask for (the server may grant less; `update` learns it).
        key_queries: The server filters and sorts on `key` (else ties are read by repeated
            equality walks).
        max_tie_passes: Equality walks of one tie before giving up (no-key mode only).

    Attributes:
        has_next: Whether another request must be sent.
        requests: Requests the walk has asked for.
    """

    def __init__(
        self,
        time_field: str | None,
        lower: str | None,
        upper: str | None,
        per_page: int,
        key_queries: bool = True,
        max_tie_passes: int = 20,
    ) -> None:
        self._field = time_field
        self._lower = lower
        self._upper = upper
        self._per_page = per_page
        self._key_queries = key_queries
        self._max_passes = max_tie_passes
        self._time: str | None = None  # the last time read, as the server wrote it
        self._order: tuple[Any, int] | None = None  # ... and as a comparable value
        self._last_key: str | None = None  # the last key read (in the server's order)
        self._seen_at_time: set[str] = set()  # every key read at that time
        self._past_time = False  # every record at that time is read: go strictly after it
        self._in_tie = False  # reading a tie bigger than a page
        self._tie_page = 1
        self._tie_pass_new = False
        self._tie_passes = 0
        self.has_next = True
        self.requests = 0
        if time_field is None:
            if lower is not None or upper is not None:
                raise ValueError("a walk without a time field cannot have time bounds")
            # every record shares the same (absent) time: one tie, read whole
            self._order, self._in_tie = _NO_TIME, True

    @property
    def key_queries(self) -> bool:
        """Whether the walk filters and sorts on `key`."""
        return self._key_queries

    def without_key_queries(self) -> None:
        """The server refused a `key` filter or sort: read ties by equality walks instead."""
        self._key_queries = False
        self._tie_page, self._tie_passes, self._tie_pass_new = 1, 0, False

    def request_params(self) -> dict[str, Any]:
        """Query parameters of the next request."""
        self.requests += 1
        f = self._field
        params: dict[str, Any] = {}
        if self._in_tie:
            if f is not None:
                params[f"filter[{f}]"] = self._time
            if self._key_queries:
                if self._last_key is not None:
                    params["filter[key:gt]"] = self._last_key
                params["sort[key]"] = 0
        else:
            if self._time is not None:
                op = "gt" if self._past_time else "gteq"
                params[f"filter[{f}:{op}]"] = self._time
            elif self._lower is not None:
                params[f"filter[{f}:gteq]"] = self._lower
            if self._upper is not None:
                params[f"filter[{f}:lt]"] = self._upper
            params[f"sort[{f}]"] = 0
            if self._key_queries:
                params["sort[key]"] = 0
        params["page"] = self._tie_page if self._in_tie and not self._key_queries else 1
        params["per_page"] = self._per_page
        return params

    def update(
        self, records: Sequence[tuple[Any, Any]], per_page: int | None, total: int | None
    ) -> list[bool]:
        """Learns from an answer; returns which of its records are new to the walk.

        Args:
            records: (`key`, time text) of each record of the page, in order.
            per_page: The page size the server used (`meta.per_page`), if it said.
            total: How many records matched the request (`meta.total`), if it said.

        Raises:
            ValueError: A record lacks its key or time, the answer is not in the order asked
                for, or a tie could not be read stably.
        """
        if per_page:
            self._per_page = per_page
        full = len(records) >= self._per_page and (total is None or total > len(records))
        parsed = [self._checked(key, time) for key, time in records]
        if self._in_tie:
            return self._update_tie(parsed, full, total)
        new = []
        for text, order, key in parsed:
            fresh = self._is_new(text, order, key)
            new.append(fresh)
            if fresh:
                self._read(text, order, key)
        if full and not any(new):
            # a page of records at the last time, all read already: a tie bigger than a page
            self._in_tie = True
            self._tie_page, self._tie_passes, self._tie_pass_new = 1, 0, False
        elif not full:
            self.has_next = False
        return new

    def _update_tie(
        self, parsed: list[tuple[str, tuple[Any, int], str]], full: bool, total: int | None
    ) -> list[bool]:
        new = []
        for text, order, key in parsed:
            if order != self._order:
                raise ValueError(f"a record of the tie at {self._time} has {self._field} {text}")
            fresh = key not in self._seen_at_time
            new.append(fresh)
            self._last_key = key
            if fresh:
                self._seen_at_time.add(key)
                self._tie_pass_new = True
        if self._key_queries:
            if not full:
                self._leave_tie()
            return new
        if full:
            self._tie_page += 1
            return new
        # the end of one equality pass over the tie
        self._tie_passes += 1
        covered = total is None or len(self._seen_at_time) >= total
        if not self._tie_pass_new and covered:
            self._leave_tie()
        elif self._tie_passes >= self._max_passes:
            where = "of the listing" if self._field is None else f"at {self._field} {self._time}"
            raise ValueError(
                f"the {total if total is not None else '?'} records {where} could not be read "
                f"stably in {self._tie_passes} passes (their order changes between requests)"
            )
        else:
            self._tie_page, self._tie_pass_new = 1, False
        return new

    def _leave_tie(self) -> None:
        """The tie at the last time is read whole: go on strictly after it (without a time
        field, the tie was the whole listing)."""
        self._in_tie = False
        self._past_time = True
        if self._field is None:
            self.has_next = False

    def _checked(self, key: Any, time: Any) -> tuple[str, tuple[Any, int], str]:
        if self._field is None:
            if not isinstance(key, str) or not key:
                raise ValueError("a record has no key")
            return "", _NO_TIME, key
        if not isinstance(key, str) or not key or not isinstance(time, str):
            raise ValueError(f"a record has no key or no {self._field} text")
        try:
            order = time_order(time)
        except Exception as exc:
            raise ValueError(
                f"{self._field} {shown(time)} of {shown(key)} is not a timestamp"
            ) from exc
        return time, order, key

    def _is_new(self, text: str, order: tuple[Any, int], key: str) -> bool:
        if self._order is None:
            return True
        if order < self._order:
            raise ValueError(
                f"{self._field} goes back ({text} after {self._time}): the answer is not "
                "sorted as asked"
            )
        if order > self._order:
            return True
        return not self._past_time and key not in self._seen_at_time

    def _read(self, text: str, order: tuple[Any, int], key: str) -> None:
        if self._order is None or order > self._order:
            self._seen_at_time = set()
            self._past_time = False
        self._time, self._order, self._last_key = text, order, key
        self._seen_at_time.add(key)


class PageWalk:
    """Page numbers over a listing whose records have no key (`work-orders/custom-fields`).

    Nothing tells a record that shifted between two pages from another, so the walk checks
    the listing instead: the count (`meta.total`) must stay the same from the first page to
    the last, and the records read must add up to it. If not, the listing changed under the
    walk and it starts again from page 1; the caller drops the pages it kept.

    Args:
        per_page: The page size to ask for (the server may grant less; `update` learns it).
        max_attempts: Walks of a listing that keeps changing before giving up.

    Attributes:
        has_next: Whether another request must be sent.
        requests: Requests the walk has asked for.
    """

    def __init__(self, per_page: int, max_attempts: int = 5) -> None:
        self._per_page = per_page
        self._max_attempts = max_attempts
        self._attempts = 1
        self._page = 1
        self._total: int | None = None
        self._read = 0
        self.has_next = True
        self.requests = 0

    def request_params(self) -> dict[str, Any]:
        """Query parameters of the next request."""
        self.requests += 1
        return {"page": self._page, "per_page": self._per_page}

    def update(self, records: int, per_page: int | None, total: int | None) -> bool:
        """Learns from an answer.

        Args:
            records: How many records the page held.
            per_page: The page size the server used (`meta.per_page`), if it said.
            total: How many records the listing holds now (`meta.total`), if it said.

        Returns:
            True when the listing changed under the walk: every page read so far (this one
            included) must be dropped; the walk starts again from page 1.

        Raises:
            ValueError: The listing changed during `max_attempts` walks in a row.
        """
        if self._page == 1:
            self._total = total
            if per_page:
                self._per_page = per_page  # the size every later offset is computed with
        elif total != self._total:
            return self._again(f"its count went from {self._total} to {total}")
        self._read += records
        if records and records >= self._per_page and (total is None or self._read < total):
            self._page += 1
            return False
        if total is not None and self._read != total:
            return self._again(f"{self._read} records were read of {total}")
        self.has_next = False
        return False

    def _again(self, why: str) -> bool:
        if self._attempts >= self._max_attempts:
            raise ValueError(
                f"the listing changed during {self._attempts} walks in a row ({why}); its "
                "records have no key to tell a moved record from another"
            )
        self._attempts += 1
        self._page, self._total, self._read = 1, None, 0
        return True


# the time of every record of an entity without a time field
_NO_TIME: tuple[Any, int] = (None, 0)


def time_order(text: str) -> tuple[Any, int]:
    """A timestamp as a value that sorts exactly, fractions finer than a microsecond included.

    Raises:
        ConfigurationError: `text` is not a timestamp.
    """
    base, fraction = text, 0
    dot = text.find(".")
    if dot >= 0:
        end = dot + 1
        while end < len(text) and text[end].isdigit():
            end += 1
        digits = text[dot + 1 : end]
        base = text[:dot] + text[end:]
        fraction = int((digits + "0" * 9)[:9]) if digits else 0
    return _instant(base), fraction


def _instant(text: str) -> datetime:
    """`text` as an aware datetime: the standard library's parser first (about 80 times
    faster than pendulum's, and every walk parses each record's time), pendulum's for what
    it does not read (`Z` before Python 3.11, other RFC 3339 spellings)."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return to_datetime(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
