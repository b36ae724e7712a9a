"""Keeps secrets and terminal control sequences out of every message the source writes.

Tokens and client secrets are registered here as soon as the source sees them (configured,
minted or discovered); `scrub` replaces each of them (its `Bearer` form and its URL-encoded
forms included: a server may make a URL carry a token by quoting it in a cursor) wherever it
appears in a text, whatever a server echoes back. Once a secret is registered, every log
record of the process (httpx's and httpcore's debug lines, which show URLs and headers,
included) is scrubbed as it is made. Text that came from a server is also neutralised: control
characters (terminal escapes, line breaks among them) are shown as `\\xNN` escapes, so a hostile
server cannot rewrite the user's terminal.
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
        _scrub_log_records()


_factory_installed = False


def _scrub_log_records() -> None:
    """Wraps the process's log record factory once, so every record is scrubbed as it is
    made, whichever library logs it (called with the lock held)."""
    global _factory_installed
    if _factory_installed:
        return
    _factory_installed = True
    make_record = logging.getLogRecordFactory()

    def scrubbed_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a record that cannot be formatted is left alone
            return record
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        return record

    logging.setLogRecordFactory(scrubbed_record)


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
