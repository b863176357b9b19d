"""bench_projection at a tiny size: every side reads the whole log, and the result says each side's CPU per event."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.process


def test_the_bench_reports_each_sides_rate_and_cpu_per_event_for_this_process_and_the_server() -> None:
    out = subprocess.run([sys.executable, "-m", "ops.bench.bench_projection", "--events", "3000", "--rounds", "1"],
                         capture_output=True, text=True, timeout=300, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for side in ("raw", "read", "ours", "all"):
        assert result[f"{side}_cpu_us_per_event"] > 0, side
        assert result[f"{side}_server_cpu_us_per_event"] >= 0, side
    assert result["read_per_s"] > 0 and result["all_projections_ratio"] > 0 and len(result["load_average"]) == 3
