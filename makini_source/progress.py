"""Progress of a run: which step it is in (extract, normalize, load) with that step's counters.

A dlt progress collector (`dlt.pipeline(progress=RunProgress(...))`): dlt tells it when each
step starts and stops and counts files, rows and load jobs; while extracting, the line shows
what the connections have read and requested (`counters.py`). On a terminal one line of at
most 80 columns updates in place (rich's `Live`) and each finished step leaves its last line;
elsewhere (logs, CI) the line is written every `log_every` seconds and when a step ends.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import defaultdict
from typing import IO, Any

from dlt.common.runtime.collector import Collector
from rich.console import Console
from rich.live import Live
from rich.text import Text
from typing_extensions import Self

from makini_source.counters import connection_counters

WIDTH = 80


class RunProgress(Collector):
    """One status line per step of a pipeline run.

    Args:
        source: The `makini_source` being run (its connections' counters show while extracting);
            set later with `watch`.
        stream: Where to write (default stderr).
        enabled: False counts nothing and writes nothing.
        log_every: Seconds between lines when `stream` is not a terminal.
        terminal: Override terminal detection (tests).
    """

    def __init__(
        self,
        source: Any = None,
        *,
        stream: IO[str] | None = None,
        enabled: bool = True,
        log_every: float = 10.0,
        terminal: bool | None = None,
    ) -> None:
        self.step = ""
        self._source = source
        self._stream = stream or sys.stderr
        self._enabled = enabled
        self._log_every = log_every
        self._terminal = self._stream.isatty() if terminal is None else terminal
        self._phase = ""
        self._started = time.monotonic()
        self._counts: dict[str, int] = defaultdict(int)
        self._totals: dict[str, int] = {}
        self._live: Live | None = None
        self._last_line = ""
        self._stop_logging = threading.Event()
        self._logger: threading.Thread | None = None

    def watch(self, source: Any) -> Self:
        """Shows `source`'s connection counters while extracting."""
        self._source = source
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> RunProgress:
        # dlt copies the collector into pipelines it derives (pipeline.drop()); the source,
        # with its clients and locks, stays with this one
        return RunProgress(
            stream=self._stream,
            enabled=self._enabled,
            log_every=self._log_every,
            terminal=self._terminal,
        )

    # --- dlt's Collector interface ----------------------------------------------------------

    def update(
        self,
        name: str,
        inc: int = 1,
        total: int | None = None,
        inc_total: int | None = None,
        message: str | None = None,
        label: str | None = None,
    ) -> None:
        """Counts `inc` more of `name` (a table's rows, "Files", "Jobs"); dlt calls it."""
        key = f"{name}:{label}" if label else name
        self._counts[key] += inc
        if total is not None:
            self._totals[key] = total
        if inc_total:
            self._totals[key] = self._totals.get(key, 0) + inc_total

    def _start(self, step: str) -> None:
        phase = step.split(" ", 1)[0].lower()  # "Normalize makini in 17..." -> normalize
        if phase != self._phase:
            # dlt extracts the pipeline state in a step of its own: one line per phase
            self._write_last_line()
            self._phase = phase
            self._started = time.monotonic()
            self._counts = defaultdict(int)
            self._totals = {}
        if not self._enabled:
            return
        if self._terminal:
            console = Console(
                file=self._stream, width=self._width(), highlight=False, force_terminal=True
            )
            self._live = Live(
                console=console,
                get_renderable=self._renderable,
                refresh_per_second=4,
                transient=True,
            )
            self._live.start()
        else:
            self._stop_logging.clear()
            self._logger = threading.Thread(
                target=self._log_periodically, name="makini-progress", daemon=True
            )
            self._logger.start()

    def _stop(self) -> None:
        if not self._enabled:
            return
        if self._live is not None:
            self._live.stop()
            self._live = None
        if self._logger is not None:
            self._stop_logging.set()
            self._logger.join()
            self._logger = None
        self._last_line = self.line()
        if self._phase == "load":  # the last step of a run (or of a pending package)
            self._write_last_line()

    def _write_last_line(self) -> None:
        """Leaves the finished phase's figures on screen / in the log."""
        if self._last_line:
            self._write(self._last_line)
            self._last_line = ""

    # --- the line ---------------------------------------------------------------------------

    def line(self) -> str:
        """The current status line, at most 80 characters."""
        elapsed = time.monotonic() - self._started
        text = f"{self._phase or 'starting':<9} {elapsed:6.1f}s  {self._details()}"
        return text if len(text) <= WIDTH else text[: WIDTH - 1] + "…"

    def _details(self) -> str:
        if self._phase == "extract":
            return self._extract_details()
        if self._phase == "normalize":
            rows = sum(n for k, n in self._counts.items() if k != "Files")
            return f"files {self._progress('Files')}  rows {rows:,}"
        if self._phase == "load":
            failed = self._counts.get("Jobs:Failed", 0)
            return f"jobs {self._progress('Jobs')}" + (f"  failed {failed}" if failed else "")
        return ""

    def _extract_details(self) -> str:
        if self._source is None:
            return f"rows {sum(self._counts.values()):,}"
        counters = connection_counters(self._source)
        rows = sum(sum(c.rows.values()) for c in counters)
        details = f"rows {rows:,}  requests {sum(c.requests for c in counters):,}"
        waiting = max((c.waiting_seconds for c in counters), default=0.0)
        if waiting >= 1:
            # a hold the server asked for (rate limit, Retry-After) or a long backoff: say so
            # while it lasts (up front: the line is cut at 80 columns)
            details += f"  waiting {waiting:.0f}s"
        details += (
            f"  retries {sum(c.retries for c in counters):,}"
            f"  429s {sum(c.rate_limited for c in counters):,}"
            f"  throttled {sum(c.throttle_seconds for c in counters):.0f}s"
        )
        backoff = sum(c.backoff_seconds for c in counters)
        failed = sum(c.failure is not None for c in counters)
        details += f"  backoff {backoff:.0f}s" if backoff >= 1 else ""
        return details + (f"  failed {failed}" if failed else "")

    def _progress(self, key: str) -> str:
        total = self._totals.get(key)
        return f"{self._counts.get(key, 0)}/{total}" if total else f"{self._counts.get(key, 0)}"

    def _renderable(self) -> Text:
        return Text(self.line(), no_wrap=True, overflow="ellipsis")

    def _width(self) -> int:
        return min(WIDTH, Console(file=self._stream).width)

    def _write(self, line: str) -> None:
        self._stream.write(line + "\n")
        self._stream.flush()

    def _log_periodically(self) -> None:
        while not self._stop_logging.wait(self._log_every):
            self._write(self.line())
