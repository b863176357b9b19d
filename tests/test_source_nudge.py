"""When a holder whose acquisition's copy is late asks RR_EVENTS' leader to step down (cluster/leadership/sourcenudge.py)."""

from __future__ import annotations

import pytest

from cluster.leadership.sourcenudge import LATE_AFTER_S, MIN_LEADER_TENURE_S, late_after, should_step_down
from eventbus.errors import BusError
from eventbus.leases import LeaseBucket
from eventbus.sourcestall import SourceStatus, idle_seconds, source_status, step_down_leader
from eventbus.streams import EVENTS_STREAM
from tests.bus_harness import provisioned_bus

SETTLED = MIN_LEADER_TENURE_S + 1


def status(idle_s: float | None = 30.0, error: str | None = None, tenure_s: float | None = SETTLED) -> SourceStatus:
    return SourceStatus(idle_s=idle_s, error=error, leader_tenure_s=tenure_s)


def test_a_source_silent_for_the_whole_wait_under_a_settled_stream_leader_is_nudged() -> None:
    assert should_step_down(status(idle_s=2.0), waited_s=2.0, wait_s=5.0)
    assert should_step_down(status(idle_s=0.1, error="consumer create failed"), waited_s=1.5, wait_s=5.0)


def test_a_source_that_spoke_during_the_wait_is_not_stalled() -> None:
    assert not should_step_down(status(idle_s=0.4), waited_s=2.0, wait_s=5.0)
    assert not should_step_down(status(idle_s=None), waited_s=2.0, wait_s=5.0)


def test_a_stream_leader_that_never_heard_from_its_source_counts_it_silent_since_it_took_office() -> None:
    # The server reports `active` -1 for a source its leader could not set up since it took office.
    assert idle_seconds(-1, 12.5) == 12.5 and idle_seconds(2_500_000_000, 12.5) == 2.5
    assert idle_seconds(None, 12.5) is None and idle_seconds(-1, None) is None
    assert should_step_down(status(idle_s=idle_seconds(-1, SETTLED)), waited_s=2.0, wait_s=5.0)


def test_a_copy_is_not_late_before_a_quarter_of_the_wait_or_a_second() -> None:
    assert late_after(5.0) == LATE_AFTER_S and late_after(2.0) == 0.5
    assert not should_step_down(status(), waited_s=0.9, wait_s=5.0)
    assert should_step_down(status(), waited_s=0.5, wait_s=2.0)


def test_a_stream_leader_new_in_office_or_of_unknown_tenure_is_left_to_set_its_sources_up() -> None:
    assert not should_step_down(status(tenure_s=MIN_LEADER_TENURE_S - 0.5), waited_s=3.0, wait_s=5.0)
    assert not should_step_down(status(tenure_s=None), waited_s=3.0, wait_s=5.0)


async def test_on_one_server_the_source_is_reported_without_a_tenure_and_a_step_down_is_refused(nats_url: str) -> None:
    async with provisioned_bus(nats_url, node_id="n1") as bus:
        await LeaseBucket(bus).ensure()
        status = await source_status(bus, EVENTS_STREAM, LeaseBucket(bus).stream, timeout=2.0)
        assert status is not None and status.error is None
        assert status.leader_tenure_s is None, "no other replica to hand office to: no one asks"
        assert await source_status(bus, EVENTS_STREAM, "KV_elsewhere", timeout=2.0) is None
        with pytest.raises(BusError, match="refused to step down"):
            await step_down_leader(bus, EVENTS_STREAM, timeout=2.0)
