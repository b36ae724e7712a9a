"""The makini-pipeline command: run with summary, check, views, chart, init, its inputs."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
from conftest import ALL_TABLES, Sandbox

from makini_source.cli import _pipeline, main, parse_args

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def configured(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    monkeypatch.setenv("SOURCES__MAKINI__BASE_URL", sandbox.url)
    monkeypatch.setenv("SOURCES__MAKINI__DIALECT", "v1")
    monkeypatch.setenv("SOURCES__MAKINI__CONNECTIONS", json.dumps(sandbox.tokens))
    return sandbox


def _args(tmp_path: Path, *extra: str) -> list:
    return [
        "--duckdb-path",
        str(tmp_path / "cli.duckdb"),
        "--pipelines-dir",
        str(tmp_path / "p"),
        "--pipeline-name",
        "cli_test",
        *extra,
    ]


def test_run_prints_summary_creates_views_and_chart(
    configured: Sandbox, tmp_path: Path, capsys: Any
) -> None:
    chart = tmp_path / "spend.png"
    assert main(["run", *_args(tmp_path, "--views", "--chart", str(chart))]) == 0
    out = capsys.readouterr().out
    assert "Rows read this run" in out and "requests" in out and "429s" in out
    assert chart.stat().st_size > 10_000 and chart.read_bytes()[:4] == b"\x89PNG"
    con = duckdb.connect(str(tmp_path / "cli.duckdb"), read_only=True)
    try:
        # spend_by_month adds up to the API's net values of live, non-cancelled, non-draft POs
        expected: dict[str, Decimal] = {}
        for (connection, _), po in configured.snapshot("purchase_orders").items():
            if po["deletedAt"] or po["statusKey"] in ("cancelled", "draft") or not po["orderDate"]:
                continue
            expected[connection] = expected.get(connection, Decimal(0)) + Decimal(
                po["totalNetValue"] or 0
            )
        got = dict(
            con.execute(
                "SELECT connection_id, SUM(net_spend) FROM makini_data.spend_by_month GROUP BY 1"
            ).fetchall()
        )
        assert got == expected
        open_rows = con.execute(
            "SELECT COUNT(*) FROM makini_data.open_order_value_by_vendor"
        ).fetchall()[0][0]
        late_rows = con.execute(
            "SELECT COUNT(*) FROM makini_data.late_deliveries_by_vendor"
        ).fetchall()[0][0]
        received = con.execute(
            "SELECT SUM(ordered_quantity) >= SUM(received_quantity) FROM makini_data.received_vs_ordered"
        ).fetchall()[0][0]
        assert open_rows > 0 and late_rows > 0 and received
    finally:
        con.close()


def test_check_reports_each_connection_and_fails_on_unhealthy(
    configured: Sandbox, capsys: Any
) -> None:
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert "acme" in out and "globex" in out and "active" in out
    configured.post("/_admin/connections/globex/token", {"revoked": True})
    assert main(["check"]) == 1
    out = capsys.readouterr().out
    globex_line = next(line for line in out.splitlines() if line.startswith("globex"))
    assert "yes" in globex_line  # needs reauthorization
    assert configured.tokens["globex"] not in out


def test_demo_loads_all_seven_tables_and_prints_the_analytics(tmp_path: Path, capsys: Any) -> None:
    code = main(["--demo", "--demo-purchase-orders", "20", *_args(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "Open order value by vendor" in out and "Spend by month" in out
    # the demo reads initech in the unified dialect, beside acme and globex in v1
    assert "initech: unified/eam" in out and "acme: v1" in out
    con = duckdb.connect(str(tmp_path / "cli.duckdb"), read_only=True)
    try:
        counts = dict(
            con.execute(
                "SELECT connection_id, COUNT(*) FROM makini_data.purchase_orders GROUP BY 1"
            ).fetchall()
        )
        loaded = {
            table
            for (table,) in con.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = 'makini_data' AND table_name NOT LIKE '_dlt%'"
            ).fetchall()
        }
    finally:
        con.close()
    assert counts == {"acme": 20, "globex": 20, "initech": 20}
    # every table of the six that holds rows is in the summary (the demo's in-process sandbox
    # is gone once the command ends: the invariant is checked by the other tests)
    assert {"purchase_orders", "purchase_order_line_items", "work_orders"} <= loaded
    for table in loaded & set(ALL_TABLES):
        assert f"\n{table}" in out, table


def test_demo_keeps_a_given_pipeline_name(tmp_path: Path) -> None:
    directory = ["--pipelines-dir", str(tmp_path / "p")]
    given = _pipeline(parse_args(["--demo", "--pipeline-name", "mine", *directory]))
    assert given.pipeline_name == "mine"
    assert _pipeline(parse_args(["--demo", *directory])).pipeline_name == "makini_demo"
    assert _pipeline(parse_args(directory)).pipeline_name == "makini"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--entities", "vendors,, purchase_order_line_items"], "purchase_orders loads it"),
        (["--entities", "vendor"], "did you mean vendors?"),
        (["--start-date", "2024-06-01", "--end-date", "2024-01-01"], "is not after start_date"),
        (["--start-date", "2024-06-01", "--end-date", "2024-06-01"], "is not after start_date"),
        (["--page-size", "0"], "is not at least 1"),
        (["--duckdb-path", "x.duckdb", "--destination", "postgres"], "applies to --destination"),
    ],
)
def test_input_mistakes_exit_2_in_one_line(
    argv: list[str], message: str, configured: Sandbox, tmp_path: Path, capsys: Any
) -> None:
    assert main(_args(tmp_path, *argv)) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) <= 2
    assert "Traceback" not in err


def test_entities_take_spaces_and_paths() -> None:
    args = parse_args(["--entities", " vendors , sites,work-orders,, vendors "])
    assert args.entities == ["vendors", "sites", "work_orders"]


def test_help_names_the_configuration_and_check_shows_only_its_own_flags(capsys: Any) -> None:
    assert main(["--help"]) == 0
    top = capsys.readouterr().out
    for name in (
        "SOURCES__MAKINI__CONNECTIONS",
        "SOURCES__MAKINI__BASE_URL",
        ".dlt/secrets.toml",
        ".dlt/config.toml",
        "DESTINATION__<NAME>__CREDENTIALS",
        "init",
    ):
        assert name in top, name
    assert main(["check", "--help"]) == 0
    check_help = capsys.readouterr().out
    assert "SOURCES__MAKINI__CONNECTIONS" in check_help
    options = check_help.split("configuration (dlt's")[0]
    assert "--demo" in options and "--debug" in options
    for flag in ("--entities", "--destination", "--start-date", "--chart", "--pipeline-name"):
        assert flag not in options, flag
    assert main(["check", "--entities", "vendors"]) == 2
    assert "unrecognized arguments: --entities" in capsys.readouterr().err


def test_version(capsys: Any) -> None:
    assert main(["--version"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("makini-pipeline ") and "dlt " in out


def test_init_writes_documented_templates_and_keeps_existing_files(
    tmp_path: Path, capsys: Any
) -> None:
    project = tmp_path / "project"
    assert main(["init", str(project)]) == 0
    config = (project / ".dlt" / "config.toml").read_text()
    secrets = (project / ".dlt" / "secrets.toml").read_text()
    # the repository's own files are the templates
    assert config == (REPO / ".dlt" / "config.toml").read_text()
    assert secrets == (REPO / ".dlt" / "secrets.toml.example").read_text()
    # every setting of the source is documented in the config template
    import inspect

    from makini_source import makini_source

    parameters = inspect.signature(makini_source).parameters
    for name in parameters:
        if name in ("connections", "api_token", "client_id", "client_secret"):
            assert name in secrets
        elif name != "transport":
            assert f"# {name} = " in config, name
    # never overwritten without --force
    (project / ".dlt" / "secrets.toml").write_text("mine")
    capsys.readouterr()
    assert main(["init", str(project)]) == 2
    err = capsys.readouterr().err
    assert "already exist" in err and "--force" in err
    assert (project / ".dlt" / "secrets.toml").read_text() == "mine"
    assert main(["init", str(project), "--force"]) == 0
    assert (project / ".dlt" / "secrets.toml").read_text() == secrets
