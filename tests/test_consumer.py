"""The durable consumer runtime: ordered handling, bounded retries, poison parked, crash and restart without loss."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

from eventbus.consumer import ConsumerSpec, Delivery, EventConsumer
from eventbus.deadletter import list_parked
from eventbus.events import HostOnline, WorkAdded, WorkFailed
from eventbus.publisher import Publisher
from eventbus.streams import DEADLETTER_STREAM, EVENTS_STREAM
from servicekit.looplag import LoopLagMonitor
from tests.bus_harness import provisioned_bus, quick_spec, running
from tests.event_samples import CLIENT_KINDS, sample_event

ROOT = Path(__file__).resolve().parents[1]
KINDS = CLIENT_KINDS  # what a client may publish


async def test_handlers_see_their_events_in_log_order_and_other_types_are_skipped(nats_url: str, eventually) -> None:
    async with provisioned_bus(nats_url) as bus:
        events = [sample_event(WorkAdded if i % 3 else HostOnline, i) for i in range(30)]
        published = await Publisher(bus).publish_many(events)
        seen: list[int] = []

        async def on_work(event: WorkAdded, delivery: Delivery) -> None:
            seen.append(delivery.stream_seq)

        consumer = EventConsumer(bus, quick_spec("ordered"), {WorkAdded: on_work})
        async with running(consumer):
            await eventually(lambda: consumer.statistics().received == 30)
        assert seen == [p.seq for p in published if isinstance(p.event, WorkAdded)]
        stats = consumer.statistics()
        assert (stats.handled, stats.ignored, stats.failed, stats.parked) == (20, 10, 0, 0)


async def test_a_restarted_durable_resumes_after_what_it_handled(nats_url: str, eventually) -> None:
    async with provisioned_bus(nats_url) as bus:
        pub = Publisher(bus)
        seen: list[int] = []

        async def on_work(event: WorkAdded, delivery: Delivery) -> None:
            seen.append(delivery.stream_seq)

        await pub.publish_many([sample_event(WorkAdded, i) for i in range(10)])
        async with running(EventConsumer(bus, quick_spec("resumer"), {WorkAdded: on_work})):
            await eventually(lambda: len(seen) == 10)
        await pub.publish_many([sample_event(WorkAdded, i) for i in range(10, 15)])
        async with running(EventConsumer(bus, quick_spec("resumer"), {WorkAdded: on_work})):
            await eventually(lambda: len(seen) >= 15)
        assert seen == list(range(1, 16))

        late: list[int] = []
        newcomer = EventConsumer(bus, quick_spec("newcomer", deliver="new"), {WorkAdded: lambda e, d: late.append(d.stream_seq)})
        async with running(newcomer):
            await newcomer.ensure()  # exists before the publish, whether or not run() got there yet
            await pub.publish(sample_event(WorkAdded, 99))
            await eventually(lambda: late == [16], message=f"deliver=new saw {late}")


async def test_a_stop_near_the_end_of_the_log_hands_the_rest_back_for_the_next_instance(nats_url: str, eventually) -> None:
    # Near the end of the log the open pull requests have room to spare: what the stopping
    # consumer hands back must not bounce into them until its delivery count parks it.
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish_many([sample_event(WorkAdded, i) for i in range(1000)])
        first_seen: list[int] = []
        spec = quick_spec("handback", batch=500, pull_expires_s=1.0)
        stopping: list[asyncio.Task[None]] = []

        async def stop_at_900(event: WorkAdded, delivery: Delivery) -> None:
            first_seen.append(delivery.stream_seq)
            if len(first_seen) == 900:
                stopping.append(asyncio.ensure_future(first.stop()))
                await asyncio.sleep(0)  # let stop() begin while the rest of the batch is queued here

        first = EventConsumer(bus, spec, {WorkAdded: stop_at_900})
        await first.run()
        await asyncio.gather(*stopping)
        assert 900 <= len(first_seen) < 1000

        second_seen: list[int] = []
        second = EventConsumer(bus, spec, {WorkAdded: lambda e, d: second_seen.append(d.stream_seq)})
        async with running(second):
            await eventually(lambda: len(first_seen) + len(second_seen) >= 1000, message=f"{second.statistics()}")
        assert sorted(first_seen + second_seen) == list(range(1, 1001))
        assert second.statistics().parked == 0
        assert await list_parked(bus) == []


async def test_poison_messages_are_parked_with_a_reason_and_later_events_still_handled(nats_url: str, eventually) -> None:
    async with provisioned_bus(nats_url) as bus:
        garbage = b"\x00\xff not an event"
        unknown = b'{"type":"NO_SUCH_EVENT","id":"x:1"}'
        await bus.js.publish("rr.evt.work.w-0.GARBAGE.node-a", garbage)
        await bus.js.publish("rr.evt.work.w-0.NO_SUCH_EVENT.node-a", unknown)
        pub = Publisher(bus)
        cursed = await pub.publish(sample_event(WorkFailed, work_id="w-cursed"))
        good = await pub.publish_many([sample_event(WorkAdded, i) for i in range(5)])

        handled: list[int] = []

        async def always_fails(event: WorkFailed, delivery: Delivery) -> None:
            raise RuntimeError(f"boom on delivery {delivery.num_delivered}")

        async def on_work(event: WorkAdded, delivery: Delivery) -> None:
            handled.append(delivery.stream_seq)

        spec = quick_spec("poisoned", max_attempts=2)
        consumer = EventConsumer(bus, spec, {WorkFailed: always_fails, WorkAdded: on_work})
        async with running(consumer):
            await eventually(lambda: consumer.statistics().parked == 3, message=f"{consumer.statistics()}")
            await eventually(lambda: len(handled) == 5)
            # The last ack or term leaves after its handler returned: the server's count catches up a moment later.
            async def settled() -> bool:
                info = await bus.js.consumer_info(EVENTS_STREAM, "poisoned")
                return info.num_ack_pending == 0 and info.num_pending == 0

            await eventually(settled, message="parked messages are settled")
        assert handled == [p.seq for p in good]
        stats = consumer.statistics()
        assert (stats.parked, stats.failed, stats.redelivered, stats.handled) == (3, 2, 1, 5)

        parked = {p.stream_seq: p for p in await list_parked(bus)}
        assert sorted(parked) == [1, 2, cursed.seq]
        assert all(p.stream == EVENTS_STREAM and p.consumer == "poisoned" for p in parked.values())
        assert parked[1].data == garbage and "undecodable event" in parked[1].reason
        assert parked[2].data == unknown and "NO_SUCH_EVENT" in parked[2].reason
        assert parked[2].subject == "rr.evt.work.w-0.NO_SUCH_EVENT.node-a"
        assert parked[cursed.seq].deliveries == 2
        assert "RuntimeError: boom on delivery 2" in parked[cursed.seq].reason
        raw = await bus.js.get_msg(DEADLETTER_STREAM, parked[cursed.seq].dlq_seq)
        assert raw.headers is not None and raw.headers["Rr-Reason"] == parked[cursed.seq].reason
        assert raw.subject == "rr.dlq.RR_EVENTS.poisoned"


async def test_a_handler_that_fails_once_gets_the_event_again(nats_url: str, eventually) -> None:
    async with provisioned_bus(nats_url) as bus:
        published = await Publisher(bus).publish_many([sample_event(WorkAdded, i) for i in range(3)])
        attempts: dict[str, list[int]] = {}

        async def flaky(event: WorkAdded, delivery: Delivery) -> None:
            attempts.setdefault(event.id, []).append(delivery.num_delivered)
            if len(attempts[event.id]) == 1:
                raise ConnectionError("transient")

        consumer = EventConsumer(bus, quick_spec("flaky"), {WorkAdded: flaky})
        async with running(consumer):
            await eventually(lambda: consumer.statistics().handled == 3, message=f"{consumer.statistics()}")
        assert attempts == {p.event.id: [1, 2] for p in published}
        stats = consumer.statistics()
        assert (stats.failed, stats.redelivered, stats.parked, stats.received) == (3, 3, 0, 6)


async def test_a_slow_handler_keeps_its_message_past_the_ack_wait(nats_url: str, eventually) -> None:
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish(sample_event(WorkAdded))
        calls: list[int] = []

        async def slow(event: WorkAdded, delivery: Delivery) -> None:
            calls.append(delivery.num_delivered)
            await asyncio.sleep(1.5)  # the behaviour under test: three ack waits of work

        consumer = EventConsumer(bus, quick_spec("slow", ack_wait_s=0.5), {WorkAdded: slow})
        async with running(consumer):
            await eventually(lambda: consumer.statistics().handled == 1)
        assert calls == [1]
        assert consumer.statistics().redelivered == 0


async def test_events_queued_behind_a_slow_handler_past_the_ack_wait_are_handled_once(nats_url: str, eventually) -> None:
    async with provisioned_bus(nats_url) as bus:
        published = await Publisher(bus).publish_many([sample_event(WorkAdded, i) for i in range(10)])
        handled: list[int] = []

        async def slow(event: WorkAdded, delivery: Delivery) -> None:
            handled.append(delivery.stream_seq)
            await asyncio.sleep(0.2)  # ten of these outlast the 0.5 s ack wait of those queued

        consumer = EventConsumer(bus, quick_spec("queued", ack_wait_s=0.5, batch=10), {WorkAdded: slow})
        async with running(consumer):
            await eventually(lambda: len(set(handled)) == 10, timeout=20)
            await asyncio.sleep(1.0)  # let any redelivered copies arrive
        assert sorted(handled) == sorted(p.seq for p in published)
        assert consumer.statistics().parked == 0


async def test_sync_handlers_run_in_a_thread_while_the_loop_keeps_running(nats_url: str, eventually) -> None:
    entered, release = threading.Event(), threading.Event()
    threads: list[int] = []

    def blocking(event: WorkAdded, delivery: Delivery) -> None:
        threads.append(threading.get_ident())
        entered.set()
        release.wait(timeout=10)

    monitor = LoopLagMonitor(interval=0.01, threshold=0.5)
    ticking = asyncio.ensure_future(monitor.run())
    try:
        async with provisioned_bus(nats_url) as bus:
            await Publisher(bus).publish(sample_event(WorkAdded))
            consumer = EventConsumer(bus, quick_spec("sync"), {WorkAdded: blocking})
            async with running(consumer):
                await eventually(entered.is_set)
                ticks = monitor.statistics().samples
                await eventually(lambda: monitor.statistics().samples >= ticks + 10, message="loop stalled")
                assert consumer.statistics().handled == 0, "the handler is still blocked"
                release.set()
                await eventually(lambda: consumer.statistics().handled == 1)
    finally:
        release.set()
        ticking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticking
    assert threads and threads[0] != threading.get_ident()
    assert monitor.statistics().over_threshold == 0


# ---- a consumer in another process, killed or stopped mid-stream -----------------------


def handled_seqs(path: Path) -> list[int]:
    """Stream sequences the consumer process recorded, in the order it handled them."""
    if not path.exists():
        return []
    return [int(line) for line in path.read_text().splitlines()]


@contextlib.asynccontextmanager
async def consumer_process(url: str, durable: str, out: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """tests/procs/consume_to_file.py running as its own OS process; killed if the block leaves it running."""
    log = (out.parent / f"{durable}.{os.urandom(3).hex()}.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.procs.consume_to_file", url, durable, str(out),
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=log, stderr=log,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        log.close()


async def _publish_mixed(url: str, count: int) -> None:
    async with provisioned_bus(url) as bus:
        await Publisher(bus).publish_many([sample_event(KINDS[i % len(KINDS)], i) for i in range(count)])


async def test_a_consumer_killed_mid_stream_resumes_without_loss(nats_url: str, tmp_path: Path, eventually) -> None:
    await _publish_mixed(nats_url, 2000)
    out = tmp_path / "handled.txt"
    async with consumer_process(nats_url, "crashy", out) as first:
        await eventually(lambda: len(handled_seqs(out)) >= 300, timeout=20, message="first process handled too little")
        first.send_signal(signal.SIGKILL)
        assert await first.wait() == -signal.SIGKILL
    assert len(handled_seqs(out)) < 2000, "the kill did not land mid-stream"

    async with consumer_process(nats_url, "crashy", out) as second:
        await eventually(lambda: set(handled_seqs(out)) >= set(range(1, 2001)), timeout=30, message="events lost")
        second.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(second.wait(), 15) == 0
    seqs = handled_seqs(out)
    assert set(seqs) == set(range(1, 2001))
    # At-least-once: what the killed process handled (fsync'd) but whose ack never reached
    # the server comes again. Handlers run one at a time, so that is the message in flight
    # plus any acks still in the client's write buffer: a handful, never a batch.
    assert len(seqs) - len(set(seqs)) <= 10


async def test_a_gracefully_stopped_consumer_resumes_without_loss_or_repeat(nats_url: str, tmp_path: Path, eventually) -> None:
    await _publish_mixed(nats_url, 2000)
    out = tmp_path / "handled.txt"
    async with consumer_process(nats_url, "graceful", out) as first:
        await eventually(lambda: len(handled_seqs(out)) >= 300, timeout=20, message="first process handled too little")
        first.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(first.wait(), 15) == 0
    assert len(handled_seqs(out)) < 2000, "the stop did not land mid-stream"

    async with consumer_process(nats_url, "graceful", out) as second:
        await eventually(lambda: len(handled_seqs(out)) >= 2000, timeout=30, message="events lost")
        second.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(second.wait(), 15) == 0
    assert sorted(handled_seqs(out)) == list(range(1, 2001))


def test_pull_requests_follow_the_handling_speed_within_the_ack_wait() -> None:
    from eventbus.consumer import FIRST_BATCH, pull_size

    spec = ConsumerSpec(durable="d", ack_wait_s=30.0, batch=4000)
    assert pull_size(spec, 0.0) == FIRST_BATCH  # nothing timed yet
    assert pull_size(spec, 20e-6) == 4000  # fast handlers: the deepest request
    assert pull_size(spec, 0.01) == 375  # 30 s / 8 of 10 ms messages
    assert pull_size(spec, 5.0) == 1  # a slow handler gets one at a time
    assert pull_size(ConsumerSpec(durable="d", batch=10), 0.0) == 10
