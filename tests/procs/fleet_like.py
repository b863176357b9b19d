"""A fleet-like tree made as `python -m ops.fleet up` makes a fleet, minus NATS and services, for the teardown tests.

Usage: python -m tests.procs.fleet_like ROOT RUN_ID. Makes the network of a 4-host fleet (ops/fleet/netns.py: bridge,
namespaces, veths) and starts one sleeping process per host the way `up` starts their services (ops/fleet/launch.py
`spawn`: `ip netns exec`, a private mount namespace, a session of its own), records them in the fleet's state file,
and exits, as `up` does, leaving them running. In seconds, where a real fleet takes minutes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ops.fleet import launch, netns
from ops.fleet.plan import plan_fleet, subnet_for
from ops.fleet.state import FleetState, save


def make_fleet_like(root: Path, run_id: str) -> None:
    """The fleet's network with one sleeping process per host, recorded as `up` records them."""
    plan = plan_fleet(run_id, root, workers=1, nat=0, subnet=subnet_for(run_id, netns.taken_subnets()))
    save(root, FleetState(plan=plan))  # as `up` does, before anything exists
    (root / "auth").mkdir(parents=True, exist_ok=True)  # one of the directories a host's mount namespace hides
    for host in plan.hosts:
        for sub in ("home", "logs"):
            host.path(sub).mkdir(parents=True, exist_ok=True)
    netns.make_bridge(plan)
    processes = []
    for host in plan.hosts:
        netns.make_host(plan, host)
        processes.append(launch.spawn(plan, host, "sleeper", ["sleep", "900"], launch.host_env(plan, host)))
    save(root, FleetState(plan=plan, processes=tuple(processes)))


if __name__ == "__main__":
    make_fleet_like(Path(sys.argv[1]).absolute(), sys.argv[2])
