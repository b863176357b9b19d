"""A candidate's own credentials cannot make up a leadership: elections are verified against the server's lease copies.

On a real nats-server with the generated auth.conf, coord-1 wins a real election; coord-2 (also a
candidate, so the server lets it publish elections under its own name) announces itself with
made-up epochs (10**18, the real epoch + 1, a renewal's revision) and decides under one. No view
changes: `rr leader`, the projections, `rr models` and the work view still show coord-1, whose
next assignment is applied; nobody, admin included, may publish a lease copy; and the live fold
equals a rebuild from sequence 1.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cluster.leadership.term import NotLeader, Term
from config.sections.leadership import LeadershipSettings
from eventbus.connection import Bus
from eventbus.events import LeaderElected, ModelPromoted, WorkAdded, WorkAssigned
from eventbus.follow import follow
from eventbus.history import last_sequence
from eventbus.leasecopy import COPIES, copy_subject
from eventbus.leases import LeaseBucket
from eventbus.natsserver import NatsServer
from eventbus.probe import PermissionWatch, probe_publish
from eventbus.publisher import Publisher
from eventbus.streams import StreamSettings, provision
from projections import bundle
from projections.base import Folder
from projections.pmap import enc_hook
from servicekit.auth.credentials import connect_options
from servicekit.rebuild import state_at_seq
from tests.auth_harness import Fleet, auth_server, open_as, stored_count
from tests.test_election import node

HOSTS = """
hosts:
  coord-1: {status: ready, role: coordinator}
  coord-2: {status: ready, role: coordinator}
  gpu-1: {status: ready, role: selfplay}
p2p_voters: [coord-1, coord-2]
"""
CANDIDATES = ("coord-1", "coord-2")
LEASES = LeadershipSettings(ttl_s=2)  # the default bucket, which RR_EVENTS sources
SMALL = StreamSettings(events_max_gib=1, telemetry_max_gib=0.1, deadletter_max_gib=0.1)
FORGED = 2**52  # made up, within the bounds every event obeys (10**18 is past them, so no reader even decodes it)
DEADLINE = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[Fleet, NatsServer]]:
    with auth_server(tmp_path, HOSTS) as running:
        yield running


def _added(work_id: str) -> WorkAdded:
    return WorkAdded(work_id=work_id, work_type="selfplay", board_type="hex8", num_players=2)


def _assigned(work_id: str, epoch: int | None = None) -> WorkAssigned:
    return WorkAssigned(work_id=work_id, node="gpu-1", attempt=1, deadline=DEADLINE, epoch=epoch)


async def _led(running: Any, eventually: Any, after: int = 0) -> Term:
    terms = await eventually(lambda: [t for t in running.terms[after:] if t.fence is not None], timeout=15,
                             message="coord-1 leads and has announced it")
    return terms[0]  # type: ignore[no-any-return]


def _encoded(state: bundle.ProjectionSet) -> bytes:
    return msgspec.json.encode(state, enc_hook=enc_hook)


async def test_a_candidates_made_up_elections_change_no_view_and_the_real_leader_keeps_deciding(
    fleet: tuple[Fleet, NatsServer], eventually: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    from cli.main import main as rr

    auth, _server = fleet
    admin = await open_as(auth, "admin", node_id="laptop")
    forger = await open_as(auth, "coord-2")
    live = Folder(bundle.PROJECTION, bundle.believing(bundle.ProjectionSet(), CANDIDATES))
    try:
        await provision(admin.js, SMALL)
        following = asyncio.ensure_future(follow(admin, live, start_seq=1))
        async with node(auth.url, "coord-1", settings=LEASES, options=connect_options(auth.creds("coord-1"))) as leader:
            term = await _led(leader, eventually)
            for work_id in ("w-1", "w-2", "w-3"):
                await Publisher(admin).publish(_added(work_id))
            await term.publish(_assigned("w-1"))
            # The copy of the acquisition is in the log before the election that cites it.
            assert await stored_count(admin, copy_subject("scheduler")) >= 1
            leases = LeaseBucket(admin)
            renewal = await eventually(lambda: _renewed_past(leases, term.epoch), timeout=10, message="a renewal")

            # coord-2's own credentials: elections under its own name with made-up epochs, and a decision under one.
            for epoch in (10**18, FORGED, term.epoch + 1, renewal):
                forged = msgspec.structs.replace(LeaderElected(role="scheduler", node="coord-2", epoch=epoch, ttl_s=2.0),
                                                 source="coord-2", id=f"coord-2:{epoch}")
                await forger.js.publish(forged.subject(), msgspec.json.encode(forged))  # raw: no client-side check
            await Publisher(forger).publish(_assigned("w-2", epoch=FORGED))
            await Publisher(forger).publish(ModelPromoted(model_id="forged", board_type="hex8", num_players=2,
                                                          sha256="ab" * 32, generation=99, epoch=FORGED))
            assert await stored_count(admin, "rr.evt.leader.scheduler.LEADER_ELECTED.coord-2") == 4  # the server let it

            # The server fences the real term out once; the lease still holds coord-1, which announces again.
            with pytest.raises(NotLeader):
                await term.publish(_assigned("w-3"))
            again = await _led(leader, eventually, after=1)
            await again.publish(_assigned("w-3"))

            rebuilt = (await state_at_seq(admin, use_snapshot=False, candidates=CANDIDATES)).state
            capsys.readouterr()
            monkeypatch.setenv("RR_NATS_CREDS", str(auth.out / "credentials" / "admin.yaml"))
            assert await asyncio.to_thread(rr, ["leader", "--json", "--nats", auth.url]) == 0
            shown = json.loads(capsys.readouterr().out.splitlines()[0])
            assert await asyncio.to_thread(rr, ["models", "--json", "--nats", auth.url]) == 0
            assert json.loads(capsys.readouterr().out) == []
        end = await last_sequence(admin)  # coord-1 resigned: its LEADER_LOST and the lease's delete are in the log
        await eventually(lambda: live.state.last_seq >= end, timeout=10, message="the live fold caught up")
        from_start = (await state_at_seq(admin, use_snapshot=False, candidates=CANDIDATES)).state
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
    finally:
        await forger.close()
        await admin.close()

    assert (shown["node"], shown["epoch"], shown["announced"]) == ("coord-1", again.epoch, True)
    leader_info = rebuilt.cluster.leaders["scheduler"]
    assert (leader_info.node, leader_info.epoch) == ("coord-1", again.epoch)
    assert rebuilt.work.items["w-1"].node == "gpu-1" and rebuilt.work.items["w-3"].status.value == "assigned"
    assert rebuilt.work.items["w-2"].status.value == "pending"  # the forged decision changed nothing
    assert rebuilt.models.promoted == {} and "forged" not in rebuilt.models.models
    reasons = [d.reason for d in rebuilt.cluster.fence.last_dropped]
    for epoch in (FORGED, term.epoch + 1, renewal):
        assert f"no acquisition of the scheduler lease at revision {epoch} by coord-2 in the log: a made-up epoch" in reasons
    assert _encoded(bundle.PROJECTION.finished(live.state)) == _encoded(from_start)


async def _renewed_past(leases: LeaseBucket, epoch: int) -> int | None:
    record = await leases.read("scheduler")
    return record.revision if record.revision > epoch and record.epoch == epoch else None


@pytest.mark.parametrize(("user", "node_id"), [("gpu-1", "gpu-1"), ("coord-1", "coord-1"), ("coord-2", "coord-2"), ("admin", "laptop")])
async def test_no_user_may_publish_a_lease_copy_and_the_server_still_writes_them(
    fleet: tuple[Fleet, NatsServer], eventually: Any, user: str, node_id: str,
) -> None:
    auth, _server = fleet
    admin = await open_as(auth, "admin", node_id="laptop")
    watch = PermissionWatch()
    bus: Bus = await open_as(auth, user, node_id=node_id, watch=watch)
    try:
        await provision(admin.js, SMALL)
        async with node(auth.url, "coord-1", settings=LEASES, options=connect_options(auth.creds("coord-1"))) as leader:
            await _led(leader, eventually)
            copies = await stored_count(admin, COPIES)
            assert copies >= 1, "the server copies the lease writes under auth too"
            for subject in (copy_subject("scheduler"), f"rr.evt.lease.scheduler.LEASE_WRITTEN.{node_id}",
                            "rr.evt.lease.x.HOST_ONLINE.nats"):
                assert (await probe_publish(bus, watch, subject, harmless=False)).outcome == "denied", subject
            assert await stored_count(admin, f"rr.evt.lease.*.*.{node_id}") == 0
    finally:
        await bus.close()
        await admin.close()
