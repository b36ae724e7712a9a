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
    assert set(summary["modes"]) == {"floor", "peer", "makini", "incremental", "ratelimited"}
    assert summary["modes"]["makini"]["records"] == summary["modes"]["floor"]["records"]
    assert summary["modes"]["incremental"]["records"] == 2  # 1% of 200 POs
    assert {"makini/floor", "makini/peer", "incremental/full"} <= set(summary["ratios"])
    assert summary["modes"]["ratelimited"]["requests"] > 0
    assert "makini/floor" in proc.stdout
