"""Electors in one process on a real nats-server: one leader, resignation, non-candidates, fenced decisions, step-down."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cli.main import build_parser
from cluster.leadership import election
from cluster.leadership.election import Elector, load_candidacy
from cluster.leadership.term import NotLeader, Term
from config.sections.leadership import LeadershipSettings
from config.settings import RrConfig
from eventbus.connection import Bus, connect
from eventbus.events import ConfigChanged, Event, HostOnline, LeaderElected, LeaderLost, utcnow
from eventbus.heartbeats import Heartbeat, publish_heartbeat
from eventbus.history import events
from eventbus.leases import LeaseBucket
from eventbus.natsserver import NatsServer
from eventbus.streams import StreamSettings, provision
from projections.fencing import EpochFence
from servicekit.options import CommonOptions
from servicekit.runtime import ServiceContext
from services.leader.service import main as scheduler_main
from tests.lostcancel import LosingACancel

SETTINGS = LeadershipSettings(ttl_s=2, bucket="t_leases")


class Running:
    """One node's elector running in the background, with what its leader work saw."""

    def __init__(self, elector: Elector, stopping: asyncio.Event, task: asyncio.Task[None]) -> None:
        self.elector = elector
        self.stopping = stopping
        self.task = task
        self.terms: list[Term] = []
        self.cancelled_at: float | None = None

    @property
    def leading(self) -> bool:
        return self.elector.statistics().phase == "leading"

    async def stop(self) -> None:
        self.stopping.set()
        await asyncio.wait_for(self.task, timeout=10)


@contextlib.asynccontextmanager
async def node(url: str, node_id: str, *, candidate: bool = True, work: Any = None,
               settings: LeadershipSettings = SETTINGS, options: dict[str, Any] | None = None) -> AsyncIterator[Running]:
    """Run an elector for `scheduler` on its own connection (`options`: its credentials ...) until the block ends."""
    bus = await connect(url, node_id=node_id, **(options or {}))
    stopping = asyncio.Event()
    elector = Elector(bus, "scheduler", node_id, settings=settings, candidate=candidate)
    running: Running

    async def lead(term: Term) -> None:
        running.terms.append(term)
        try:
            await (work(term) if work else asyncio.get_running_loop().create_future())
        except asyncio.CancelledError:
            running.cancelled_at = time.monotonic()
            raise

    running = Running(elector, stopping, asyncio.ensure_future(elector.run(lead, stopping)))
    try:
        yield running
    finally:
        if not running.task.done():
            await running.stop()
        await bus.close()


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    connected = await connect(nats_url, node_id="observer")
    try:
        await provision(connected.js, StreamSettings())
        yield connected
    finally:
        await connected.close()


async def leader_events(bus: Bus) -> list[Event]:
    return [e async for _, e in events(bus, subject="rr.evt.leader.>") if isinstance(e, Event)]


async def test_three_candidates_elect_exactly_one_leader_announced_with_the_lease_epoch(
    bus: Bus, nats_url: str, eventually: Any
) -> None:
    async with node(nats_url, "a") as a, node(nats_url, "b") as b, node(nats_url, "c") as c:
        nodes = [a, b, c]
        await eventually(lambda: any(n.terms for n in nodes), timeout=5, message="someone leads")
        elected = await eventually(lambda: leader_events(bus), timeout=5, message="LEADER_ELECTED in the log")
        await asyncio.sleep(SETTINGS.ttl_s)  # several renewals: nobody else may take over meanwhile
        assert sum(n.leading for n in nodes) == 1
        winner = next(n for n in nodes if n.leading)
        record = await LeaseBucket(bus, SETTINGS.bucket).read("scheduler")
        assert record.holder is not None and record.holder.node == winner.elector.node_id
        assert [(e.node, e.epoch) for e in elected if isinstance(e, LeaderElected)] == [(record.holder.node, record.epoch)]
        assert all(n.elector.statistics().leader == winner.elector.node_id for n in nodes)


async def test_a_resigning_leader_hands_over_at_once(bus: Bus, nats_url: str, eventually: Any) -> None:
    async with node(nats_url, "a") as a:
        await eventually(lambda: a.terms, timeout=5, message="a leads")
        async with node(nats_url, "b") as b:
            await eventually(lambda: b.elector.statistics().leader == "a", timeout=5, message="b follows a")
            resigned_at = time.monotonic()
            await a.stop()
            await eventually(lambda: b.terms, timeout=5, message="b takes over")
            took = time.monotonic() - resigned_at
    assert took < SETTINGS.ttl_s  # no waiting for the TTL: the lease was deleted
    log = await leader_events(bus)
    kinds = [(type(e).__name__, e.node, e.epoch) for e in log]  # type: ignore[attr-defined]
    first, second = a.terms[0].epoch, b.terms[0].epoch
    assert kinds[:3] == [("LeaderElected", "a", first), ("LeaderLost", "a", first), ("LeaderElected", "b", second)]
    assert isinstance(log[1], LeaderLost) and log[1].reason == "resigned"
    assert isinstance(log[2], LeaderElected) and log[2].previous_node == "a" and second > first


async def test_a_non_candidate_follows_but_never_campaigns(bus: Bus, nats_url: str, eventually: Any) -> None:
    async with node(nats_url, "x", candidate=False) as x:
        await eventually(lambda: LeaseBucket(bus, SETTINGS.bucket).exists(), timeout=5, message="bucket exists")
        await asyncio.sleep(SETTINGS.ttl_s)  # a free lease for a whole TTL: a candidate would have taken it
        assert x.elector.statistics().campaigns == 0 and not x.terms
        async with node(nats_url, "a") as a:
            await eventually(lambda: a.terms, timeout=5, message="a leads")
            await eventually(lambda: x.elector.statistics().leader == "a", timeout=5, message="x sees a lead")


async def test_decisions_carry_the_epoch_and_are_refused_once_the_term_is_over(bus: Bus, nats_url: str, eventually: Any) -> None:
    async with node(nats_url, "a") as a:
        term = (await eventually(lambda: a.terms, timeout=5, message="a leads"))[0]
        published = await term.publish(ConfigChanged(name="decision"))
        assert published.event.epoch == term.epoch and term.may_act()
        await a.stop()
        assert not term.may_act()
        with pytest.raises(NotLeader):
            await term.publish(ConfigChanged(name="decision"))


async def test_a_leader_cut_off_from_nats_stops_acting_before_its_lease_can_expire(
    bus: Bus, nats_url: str, nats_server: NatsServer, eventually: Any
) -> None:
    async with node(nats_url, "a") as a:
        term = (await eventually(lambda: a.terms, timeout=5, message="a leads"))[0]
        await asyncio.to_thread(nats_server.kill)
        killed_at = time.monotonic()
        await eventually(lambda: a.cancelled_at, timeout=5, message="leader work cancelled")
        assert not term.may_act()
        # Its last acknowledged renewal was sent before the kill, so its deadline fell before kill + TTL - margin;
        # the bound leaves the margin to a busy machine's scheduling, but never reaches the lease's own expiry.
        assert a.cancelled_at is not None and a.cancelled_at - killed_at < SETTINGS.ttl_s
        await asyncio.to_thread(nats_server.restart)
        await eventually(lambda: len(a.terms) == 2, timeout=15, message="a leads again once NATS is back")
        assert a.terms[1].epoch > term.epoch


async def test_leader_work_that_fails_gives_the_role_away(bus: Bus, nats_url: str, eventually: Any) -> None:
    async def broken(term: Term) -> None:
        raise RuntimeError("bug in a leader loop")

    async with node(nats_url, "a", work=broken) as a:
        await eventually(lambda: a.terms, timeout=5, message="a leads")
        lost = await eventually(lambda: _lost(bus), timeout=5, message="LEADER_LOST")
    assert "leader work failed: RuntimeError: bug in a leader loop" in lost.reason


async def test_a_node_whose_leader_work_failed_holds_off_so_another_candidate_leads(
    bus: Bus, nats_url: str, eventually: Any
) -> None:
    async def broken(term: Term) -> None:
        raise RuntimeError("its loops cannot run here")

    async with node(nats_url, "a", work=broken) as a:
        await eventually(lambda: a.terms, timeout=5, message="a leads")
        await eventually(lambda: _lost(bus), timeout=5, message="a's term failed")
        async with node(nats_url, "b") as b:
            await eventually(lambda: b.leading, timeout=10, message="b takes the role a gave up")
        assert len(a.terms) == 1  # a did not take the role back meanwhile


async def _lost(bus: Bus) -> LeaderLost | None:
    return next((e for e in await leader_events(bus) if isinstance(e, LeaderLost)), None)


async def test_the_fence_admits_only_the_current_leaders_decisions(bus: Bus, nats_url: str, eventually: Any) -> None:
    async with node(nats_url, "a") as a:
        old = (await eventually(lambda: a.terms, timeout=5, message="a leads"))[0]
        await old.publish(ConfigChanged(name="decision"))
        async with node(nats_url, "b") as b:
            await eventually(lambda: b.elector.statistics().leader == "a", timeout=5, message="b follows a")
            await a.stop()
            new = (await eventually(lambda: b.terms, timeout=5, message="b leads"))[0]
            await new.publish(ConfigChanged(name="decision"))
            # A decision of the old term that reaches the log late (a retried publish, say).
            await b.elector.publisher.publish(old.fenced(ConfigChanged(name="decision")))
    fence = EpochFence()
    log = [e async for _, e in events(bus) if isinstance(e, Event)]
    admitted = [e.epoch for e in log if fence.admit(e) and isinstance(e, ConfigChanged)]
    assert admitted == [old.epoch, new.epoch]
    assert fence.statistics().dropped_stale == 1


# ---- the scheduler service's wiring: candidacy from config or hosts file ----------------------


async def test_candidacy_is_read_from_the_hosts_files_voters_when_the_config_names_none(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text("hosts:\n  gpu-1: {}\n  gpu-2: {}\n  cpu-1: {}\np2p_voters: [gpu-1, gpu-2]\n")
    config = RrConfig(hosts_file=str(hosts))
    assert (await load_candidacy(config, "gpu-2")).allowed
    assert not (await load_candidacy(config, "cpu-1")).allowed
    listed = msgspec.structs.replace(config, leadership=LeadershipSettings(candidates=("cpu-1",)))
    assert (await load_candidacy(listed, "cpu-1")).allowed  # the config's own list wins


@contextlib.asynccontextmanager
async def scheduler(url: str, node_id: str, config: RrConfig) -> AsyncIterator[ServiceContext]:
    """The `scheduler` service's main function running in this process for one node."""
    bus = await connect(url, node_id=node_id)
    ctx = ServiceContext("scheduler", bus, config, CommonOptions(nats_url=url, node_id=node_id, config_path=None))
    task = asyncio.ensure_future(scheduler_main(ctx))
    try:
        yield ctx
    finally:
        ctx.stopping.set()
        await asyncio.wait_for(task, timeout=10)
        await bus.close()


async def test_only_listed_candidates_campaign_and_the_leader_runs_its_loops(
    bus: Bus, nats_url: str, eventually: Any, caplog: pytest.LogCaptureFixture
) -> None:
    config = RrConfig(leadership=LeadershipSettings(ttl_s=2, bucket="t_leases", candidates=("a",)))
    caplog.set_level(logging.INFO)
    async with scheduler(nats_url, "x", config):
        await eventually(lambda: "node x is not a candidate" in caplog.text, timeout=5, message="x says it never campaigns")
        async with scheduler(nats_url, "a", config):
            elected = await eventually(lambda: _elected(bus), timeout=5, message="a elected")
            # a node that beats is declared online by the leader's membership loop: a decision of its term
            await eventually(lambda: _beat_and_see_online(bus, "n1"), timeout=10, interval=0.2, message="the leader's loop decides")
    assert elected.node == "a"
    log = await read_all(bus)
    assert [e.node for e in log if isinstance(e, LeaderElected)] == ["a"]
    assert [(e.node, e.epoch) for e in log if isinstance(e, HostOnline)] == [("n1", elected.epoch)]


async def _beat_and_see_online(bus: Bus, node: str) -> bool:
    await publish_heartbeat(bus, Heartbeat(node=node, ts=utcnow(), seq=1, interval_s=5.0))
    return any(isinstance(e, HostOnline) for e in await read_all(bus))


async def read_all(bus: Bus) -> list[Event]:
    return [e async for _, e in events(bus) if isinstance(e, Event)]


async def _elected(bus: Bus) -> LeaderElected | None:
    return next((e for e in await leader_events(bus) if isinstance(e, LeaderElected)), None)


async def test_rr_leader_says_none_for_a_free_role_and_names_the_last_leader(
    bus: Bus, nats_url: str, eventually: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "rr.yaml"
    config.write_text(f"leadership:\n  bucket: {SETTINGS.bucket}\n")
    args = build_parser().parse_args(["leader", "--nats", nats_url, "--config", str(config)])
    assert await asyncio.to_thread(args.func, args) == 0
    assert "scheduler  none" in capsys.readouterr().out  # never elected, the bucket not even created
    async with node(nats_url, "a") as a:
        term = (await eventually(lambda: a.terms, timeout=5, message="a leads"))[0]
        await eventually(lambda: leader_events(bus), timeout=5, message="LEADER_ELECTED in the log")
        await asyncio.to_thread(args.func, args)
        assert f"scheduler  a       {term.epoch}" in capsys.readouterr().out
    await asyncio.to_thread(args.func, args)
    table = capsys.readouterr().out
    assert "scheduler  none" in table and f"free (deleted); last leader a (epoch {term.epoch})" in table


async def test_an_elector_stopped_while_it_records_a_late_term_end_stops_on_that_one_cancel(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Python 3.11's wait_for, around the late LEADER_LOST's publish, returns the ack and drops the
    # cancellation that lands with it; the retry loop then slept and retried for good, and the
    # elector's TaskGroup (the service's shutdown) waited on it.
    monkeypatch.setattr(election, "LATE_ANNOUNCE_EVERY_S", 0.05)
    losing = LosingACancel(Elector._announce_late)
    monkeypatch.setattr(Elector, "_announce_late", losing)
    async with node(nats_url, "n1", candidate=False) as n1:  # no campaign: only the retry loop records late ends
        await asyncio.wait_for(losing.answered.wait(), timeout=15)
        n1.stopping.set()
        done, _ = await asyncio.wait([n1.task], timeout=10)
        assert n1.task in done, f"the elector went on after its cancellation ({losing.calls} late announcements)"
