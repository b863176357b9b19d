"""What a quarantine in force costs the services' event loops per `taint.tainted` call, at a realistic lineage.

The lineage: --batches selfplay batches (default 100k) over 31 nodes across a year, a model trained
on every 1,000 of them (from its predecessor) and an evaluation of each model; one node is
quarantined since mid-year, so about a 31st of the batches and every later model are tainted.
before:  the whole closure on the loop at each call (what `tainted` did: `closure` every time).
ours:    what the loop pays per call now: an unchanged state's closure is known (`tainted`), and a
         changed one is computed in a thread (servicekit/taintoffloop.py), so the loop pays
         `known_tainted` only; `ours_changed_ms` is the loop's cost on a miss, `thread_ms` the
         thread's closure (with the collector paused, as the services run it).
ceiling: the same call with no quarantine in force (the common case: nothing to go over).
ratio = ours / ceiling per call (best of --rounds); `before_over_ours` the speed-up on the loop.
Run: python -m ops.bench.bench_taint [--batches 100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from collections.abc import Callable
from typing import Any

from eventbus.gcpause import without_gc
from ops.bench.common import emit, log
from projections import taint
from projections.pmap import PMap

NODES = [f"gpu-{i:02d}" for i in range(31)]
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
YEAR = dt.timedelta(days=365)
BATCHES_PER_MODEL = 1_000


def lineage(batches: int) -> taint.TaintState:
    """A year's lineage of `batches` batches, a model per 1,000 of them and an evaluation of each model."""
    step = YEAR / batches
    models = batches // BATCHES_PER_MODEL
    batch_facts = {  # a batch's games are played by the newest model before it
        f"b-{i}": taint.BatchFacts(node=NODES[i % len(NODES)], at=START + i * step, model_id=_player(i)) for i in range(batches)
    }
    model_facts = {
        f"m-{m}": taint.ModelFacts(node=NODES[0], at=START + (m + 1) * BATCHES_PER_MODEL * step,
                                   input_batches=tuple(f"b-{i}" for i in range(m * BATCHES_PER_MODEL, (m + 1) * BATCHES_PER_MODEL)),
                                   parent_model=f"m-{m - 1}" if m else None)
        for m in range(models)
    }
    evaluations = {f"e-{m}": taint.EvaluationFacts(node=NODES[1], at=START + (m + 1) * BATCHES_PER_MODEL * step, players=(f"m-{m}", "random"))
                   for m in range(models)}
    return taint.TaintState(batches=taint.BatchFactsMap.of(batch_facts), models=PMap(model_facts), evaluations=PMap(evaluations))


def _player(batch: int) -> str | None:
    return f"m-{batch // BATCHES_PER_MODEL - 1}" if batch >= BATCHES_PER_MODEL else None


def quarantined(state: taint.TaintState) -> taint.TaintState:
    """The state with one node's outputs quarantined since mid-year."""
    quarantine = taint.Quarantine(quarantine_id="q-1", kind="node", target=NODES[5], reason="bad gpu", since=START + YEAR / 2, seq=1)
    return taint.TaintState(quarantines=PMap({"q-1": quarantine}), batches=state.batches, models=state.models, evaluations=state.evaluations)


def best_ms(call: Callable[[], Any], rounds: int, repeat: int = 1) -> float:
    """The best of `rounds` timings of `repeat` calls, per call, in ms."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeat):
            call()
        best = min(best, (time.perf_counter() - start) / repeat)
    return best * 1000


def old_tainted(state: taint.TaintState) -> taint.Tainted:
    """`tainted` before: the closure at every call."""
    graph = taint.Lineage(batches=state.batches, models=state.models, evaluations=state.evaluations)
    return taint.closure(state.quarantines.values(), graph)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    clean = lineage(args.batches)
    state = quarantined(clean)
    log(f"lineage: {len(state.batches)} batches, {len(state.models)} models; tainted {len(taint.tainted(state).batches)} batches")
    before = best_ms(lambda: old_tainted(state), args.rounds)
    thread = best_ms(lambda: without_gc(taint.tainted, quarantined(clean)), args.rounds)  # a fresh state: a miss, as a service computes it
    taint.tainted(state)  # known again: the misses above may have pushed it out of the last closures
    ours = best_ms(lambda: taint.tainted(state), args.rounds, repeat=1000)
    changed = best_ms(lambda: taint.known_tainted(quarantined(clean)), args.rounds, repeat=1000)
    ceiling = best_ms(lambda: taint.tainted(clean), args.rounds, repeat=1000)
    emit({
        "bench": "taint", "batches": args.batches, "models": len(state.models), "before_ms": round(before, 1),
        "ours_ms": round(ours, 5), "ours_changed_ms": round(changed, 5), "thread_ms": round(thread, 1),
        "ceiling_ms": round(ceiling, 5), "ratio": round(ours / ceiling, 2), "before_over_ours": round(before / ours),
    })


if __name__ == "__main__":
    main()
