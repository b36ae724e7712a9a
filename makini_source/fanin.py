"""Listings on threads, their pages arriving on one queue: the read path's only scheduler.

Each listing (one connection's pages of one entity, or one time slice of them) runs on a
thread of its own and puts its pages on one shared queue; the resource's thread takes them
off in the order they arrive, whichever connection they belong to, so a connection held back
by its rate limit never holds another back. Memory stays bounded: a listing waits while it
has `depth` pages on the queue. At most `max_running` listings run at once; the others wait
for a place, in the order they were added.

The resource's thread sees three kinds of events: a page (`Item`), a listing's error
(`Failure`), and the end of every listing of one owner (`Finished`), after which nothing more
of that owner arrives. Listings of one owner may add more listings of the same owner while
they run (time slices found by a probe).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass
class Item:
    """A value a listing produced."""

    owner: Hashable
    value: Any


@dataclass
class Failure:
    """A listing raised; the owner's other listings are stopped."""

    owner: Hashable
    error: BaseException


@dataclass
class Finished:
    """Every listing of `owner` has ended (or was stopped)."""

    owner: Hashable


Event = Item | Failure | Finished


class _Listing:
    def __init__(self, owner: Hashable, run: Callable[[], Iterator[Any]], name: str, depth: int):
        self.owner = owner
        self.run = run
        self.name = name
        self.room = threading.Semaphore(depth)
        self.thread: threading.Thread | None = None


class FanIn:
    """Runs listings on threads and hands their events to one consumer.

    Args:
        depth: Values a listing may have queued ahead of the consumer.
        max_running: Listings running at once.
    """

    def __init__(self, depth: int = 2, max_running: int = 16) -> None:
        self._depth = max(1, depth)
        self._max_running = max(1, max_running)
        self._queue: queue.Queue[tuple[Any, _Listing | None, Any]] = queue.Queue()
        self._lock = threading.Lock()
        self._waiting: list[_Listing] = []
        self._running = 0
        self._active: dict[Hashable, int] = {}  # listings not yet ended, per owner
        self._open: set[Hashable] = set()  # owners whose `Finished` was not consumed yet
        self._stopped: set[Hashable] = set()
        self._closed = threading.Event()

    def add(self, owner: Hashable, run: Callable[[], Iterator[Any]], name: str) -> None:
        """Adds a listing of `owner`: `run()` returns its iterator, called on its thread.

        Safe to call from a listing's own thread (the owner then cannot finish before the new
        listing has ended).
        """
        listing = _Listing(owner, run, name, self._depth)
        with self._lock:
            if owner in self._stopped or self._closed.is_set():
                return
            self._active[owner] = self._active.get(owner, 0) + 1
            self._open.add(owner)
            self._waiting.append(listing)
            self._start_waiting()

    def stop(self, owner: Hashable) -> None:
        """Stops every listing of `owner` (each ends after its current request)."""
        with self._lock:
            self._stopped.add(owner)
            never_started = [w for w in self._waiting if w.owner == owner]
            self._waiting = [w for w in self._waiting if w.owner != owner]
            for _ in never_started:
                self._end(owner)

    def events(self) -> Iterator[Event]:
        """Every event, as it arrives, until all listings have ended."""
        while True:
            with self._lock:
                if not self._open:
                    return
            kind, listing, value = self._queue.get()
            if kind == "item":
                assert listing is not None
                listing.room.release()
                if listing.owner not in self._stopped:
                    yield Item(listing.owner, value)
            elif kind == "failure":
                assert listing is not None
                if listing.owner not in self._stopped:
                    self.stop(listing.owner)
                    yield Failure(listing.owner, value)
            elif kind == "finished":
                with self._lock:
                    self._open.discard(value)
                yield Finished(value)

    def close(self) -> None:
        """Stops every listing; threads end after their current request."""
        self._closed.set()
        with self._lock:
            self._stopped.update(self._active)
            self._waiting.clear()

    # --- internals ------------------------------------------------------------------------

    def _start_waiting(self) -> None:
        """Starts waiting listings while there is room (called with the lock held)."""
        while self._waiting and self._running < self._max_running:
            listing = self._waiting.pop(0)
            self._running += 1
            listing.thread = threading.Thread(
                target=self._run, args=(listing,), name=listing.name, daemon=True
            )
            listing.thread.start()

    def _run(self, listing: _Listing) -> None:
        try:
            for value in listing.run():
                if not self._put(listing, value):
                    break
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._queue.put(("failure", listing, exc))
        finally:
            with self._lock:
                self._running -= 1
                self._end(listing.owner)
                self._start_waiting()

    def _put(self, listing: _Listing, value: Any) -> bool:
        """Queues a value once the listing has room; False once the listing is stopped."""
        while not listing.room.acquire(timeout=0.2):
            if listing.owner in self._stopped:
                return False
        if listing.owner in self._stopped:
            return False
        self._queue.put(("item", listing, value))
        return True

    def _end(self, owner: Hashable) -> None:
        """One listing of `owner` ended (called with the lock held)."""
        self._active[owner] -= 1
        if self._active[owner] == 0:
            del self._active[owner]
            self._queue.put(("finished", None, owner))
