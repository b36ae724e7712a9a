"""Keyset-cursor pagination over one Makini listing, as a small state object."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class CursorPaginator:
    """Follows `next_cursor` until the API says the listing is over.

    A page may be short or empty while `next_cursor` is still set: only `null` ends a
    listing. The filters of the first request travel inside the cursor, so later requests
    send only `cursor` and `limit`.

    Attributes:
        cursor: The cursor to send with the next request (`None` before the first page).
        has_next: Whether another page must be requested.
        pages: How many pages were consumed.
    """

    def __init__(self, first_params: Mapping[str, Any], limit: int) -> None:
        self._first_params = dict(first_params)
        self._limit = limit
        self._seen: set[str] = set()
        self.cursor: str | None = None
        self.has_next = True
        self.pages = 0

    def request_params(self) -> dict[str, Any]:
        """Query parameters for the next page."""
        if self.cursor is None:
            return {**self._first_params, "limit": self._limit}
        return {"cursor": self.cursor, "limit": self._limit}

    def update(self, next_cursor: str | None) -> None:
        """Advances past a consumed page.

        Args:
            next_cursor: The page's `next_cursor`.

        Raises:
            ValueError: The cursor is not a string, or repeats one already followed (the
                listing would loop forever).
        """
        self.pages += 1
        if next_cursor is None:
            self.has_next = False
            return
        if not isinstance(next_cursor, str) or not next_cursor:
            raise ValueError(f"next_cursor must be a non-empty string or null, got {next_cursor!r}")
        if next_cursor in self._seen:
            raise ValueError(
                "next_cursor repeats a cursor already followed; the listing would loop"
            )
        self._seen.add(next_cursor)
        self.cursor = next_cursor
