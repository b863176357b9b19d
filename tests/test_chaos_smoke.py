"""Every fault kind once on a real fleet (`python -m ops.chaos --smoke`, 56 s of faults for seed 17): no violation.

Marked `fleet` (root, iproute2); skipped in one line where network namespaces cannot be made.
The mix runs on the session's fleet (`shared_fleet`, tests/fleet_harness.py, given with `--root`)
after the fleet tests that need it pristine (`fleet_faults`: tests/conftest.py orders them), so the
checker judges their history too, from sequence 1. The schedule is seed 17's smoke plan
(ops/chaos/smoke.py): each kind once, the leader's stop held past the fleet's lease TTL (14 s, tests/fleet_harness.py
`LEASE`), on the fleet's hosts; a failure prints the summary, whose `schedule` replays it:
`python -m ops.chaos --seed 17 --smoke --schedule FILE`. The checker's own tests plant each
violation it finds (tests/test_chaos_checker.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ops.chaos.cli import smoke_pacing
from tests.fleet_harness import FleetLog

pytestmark = [pytest.mark.fleet, pytest.mark.fleet_faults, pytest.mark.timeout(1500)]

SEED = 17


def test_every_fault_kind_once_leaves_a_clean_history(shared_fleet: FleetLog, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "ops.chaos", "--seed", str(SEED), "--smoke", "--json",
                           "--root", shared_fleet.plan.root, "--shrink-runs", "0", "--out", str(tmp_path / "report")],
                          capture_output=True, text=True, timeout=1400, check=False)
    (tmp_path / "chaos.stderr").write_text(done.stderr)  # the run's progress, kept with the report for a failure's reader
    assert done.stdout.strip(), f"no summary (exit {done.returncode}): {done.stderr[-3000:]}"
    summary = json.loads(done.stdout)
    # Every failure message carries the run's figures (all but the schedule, which is in the report directory).
    seen = {k: v for k, v in summary.items() if k not in ("schedule", "violations")} | {"stderr": done.stderr[-1500:]}
    problems = {k: n for k, n in summary["violations_by_kind"].items() if n}
    assert done.returncode == 0 and summary["clean"], f"{problems}: {summary['violations'][:20]}; {seen}"
    assert summary["acknowledged"] >= summary["duration_s"] * 0.5 * 0.5, f"the client was acknowledged too little to judge: {seen}"
    not_hit = [kind for kind, n in summary["faults_by_kind"].items() if n == 0]
    assert not not_hit, f"fault kinds never injected: {not_hit}; {seen}"
    stop = next(f for f in summary["schedule"] if f["kind"] == "stop_leader")
    assert stop["hold_s"] > smoke_pacing(shared_fleet.plan).lease_ttl_s, f"the leader's stop does not outlast its lease: {stop}"
    assert summary["recovery_to_assignment_s"]["n"] >= 6, seen
    assert summary["views_compared"] >= 6, f"no live bundle snapshot was compared with its rebuild from sequence 1: {seen}"
    assert Path(summary["timeline"]).read_text().count("<rect") >= 6
