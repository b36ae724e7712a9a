"""The command line's error messages: one or two lines naming the setting, what was given and
what is expected, and never a secret.

`describe` turns an exception into such a message and the exit status: 2 for a configuration
or input mistake, 1 for a failed load or anything unexpected. `redact` removes every configured
token from a text (a traceback under `--debug`, an unexpected error's message), whatever shape
the configuration has: a JSON object, a list, a bare string, malformed JSON.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any

from dlt.common.configuration.exceptions import (
    ConfigFieldMissingException,
    ConfigValueCannotBeCoercedException,
    InvalidNativeValue,
    LookupTraces,
)
from dlt.destinations.exceptions import DatabaseUndefinedRelation
from dlt.pipeline.exceptions import PipelineStepFailed

from makini_source.exceptions import ConfigurationError, LoadFailed, MakiniError
from makini_source.redact import scrub

USAGE_ERROR = 2
RUN_FAILED = 1

CONNECTIONS_SHAPE = (
    'a JSON object of connection name to token, e.g. SOURCES__MAKINI__CONNECTIONS=\'{"acme": '
    '"<token>"}\' or [sources.makini.connections] acme = "<token>" in .dlt/secrets.toml'
)
# settings whose values are secrets: never shown, and redacted from any text printed
SECRET_SETTINGS = ("connections", "api_token")
_SECRET_ENV = ("SOURCES__MAKINI__CONNECTIONS", "SOURCES__MAKINI__API_TOKEN")
_MIN_SECRET = 6  # shorter words of a secret value are not worth redacting (and too common)
_WORD = r"[A-Za-z0-9_\-.~+/=]+"


class UsageError(MakiniError):
    """A command-line input the program cannot use (exit status 2)."""


def describe(exc: BaseException) -> tuple[str, int]:
    """The message to print for `exc` and the exit status."""
    cause = root_cause(exc)
    if isinstance(cause, (UsageError, ConfigurationError)):
        return str(cause), USAGE_ERROR
    if isinstance(cause, ConfigValueCannotBeCoercedException):
        return _cannot_coerce(cause), USAGE_ERROR
    if isinstance(cause, ConfigFieldMissingException):
        return _missing(cause), USAGE_ERROR
    if isinstance(cause, InvalidNativeValue):
        setting = ".".join(cause.embedded_sections) or cause.spec.__name__
        inner = _first_line(cause.inner_exception) if cause.inner_exception else "invalid"
        message = (
            f"setting {setting} ({cause.spec.__name__}) cannot be read from the "
            f"{cause.native_value_type.__name__} given (not shown, it may be a secret): {inner}"
        )
        return message, USAGE_ERROR
    if isinstance(cause, DatabaseUndefinedRelation):
        message = (
            f"the dataset has no such table yet ({_first_line(cause)}); load it first with "
            "`makini-pipeline run`"
        )
        return message, USAGE_ERROR
    if isinstance(cause, (LoadFailed, MakiniError)):
        return str(cause), RUN_FAILED
    step = f" ({exc.step} step)" if isinstance(exc, PipelineStepFailed) else ""
    return f"{type(cause).__name__}{step}: {_first_line(cause)}", RUN_FAILED


def root_cause(exc: BaseException) -> BaseException:
    """The error behind dlt's wrappers (`PipelineStepFailed`, resource extraction errors)."""
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (MakiniError, ConfigValueCannotBeCoercedException, InvalidNativeValue)):
            return exc
        inner = getattr(exc, "exception", None) if isinstance(exc, PipelineStepFailed) else None
        inner = inner or exc.__cause__
        if inner is None:
            return exc
        exc = inner
    return exc


def redact(text: str) -> str:
    """`text` with every configured secret value replaced by `***`, and every secret the
    source registered (minted tokens too: `redact.scrub`)."""
    for secret in sorted(set(_secret_words()), key=len, reverse=True):
        text = text.replace(secret, "***")
    return scrub(text)


def _cannot_coerce(exc: ConfigValueCannotBeCoercedException) -> str:
    field = exc.field_name
    if field == "connections":
        return (
            f"sources.makini.connections must be {CONNECTIONS_SHAPE}; got {_shape(exc.field_value)}"
        )
    if field in SECRET_SETTINGS or "credentials" in field or "password" in field:
        shape, expected = _shape(exc.field_value), _type_name(exc.hint)
        return f"setting {field} has the wrong type ({shape}); expected {expected}"
    return f"setting {field} is {exc.field_value!r}; expected {_type_name(exc.hint)}"


def _missing(exc: ConfigFieldMissingException) -> str:
    fields = []
    for field, traces in exc.traces.items():
        nested = [t for t in traces if isinstance(t, LookupTraces)]
        inner = f" ({', '.join(nested[0].traces)})" if nested else ""
        fields.append(f"{field}{inner}")
    config = exc.config
    destination = getattr(config, "destination_name", None) or getattr(
        config, "destination_type", None
    )
    if destination:
        name = str(destination).rsplit(".", 1)[-1]
        return (
            f"missing configuration of destination {name}: {', '.join(fields)}; set "
            f"DESTINATION__{name.upper()}__CREDENTIALS (a connection string) or "
            f"[destination.{name}.credentials] in .dlt/secrets.toml"
        )
    return (
        f"missing configuration of {exc.spec_name}: {', '.join(fields)}; set it in "
        ".dlt/secrets.toml or .dlt/config.toml (`makini-pipeline init` writes both) or in "
        "the environment"
    )


def _shape(value: Any) -> str:
    """Describes a configured value by its shape only (never its content)."""
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            if value.strip()[:1] in ("{", "["):
                return f"text that is not valid JSON ({exc.args[0].split(':')[0]})"
            return "a plain string"
        value = parsed
    if isinstance(value, dict):
        bad = [name for name, token in value.items() if not isinstance(token, str)]
        if bad:
            return f"an object whose entry {bad[0]!r} is not a string"
        return "an object"
    if isinstance(value, list):
        return f"a list of {len(value)} item(s)"
    return f"a {type(value).__name__}"


def _type_name(hint: Any) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= 300 else line[:297] + "..."


def _secret_words() -> Iterator[str]:
    """The strings of the configured secret settings: each token of a well-formed value; every
    word-like part of a malformed one (its names and tokens cannot be told apart)."""
    for raw in _secret_values():
        for text, malformed in _leaves(raw):
            if len(text) >= _MIN_SECRET:
                yield text
            if malformed:
                yield from (w for w in re.findall(_WORD, text) if len(w) >= _MIN_SECRET)


def _secret_values() -> Iterator[Any]:
    for name in _SECRET_ENV:
        if os.environ.get(name):
            yield os.environ[name]
    try:
        import dlt

        for setting in SECRET_SETTINGS:
            for provider in dlt.secrets.config_providers:
                value, _ = provider.get_value(setting, Any, None, "sources", "makini")
                if value is not None:
                    yield value
    except Exception:  # noqa: BLE001 - a broken provider must not hide the error being reported
        return


def _leaves(value: Any) -> Iterator[tuple[str, bool]]:
    """(string, is it malformed JSON) for every value string of a secret setting."""
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            yield value, True
            return
        yield from _leaves(parsed) if not isinstance(parsed, str) else [(parsed, False)]
    elif isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _leaves(item)
    elif value is not None:
        yield str(value), False
