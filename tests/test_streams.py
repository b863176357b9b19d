"""Streams declared in code: provisioned idempotently, updated when settings change, bounded where they must be."""

from __future__ import annotations

import nats.js.errors
import pytest

from eventbus.connection import Bus, connect
from eventbus.errors import BusUnavailable, StreamSetupError
from eventbus.streams import (
    CONTEXT_STREAM,
    DEADLETTER_STREAM,
    EVENTS_STREAM,
    TELEMETRY_STREAM,
    StreamSettings,
    declared_streams,
    provision,
    require_declared,
)
from eventbus.subjects import heartbeat_subject
from tests.bus_harness import provisioned_bus

ALL = {EVENTS_STREAM, CONTEXT_STREAM, TELEMETRY_STREAM, DEADLETTER_STREAM}


@pytest.fixture
async def bare_bus(nats_url: str):  # type: ignore[no-untyped-def]
    """A connection to a server with no streams yet."""
    bus = await connect(nats_url, node_id="node-a")
    yield bus
    await bus.close()


def test_declared_streams_cover_disjoint_subjects() -> None:
    streams = declared_streams(StreamSettings())
    assert {s.name for s in streams} == ALL
    roots = [subject.removesuffix(">") for s in streams for subject in s.subjects]
    assert all(not a.startswith(b) for a in roots for b in roots if a != b), roots
    events = next(s for s in streams if s.name == EVENTS_STREAM)
    assert events.deny_delete, "the forensic log is never edited one message at a time"


async def test_provisioning_twice_creates_then_leaves_unchanged(bare_bus: Bus) -> None:
    assert await provision(bare_bus.js, StreamSettings()) == dict.fromkeys(ALL, "created")
    assert await provision(bare_bus.js, StreamSettings()) == dict.fromkeys(ALL, "unchanged")


async def test_services_start_without_the_context_stream_but_not_without_the_log(bare_bus: Bus) -> None:
    await provision(bare_bus.js, StreamSettings())
    await bare_bus.js.delete_stream(CONTEXT_STREAM)  # as on a server provisioned before it was declared
    await require_declared(bare_bus.js, StreamSettings(), where="here")
    await bare_bus.js.delete_stream(TELEMETRY_STREAM)
    with pytest.raises(BusUnavailable, match="stream RR_TELEMETRY does not exist on here"):
        await require_declared(bare_bus.js, StreamSettings(), where="here")


async def test_a_changed_setting_updates_only_the_streams_it_touches(bare_bus: Bus) -> None:
    await provision(bare_bus.js, StreamSettings())
    changed = StreamSettings(telemetry_max_age_s=7200.0, telemetry_per_node=240)
    assert await provision(bare_bus.js, changed) == {
        EVENTS_STREAM: "unchanged",
        CONTEXT_STREAM: "unchanged",
        TELEMETRY_STREAM: "updated",
        DEADLETTER_STREAM: "unchanged",
    }
    info = await bare_bus.js.stream_info(TELEMETRY_STREAM)
    assert (info.config.max_age, info.config.max_msgs_per_subject) == (7200.0, 240)
    assert await provision(bare_bus.js, changed) == dict.fromkeys(ALL, "unchanged")

    longer_dedupe = StreamSettings(telemetry_max_age_s=7200.0, telemetry_per_node=240, duplicate_window_s=60.0)
    assert set((await provision(bare_bus.js, longer_dedupe)).values()) == {"updated"}


async def test_a_shorter_retention_is_refused_without_the_flag_and_nothing_is_dropped(bare_bus: Bus) -> None:
    await provision(bare_bus.js, StreamSettings())
    for i in range(3):
        await bare_bus.js.publish(f"rr.tel.hb.n{i}", b"{}")
    shorter = StreamSettings(events_max_age_days=7.0, telemetry_per_node=1)
    with pytest.raises(StreamSetupError, match=r"stream RR_EVENTS: the config lowers its retention \(max_age 63072000.0 -> 604800.0\)"
                                               r".*--allow-shorter-retention"):
        await provision(bare_bus.js, shorter)
    assert (await bare_bus.js.stream_info(EVENTS_STREAM)).config.max_age == 730 * 86_400.0
    assert (await bare_bus.js.stream_info(TELEMETRY_STREAM)).state.messages == 3
    outcome = await provision(bare_bus.js, shorter, allow_shorter_retention=True)
    assert outcome == {EVENTS_STREAM: "updated", CONTEXT_STREAM: "updated", TELEMETRY_STREAM: "updated",
                       DEADLETTER_STREAM: "unchanged"}
    assert (await bare_bus.js.stream_info(EVENTS_STREAM)).config.max_age == 7 * 86_400.0


async def test_the_log_denies_deletes_and_purges_to_everyone(bare_bus: Bus) -> None:
    await provision(bare_bus.js, StreamSettings())
    ack = await bare_bus.js.publish("rr.evt.work.w-1.WORK_ADDED.n1", b"{}")
    info = await bare_bus.js.stream_info(EVENTS_STREAM)
    assert (info.config.deny_delete, info.config.deny_purge) == (True, True)
    with pytest.raises(nats.js.errors.APIError):
        await bare_bus.js.purge_stream(EVENTS_STREAM)
    with pytest.raises(nats.js.errors.APIError):
        await bare_bus.js.delete_msg(EVENTS_STREAM, ack.seq)
    assert (await bare_bus.js.stream_info(EVENTS_STREAM)).state.messages == 1


async def test_storage_cannot_change_in_place(bare_bus: Bus) -> None:
    await provision(bare_bus.js, StreamSettings(storage="file"))
    with pytest.raises(StreamSetupError, match="storage"):
        await provision(bare_bus.js, StreamSettings(storage="memory"))


async def test_replicas_a_single_server_cannot_hold_are_refused_by_stream_name(bare_bus: Bus) -> None:
    with pytest.raises(StreamSetupError, match=EVENTS_STREAM):
        await provision(bare_bus.js, StreamSettings(replicas=3))


async def test_heartbeats_keep_at_most_telemetry_per_node_per_subject(nats_url: str) -> None:
    async with provisioned_bus(nats_url, settings=StreamSettings(telemetry_per_node=3)) as bus:
        for i in range(10):
            await bus.js.publish(heartbeat_subject("gpu-7"), f"beat {i}".encode())
        for i in range(2):
            await bus.js.publish(heartbeat_subject("gpu-8"), f"beat {i}".encode())
        info = await bus.js.stream_info(TELEMETRY_STREAM)
        assert info.state.messages == 5
        newest = await bus.js.get_last_msg(TELEMETRY_STREAM, heartbeat_subject("gpu-7"))
        assert newest.data == b"beat 9"
        kept = [await bus.js.get_msg(TELEMETRY_STREAM, seq) for seq in range(info.state.first_seq, info.state.last_seq + 1)]
        assert [m.data for m in kept if m.subject == heartbeat_subject("gpu-7")] == [b"beat 7", b"beat 8", b"beat 9"]


async def test_the_event_log_refuses_deleting_a_message(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        await bus.js.publish("rr.evt.work.w-1.WORK_ADDED.node-a", b"{}")
        with pytest.raises(nats.js.errors.APIError):
            await bus.js.delete_msg(EVENTS_STREAM, 1)
        assert (await bus.js.stream_info(EVENTS_STREAM)).state.messages == 1
