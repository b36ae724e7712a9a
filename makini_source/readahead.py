"""Fetching pages ahead on background threads, so HTTP overlaps converting and loading.

While a resource converts one page to Arrow (and dlt writes it), the next request of the
same listing is already on its way on a small background thread. Listings of several
connections run at the same time: each connection is paced by its own rate limiter, so a
run over N rate-limited connections uses all N limits at once instead of one after the
other. Memory stays bounded: a listing holds at most `depth + 1` pages ahead of its consumer.

Only HTTP and parsing (straight into Arrow, see `columnar.py`) run on the background threads;
conversion, dlt state and schema access stay on the resource's own thread. Connections take turns page by page among those
whose next page has arrived, so a connection held back by a low rate limit never slows
another one.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

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
        self._queue: queue.Queue[tuple[int, Any]] = queue.Queue(maxsize=max(1, depth))
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

    def _put(self, item: tuple[int, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
            except queue.Full:
                continue
            return True
        return False

    def next(self) -> T | _Marker:
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

    def ready(self) -> bool:
        """True when `next` would not wait: a page, the end or an error is queued."""
        return self._finished or not self._queue.empty()

    def close(self) -> None:
        """Stops the background thread (it ends after its current request)."""
        self._stop.set()
        self._finished = True


class ReadAheadGroup(Generic[T]):
    """Several `ReadAhead`s read as one: each page as it arrives, in turns among them.

    Used for a listing read in time slices at once; pages of different slices interleave.
    """

    def __init__(self, readers: list[ReadAhead[T]], poll_seconds: float = 0.002) -> None:
        self._readers = list(readers)
        self._turn = 0
        self._poll = poll_seconds

    def next(self) -> T | _Marker:
        """The next page of any reader (waiting for one), or `DONE` once all ended.

        Raises:
            Exception: Whatever a reader's page iterator raised.
        """
        while self._readers:
            for offset in range(len(self._readers)):
                index = (self._turn + offset) % len(self._readers)
                reader = self._readers[index]
                if not reader.ready():
                    continue
                page = reader.next()
                if page is DONE:
                    del self._readers[index]
                    self._turn = index
                    break
                self._turn = index + 1
                return page
            else:
                time.sleep(self._poll)
        return DONE

    def ready(self) -> bool:
        """True when `next` would not wait."""
        return not self._readers or any(reader.ready() for reader in self._readers)

    def close(self) -> None:
        """Stops every reader's thread."""
        for reader in self._readers:
            reader.close()


def interleave(
    readers: list[tuple[Any, Iterator[Any]]],
    on_error: Callable[[Any, BaseException], bool],
    skip: Callable[[Any], bool] = lambda key: False,
    ready: Callable[[Any], bool] = lambda key: True,
    poll_seconds: float = 0.002,
) -> Iterator[Any]:
    """Yields the items of several generators in turns, taking only generators that are ready.

    Turns go round robin among the generators whose next item is at hand (`ready`), so one
    that waits (say, on its connection's rate limit) never holds the others back, and none
    starves another.

    Args:
        readers: (key, generator) pairs.
        on_error: Called with (key, exception) when a generator raises; returns True when the
            error is handled (that generator is dropped), False to re-raise.
        skip: Called before each turn; True drops that generator (e.g. its connection failed).
        ready: Whether the generator of `key` can yield without waiting.
        poll_seconds: How long to sleep when no generator is ready.
    """
    active = list(readers)
    turn = 0
    try:
        while active:
            chosen = None
            for offset in range(len(active)):
                index = (turn + offset) % len(active)
                key, _ = active[index]
                if skip(key) or ready(key):
                    chosen = index
                    break
            if chosen is None:
                time.sleep(poll_seconds)
                continue
            key, reader = active[chosen]
            turn = chosen + 1
            if skip(key):
                reader.close()  # type: ignore[attr-defined]
                del active[chosen]
                turn = chosen
                continue
            try:
                item = next(reader)
            except StopIteration:
                del active[chosen]
                turn = chosen
                continue
            except Exception as exc:
                if not on_error(key, exc):
                    raise
                del active[chosen]
                turn = chosen
                continue
            yield item
    finally:
        for _, reader in active:
            reader.close()  # type: ignore[attr-defined]
