"""A leader decision without an epoch is never admitted, even by a fence that has seen no election.

The server lets a coordinator publish MODEL_PROMOTED (it may lead), so only the epoch says
whether a term wrote it: a coordinator's raw publish with no epoch, before or after any
election, changes no view and `rr models` does not list it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventbus.events import HostOnline, ModelPromoted, WorkAdded, WorkAssigned, utcnow
from eventbus.publisher import Publisher
from eventbus.streams import StreamSettings, provision
from projections import bundle
from projections.base import fold_events
from projections.fencing import EpochFence, Verdict
from tests.auth_harness import Fleet, auth_server, open_as
from tests.terms import TERM

FORGED = ModelPromoted(model_id="forged-by-coord", board_type="hex8", num_players=2, sha256="ab" * 32, generation=99)


@pytest.mark.parametrize("decision", [
    FORGED, HostOnline(node="ghost"), WorkAssigned(work_id="w-1", node="ghost", attempt=1, deadline=utcnow()),
])
def test_a_fence_that_has_seen_no_election_drops_an_epochless_decision(decision: object) -> None:
    fence = EpochFence()
    assert fence.judge_and_learn(decision) is Verdict.NO_EPOCH  # type: ignore[arg-type]
    assert fence.statistics().dropped_no_epoch == 1


def test_no_view_takes_an_epochless_decision_before_or_after_an_election() -> None:
    added = WorkAdded(work_id="w-1", work_type="selfplay", board_type="hex8", num_players=2)
    before = fold_events(bundle.PROJECTION, enumerate([added, FORGED, HostOnline(node="ghost")], 1))
    after = fold_events(bundle.PROJECTION, enumerate([TERM, added, FORGED, HostOnline(node="ghost")], 1))
    for state in (before, after):
        assert state.models.promoted == {} and "ghost" not in state.cluster.nodes
        assert state.models.fence.dropped == 1 and "without an epoch" in state.models.fence.last_dropped[0].reason


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with auth_server(tmp_path) as (fleet, _server):
        yield fleet


async def test_a_coordinators_epochless_promotion_is_stored_but_rr_models_does_not_list_it(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli.main import main as rr

    admin = await open_as(fleet, "admin", node_id="laptop")
    coordinator = await open_as(fleet, "coord-1")
    try:
        await provision(admin.js, StreamSettings(events_max_gib=1, telemetry_max_gib=0.1, deadletter_max_gib=0.1))
        stored = await Publisher(coordinator).publish(FORGED)  # the server's permissions let a coordinator write it
        assert stored.seq > 0
    finally:
        await coordinator.close()
        await admin.close()
    monkeypatch.setenv("RR_NATS_CREDS", str(fleet.out / "credentials" / "admin.yaml"))
    capsys.readouterr()
    assert await asyncio.to_thread(rr, ["models", "--json", "--nats", fleet.url]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert await asyncio.to_thread(rr, ["models", "--nats", fleet.url]) == 0
    assert "forged-by-coord" not in capsys.readouterr().out
