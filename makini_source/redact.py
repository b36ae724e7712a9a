"""Keeps secrets and terminal control sequences out of every message the source writes.

Tokens and client secrets are registered here as soon as the source sees them (configured,
minted or discovered); `scrub` replaces each of them (and its `Bearer` form) wherever it
appears in a text, whatever a server echoes back. Once a secret is registered, every log
record of the process (httpx's and httpcore's debug lines, which show headers, included) is
scrubbed as it is made. Text that came from a server is also
neutralised: control characters (terminal escapes among them) are shown as `\\xNN` escapes,
so a hostile server cannot rewrite the user's terminal.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

REDACTED = "***"
# secrets shorter than this are not scrubbed by substring (they would blank ordinary words);
# configuration refuses them anyway
_MIN_SECRET_LENGTH = 6
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

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
        _secrets.add(value)
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


def server_text(text: str, limit: int = 300) -> str:
    """Text a server sent, safe to print: secrets scrubbed, control characters escaped, and cut
    to `limit` characters."""
    text = scrub(text)
    text = _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)
    return text if len(text) <= limit else text[:limit] + "..."
