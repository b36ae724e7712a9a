"""The makini-pipeline command: run with progress and summary, check, views, chart."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
from conftest import ALL_TABLES, Sandbox

from makini_source.cli import main


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


def test_progress_line_counts_rows_requests_and_throttling(
    configured: Sandbox, tmp_path: Path
) -> None:
    import dlt

    from makini_source import makini_source
    from makini_source.cli import Progress

    source = makini_source(entities=["vendors"])
    progress = Progress(source, enabled=False)
    pipeline = dlt.pipeline(
        "progress_test",
        pipelines_dir=str(tmp_path / "p"),
        destination=dlt.destinations.duckdb(str(tmp_path / "p.duckdb")),
    )
    pipeline.run(source, loader_file_format="parquet")
    line = progress.line()
    vendors = sum(1 for _ in configured.snapshot("vendors"))
    assert f"vendors={vendors:,}" in line
    assert "requests=" in line and "429s=0" in line and "throttled=" in line


def test_demo_loads_all_seven_tables_and_prints_the_analytics(tmp_path: Path, capsys: Any) -> None:
    code = main(["--demo", "--demo-purchase-orders", "20", *_args(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    for table in ALL_TABLES:
        assert f"\n{table}" in out, table
    assert "Open order value by vendor" in out and "Spend by month" in out
    con = duckdb.connect(str(tmp_path / "cli.duckdb"), read_only=True)
    try:
        counts = dict(
            con.execute(
                "SELECT connection_id, COUNT(*) FROM makini_data.purchase_orders GROUP BY 1"
            ).fetchall()
        )
    finally:
        con.close()
    assert counts == {"acme": 20, "globex": 20, "initech": 20}
