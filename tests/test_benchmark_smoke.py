"""Smoke test of pipelines/benchmark.py: every mode runs end to end on a tiny sandbox.

No timing is asserted (that is the benchmark's job, not the test suite's).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[1] / "pipelines" / "benchmark.py"


@pytest.mark.timeout(180)
def test_benchmark_runs_every_mode_on_a_tiny_sandbox(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(  # noqa: PLW1510 - the return code is asserted
        [
            sys.executable,
            str(BENCHMARK),
            "--pos",
            "200",
            "--rate-pos",
            "40",
            "--rate-limit",
            "1200",
            "--rate-window",
            "2",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(out.read_text())
    modes = summary["modes"]
    assert set(modes) == {
        "floor",
        "peer",
        "makini",
        "incremental",
        "ratelimited",
        "unified_floor",
        "unified_peer",
        "unified",
        "unified_incremental",
    }
    assert modes["makini"]["records"] == modes["floor"]["records"]
    assert modes["incremental"]["records"] == 2  # 1% of 200 POs
    assert {"makini/floor", "makini/peer", "incremental/full"} <= set(summary["ratios"])
    assert modes["ratelimited"]["requests"] > 0
    assert "makini/floor" in proc.stdout

    # the unified modes read the same records as v1 (an EAM connection serves all six
    # entities), and makini_source's requests are counted by kind against a page walk
    assert "EAM connection" in summary["unified_connection"]
    records = modes["floor"]["records"]
    assert modes["unified_floor"]["records"] == modes["unified_peer"]["records"] == records
    assert modes["unified"]["records"] == records
    assert {
        "unified/unified_floor",
        "unified/unified_peer",
        "unified incremental/full",
        "unified requests/page walk",
    } <= set(summary["ratios"])
    full = summary["unified_requests"]["unified"]
    assert full["page_walk"] == modes["unified_floor"]["requests"]
    assert full["counted"] == full["sandbox_requests"] == full["source_requests"]
    assert full["counted"] >= full["page_walk"] and full["delete_detection"] == 0
    inc = summary["unified_requests"]["unified_incremental"]
    assert inc["counted"] == inc["sandbox_requests"] == inc["source_requests"]
    assert inc["deletes_found"] == {"purchase_orders": 3, "vendors": 2}
    assert inc["delete_detection"] == inc["delete_requests"] > 0
    assert inc["kinds"]["lookup"] >= 5  # each vanished record is confirmed by a 404
    # 2 changed POs, 3 POs and 2 vendors found deleted, 2 vendors soft-deleted (listed)
    assert modes["unified_incremental"]["records"] == 2 + 3 + 2 + 2
    assert "unified/unified_peer" in proc.stdout and "found deleted" in proc.stdout
