"""The issue's poison reproductions against real processes: parked or refused with a reason, and scheduling goes on."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import nats.js.errors
import pytest

from eventbus.connection import Bus
from eventbus.consumer import Delivery, EventConsumer
from eventbus.deadletter import list_parked
from eventbus.events import MAX_EVENT_BYTES, EvaluationComplete, WorkAdded
from eventbus.publisher import Publisher
from eventbus.streams import DLQ_BODY_MAX, EVENTS_STREAM
from projections import work
from tests.bus_harness import quick_spec, running
from tests.procs.leader_fleet import Fleet
from tests.scheduler_harness import add_items, all_in, online, simulated_worker, stop

pytestmark = pytest.mark.timeout(120)

QUIET = "  populator_enabled: false\npipeline:\n  enabled: false\n"

# Raw bodies as a hostile or buggy publisher writes them, bypassing the Publisher's checks.
POISON = {
    # MODEL_PROMOTED without `ts` after an EVALUATION_COMPLETE with an Elo took the scheduler down for good.
    "rr.evt.model.m-poison.MODEL_PROMOTED.evil": json.dumps(
        {"type": "MODEL_PROMOTED", "model_id": "m-poison", "board_type": "hex8", "num_players": 2, "sha256": "s"}),
    # JSON nested 5000 deep raised RecursionError in every reader.
    "rr.evt.work.w-deep.WORK_ADDED.evil": '{"type": "WORK_ADDED", "x": ' + "[" * 5000 + "]" * 5000 + "}",
    # A forged election with epoch 10^18 fenced off every real decision.
    "rr.evt.leader.scheduler.LEADER_ELECTED.evil": json.dumps(
        {"type": "LEADER_ELECTED", "role": "scheduler", "node": "evil", "epoch": 10**18}),
    # Numbers out of any sensible range.
    "rr.evt.work.w-huge.WORK_ADDED.evil": json.dumps(
        {"type": "WORK_ADDED", "work_id": "w-huge", "work_type": "selfplay", "board_type": "hex8",
         "num_players": 10**30, "priority": 10**40}),
}


async def test_poison_in_the_log_leaves_the_scheduler_leader_assigning(bus: Bus, nats_url: str, tmp_path: Path,
                                                                       eventually: Any) -> None:
    config = tmp_path / "rr.yaml"
    config.write_text("leadership:\n  ttl_s: 2\nmembership:\n  heartbeat_interval_s: 60\nscheduler:\n" + QUIET)
    pub = Publisher(bus)
    await pub.publish(EvaluationComplete(model_id="m-poison", work_id="e-1", node="n1", opponent="random",
                                         games=4, wins=4, losses=0, elo=1500.0))
    for subject, body in POISON.items():
        await bus.js.publish(subject, body.encode())
    await online(pub, "n1")
    worker = asyncio.create_task(simulated_worker(bus, "n1", lambda job: "complete"))
    try:
        with Fleet(nats_url, ["s1"], config, tmp_path) as fleet:
            ids = await add_items(pub, 2, prefix="after-poison")
            await eventually(lambda: all_in(bus, work.WorkStatus.COMPLETED, ids), timeout=60, interval=0.2,
                             message=fleet.logs())
            logs = fleet.logs()
    finally:
        await stop(worker)
    assert "Traceback" not in logs, logs
    assert "leader work of epoch" not in logs, logs


async def test_a_message_over_the_catalogue_size_is_refused_by_the_stream(bus: Bus) -> None:
    body = b'{"type": "HOST_ONLINE", "node": "' + b"n" * (MAX_EVENT_BYTES + 16 * 1024) + b'"}'
    with pytest.raises(nats.js.errors.APIError, match="(?i)maximum|size"):
        await bus.js.publish("rr.evt.host.big.HOST_ONLINE.evil", body, timeout=5)
    info = await bus.js.stream_info(EVENTS_STREAM)
    assert info.state.messages == 0


async def test_a_parked_copy_keeps_a_reference_and_a_bounded_body_and_the_consumer_goes_on(bus: Bus,
                                                                                          eventually: Any) -> None:
    big = b'{"type": "WORK_ADDED", "junk": "' + b"j" * (MAX_EVENT_BYTES - 64) + b'"'  # unterminated: never decodes
    stored = await bus.js.publish("rr.evt.work.w-big.WORK_ADDED.evil", big)
    handled: list[str] = []

    async def on_added(event: WorkAdded, delivery: Delivery) -> None:
        handled.append(event.work_id)

    consumer = EventConsumer(bus, quick_spec("poison-dlq"), {WorkAdded: on_added})
    async with running(consumer):
        await Publisher(bus).publish(WorkAdded(work_id="w-good", work_type="selfplay", board_type="hex8", num_players=2))
        await eventually(lambda: handled == ["w-good"], timeout=20, message=str(consumer.statistics()))
        [parked] = await eventually(lambda: list_parked(bus), timeout=20)
    assert (parked.stream, parked.stream_seq, parked.subject) == (EVENTS_STREAM, stored.seq, "rr.evt.work.w-big.WORK_ADDED.evil")
    assert parked.size == len(big) and parked.data == big[:DLQ_BODY_MAX]
    assert "undecodable" in parked.reason
