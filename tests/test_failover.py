"""Leader failover with scheduler candidates as separate OS processes: kill -9, SIGSTOP, SIGTERM, a NATS node crash.

Each candidate is `python -m cli.service_main leader` with a 2 s lease. A simulated node works
through items the test queued, so whoever leads keeps deciding (HOST_ONLINE, WORK_ASSIGNED ...),
and a test counts those real decisions by their epoch. After every test the whole log is checked:
no two LEADER_ELECTED of a role ever share an epoch.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cluster.leadership.term import HOLD_ENV
from eventbus.connection import Bus, connect
from eventbus.events import ConfigChanged, Event, HostOffline, HostOnline, LeaderElected, LeaderLost, WorkAssigned, utcnow
from eventbus.history import events
from eventbus.publisher import Publisher
from eventbus.streams import StreamSettings, provision
from projections.fencing import EpochFence
from tests import background_runs, test_scheduler_faults
from tests.procs.leader_fleet import ROOT, Fleet, write_config
from tests.procs.lease_stream_crash import CrashReport
from tests.scheduler_harness import add_items
from tests.test_scheduler_faults import SimNodes

sim_nodes = test_scheduler_faults.sim_nodes  # the fixture, shared with the scheduler fault tests

TTL = 2
ITEMS = 1000  # more than a test's leaders assign: there is always a next decision to take

# Generous: a test's waits for its candidates to start and act are for a loaded 2-core machine, and end as soon as they hold.
pytestmark = pytest.mark.timeout(240)
SOURCE_RESUME_S = 120  # JetStream re-establishing the log's source of the lease bucket after a server loss
# A candidate process's start (imports, connect, first election) and a term's first decisions: no bound of the
# README's, a wait that ends as soon as they happen; a loaded 2-core machine can take tens of seconds.
STARTUP_S = 60
# A running leader's next decisions, or its LEADER_LOST once it wakes: seconds idle, more under load.
ACT_S = 30


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    connected = await connect(nats_url, node_id="observer")
    try:
        await provision(connected.js, StreamSettings())
        yield connected
    finally:
        await connected.close()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path / "rr.yaml", ttl_s=TTL)


@pytest.fixture
async def deciding(bus: Bus, sim_nodes: SimNodes) -> SimNodes:
    """Queued items and a simulated node working through them: whoever leads keeps deciding."""
    await keep_deciding(Publisher(bus), sim_nodes)
    return sim_nodes


async def keep_deciding(pub: Publisher, nodes: SimNodes) -> None:
    """Queue ITEMS items and start node n1, which the leader declares online and hands them to one by one."""
    await add_items(pub, ITEMS)
    nodes.start("n1", "--work-s", "0.1")


async def read_log(bus: Bus) -> list[Event]:
    return [e async for _, e in events(bus) if isinstance(e, Event)]


async def election_after(bus: Bus, epoch: int | None = 0) -> LeaderElected | None:
    """The first LEADER_ELECTED of the scheduler with an epoch above `epoch`."""
    async for _, event in events(bus, subject="rr.evt.leader.scheduler.LEADER_ELECTED.*"):
        if isinstance(event, LeaderElected) and event.epoch is not None and event.epoch > (epoch or 0):
            return event
    return None


async def latest_election(bus: Bus) -> LeaderElected | None:
    """The scheduler's newest LEADER_ELECTED so far."""
    found = None
    async for _, event in events(bus, subject="rr.evt.leader.scheduler.LEADER_ELECTED.*"):
        if isinstance(event, LeaderElected):
            found = event
    return found


async def settled_leader(bus: Bus, fleet: Fleet, eventually: Any) -> LeaderElected:
    """The leader once every candidate runs and it has acted a few times (on a loaded machine a
    starved first leader may rightly give up its lease; the tests act on whoever leads now)."""
    await eventually(lambda: election_after(bus), timeout=STARTUP_S, interval=0.1, message="first election")
    await candidates_ready(fleet, eventually)

    async def acting() -> LeaderElected | None:
        leader = await latest_election(bus)
        return leader if leader is not None and await _decided(bus, leader.epoch, 3) else None

    leader: LeaderElected = await eventually(acting, timeout=STARTUP_S, interval=0.1, message="the leader acts")
    return leader


def decisions(log: list[Event], epoch: int | None = None) -> list[Event]:
    """The leaders' decisions in `log` (those of term `epoch` if given): what a term stamped, besides its election."""
    return [e for e in log
            if e.epoch is not None and not isinstance(e, LeaderElected | LeaderLost) and (epoch is None or e.epoch == epoch)]


def assert_epochs_unique(log: list[Event]) -> None:
    seen: dict[tuple[str, int | None], str] = {}
    for event in log:
        if isinstance(event, LeaderElected):
            key = (event.role, event.epoch)
            assert key not in seen, f"epoch {event.epoch} of {event.role} elected twice: {seen[key]} and {event.node}"
            seen[key] = event.node


async def candidates_ready(fleet: Fleet, eventually: Any) -> None:
    await eventually(lambda: all("is a candidate" in p.log_text() for p in fleet.nodes.values()),
                     timeout=STARTUP_S, interval=0.1, message="every candidate process started")


def seconds(later: dt.datetime | None, earlier: dt.datetime) -> float:
    assert later is not None
    return (later - earlier).total_seconds()


def rr_leader_json(url: str, config: Path) -> list[dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "cli.main", "leader", "--json", "--nats", url, "--config", str(config)],
                         cwd=ROOT, env=env, capture_output=True, timeout=30, check=True)
    return [json.loads(line) for line in out.stdout.decode().splitlines()]


async def test_three_candidates_elect_one_leader_and_a_kill_9_elects_another_within_two_ttls(
    bus: Bus, nats_url: str, config: Path, tmp_path: Path, deciding: SimNodes, eventually: Any
) -> None:
    with Fleet(nats_url, ["a", "b", "c"], config, tmp_path) as fleet:
        first = await settled_leader(bus, fleet, eventually)
        shown = await asyncio.to_thread(rr_leader_json, nats_url, config)
        rows = [(v["role"], v["node"], v["epoch"], v["announced"]) for v in shown]
        assert rows == [("scheduler", first.node, first.epoch, True)]

        killed_at = utcnow()
        await asyncio.to_thread(fleet[first.node].kill)
        second = await eventually(lambda: election_after(bus, first.epoch), timeout=4 * TTL, interval=0.05,
                                  message="a new leader after kill -9")
        assert seconds(second.ts, killed_at) < 2 * TTL, fleet.logs()
        assert second.node != first.node and second.previous_node == first.node
        log = await read_log(bus)
    elected = [e for e in log if isinstance(e, LeaderElected)]
    assert [(e.node, e.epoch) for e in elected[-2:]] == [(first.node, first.epoch), (second.node, second.epoch)]
    assert {e.epoch for e in decisions(log[log.index(elected[-2]):])} <= {first.epoch, second.epoch}
    assert_epochs_unique(log)


async def _decided(bus: Bus, epoch: int | None, count: int) -> bool:
    return len(decisions(await read_log(bus), epoch)) >= count


async def test_a_frozen_leader_is_fenced_and_announces_its_loss_when_it_wakes(
    bus: Bus, nats_url: str, config: Path, tmp_path: Path, deciding: SimNodes, eventually: Any
) -> None:
    with Fleet(nats_url, ["a", "b"], config, tmp_path) as fleet:
        first = await settled_leader(bus, fleet, eventually)
        old = fleet[first.node]
        old.signal(signal.SIGSTOP)
        second = await eventually(lambda: election_after(bus, first.epoch), timeout=4 * TTL, interval=0.05,
                                  message="another node takes over from the frozen leader")
        await eventually(lambda: _decided(bus, second.epoch, 3), timeout=ACT_S, interval=0.1, message="the new leader acts")
        old.signal(signal.SIGCONT)
        lost = await eventually(lambda: _lost(bus, first.epoch), timeout=ACT_S, interval=0.1, message="LEADER_LOST on resume")
        before = len(decisions(await read_log(bus), second.epoch))
        await eventually(lambda: _decided(bus, second.epoch, before + 5), timeout=ACT_S, interval=0.1,
                         message="time passes after the resume")
        log = await read_log(bus)
        assert old.running, fleet.logs()

    # On waking, the leader either finds its own deadline passed first or first reads the lease's
    # expiry from its watch (which comes first depends on the machine's load): both say its own lease
    # lapsed, not that a rival took it while it could still act.
    assert lost.epoch == first.epoch and lost.reason in ("lease not renewed before its deadline", "lease expired")
    fence = EpochFence()
    takeover = log.index(next(e for e in log if isinstance(e, LeaderElected) and e.epoch == second.epoch))
    decided = {e.id for e in decisions(log)}
    admitted_after = [e for i, e in enumerate(log) if fence.admit(e) and i > takeover and e.id in decided]
    assert admitted_after and all(e.epoch == second.epoch for e in admitted_after)
    # The server refuses a decision stored after a newer election, whatever the frozen leader's clock said.
    assert decisions(log[takeover:], first.epoch) == []
    assert fence.statistics().dropped_stale == 0
    assert [e for e in log[takeover + 1 :] if isinstance(e, LeaderElected)] == []  # the woken node did not grab it back
    assert_epochs_unique(log)


async def test_a_leader_frozen_mid_burst_stores_no_decision_after_its_successors_election(
    bus: Bus, nats_url: str, tmp_path: Path, sim_nodes: SimNodes, eventually: Any
) -> None:
    config = tmp_path / "rr.yaml"
    config.write_text(
        f"leadership:\n  ttl_s: {TTL}\n"
        "membership:\n  heartbeat_interval_s: 0.2\n  missed_beats_offline: 5\n"
        "scheduler:\n  default_max_parallel_jobs: 16\n  populator_enabled: false\npipeline:\n  enabled: false\n"
    )
    pub = Publisher(bus)
    with Fleet(nats_url, ["a", "b"], config, tmp_path) as fleet:
        for n in ("n1", "n2", "n3", "n4"):
            sim_nodes.start(n, "--work-s", "0.01")
        first = await settled_leader(bus, fleet, eventually)
        await eventually(lambda: _at_least(bus, HostOnline, 4), timeout=STARTUP_S, interval=0.1, message=f"nodes online\n{fleet.logs()}")
        ids = await add_items(pub, 1500)
        await eventually(lambda: _at_least(bus, WorkAssigned, 100), timeout=STARTUP_S, interval=0.1, message="assignments flow")
        fleet[first.node].signal(signal.SIGSTOP)
        sim_nodes.kill("n4")  # a HOST_OFFLINE is owed while the leader is frozen
        second = await eventually(lambda: election_after(bus, first.epoch), timeout=6 * TTL, interval=0.05,
                                  message="a successor takes over from the frozen leader")
        await eventually(lambda: _decided(bus, second.epoch, 3), timeout=ACT_S, interval=0.1, message="the successor acts")
        fleet[first.node].signal(signal.SIGCONT)
        await eventually(lambda: _lost(bus, first.epoch), timeout=ACT_S, interval=0.1, message="LEADER_LOST on resume")
        await eventually(lambda: _decided(bus, second.epoch, 20), timeout=ACT_S, interval=0.1, message="time passes after it")
        # n4's HOST_OFFLINE is the successor's to write: its membership loop first waits out n4's silence.
        await eventually(lambda: _offline_in(bus, second.epoch), timeout=30, interval=0.2,
                         message="the successor declares the node killed meanwhile offline")
        stored = [(seq, e) async for seq, e in events(bus) if isinstance(e, Event)]
    takeover = next(seq for seq, e in stored if isinstance(e, LeaderElected) and e.epoch == second.epoch)
    by_old = [(seq, e.type_name()) for seq, e in stored if e.epoch == first.epoch and not isinstance(e, (LeaderElected, LeaderLost))]
    assert by_old and len({t for _, t in by_old}) >= 2, "the old leader was deciding when it froze"
    assert [d for d in by_old if d[0] > takeover] == [], "0 decisions of the old epoch stored after the successor's election"
    kinds = {e.type_name() for seq, e in stored if seq > takeover and e.epoch == second.epoch}
    assert {"WORK_ASSIGNED", "HOST_OFFLINE"} <= kinds and len(ids) == 1500
    assert_epochs_unique([e for _, e in stored])


async def _offline_in(bus: Bus, epoch: int | None) -> bool:
    return any(isinstance(e, HostOffline) and e.epoch == epoch for e in await read_log(bus))


async def _at_least(bus: Bus, kind: type, count: int) -> bool:
    return sum(isinstance(e, kind) for e in await read_log(bus)) >= count


async def _lost(bus: Bus, epoch: int | None) -> LeaderLost | None:
    return next((e for e in await read_log(bus) if isinstance(e, LeaderLost) and e.epoch == epoch), None)


async def test_sigterm_resigns_and_a_successor_is_elected_well_within_the_ttl(
    bus: Bus, nats_url: str, config: Path, tmp_path: Path, deciding: SimNodes, eventually: Any
) -> None:
    with Fleet(nats_url, ["a", "b"], config, tmp_path) as fleet:
        first = await settled_leader(bus, fleet, eventually)
        stopped_at = utcnow()
        code = await asyncio.to_thread(fleet[first.node].terminate)
        assert code == 0, f"exit {code} (None: still running 15 s after SIGTERM, killed)\n{fleet.logs()}"
        second = await eventually(lambda: election_after(bus, first.epoch), timeout=2 * TTL, interval=0.05,
                                  message="a successor after SIGTERM")
        log = await read_log(bus)
        outputs = fleet.logs()
    assert seconds(second.ts, stopped_at) < TTL / 2, f"{seconds(second.ts, stopped_at):.2f}s"
    lost = next((e for e in log if isinstance(e, LeaderLost) and e.epoch == first.epoch), None)
    assert lost is not None, outputs
    assert (lost.node, lost.epoch, lost.reason) == (first.node, first.epoch, "resigned")
    assert log.index(lost) < log.index(second)
    assert_epochs_unique(log)


@pytest.mark.timeout(300)
def test_killing_one_nats_server_of_three_causes_at_most_one_election_and_loses_no_event(request: pytest.FixtureRequest) -> None:
    # The crash runs in tests/procs/lease_stream_crash.py, a background run (tests/background_runs.py): most of it is
    # JetStream re-establishing a source, little CPU, so in a whole session it passes beside the tests before this one.
    code, output = background_runs.result(request.config, "lease_stream_crash", timeout=290)
    assert code == 0, f"the crash run exited {code}:\n{output[-8000:]}"
    report = msgspec.json.decode(output.splitlines()[-1], type=CrashReport)
    log, before_kill = report.log, report.before_kill
    assert report.bucket_replicas == 3
    elections = [e for e in log[before_kill:] if isinstance(e, LeaderElected)]
    story = [(type(e).__name__, e.node, e.epoch, getattr(e, "reason", "")) for e in log if isinstance(e, (LeaderElected, LeaderLost))]
    assert len(elections) <= 1, (before_kill, story)  # at most one more after the crash
    assert {e.epoch for e in log if isinstance(e, LeaderElected)} == set(report.announced)  # every election the server acked is in the log, and no other
    ids = [e.id for e in log]
    assert set(report.acked) <= set(ids) and len(ids) == len(set(ids))
    assert_epochs_unique(log)


async def _decided_after_probes(bus: Bus, count: int) -> bool:
    """`count` decisions stored after the crash: by a newer leader, or by the same one still deciding."""
    log = await read_log(bus)
    probe = next((i for i, e in enumerate(log) if isinstance(e, ConfigChanged) and e.name == "probe"), None)
    return probe is not None and len(decisions(log[probe:])) >= count


def _announced_epochs(fleet: Fleet) -> set[int]:
    """Epochs whose LEADER_ELECTED the server acked, as the nodes logged them. A term that lost its lease
    or missed its copy in the log before announcing never acted, so it is not counted."""
    marker = "announced scheduler epoch "
    lines = [line for p in fleet.nodes.values() for line in p.log_text().splitlines()]
    return {int(line.split(marker)[1].split(" ")[0]) for line in lines if marker in line}


async def test_a_decision_held_in_flight_across_the_freeze_is_refused_by_the_server_after_the_successors_election(
    bus: Bus, nats_url: str, tmp_path: Path, deciding: SimNodes, eventually: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every decision waits 1 s between the leader's may-act check and its publish (HOLD_ENV), so
    # the frozen leader always has a checked decision in flight; on SIGCONT it sends it, and only the
    # server's fence can keep it out of the log (the leader does not check its lease again).
    monkeypatch.setenv(HOLD_ENV, "1.0")
    config = write_config(tmp_path / "rr.yaml", ttl_s=TTL)
    with Fleet(nats_url, ["a", "b"], config, tmp_path) as fleet:
        first = await settled_leader(bus, fleet, eventually)
        await eventually(lambda: _decided(bus, first.epoch, 3), timeout=ACT_S, interval=0.1, message="the leader acts")
        holding = f" of scheduler epoch {first.epoch} for 1.0s after its may-act check"  # "holding WORK_ASSIGNED of ..."
        seen = fleet[first.node].log_text().count(holding)
        await eventually(lambda: fleet[first.node].log_text().count(holding) > seen, timeout=ACT_S, interval=0.01,
                         message="the leader holds a checked decision")
        fleet[first.node].signal(signal.SIGSTOP)  # within the 1 s hold: a decision is in flight across the freeze
        second = await eventually(lambda: election_after(bus, first.epoch), timeout=6 * TTL, interval=0.05,
                                  message="a successor takes over from the frozen leader")
        await eventually(lambda: _decided(bus, second.epoch, 3), timeout=ACT_S, interval=0.1, message="the successor acts")
        fleet[first.node].signal(signal.SIGCONT)
        refused = f" of scheduler epoch {first.epoch} ({HOLD_ENV}=1.0) sent after its hold: not stored: Fenced"  # "held WORK_ASSIGNED of ..."
        await eventually(lambda: refused in fleet[first.node].log_text(), timeout=ACT_S, interval=0.1,
                         message="the held decision was sent after the resume, and the server refused it")
        await eventually(lambda: _lost(bus, first.epoch), timeout=ACT_S, interval=0.1, message="LEADER_LOST on resume")
        stored = [(seq, e) async for seq, e in events(bus) if isinstance(e, Event)]
    takeover = next(seq for seq, e in stored if isinstance(e, LeaderElected) and e.epoch == second.epoch)
    by_old = [seq for seq, e in stored if e.epoch == first.epoch and not isinstance(e, (LeaderElected, LeaderLost))]
    assert by_old, "the old leader decided before it froze"
    assert [seq for seq in by_old if seq > takeover] == [], "0 decisions of the old epoch stored after the successor's election"
    assert_epochs_unique([e for _, e in stored])
