"""Fetching pages ahead on background threads, so HTTP overlaps converting and loading.

While a resource converts one page to Arrow (and dlt writes it), the next request of the
same listing is already on its way on a small background thread. Listings of several
connections run at the same time: each connection is paced by its own rate limiter, so a
run over N rate-limited connections uses all N limits at once instead of one after the
other. Memory stays bounded: a listing holds at most `depth + 1` pages ahead of its consumer.

Only HTTP and JSON parsing run on the background threads; conversion, dlt state and schema
access stay on the resource's own thread, and connections take turns page by page in their
configured order, so the result never depends on which response arrived first.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Generic, Iterator, List, Tuple, TypeVar, Union

T = TypeVar("T")


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


DONE = _Marker("DONE")
"""What a reader returns once its listing is over."""

_PAGE, _END, _ERROR = 0, 1, 2


class ReadAhead(Generic[T]):
    """Runs a page iterator on a background thread, up to `depth` pages ahead of its consumer.

    Args:
        pages: The listing's page iterator (runs entirely on the background thread).
        depth: Pages queued ahead of the consumer (the thread may hold one more in hand).
        name: Thread name.
    """

    def __init__(
        self,
        pages: Iterator[T],
        depth: int = 1,
        name: str = "makini-read-ahead",
    ) -> None:
        self._queue: "queue.Queue[Tuple[int, Any]]" = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._run, args=(pages,), name=name, daemon=True)
        self._thread.start()

    def _run(self, pages: Iterator[T]) -> None:
        try:
            for page in pages:
                if not self._put((_PAGE, page)):
                    return
            self._put((_END, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._put((_ERROR, exc))
        finally:
            close = getattr(pages, "close", None)
            if close is not None:
                close()

    def _put(self, item: Tuple[int, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
            except queue.Full:
                continue
            return True
        return False

    def next(self) -> Union[T, _Marker]:
        """The next page (waiting for it), or `DONE` at the end.

        Raises:
            Exception: Whatever the page iterator raised, at the point it raised it.
        """
        if self._finished:
            return DONE
        kind, value = self._queue.get()
        if kind == _PAGE:
            return value  # type: ignore[no-any-return]
        self._finished = True
        if kind == _ERROR:
            raise value
        return DONE

    def close(self) -> None:
        """Stops the background thread (it ends after its current request)."""
        self._stop.set()
        self._finished = True


def interleave(
    readers: List[Tuple[Any, Iterator[Any]]],
    on_error: Callable[[Any, BaseException], bool],
    skip: Callable[[Any], bool] = lambda key: False,
) -> Iterator[Any]:
    """Yields the items of several generators in turns: one item of each, in their order.

    The turns do not depend on timing (which generator's page arrived first), so the same
    data is always converted in the same order and column types settle the same way; the
    generators' background threads keep fetching meanwhile.

    Args:
        readers: (key, generator) pairs.
        on_error: Called with (key, exception) when a generator raises; returns True when the
            error is handled (that generator is dropped), False to re-raise.
        skip: Called before each turn; True drops that generator (e.g. its connection failed).
    """
    active = list(readers)
    try:
        while active:
            for entry in list(active):
                key, reader = entry
                if skip(key):
                    reader.close()  # type: ignore[attr-defined]
                    active.remove(entry)
                    continue
                try:
                    item = next(reader)
                except StopIteration:
                    active.remove(entry)
                    continue
                except Exception as exc:
                    if not on_error(key, exc):
                        raise
                    active.remove(entry)
                    continue
                yield item
    finally:
        for _, reader in active:
            reader.close()  # type: ignore[attr-defined]
