"""Fault injection rules (set with ``POST /_admin/faults``).

A rule is a JSON object::

    {"kind": "status", "connection": "acme", "entity": "purchase-orders",
     "probability": 0.5, "times": 3, "after": 2, "status": 503, "retry_after": 1}

Matching fields, all optional:

* ``connection``: connection name (account-API requests: ``_account``, or for a token mint
  the connection it is for); ``entity``: the request's label: an entity path
  (``purchase-orders``, ``statuses/invoices``...; matched in both dialects), ``sync-status``
  (v1), ``integrations`` (unified sync status), ``raw-tables``, ``raw-tables/<TABLE>``,
  ``link-token``, ``system-connections``, ``connection-token``. ``*`` matches any run of
  characters (``raw-tables/*``, ``statuses/*``). Omitted = any.
* ``after``: skip the first N matching requests.
* ``times``: fire at most N times.
* ``probability``: fire with this probability (0..1), drawn from an RNG seeded with the
  sandbox seed when the rules are set, so a run is reproducible.

Kinds, by when they act (README, "Faults", has the parameters and examples):

* before the answer: ``delay`` sleeps.
* instead of the answer (the first firing one wins): ``status``, ``html``, ``reset``,
  ``non_json``, ``endless``, ``raw_body`` with ``body``/``body_base64``, ``echo_auth`` with
  ``where`` ``message``, ``headers`` with ``status``.
* on the page's records (list requests): ``bad_record``, ``extra_field``,
  ``repeat_cursor`` (v1 requests with a cursor), ``empty_pages``, ``echo_auth`` with
  ``where`` ``cursor`` (v1).
* on the finished answer, whichever it is: ``raw_body`` with ``append``, ``echo_auth``
  with ``where`` ``request_id``, ``headers``, then ``truncate`` or ``drip`` (the first).
"""

from __future__ import annotations

import base64
import fnmatch
import random
import re
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
    "drip",
    "endless",
    "headers",
    "raw_body",
    "echo_auth",
    "empty_pages",
)
#: statuses a rule may answer with (those the error classes know)
FAULT_STATUSES = (400, 401, 403, 404, 422, 429, 500, 502, 503)
#: where ``echo_auth`` quotes the request's ``Authorization`` value
ECHO_PLACES = ("message", "request_id", "cursor")
#: kinds that need a page of records
LIST_ONLY_KINDS = frozenset({"bad_record", "repeat_cursor", "extra_field", "empty_pages"})

_MATCH_KEYS = {"kind", "connection", "entity", "probability", "times", "after"}
_PARAM_KEYS: dict[str, set[str]] = {
    "status": {"status", "retry_after", "message"},
    "html": {"status"},
    "truncate": {"fraction"},
    "delay": {"seconds"},
    "reset": set(),
    "non_json": {"body", "content_type"},
    "bad_record": {"index", "drop_field", "set_field", "custom_fields", "raw_fields", "target"},
    "repeat_cursor": set(),
    "extra_field": {"field", "value"},
    "drip": {"bytes_per_second"},
    "endless": {"status", "content_type", "max_bytes"},
    "headers": {"headers", "status"},
    "raw_body": {"body", "body_base64", "append", "status", "content_type"},
    "echo_auth": {"where", "status"},
    "empty_pages": set(),
}
_BAD_HEADER_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def _check_params(kind: str, params: dict[str, Any]) -> None:
    """Validate a rule's parameters.

    Raises:
        ValueError: an invalid value.
    """
    status = params.get("status")
    if status is not None and kind != "raw_body" and int(status) not in FAULT_STATUSES:
        raise ValueError(f"status must be one of {', '.join(map(str, FAULT_STATUSES))}")
    if kind == "raw_body" and status is not None and not 200 <= int(status) <= 599:
        raise ValueError("status must be within 200..599")
    if kind == "truncate" and not 0 <= float(params.get("fraction", 0.5)) < 1:
        raise ValueError("fraction must be within [0, 1)")
    if kind == "delay" and float(params.get("seconds", 5)) < 0:
        raise ValueError("seconds must be >= 0")
    if kind == "drip" and float(params.get("bytes_per_second", 10)) <= 0:
        raise ValueError("bytes_per_second must be > 0")
    if kind == "endless" and int(params.get("max_bytes", 0)) < 0:
        raise ValueError("max_bytes must be >= 0 (0: no limit)")
    if kind == "bad_record":
        for name in ("set_field", "custom_fields", "raw_fields"):
            if name in params and not isinstance(params[name], dict):
                raise ValueError(f"{name} must be an object")
        if not any(n in params for n in ("drop_field", "set_field", "custom_fields", "raw_fields")):
            raise ValueError("bad_record needs drop_field, set_field, custom_fields or raw_fields")
        if not all(isinstance(v, str) for v in params.get("raw_fields", {}).values()):
            raise ValueError("raw_fields values are the raw JSON text to send, as strings")
        index = params.get("index", 0)
        if index != "all" and not isinstance(index, int):
            raise ValueError('index must be an integer or "all"')
    if kind == "headers":
        headers = params.get("headers")
        if not isinstance(headers, dict) or not headers:
            raise ValueError("headers needs a non-empty object of header name -> value")
        for name, value in headers.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"invalid header name {name!r}")
            if value is not None and (
                not isinstance(value, (str, int, float)) or _BAD_HEADER_VALUE.search(str(value))
            ):
                raise ValueError(f"header {name}: a string or number without control characters")
    if kind == "raw_body":
        given = [n for n in ("body", "body_base64", "append") if n in params]
        if len(given) != 1:
            raise ValueError("raw_body needs exactly one of body, body_base64, append")
        if "body_base64" in params:
            base64.b64decode(str(params["body_base64"]), validate=True)
    if kind == "echo_auth":
        places = echo_places(params)
        if not places or not set(places) <= set(ECHO_PLACES):
            raise ValueError(f"where must be one or more of {', '.join(ECHO_PLACES)}")


def echo_places(params: dict[str, Any]) -> tuple[str, ...]:
    """Where an ``echo_auth`` rule quotes the ``Authorization`` value (default ``message``)."""
    where = params.get("where", "message")
    return (where,) if isinstance(where, str) else tuple(where)


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
        _check_params(kind, params)
        return cls(
            kind=kind,
            connection=data.get("connection"),
            entity=data.get("entity"),
            probability=None if prob is None else float(prob),
            times=None if times is None else int(times),
            after=after,
            params=params,
        )

    @property
    def replaces(self) -> bool:
        """This rule answers instead of the request's handler."""
        kind, params = self.kind, self.params
        if kind in ("status", "html", "reset", "non_json", "endless"):
            return True
        if kind == "raw_body":
            return "append" not in params
        if kind == "echo_auth":
            return "message" in echo_places(params)
        return kind == "headers" and "status" in params

    def applies(self, connection: str, entity: str, is_list: bool, has_cursor: bool) -> bool:
        """Whether this rule concerns a request (before counting and probability)."""
        if self.connection is not None and self.connection != connection:
            return False
        if self.entity is not None and not fnmatch.fnmatchcase(entity, self.entity):
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
