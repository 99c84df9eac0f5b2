"""``python -m benchmarks --quick`` runs end to end and writes sensible JSON."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server is not on PATH")


@pytest.mark.timeout(180)
def test_quick_benchmark_writes_rows(tmp_path: Path) -> None:
    out = tmp_path / "quick.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=170, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    rows = doc["rows"]
    assert rows, "no rows"
    assert {r["lib"] for r in rows} == {"aiojobs_redis"}
    by_phase = {r["phase"]: r for r in rows}
    for phase in ("enqueue_one", "enqueue_concurrent", "enqueue_bulk", "process_noop",
                  "process_sleep", "process_noop_2w", "latency", "retry_storm",
                  "delayed_burst"):
        row = by_phase[phase]
        assert row["status"].startswith(("ok", "partial")), (phase, row["status"])
        assert row["jobs_per_s"] > 0, phase
        assert row["cmds_per_job"] is not None and row["cmds_per_job"] > 0, phase
    assert by_phase["latency"]["p99_ms"] is not None
    rated = by_phase["rate_limited"]
    assert rated["status"].startswith(("ok", "partial")), rated["status"]
    extra = rated["extra"]
    assert 0 < extra["max_per_window"] <= extra["rate_max"], extra
    assert 0 < rated["jobs_per_s"] <= extra["rate_max"] / doc["settings"]["rate_per_s"] * 1.05
    assert extra["rtts_per_window"] is not None
    assert by_phase["process_noop"]["rss_mb"] > 0
    assert doc["machine"]["redis"]
    assert "jobs/s" in proc.stdout
