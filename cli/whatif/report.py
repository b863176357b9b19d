"""Measuring an outcome the same way for the record and each simulation, and comparing them, pure."""

from __future__ import annotations

import math
from collections.abc import Sequence

import msgspec

from cli.whatif.recording import Recording
from cli.whatif.simulate import Outcome
from services.leader.policy import config_key


class Measures(msgspec.Struct, frozen=True, kw_only=True):
    """One run of a window: queue waits per work type, utilisation, throughput per config."""

    label: str
    wait_p50_s: dict[str, float]  # work type -> median seconds from added to first assigned
    wait_p99_s: dict[str, float]
    wait_p50_by_config_s: dict[str, float]  # config -> median wait: where a curriculum weight shows
    never_assigned: int
    utilisation: float  # job-seconds run / node-seconds online, in the window
    completed_per_hour: dict[str, float]  # config -> items completed per hour


class Agreement(msgspec.Struct, frozen=True, kw_only=True):
    """How closely a replay of the recorded config reproduces the record."""

    same_first_node: float  # fraction of items assigned in both whose first node is the same
    wait_p50_delta_s: dict[str, float]  # work type -> |simulated p50 - recorded p50|


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def measure(label: str, recording: Recording, outcome: Outcome) -> Measures:
    """The measures of `outcome` over the recording's window."""
    waits: dict[str, list[float]] = {}
    by_config: dict[str, list[float]] = {}
    done: dict[str, int] = {}
    for a in recording.arrivals:
        cfg = config_key(a.board_type, a.num_players)
        if a.work_id in outcome.assigned:
            waits.setdefault(a.work_type, []).append(outcome.assigned[a.work_id][1] - a.at)
            by_config.setdefault(cfg, []).append(outcome.assigned[a.work_id][1] - a.at)
        if a.work_id in outcome.completed:
            done[cfg] = done.get(cfg, 0) + 1
    online = sum((s.end if s.end is not None else recording.seconds) - s.start for s in recording.nodes)
    ran = sum(outcome.ran.get(w, 0.0) for w in outcome.completed)
    hours = recording.seconds / 3600 or 1.0
    return Measures(
        label=label, wait_p50_s={t: percentile(w, 50) for t, w in sorted(waits.items())},
        wait_p99_s={t: percentile(w, 99) for t, w in sorted(waits.items())},
        wait_p50_by_config_s={c: percentile(w, 50) for c, w in sorted(by_config.items())},
        never_assigned=sum(1 for a in recording.arrivals if a.work_id not in outcome.assigned),
        utilisation=ran / online if online > 0 else 0.0,
        completed_per_hour={c: n / hours for c, n in sorted(done.items())},
    )


def agreement(recorded: Outcome, replayed: Outcome, recorded_m: Measures, replayed_m: Measures) -> Agreement:
    """How far the replay of the recorded config is from the record."""
    both = [w for w in recorded.assigned if w in replayed.assigned]
    same = sum(1 for w in both if recorded.assigned[w][0] == replayed.assigned[w][0])
    types = sorted(set(recorded_m.wait_p50_s) | set(replayed_m.wait_p50_s))
    return Agreement(
        same_first_node=same / len(both) if both else 1.0,
        wait_p50_delta_s={t: abs(recorded_m.wait_p50_s.get(t, 0.0) - replayed_m.wait_p50_s.get(t, 0.0)) for t in types},
    )


def side_by_side(runs: Sequence[Measures]) -> str:
    """The runs as one table for people: a row per measure, a column per run."""
    types = sorted({t for m in runs for t in m.wait_p50_s})
    configs = sorted({c for m in runs for c in (*m.completed_per_hour, *m.wait_p50_by_config_s)})
    rows = [("", *(m.label for m in runs))]
    for t in types:
        rows.append((f"wait p50 {t}", *(f"{m.wait_p50_s.get(t, 0.0):.1f}s" for m in runs)))
        rows.append((f"wait p99 {t}", *(f"{m.wait_p99_s.get(t, 0.0):.1f}s" for m in runs)))
    for c in configs:
        rows.append((f"wait p50 {c}", *(f"{m.wait_p50_by_config_s.get(c, 0.0):.1f}s" for m in runs)))
    rows.append(("never assigned", *(str(m.never_assigned) for m in runs)))
    rows.append(("utilisation", *(f"{m.utilisation:.1%}" for m in runs)))
    for c in configs:
        rows.append((f"done/h {c}", *(f"{m.completed_per_hour.get(c, 0.0):.1f}" for m in runs)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
