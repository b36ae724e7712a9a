"""JSON for values orjson refuses or changes: integers beyond 64 bits, ``NaN``, lone surrogates.

The admin API reads bodies with the standard library (orjson turns an integer beyond int64
into a float), and records that fault rules or admin writes alter are written with
:func:`dumps`, so ``{"set_field": {"amount": 123456789012345678901234567890}}`` arrives
digit for digit.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson


def loads(raw: bytes) -> Any:
    """Parse JSON exactly: big integers stay integers, ``NaN``/``Infinity`` are accepted."""
    return json.loads(raw)


def dumps(value: Any) -> bytes:
    """Compact JSON of any value :func:`loads` can return.

    orjson when it can take the value unchanged; otherwise (big integers, non-finite floats,
    lone surrogates) the standard library, which writes ``NaN``/``Infinity`` literals and
    escapes a lone surrogate as ``\\udXXX``.
    """
    if not _needs_stdlib(value):
        try:
            return orjson.dumps(value)
        except (TypeError, orjson.JSONEncodeError):
            pass
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: send it escaped
        return json.dumps(value, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _needs_stdlib(value: Any) -> bool:
    """Whether ``value`` holds a float orjson would write as ``null`` (NaN, Infinity)."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_needs_stdlib(v) for v in value.values())
    if isinstance(value, list):
        return any(_needs_stdlib(v) for v in value)
    return False


__all__ = ["dumps", "loads"]
