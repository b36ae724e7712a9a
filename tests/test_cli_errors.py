"""Configuration and input mistakes: one or two lines naming the setting, what was given (never a
token) and what is expected; exit status 2; a traceback only with --debug."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import Sandbox, run_captured

from makini_source.cli import main

REPO = Path(__file__).resolve().parents[1]
TOKEN = "mk_live_SECRET_7f3a9c2e51"


def _args(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "--pipelines-dir",
        str(tmp_path / "p"),
        "--duckdb-path",
        str(tmp_path / "e.duckdb"),
        "--pipeline-name",
        "errors_test",
        "--no-progress",
        *extra,
    ]


def run_cli(argv: list[str], capsys: Any) -> tuple[int, str]:
    code = main(argv)
    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err
    return code, captured.err


# (environment, arguments, what the message must say)
CASES: dict[str, tuple[dict[str, str | None], list[str], list[str]]] = {
    "http to a non-loopback host": (
        {"SOURCES__MAKINI__BASE_URL": "http://makini.example.com"},
        [],
        ["base_url", "http://makini.example.com", "https"],
    ),
    "bad start date": ({}, ["--start-date", "2024-13-45"], ["--start-date", "2024-13-45"]),
    "bad date in config": (
        {"SOURCES__MAKINI__END_DATE": "yesterday"},
        [],
        ["sources.makini.end_date", "yesterday", "2024-01-31"],
    ),
    "unknown entity": ({}, ["--entities", "vendorz"], ["vendorz", "did you mean vendors"]),
    "unknown entity in config": (
        {"SOURCES__MAKINI__ENTITIES": '["vendorz"]'},
        [],
        ["vendorz", "did you mean vendors"],
    ),
    "malformed connections JSON": (
        {"SOURCES__MAKINI__CONNECTIONS": '{"acme": "' + TOKEN + '"'},
        [],
        ["sources.makini.connections", "not valid JSON", '{"acme": "<token>"}'],
    ),
    "connections as a JSON list": (
        {"SOURCES__MAKINI__CONNECTIONS": json.dumps([TOKEN])},
        [],
        ["sources.makini.connections", "a list of 1 item", "JSON object"],
    ),
    "connections as a bare token": (
        {"SOURCES__MAKINI__CONNECTIONS": TOKEN},
        [],
        ["sources.makini.connections", "a plain string", "JSON object"],
    ),
    "a token that is not a string": (
        {"SOURCES__MAKINI__CONNECTIONS": json.dumps({"acme": [TOKEN]})},
        [],
        ["acme", "token"],
    ),
    "misspelled destination": (
        {},
        ["--destination", "duckbd"],
        ["duckbd", "did you mean 'duckdb'"],
    ),
    "destination without credentials": (
        {"DESTINATION__POSTGRES__CREDENTIALS": None},
        ["--destination", "postgres"],
        ["destination postgres", "credentials (", "DESTINATION__POSTGRES__CREDENTIALS"],
    ),
    "page size in config": (
        {"SOURCES__MAKINI__PAGE_SIZE": "many"},
        [],
        ["page_size", "many", "integer"],
    ),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_configuration_mistake_is_one_line_exit_2_no_token(
    case: str, sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    environment, argv, expected = CASES[case]
    monkeypatch.setenv("SOURCES__MAKINI__BASE_URL", sandbox.url)
    monkeypatch.setenv("SOURCES__MAKINI__CONNECTIONS", json.dumps({"acme": TOKEN}))
    for name, value in environment.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    if "--destination" in argv:  # --duckdb-path is for DuckDB only
        argv = [*_args(tmp_path)[:2], *_args(tmp_path)[4:], *argv]
    else:
        argv = _args(tmp_path, *argv)
    code, err = run_cli(argv, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) <= 2 and lines[0].startswith("error: "), err
    for text in expected:
        assert text in err, (text, err)
    assert "Traceback" not in err


def test_debug_shows_the_traceback_without_the_token(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("SOURCES__MAKINI__BASE_URL", sandbox.url)
    monkeypatch.setenv("SOURCES__MAKINI__CONNECTIONS", json.dumps([TOKEN]))
    code, err = run_cli(_args(tmp_path, "--debug"), capsys)
    assert code == 2
    assert "Traceback (most recent call last)" in err and "ValueError" in err
    assert "***" in err  # dlt's own message echoed the list: redacted
    assert err.strip().splitlines()[-1].startswith("error: sources.makini.connections must be")


def test_views_before_a_load(tmp_path: Path, capsys: Any) -> None:
    code, err = run_cli(["views", *_args(tmp_path)[:6]], capsys)
    assert code == 2
    assert "has no purchase_orders" in err and "makini-pipeline run" in err
    assert len(err.strip().splitlines()) <= 2


def test_no_connections_configured_outside_the_repository(tmp_path: Path) -> None:
    """From an empty directory, with nothing configured: the message says where to set them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOURCES__")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["DLT_DATA_DIR"] = str(tmp_path / "dlt")  # no ~/.dlt of whoever runs the tests
    run = run_captured(
        [sys.executable, "-m", "makini_source.cli", "--pipelines-dir", str(tmp_path / "p")],
        tmp_path,
        env,
    )
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) <= 2 and "Traceback" not in run.stderr
    assert "no Makini connections configured" in lines[0]
    assert "sources.makini.connections" in lines[0] and "secrets.toml" in lines[0]
