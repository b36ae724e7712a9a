"""Keeps secrets and terminal control sequences out of every message the source writes.

Tokens and client secrets are registered here as soon as the source sees them (configured,
minted or discovered); `scrub` replaces each of them (its `Bearer` form and its URL-encoded
forms included) wherever it appears in a text, whatever a server echoes back. Text that came
from a server is also neutralised: control characters (terminal escapes among them) are shown
as `\\xNN` escapes, so a hostile server cannot rewrite the user's terminal. `scrub_logs` puts
the same scrubbing on the log records of this package, httpx and httpcore (whose request lines
show URLs, and a server can make a URL carry a token by quoting it in a cursor; whose DEBUG
lines show response headers).
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any
from urllib.parse import quote, quote_plus

REDACTED = "***"
# secrets shorter than this are not scrubbed by substring (they would blank ordinary words);
# configuration refuses them anyway
_MIN_SECRET_LENGTH = 6
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
# loggers whose records are scrubbed (a filter applies to records of its own logger only, so
# httpcore's are named one by one: their DEBUG lines show response headers, a request id
# quoting the token among them)
_SCRUBBED_LOGGERS = (
    "makini_source",
    "httpx",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
)

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None


def register_secret(value: str | None) -> None:
    """Scrub `value` from every message from now on (a no-op for empty values)."""
    global _pattern
    if not value or len(value) < _MIN_SECRET_LENGTH:
        return
    with _lock:
        if value in _secrets:
            return
        # as sent in a query string too (a server may echo a token into a cursor)
        _secrets.update({value, quote(value, safe=""), quote_plus(value)})
        # longest first, so a secret that contains another is replaced whole
        alternatives = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(secret) for secret in alternatives))


def scrub(text: str) -> str:
    """`text` with every registered secret replaced by `***`."""
    pattern = _pattern
    if pattern is None or not text:
        return text
    return pattern.sub(REDACTED, text)


def neutralize(text: str) -> str:
    """`text` with its control characters (terminal escapes, NUL, line breaks...) shown as
    `\\xNN`: a server's text stays on the line it is quoted in. Tabs stay."""
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def server_text(text: str, limit: int = 300) -> str:
    """Text a server sent, safe to print: secrets scrubbed, control characters escaped, and cut
    to `limit` characters."""
    text = neutralize(scrub(text))
    return text if len(text) <= limit else text[:limit] + "..."


def shown(value: Any, limit: int = 80) -> str:
    """A value from a record, for an error message: its `repr`, scrubbed and cut to `limit`
    characters (a bad value may be megabytes long)."""
    return server_text(repr(value), limit)


class _ScrubFilter(logging.Filter):
    """Scrubs registered secrets from a log record's message."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _pattern is None:
            return True
        message = record.getMessage()
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


_filter = _ScrubFilter()


def scrub_logs() -> None:
    """Puts the scrubbing filter on this package's and httpx's loggers (idempotent)."""
    for name in _SCRUBBED_LOGGERS:
        logger = logging.getLogger(name)
        if _filter not in logger.filters:
            logger.addFilter(_filter)
