"""Every test is put in one tier from what it uses (tests/conftest.py), so `-m` selects by tier."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TIERS

ROOT = Path(__file__).resolve().parent.parent
# One file of each tier whose tests all use the same kind of thing.
SAMPLES = {
    "pure": "tests/test_scheduler_policy.py",
    "server": "tests/test_leases.py",
    "process": "tests/test_restart.py",
    "cluster": "tests/test_quiet_faults.py",
    "fleet": "tests/test_fleet.py",
}


def test_every_collected_test_has_exactly_one_tier(request: pytest.FixtureRequest) -> None:
    tiers = {item.nodeid: {m.name for m in item.iter_markers() if m.name in TIERS} for item in request.session.items}
    assert {n: t for n, t in tiers.items() if len(t) != 1} == {}


# Collects the samples in a child pytest and prints each test's tiers: one run for them all.
_PRINT_TIERS = """
import sys, pytest
from tests.conftest import TIERS
class Printer:
    def pytest_collection_finish(self, session):
        for item in session.items:
            print("TIER", item.nodeid.split("::")[0], ",".join(m.name for m in item.iter_markers() if m.name in TIERS))
sys.exit(pytest.main(["-q", "--collect-only", "-p", "no:cacheprovider", *sys.argv[1:]], plugins=[Printer()]))
"""


def test_each_sample_file_lands_in_its_tier() -> None:
    done = subprocess.run([sys.executable, "-c", _PRINT_TIERS, *SAMPLES.values()], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    found = {tuple(line.split()[1:3]) for line in done.stdout.splitlines() if line.startswith("TIER ")}
    assert found == {(sample, tier) for tier, sample in SAMPLES.items()}, f"{done.stdout[-3000:]}{done.stderr[-2000:]}"
