"""Answer bodies parsed strictly and exactly, and described when they do not parse.

JSON as RFC 8259 defines it, whichever parser reads it:

* `NaN`, `Infinity` and `-Infinity` are not JSON: a body holding them is refused (pyarrow's
  reader and Python's `json` would accept them, orjson does not).
* Integers keep every digit: orjson reads an integer beyond 64 bits as a float, so a body
  with such a literal is read again with Python's `json`, which keeps it whole.
* Invalid UTF-8, lone surrogates and trailing garbage are refused (orjson).

A body that arrived whole but does not parse is a contract violation (another try would get
the same bytes); `describe_error` says where it breaks, with the text around that place made
safe to print.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import orjson

from makini_source.redact import server_text

# an integer literal of 19+ digits may not fit 64 bits (found as a run of "0"s once every
# digit is mapped to "0": two C-speed passes, where a regular expression takes ~20 ms a page)
_DIGITS_AS_ZEROS = bytes.maketrans(b"0123456789", b"0" * 10)
_LONG_DIGIT_RUN = b"0" * 19
# a non-JSON literal some parsers accept (`NaN`, `Inf`, `Infinity`), at a value's place
_NON_FINITE = re.compile(rb"[\[:,]\s*-?(?:NaN|Inf)")
# how much of the body around a parse error is shown
_CONTEXT_BYTES = 40


class InvalidJSON(ValueError):
    """The body is not strict JSON; the message says where and why."""


def _has_long_integer(body: bytes) -> bool:
    return _LONG_DIGIT_RUN in body.translate(_DIGITS_AS_ZEROS)


def loads(body: bytes, exact_numbers: bool = False) -> Any:
    """Parses a body as strict JSON, integers exact.

    Args:
        body: The body.
        exact_numbers: Read numbers with a fraction as `Decimal` (not float).

    Raises:
        InvalidJSON: The body is not strict JSON.
    """
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidJSON(describe_error(body, exc)) from None
    if exact_numbers or _has_long_integer(body):
        # valid strict JSON (orjson said so): read again keeping every digit
        return json.loads(
            body, parse_float=Decimal if exact_numbers else float, parse_constant=_refuse
        )
    return parsed


def describe_error(body: bytes, exc: Exception) -> str:
    """Where and why a body does not parse, with the bytes around that place (secrets
    scrubbed, control characters escaped)."""
    position = getattr(exc, "pos", None)
    reason = str(getattr(exc, "msg", None) or exc).split(":", 1)[0]
    if not isinstance(position, int):
        return f"not valid JSON ({server_text(reason)}, {len(body):,} bytes)"
    # the parser counts characters; the bytes before them may hold multi-byte ones
    text = body.decode("utf-8", errors="surrogateescape")
    position = len(text[:position].encode("utf-8", errors="surrogateescape"))
    window = body[max(0, position - _CONTEXT_BYTES) : position + _CONTEXT_BYTES]
    near = server_text(window.decode("utf-8", errors="backslashreplace"), limit=3 * _CONTEXT_BYTES)
    if _NON_FINITE.match(b"," + body[position : position + 9].lstrip(b"-")):
        reason = "NaN and Infinity are not JSON numbers"
    elif position >= len(body.rstrip()) - 1 and position > 0 and body.strip():
        reason = f"{reason} (the body ends there)"
    return f'not valid JSON at byte {position:,} of {len(body):,}: {server_text(reason)}, near "{near}"'


def _refuse(literal: str) -> Any:
    raise InvalidJSON(f"not valid JSON: {literal} is not a JSON number")
