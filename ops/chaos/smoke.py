"""The smoke profile's fault schedule, pure: every fault kind once, packed into the shortest window the fleet's lease allows.

The default mix (schedule.py `plan_schedule`) draws kinds at random over a long window, so a short
window misses some (seed 17's 90 s drew 9 of the 14). This one places each kind once, in lanes:

- the scheduler leader's, one at a time, because each needs a live leader to hit: `stop_leader`
  first, held past the lease TTL so that a successor is elected while it sleeps and it wakes
  believing it leads (a stop shorter than the TTL only pauses the leader); `isolate_leader` when that
  hold ends (the successor, cut off while it leads); `kill_leader` last, one second after the cut
  heals: its lease runs out (a TTL) over the drain, which waits for the next leader anyway;
- the followers' faults with the stop, while the stopped leader still holds its lease, so
  that "a follower" names the same hosts throughout, and back before it can expire, to campaign;
- the faults that take a NATS server away (kill_nats, kill_stream_leader, split) one at a time
  (schedule.py's quorum rule), clear of `isolate_leader`, of every leader lookup (a NATS fault left
  a first smoke run's lookups failing for 6 s, so the leader's stop began late and the kill found it
  still stopped) and of the second half of the kill's lease wait. Exactly one of them, kill_stream_leader
  where chosen, lands inside the stop's lease wait, its server away over the lease's expiry while the
  successor campaigns (see `_quorum_busy`), and the stop is held `nats_election_s` longer for it; the
  rest stay clear of the stop: one fits after the kill, the others once the kill's successor is in;
- the rest (workers', distributors', worker hosts') a second or two apart from the start. A whole
  host's cut or restart hits a worker host here: on a NATS host it takes a quorum slot, and a
  restart there could end the stopped leader before it wakes (the default mix hits NATS hosts too).

The seed orders the kinds within each lane and draws targets, holds and picks; the window is the
plan's own (`window_s`), not a parameter.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import msgspec

from ops.chaos.schedule import KINDS, TARGETED_KINDS, Fault, ScheduleError, draw_target, impairs_nats

LEADER_LANE = ("stop_leader", "isolate_leader", "kill_leader")
FOLLOWER_KINDS = ("kill_follower", "stop_follower")
HOST_KINDS = ("cut_host", "restart_host")
# Kills whose victim its host's service manager restarts: nothing to undo, so no hold.
RESTARTED_BY_MANAGER = frozenset({"kill_leader", "kill_follower", "kill_worker", "kill_distributor"})
QUORUM_GAP_S = 1.0  # between two faults that take a NATS server away, as in schedule.py
# The NATS fault put inside the stop's lease wait, in order of preference: kill_stream_leader found the stalled source.
STOP_KINDS = ("kill_stream_leader", "kill_nats", "split")
LOOKUP_S = 2.0  # a leader lookup's time, kept clear of NATS faults (a smoke run's lookups took 0.1-1 s unhindered)


class SmokePacing(msgspec.Struct, frozen=True, kw_only=True):
    """The fleet's lease timing (leadership.ttl_s and the renewal interval) and how dense the rest is."""

    lease_ttl_s: float
    renew_every_s: float
    warmup_s: float = 1.0
    # At least 3 missed 1 s heartbeats and one more: a held worker or host is seen offline and its attempt handed back.
    hold_s: tuple[float, float] = (4.0, 5.0)
    gap_s: tuple[float, float] = (1.0, 2.5)
    election_s: float = 2.0  # from a lease's expiry to its successor's election, on a loaded 2-core machine
    # From the return of a NATS server that was away over the lease's expiry to the successor's election (two smoke
    # runs at load 6-9: 4.2, 5.7 s): the stop lasts this much longer, so that the successor leads when the leader wakes.
    nats_election_s: float = 6.0


class _Draw:
    """The seeded choices, made in one order so that a seed replays exactly."""

    def __init__(self, seed: int, pacing: SmokePacing) -> None:
        self.rng, self.pacing = random.Random(f"rr-chaos-smoke:{seed}"), pacing

    def hold(self) -> float:
        return round(self.rng.uniform(*self.pacing.hold_s), 2)

    def gap(self) -> float:
        return self.rng.uniform(*self.pacing.gap_s)

    def fault(self, at: float, kind: str, hold: float, target: str = "") -> Fault:
        return Fault(at_s=round(at, 2), kind=kind, hold_s=round(hold, 2), target=target, pick=self.rng.randrange(1 << 16))


def _leader_lane(chosen: Sequence[str], draw: _Draw, nats_in_stop: bool) -> list[Fault]:
    p, t, faults = draw.pacing, draw.pacing.warmup_s, []
    if "stop_leader" in chosen:
        faults.append(draw.fault(t, "stop_leader", p.lease_ttl_s + p.election_s + (p.nats_election_s if nats_in_stop else 0.0)))
        t += faults[-1].hold_s
    if "isolate_leader" in chosen:
        faults.append(draw.fault(t, "isolate_leader", draw.hold()))
        t += faults[-1].hold_s + 1.0
    if "kill_leader" in chosen:
        faults.append(draw.fault(t, "kill_leader", 0.0))
    return faults


def _followers(chosen: Sequence[str], draw: _Draw) -> list[Fault]:
    """With the stop, back before the stopped leader's lease can expire (renewed at most renew_every_s before it)."""
    p = draw.pacing
    t, until = p.warmup_s, (p.warmup_s + p.lease_ttl_s - p.renew_every_s if "stop_leader" in chosen else float("inf"))
    faults = []
    for kind in (k for k in chosen if k in FOLLOWER_KINDS):
        hold = 0.0 if kind in RESTARTED_BY_MANAGER else min(draw.hold(), until - t)
        if kind not in RESTARTED_BY_MANAGER and hold < p.hold_s[0]:
            raise ScheduleError(f"lease TTL {p.lease_ttl_s:g} s: too short to hold a follower {p.hold_s[0]:g} s while the leader is stopped")
        faults.append(draw.fault(t, kind, hold))
        t += 0.5
    return faults


def _free_slot(start: float, hold: float, busy: list[tuple[float, float]]) -> float:
    """The earliest start from `start` whose span keeps QUORUM_GAP_S clear of every busy span."""
    t = start
    for a, b in sorted(busy):
        if t + hold + QUORUM_GAP_S > a and t < b + QUORUM_GAP_S:
            t = max(t, b + QUORUM_GAP_S)
    return t


def _quorum_busy(resolving: Sequence[Fault], pacing: SmokePacing) -> list[tuple[float, float]]:
    """Spans no fault that takes a NATS server away may touch: isolate_leader's own, a lost leader's lease running
    out (its successor's election waits for no raft group), and LOOKUP_S after each fault that looks the leader up
    (the lookup reads RR_EVENTS and the lease bucket, which a NATS fault leaves leaderless for seconds)."""
    busy = [(f.at_s, f.at_s + f.hold_s) for f in resolving if f.kind == "isolate_leader"]
    # A stopped leader's lease wait is kept for the one fault `_stop_slot` places there: a NATS fault then hits one of
    # the two candidates' hosts, and before RR_EVENTS' leader was asked to step down when its source of the lease bucket
    # stalled (eventbus/sourcestall.py, cluster/leadership/sourcenudge.py) the candidates won and gave up the lease
    # every ~10 s for 27-30 s in 2 of 4 runs. That remedy is what the one fault there exercises; two would be luck.
    # After a kill, the second half: the raft elections a NATS fault starts outlast it by seconds (nats-server waits
    # 4-9 s to campaign), and the successor's campaign needs the lease bucket and RR_EVENTS.
    busy += [(f.at_s, f.at_s + f.hold_s) for f in resolving if f.kind == "stop_leader"]
    busy += [(f.at_s + pacing.lease_ttl_s / 2, f.at_s + pacing.lease_ttl_s + pacing.election_s) for f in resolving if f.kind == "kill_leader"]
    return busy + [(f.at_s, f.at_s + LOOKUP_S) for f in resolving]


def _stop_slot(stop: Fault, hold: float, busy: list[tuple[float, float]], pacing: SmokePacing) -> float | None:
    """The start of the one NATS fault inside the stop's lease wait, or None where it would meet another busy span.

    It ends when the successor would be elected without it (`election_s` after the lease's expiry), so its server is
    away from seconds before the expiry over the candidates' campaign; the stop outlasts it by `nats_election_s`."""
    at = round(stop.at_s + pacing.lease_ttl_s + pacing.election_s - hold, 2)
    others = [span for span in busy if span != (stop.at_s, stop.at_s + stop.hold_s)]
    return at if at >= stop.at_s and _free_slot(at, hold, others) == at else None


def _quorum_lane(kinds: Sequence[tuple[str, str]], resolving: Sequence[Fault], in_stop: str | None, draw: _Draw) -> list[Fault]:
    """The faults that take a NATS server away, one at a time, clear of `_quorum_busy` but for `in_stop`, in the stop."""
    busy = _quorum_busy(resolving, draw.pacing)
    stop = next((f for f in resolving if f.kind == "stop_leader"), None)
    faults = []
    for kind, target in sorted(kinds, key=lambda kt: kt[0] != in_stop):
        hold = draw.hold()
        at = _stop_slot(stop, hold, busy, draw.pacing) if stop and kind == in_stop else None
        at = round(_free_slot(draw.pacing.warmup_s, hold, busy), 2) if at is None else at
        busy.append((at, at + hold))
        faults.append(draw.fault(at, kind, hold, target))
    return faults


def _free_lane(kinds: Sequence[tuple[str, str]], draw: _Draw) -> list[Fault]:
    t, faults = draw.pacing.warmup_s, []
    for kind, target in kinds:
        t += draw.gap()
        faults.append(draw.fault(t, kind, 0.0 if kind in RESTARTED_BY_MANAGER else draw.hold(), target))
    return faults


def _smoke_target(kind: str, rng: random.Random, nats: Sequence[str], workers: Sequence[str]) -> str:
    """As schedule.py draws it, but a whole host's cut or restart hits a worker host: see the module docstring."""
    if kind in HOST_KINDS:
        return rng.choice(workers) if workers else ""
    return draw_target(kind, rng, nats, workers)


def plan_smoke(seed: int, kinds: Sequence[str], nats: Sequence[str], workers: Sequence[str], pacing: SmokePacing) -> tuple[Fault, ...]:
    """Each of `kinds` once, by start time: the same arguments give the same schedule."""
    draw = _Draw(seed, pacing)
    chosen = [k for k in KINDS if k in set(kinds)]
    draw.rng.shuffle(chosen)
    targets = {k: _smoke_target(k, draw.rng, nats, workers) if k in TARGETED_KINDS else "" for k in chosen}
    missing = [k for k in chosen if k in TARGETED_KINDS and not targets[k]]
    if missing:
        raise ScheduleError(f"--hosts: no host for {', '.join(missing)} (a split needs 3 NATS hosts, worker faults a worker host)")
    others = [(k, targets[k]) for k in chosen if k not in LEADER_LANE and k not in FOLLOWER_KINDS]
    quorum_kinds = [(k, t) for k, t in others if impairs_nats(k, t, nats)]
    in_stop = next((k for k in STOP_KINDS if "stop_leader" in chosen and k in dict(quorum_kinds)), None)
    resolving = [*_leader_lane([k for k in LEADER_LANE if k in chosen], draw, in_stop is not None), *_followers(chosen, draw)]
    quorum = _quorum_lane(quorum_kinds, resolving, in_stop, draw)
    free = _free_lane([(k, t) for k, t in others if not impairs_nats(k, t, nats)], draw)
    faults = [*resolving, *quorum, *free]
    return tuple(sorted(faults, key=lambda f: (f.at_s, f.kind)))


def window_s(faults: Sequence[Fault]) -> float:
    """The run's window for a plan: until its last hold ends (a kill's aftermath is the drain's to wait for)."""
    return max((f.at_s + f.hold_s for f in faults), default=0.0)
