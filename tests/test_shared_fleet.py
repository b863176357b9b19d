"""The fleet tests and the chaos smoke share one fleet (tests/fleet_harness.py `shared_fleet`), in the order that needs it.

Collected in a child pytest, as the suite collects them: no fleet is brought up.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Prints each collected test in run order with the id of the `shared_fleet` definition it would use (- when none).
_PRINT_ORDER = """
import sys, pytest
class Printer:
    def pytest_collection_finish(self, session):
        for item in session.items:
            defs = item._fixtureinfo.name2fixturedefs.get("shared_fleet")
            print("ITEM", item.nodeid, id(defs[-1]) if defs else "-")
sys.exit(pytest.main(["-q", "--collect-only", "-p", "no:cacheprovider", *sys.argv[1:]], plugins=[Printer()]))
"""


def collected(*paths: str) -> list[tuple[str, str]]:
    """(node id, shared fleet definition) of each test collected from `paths`, in run order."""
    done = subprocess.run([sys.executable, "-c", _PRINT_ORDER, *paths], cwd=ROOT, capture_output=True, text=True, timeout=300)
    found = [(line.split()[1], line.split()[2]) for line in done.stdout.splitlines() if line.startswith("ITEM ")]
    assert found, f"{done.stdout[-3000:]}{done.stderr[-2000:]}"
    return found


def test_the_chaos_smoke_runs_last_on_the_fleet_the_fleet_tests_used_pristine() -> None:
    # The chaos smoke is named first, and a test of the whole suite that uses no fleet last: the order is the conftest's.
    items = collected("tests/test_chaos_smoke.py", "tests/test_fleet.py", "tests/test_fleet_plan.py")
    users = [(node, fleet) for node, fleet in items if fleet != "-"]
    others = [node for node, fleet in items if fleet == "-"]
    assert users[-1][0].startswith("tests/test_chaos_smoke.py::"), users
    assert len(users) >= 2 and all(node.startswith("tests/test_fleet.py::") for node, _ in users[:-1]), users
    assert len({fleet for _, fleet in users}) == 1, f"more than one shared fleet would be brought up: {users}"
    # Every test that brings up no shared fleet (the killed-up test with its own, the plan's pure tests) runs first.
    assert [node for node, _ in items[:len(others)]] == others
    assert "tests/test_fleet.py::test_down_after_a_killed_up_leaves_no_namespace_link_or_process" in others
