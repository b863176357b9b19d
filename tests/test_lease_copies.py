"""The server copies the lease writes into the log: one copy per term, before its election; old streams are upgraded."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest
from nats.js.api import StreamSource, SubjectTransform

from cluster.leadership.election import Elector
from config.sections.leadership import LeadershipSettings
from eventbus.connection import Bus
from eventbus.events import Event, LeaderElected, LeaseWritten
from eventbus.history import events
from eventbus.leasecopy import COPIES
from eventbus.leaserecord import DEDUPE_WINDOW_S
from eventbus.leases import LeaseBucket
from eventbus.streams import EVENTS_STREAM, StreamSettings, provision, sources_of
from tests.bus_harness import provisioned_bus
from tests.test_election import node

LEASES = LeadershipSettings(ttl_s=2)  # the default bucket, which RR_EVENTS sources


async def _log(bus: Bus, subject: str = "rr.evt.>") -> list[tuple[int, Event]]:
    return [(seq, e) async for seq, e in events(bus, subject=subject) if isinstance(e, Event)]


async def test_each_term_is_copied_once_before_its_election_and_its_renewals_are_not(nats_url: str, eventually: Any) -> None:
    async with provisioned_bus(nats_url, node_id="observer") as bus:
        async with node(nats_url, "a", settings=LEASES) as a:
            await eventually(lambda: a.terms, timeout=10, message="a leads")
            await eventually(lambda: a.elector.statistics().renewals >= 3, timeout=10, message="three renewals")
            term = a.terms[0]
            copies = await _log(bus, COPIES)
            elected = [(seq, e) for seq, e in await _log(bus, "rr.evt.leader.>") if isinstance(e, LeaderElected)]
        ended = await _log(bus, COPIES)
    assert len(copies) == 1, "the renewals share the acquisition's message id: the log keeps one copy per term"
    (copy_seq, copy), = copies
    assert isinstance(copy, LeaseWritten)
    assert (copy.role, copy.revision, copy.node, copy.acquiring, copy.source) == ("scheduler", term.epoch, "a", True, "nats")
    assert [(e.node, e.epoch) for _, e in elected] == [("a", term.epoch)] and copy_seq < elected[0][0]
    assert [e.state for _, e in ended[1:]] == ["deleted"]  # the resignation's delete is copied too


async def test_streams_init_adds_the_source_to_an_old_log_and_shortens_an_old_buckets_window(nats_url: str) -> None:
    async with provisioned_bus(nats_url, node_id="admin") as bus:
        # provisioning made the bucket before the log's source, so the server copies from the first write
        assert (await bus.js.stream_info("KV_rr_leases")).config.duplicate_window == DEDUPE_WINDOW_S
        info = await bus.js.stream_info(EVENTS_STREAM)
        await bus.js.update_stream(dataclasses.replace(info.config, sources=[]))  # as created before the source existed
        leases = LeaseBucket(bus)
        await bus.js.update_stream(dataclasses.replace(leases._config(), duplicate_window=120.0))  # the server's default
        assert not sources_of((await bus.js.stream_info(EVENTS_STREAM)).config)

        assert (await provision(bus.js, StreamSettings()))[EVENTS_STREAM] == "updated"
        assert sources_of((await bus.js.stream_info(EVENTS_STREAM)).config) == {
            ("KV_rr_leases", "$KV.rr_leases.*", "rr.evt.lease.{{wildcard(1)}}.LEASE_WRITTEN.nats")}
        assert (await provision(bus.js, StreamSettings()))[EVENTS_STREAM] == "unchanged"
        assert await leases.shorten_window() == "updated"
        assert (await bus.js.stream_info(leases.stream)).config.duplicate_window == DEDUPE_WINDOW_S
        assert await leases.shorten_window() == "unchanged"
        assert await LeaseBucket(bus, "never_made").shorten_window() == "missing"


async def test_on_a_log_without_the_source_the_leader_warns_and_announces_without_waiting(
    nats_url: str, eventually: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async with provisioned_bus(nats_url, node_id="observer") as bus:
        info = await bus.js.stream_info(EVENTS_STREAM)
        await bus.js.update_stream(dataclasses.replace(info.config, sources=[]))
        with caplog.at_level(logging.WARNING, logger="cluster.leadership.copywait"):
            async with node(nats_url, "a", settings=LEASES) as a:
                await eventually(lambda: a.terms, timeout=10, message="a leads")
        assert await _log(bus, COPIES) == []
    assert any("run `rr streams init` with the admin credentials" in r.getMessage() for r in caplog.records)


async def test_a_bucket_that_would_drop_renewals_gets_no_term_id_and_a_warning(nats_url: str, caplog: pytest.LogCaptureFixture) -> None:
    async with provisioned_bus(nats_url, node_id="a") as bus:
        elector = Elector(bus, "scheduler", "a", settings=LEASES)
        assert elector._new_term_id().startswith("lease:scheduler:")
        elector._bucket.duplicate_window_s = 120.0  # a coordinator may not shorten it; admin's `rr streams init` does
        with caplog.at_level(logging.WARNING, logger="cluster.leadership.election"):
            assert elector._new_term_id() == "" and elector._new_term_id() == ""
    assert sum("every renewal is copied into the log" in r.getMessage() for r in caplog.records) == 1


def test_a_renewal_interval_within_the_buckets_dedupe_window_is_refused() -> None:
    with pytest.raises(ValueError, match="raise leadership.renew_every or leadership.ttl_s"):
        LeadershipSettings(ttl_s=1, renew_every=0.1)


async def test_a_leader_whose_acquisition_is_not_copied_gives_the_term_up_and_campaigns_again(
    nats_url: str, eventually: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async with provisioned_bus(nats_url, node_id="observer") as bus:
        info = await bus.js.stream_info(EVENTS_STREAM)
        lost = [StreamSource(name="KV_rr_leases", subject_transforms=[  # copied, but where no fence looks
            SubjectTransform(src="$KV.rr_leases.*", dest="rr.evt.elsewhere.{{wildcard(1)}}.LEASE_WRITTEN.nats")])]
        await bus.js.update_stream(dataclasses.replace(info.config, sources=lost))
        with caplog.at_level(logging.WARNING):
            async with node(nats_url, "a", settings=LEASES) as a:
                await eventually(lambda: a.elector.statistics().terms_won >= 2, timeout=15, message="a campaigns again")
                assert a.terms == [] and a.elector.statistics().campaigns >= 2
        assert [e for _, e in await _log(bus, "rr.evt.leader.>") if isinstance(e, LeaderElected)] == []
    assert any("no copy of the scheduler lease's acquisition" in r.getMessage() for r in caplog.records)
    assert any("campaigning again" in r.getMessage() for r in caplog.records)
