"""Fault injection rules (set with ``POST /_admin/faults``).

A rule is a JSON object::

    {"kind": "status", "connection": "acme", "entity": "purchase-orders",
     "probability": 0.5, "times": 3, "after": 2, "status": 503, "retry_after": 1}

Matching fields, all optional:

* ``connection``: connection name; ``entity``: entity path (``purchase-orders``...; matched
  in both dialects), ``sync-status`` (v1) or ``integrations`` (unified sync status).
  Omitted = any.
* ``after``: skip the first N matching requests.
* ``times``: fire at most N times.
* ``probability``: fire with this probability (0..1), drawn from an RNG seeded with the
  sandbox seed when the rules are set, so a run is reproducible.

Kinds:

* ``status``: answer ``status`` (500, 502 or 503; default 503) with the dialect's error
  body for that status (v1: the contract's JSON error, ``INTERNAL_ERROR``,
  ``CONNECTED_SYSTEM_ERROR``, ``SERVICE_UNAVAILABLE``; unified: Laravel's ``{"message": ...}``,
  ``message`` if the rule gives one); ``retry_after`` (seconds) adds a ``Retry-After`` header.
  400/401/403/404/429 are accepted as well.
* ``html``: 502 with a proxy's HTML error page (``text/html``).
* ``truncate``: 200 whose body is the real page cut after ``fraction`` (default 0.5) of its
  bytes; ``Content-Length`` announces the full body and the connection is closed early, so the
  client sees an incomplete body.
* ``delay``: sleep ``seconds`` (default 5) before answering normally (client timeouts).
* ``reset``: drop the connection without any response (TCP reset).
* ``non_json``: 200 whose body is not JSON: ``body`` (default a short text) with
  ``content_type`` (default ``application/json``).
* ``bad_record``: 200 with record ``index`` (default 0) of the page altered: ``drop_field``
  (e.g. ``"key"``) removes a field, ``set_field`` (e.g. ``{"updatedAt": "not-a-time"}`` or
  ``{"totalNetValue": "12,5"}``) overwrites fields. List endpoints only.
* ``repeat_cursor``: the page's ``next_cursor`` equals the cursor it was requested with.
  Only requests that carry a cursor match.
* ``extra_field``: adds ``field`` (default ``"unexpectedField"``) with ``value`` (default
  ``"surprise"``) to every record of the page. List endpoints only.

Several rules may fire on one request: ``delay`` rules sleep first; then the first firing
``status``/``html``/``reset``/``non_json`` rule answers; otherwise the page is built and every
firing ``truncate``/``bad_record``/``repeat_cursor``/``extra_field`` rule is applied to it.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import Any

KINDS = (
    "status",
    "html",
    "truncate",
    "delay",
    "reset",
    "non_json",
    "bad_record",
    "repeat_cursor",
    "extra_field",
)
#: kinds that replace the response entirely
PRE_KINDS = frozenset({"status", "html", "reset", "non_json"})
#: kinds that need a page of records
LIST_ONLY_KINDS = frozenset({"bad_record", "repeat_cursor", "extra_field"})

_MATCH_KEYS = {"kind", "connection", "entity", "probability", "times", "after"}
_PARAM_KEYS: dict[str, set[str]] = {
    "status": {"status", "retry_after", "message"},
    "html": {"status"},
    "truncate": {"fraction"},
    "delay": {"seconds"},
    "reset": set(),
    "non_json": {"body", "content_type"},
    "bad_record": {"index", "drop_field", "set_field"},
    "repeat_cursor": set(),
    "extra_field": {"field", "value"},
}


@dataclass
class FaultRule:
    """One fault rule; see the module docstring for the fields."""

    kind: str
    connection: str | None = None
    entity: str | None = None
    probability: float | None = None
    times: int | None = None
    after: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    matched: int = 0
    fired: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultRule:
        """Validate and build a rule.

        Raises:
            ValueError: unknown kind or keys, or invalid values.
        """
        if not isinstance(data, dict):
            raise TypeError("a fault rule must be an object")
        kind = data.get("kind")
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {', '.join(KINDS)}")
        unknown = set(data) - _MATCH_KEYS - _PARAM_KEYS[kind]
        if unknown:
            raise ValueError(f"unknown keys for kind {kind!r}: {sorted(unknown)}")
        params = {k: v for k, v in data.items() if k in _PARAM_KEYS[kind]}
        prob = data.get("probability")
        if prob is not None and not 0 <= float(prob) <= 1:
            raise ValueError("probability must be within 0..1")
        times = data.get("times")
        if times is not None and int(times) < 0:
            raise ValueError("times must be >= 0")
        after = int(data.get("after") or 0)
        if (
            kind in ("status", "html")
            and "status" in params
            and int(params["status"]) not in (400, 401, 403, 404, 429, 500, 502, 503)
        ):
            raise ValueError("status must be one of 400, 401, 403, 404, 429, 500, 502, 503")
        if kind == "truncate" and not 0 <= float(params.get("fraction", 0.5)) < 1:
            raise ValueError("fraction must be within [0, 1)")
        if kind == "delay" and float(params.get("seconds", 5)) < 0:
            raise ValueError("seconds must be >= 0")
        if kind == "bad_record":
            sf = params.get("set_field")
            if sf is not None and not isinstance(sf, dict):
                raise ValueError("set_field must be an object")
            if "drop_field" not in params and sf is None:
                raise ValueError("bad_record needs drop_field or set_field")
        return cls(
            kind=kind,
            connection=data.get("connection"),
            entity=data.get("entity"),
            probability=None if prob is None else float(prob),
            times=None if times is None else int(times),
            after=after,
            params=params,
        )

    def applies(self, connection: str, entity: str, is_list: bool, has_cursor: bool) -> bool:
        """Whether this rule concerns a request (before counting and probability)."""
        if self.connection is not None and self.connection != connection:
            return False
        if self.entity is not None and self.entity != entity:
            return False
        if self.kind in LIST_ONLY_KINDS and not is_list:
            return False
        return not (self.kind == "repeat_cursor" and not has_cursor)

    def describe(self) -> dict[str, Any]:
        """The rule and its counters as a JSON-able dict."""
        out: dict[str, Any] = {"kind": self.kind}
        for name in ("connection", "entity", "probability", "times"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.after:
            out["after"] = self.after
        out.update(self.params)
        out["matched"] = self.matched
        out["fired"] = self.fired
        return out


class FaultEngine:
    """The current fault rules and their seeded random source.

    Args:
        seed: seed of the probability draws.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._lock = threading.Lock()
        self.rules: list[FaultRule] = []
        self._rng = random.Random(seed)

    def set_rules(self, rules: list[dict[str, Any]]) -> None:
        """Replace all rules (and reseed the RNG).

        Raises:
            ValueError: an invalid rule.
        """
        if not isinstance(rules, list):
            raise TypeError("rules must be an array")
        parsed = [FaultRule.from_dict(r) for r in rules]
        with self._lock:
            self.rules = parsed
            self._rng = random.Random(self.seed)

    def clear(self) -> None:
        """Remove all rules."""
        with self._lock:
            self.rules = []

    def fire(
        self, connection: str, entity: str, *, is_list: bool, has_cursor: bool
    ) -> list[FaultRule]:
        """The rules that fire for one request, in rule order (counters are updated)."""
        if not self.rules:
            return []
        out = []
        with self._lock:
            for rule in self.rules:
                if not rule.applies(connection, entity, is_list, has_cursor):
                    continue
                rule.matched += 1
                if rule.matched <= rule.after:
                    continue
                if rule.times is not None and rule.fired >= rule.times:
                    continue
                if rule.probability is not None and self._rng.random() >= rule.probability:
                    continue
                rule.fired += 1
                out.append(rule)
        return out

    def describe(self) -> list[dict[str, Any]]:
        """All rules with counters."""
        with self._lock:
            return [r.describe() for r in self.rules]
