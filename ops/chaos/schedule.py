"""The nemesis's fault schedule, pure: a function of (seed, duration, fault kinds, hosts), so a run replays exactly.

A fault names *what* to hit and when; targets that depend on the fleet's state at that moment
(the scheduler leader, the RR_EVENTS stream leader, "a follower") are resolved when the fault is
injected, with the fault's own `pick` choosing among the candidates, so the schedule itself never
depends on the run. Process faults overlap freely; at most one fault impairs a NATS server at a
time (killed, cut, split away, its host restarted), so the cluster always keeps a quorum to heal to.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import msgspec

# kind -> what it does; the runner (ops/chaos/nemesis.py) implements each.
KINDS: dict[str, str] = {
    "kill_leader": "kill -9 the scheduler leader's rr-leader (its host manager restarts it)",
    "stop_leader": "SIGSTOP the scheduler leader's rr-leader, SIGCONT after hold_s",
    "kill_follower": "kill -9 a scheduler that does not lead",
    "stop_follower": "SIGSTOP a scheduler that does not lead, SIGCONT after hold_s",
    "kill_worker": "kill -9 a worker host's rr-worker",
    "stop_worker": "SIGSTOP a worker host's rr-worker, SIGCONT after hold_s",
    "kill_distributor": "kill -9 a host's rr-distributor",
    "stop_distributor": "SIGSTOP a host's rr-distributor, SIGCONT after hold_s",
    "kill_nats": "kill -9 a nats-server, start it again after hold_s",
    "kill_stream_leader": "kill -9 the nats-server leading RR_EVENTS, start it again after hold_s",
    "cut_host": "take one host off the network for hold_s",
    "split": "one NATS server (and some workers) cannot reach the rest for hold_s: a minority/majority split",
    "isolate_leader": "cut the scheduler leader's host off for hold_s",
    "restart_host": "stop every process of a host cleanly (SIGTERM), start it again after hold_s",
}
# Faults that can take a NATS server away: never two at once (see the module docstring).
QUORUM_KINDS = frozenset({"kill_nats", "kill_stream_leader", "split", "isolate_leader"})
TARGETED_KINDS = frozenset({"kill_worker", "stop_worker", "kill_distributor", "stop_distributor", "kill_nats",
                            "cut_host", "split", "restart_host"})


class ScheduleError(ValueError):
    """A schedule that cannot be planned; the message names the option to change."""


class Fault(msgspec.Struct, frozen=True, kw_only=True):
    """One fault: when (seconds after the chaos began), what, on which host (or group spec), for how long."""

    at_s: float
    kind: str
    hold_s: float
    target: str = ""  # a host, a split spec "A,B/C,D", or "" when resolved at injection
    pick: int = 0  # chooses among runtime candidates (followers), deterministically


class Pacing(msgspec.Struct, frozen=True, kw_only=True):
    """How dense the schedule is: gaps between fault starts and how long each is held."""

    warmup_s: float = 5.0
    gap_s: tuple[float, float] = (4.0, 12.0)
    hold_s: tuple[float, float] = (3.0, 12.0)


DEFAULT_PACING = Pacing()


def parse_kinds(spec: str | None) -> tuple[str, ...]:
    """`--faults a,b` as kinds (every kind when empty); ScheduleError naming an unknown one and the known ones."""
    if not spec:
        return tuple(KINDS)
    kinds = tuple(k.strip() for k in spec.split(",") if k.strip())
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ScheduleError(f"--faults: unknown kind(s) {', '.join(unknown)}; choose from {', '.join(KINDS)}")
    return kinds


def draw_target(kind: str, rng: random.Random, nats: Sequence[str], workers: Sequence[str]) -> str:
    """The host (or split) a targeted kind hits, drawn from the hosts given."""
    if kind in ("kill_worker", "stop_worker"):
        return rng.choice(workers) if workers else ""
    if kind == "kill_nats":
        return rng.choice(nats) if nats else ""
    if kind == "split":
        if len(nats) < 3:
            return ""
        alone = rng.choice(nats)
        with_it = sorted(w for w in workers if rng.random() < 0.5)
        rest = [h for h in (*nats, *workers) if h != alone and h not in with_it]
        return f"{','.join([alone, *with_it])}/{','.join(rest)}"
    return rng.choice([*nats, *workers])  # cut_host, restart_host, *_distributor


def impairs_nats(kind: str, target: str, nats: Sequence[str]) -> bool:
    """Whether a fault can take a NATS server away (the quorum rule's faults)."""
    return kind in QUORUM_KINDS or (kind in ("cut_host", "restart_host") and target in nats)


def plan_schedule(seed: int, duration_s: float, kinds: Sequence[str], nats: Sequence[str], workers: Sequence[str],
                  pacing: Pacing = DEFAULT_PACING) -> tuple[Fault, ...]:
    """The faults of one run, by start time: the same arguments give the same schedule."""
    if duration_s <= pacing.warmup_s + pacing.hold_s[0]:
        raise ScheduleError(f"--duration {duration_s:g}: must exceed {pacing.warmup_s + pacing.hold_s[0]:g} s")
    rng = random.Random(f"rr-chaos:{seed}")  # a str seed hashes the same in every process
    faults: list[Fault] = []
    t, nats_busy_until = pacing.warmup_s, 0.0
    while True:
        kind, hold = rng.choice(list(kinds)), rng.uniform(*pacing.hold_s)
        target, pick = draw_target(kind, rng, nats, workers) if kind in TARGETED_KINDS else "", rng.randrange(1 << 16)
        if t + pacing.hold_s[0] > duration_s:
            break
        at = max(t, nats_busy_until + 1.0) if impairs_nats(kind, target, nats) else t
        hold = min(hold, duration_s - at)
        if at + pacing.hold_s[0] <= duration_s and (kind not in TARGETED_KINDS or target):
            faults.append(Fault(at_s=round(at, 2), kind=kind, hold_s=round(hold, 2), target=target, pick=pick))
            if impairs_nats(kind, target, nats):
                nats_busy_until = at + hold
        t += rng.uniform(*pacing.gap_s)
    return tuple(sorted(faults, key=lambda f: f.at_s))


def encode_schedule(faults: Sequence[Fault]) -> bytes:
    """A schedule as JSON, for `--schedule FILE` to replay."""
    return msgspec.json.encode(list(faults))


def decode_schedule(data: bytes, where: str) -> tuple[Fault, ...]:
    """A schedule read back; ScheduleError naming `where` and the field that is wrong."""
    try:
        faults = msgspec.json.decode(data, type=list[Fault])
    except msgspec.DecodeError as exc:
        raise ScheduleError(f"{where}: {exc}; expected a JSON list of {{at_s, kind, hold_s, target, pick}}") from None
    unknown = sorted({f.kind for f in faults} - set(KINDS))
    if unknown:
        raise ScheduleError(f"{where}: unknown fault kind(s) {', '.join(unknown)}; choose from {', '.join(KINDS)}")
    return tuple(sorted(faults, key=lambda f: f.at_s))
