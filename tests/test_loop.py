"""The whole loop through `rr up`: real nats-server, every service as its own process, the reference workload.

A fresh data dir and a tiny configuration: the populator queues selfplay, the pipeline trains
once enough samples exist, evaluates the candidate against random play and promotes it past the
gate, and the distributor installs it under the seeds' names. Nothing is faked on the way.

That run takes a minute of a 2-core machine, so it happens once, traced to a real OTLP/HTTP
receiver and scraped on /metrics: one test asserts the loop on its log and files, the other
that the training item is one trace through its evaluation and promotion.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from config.nodedirs import canonical_path
from eventbus import events as ev
from eventbus.events import EvaluationComplete, Event, ModelDistributed, ModelPromoted, WorkCompleted
from tests.helpers import eventually
from tests.otlp_harness import Receiver, running_receiver
from tests.test_metrics_live import Samples, scrape
from tests.up_harness import Up, rr_up

# The loop's fastest configuration: selfplay, training, the gate and a promotion; every process exports its spans.
TINY = """\
streams: {{events_max_gib: 1}}  # rr up reserves the streams on the disk: tests need little
scheduler:
  populator_games: 10
  backlog_per_node: 1
  curriculum: {{square8_2p: 1.0, hex8_2p: 0.0}}
pipeline:
  min_new_samples: 500
  evaluation_games: 10
  # The test's own gate: the first candidate (21-70% against the anchor in four measured runs) passes it in one
  # round. The default gate's strength is tested in tests/test_workload_gate.py.
  gate: {{elo0: -600, elo1: -300, max_games: 60}}
telemetry: {{exporter: otlp, endpoint: "{endpoint}", metrics: false}}
"""
RUN_TIMEOUT_S = 480  # bring-up, the loop (420 s at most) and the stop, paid by the module's first test


@dataclass(frozen=True)
class LoopRun:
    """One `rr up` run through a promoted and distributed model, stopped cleanly (exit 0, spans flushed)."""

    log: list[Event]
    samples: Samples  # /metrics once the distribution was counted
    data: Path
    receiver: Receiver


async def _counted(up: Up) -> Samples | None:
    samples = await scrape(up.api)
    return samples if samples.get(("rr_model_distributions_total", ()), 0) >= 1 else None


async def _run(tmp: Path, receiver: Receiver) -> LoopRun:
    config = tmp / "rr.yaml"
    config.write_text(TINY.format(endpoint=receiver.url))
    # rr_up stops rr up with SIGINT at the end of the block and fails unless it exits 0.
    async with rr_up(tmp / "data", config, "solo") as up:
        async def distributed() -> list[Event] | None:
            log = [e for _, e in await up.log()]
            promoted = {e.model_id for e in log if isinstance(e, ModelPromoted)}
            return log if any(isinstance(e, ModelDistributed) and e.model_id in promoted for e in log) else None

        log = await eventually(distributed, timeout=420, interval=1.0, message="a model promoted and distributed")
        # The promotion and the distribution move their metric families too.
        samples = await eventually(lambda: _counted(up), timeout=30, interval=0.5, message="/metrics counts them")
    return LoopRun(log=log, samples=samples, data=up.data, receiver=receiver)


@pytest.fixture(scope="module")
def loop_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopRun]:
    """The module's one traced `rr up` run, finished before its first test."""
    with running_receiver() as receiver:
        yield asyncio.run(_run(tmp_path_factory.mktemp("loop"), receiver))


@pytest.mark.timeout(RUN_TIMEOUT_S)
def test_rr_up_runs_selfplay_training_evaluation_promotion_and_distribution_by_itself(loop_run: LoopRun) -> None:
    log, data = loop_run.log, loop_run.data
    promoted = next(e for e in log if isinstance(e, ModelPromoted))
    assert (promoted.board_type, promoted.num_players, promoted.generation) == ("square8", 2, 1)
    assert promoted.epoch is not None  # a leader's decision, fenced
    # The gate: the SPRT (the test's lenient bounds) accepted the first generation against the pure-search anchor.
    gate = next(e for e in log if isinstance(e, EvaluationComplete) and e.model_id == promoted.model_id and e.gate)
    assert (gate.opponent, gate.verdict) == ("square8_2p-search16", "H1") and "SPRT accepted H1" in promoted.reason
    completed = {e.work_id for e in log if isinstance(e, WorkCompleted)}
    assert any(w.startswith("selfplay") for w in completed) and any(w.startswith("train") for w in completed)
    # Installed under the seeds' name, byte for byte what was promoted.
    installed = canonical_path(data / "models", "square8", 2)
    assert hashlib.sha256(installed.read_bytes()).hexdigest() == promoted.sha256
    assert (data / "models" / "ringrift_best_square8_2p.pth").resolve() == installed.resolve()


def _trace_id(event: ev.Event) -> str | None:
    return event.trace.split("-")[1] if event.trace else None


@pytest.mark.timeout(RUN_TIMEOUT_S)
def test_a_training_item_the_pipeline_adds_is_one_trace_through_its_evaluation_and_promotion(loop_run: LoopRun) -> None:
    log, samples, receiver = loop_run.log, loop_run.samples, loop_run.receiver
    assert samples[("rr_model_promotions_total", (("config", "square8_2p"),))] >= 1
    assert samples[("rr_model_distributions_total", ())] >= 1
    promotion = next(e for e in log if isinstance(e, ev.ModelPromoted))
    trace_id = _trace_id(promotion)
    added = {e.work_id: e for e in log if isinstance(e, ev.WorkAdded)}
    training = next(a for a in added.values() if a.work_type == "training" and _trace_id(a) == trace_id)
    evaluations = [a for a in added.values() if a.work_type == "evaluation" and _trace_id(a) == trace_id]
    assert evaluations, "the candidate's evaluation continues the training item's trace"
    items = {training.work_id, *(a.work_id for a in evaluations)}
    traced = [e for e in log if getattr(e, "work_id", None) in items]
    assert {_trace_id(e) for e in traced} == {trace_id}
    assert {"TRAINING_COMPLETE", "EVALUATION_COMPLETE", "WORK_ASSIGNED", "WORK_COMPLETED"} <= {e.type_name() for e in traced}
    # A selfplay item the populator added is a trace of its own, rooted in the leader, with its domain result.
    selfplay = next(a for a in added.values() if a.work_type == "selfplay" and a.trace)
    reports = [e for e in log if getattr(e, "work_id", None) == selfplay.work_id]
    assert "SELFPLAY_COMPLETE" in {e.type_name() for e in reports} and {_trace_id(e) for e in reports} == {_trace_id(selfplay)}
    (selfplay_root,) = [s for s in receiver.trace(_trace_id(selfplay) or "") if s.parent_span_id == b""]
    assert (selfplay_root.name, receiver.services[selfplay_root.span_id]) == ("work add", "rr-leader")
    spans = receiver.trace(trace_id)
    (root,) = [s for s in spans if s.parent_span_id == b""]
    assert (root.name, receiver.services[root.span_id], root.span_id.hex()) == ("work add", "rr-leader", training.trace.split("-")[2])
    names = {(receiver.services[s.span_id], s.name) for s in spans}
    assert {("rr-worker", "job training"), ("rr-worker", "job evaluation"), ("rr-leader", "decide MODEL_PROMOTED")} <= names, names
    assert {s.parent_span_id for s in spans} - {b""} <= {s.span_id for s in spans}, "every span's parent is in the trace"
