"""The chaos checker, pure: judge a whole RR_EVENTS history and a client's records, and list every violation by kind.

It reads only values (the decoded log in stream order, what the client was acknowledged,
hashes of the live views, dead-letter reasons), so it is tested with synthetic histories
built from the real event Structs; `ops/chaos/check.py` is the shell that reads a server.

The lifecycle rules are judged here on their own, not by folding projections/work.py, so a
fold that wrongly accepts an event cannot hide it: a completion or failure that should never
have been stored is a violation even when the live fold drops it, as is any leader decision
stored after its role elected a newer epoch (storage is meant to refuse those).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence

import msgspec

from eventbus.authority import AUTHORITY
from eventbus.events import (
    EvaluationComplete,
    Event,
    LeaderElected,
    LeaderLost,
    ModelDistributed,
    ModelPromoted,
    SelfplayComplete,
    TrainingComplete,
    WorkAdded,
    WorkAssigned,
    WorkAttemptFailed,
    WorkCancelled,
    WorkCompleted,
    WorkFailed,
    WorkHandedBack,
    WorkStarted,
)
from projections import bundle
from projections.bundle import ProjectionSet
from projections.pmap import plain_hook

# Every kind the checker can report, so a summary lists zeros too.
KINDS = (
    "lost",  # an acknowledged event is not in the stream at its sequence
    "unfinished",  # an acknowledged work item reached no terminal state
    "failed_without_reasons",  # WORK_FAILED lacks a reason, or the reason of one of the item's failed attempts
    "duplicate_applied",  # a second completion (or a failure after completion) stored for one item
    "superseded_completion",  # a completion stored from an attempt that a newer started attempt superseded
    "superseded_result",  # a job's result (selfplay, training, evaluation) stored from an attempt that no longer counts
    "epoch_not_increasing",  # a role elected an epoch not newer than its previous one
    "epoch_two_holders",  # one epoch was elected for two nodes (or two roles)
    "stale_decision",  # a decision carrying a superseded epoch stored after its successor's election
    "unfenced_decision",  # once a leader was elected: a leader's decision with no epoch, or an epoch no election named
    "projection_mismatch",  # a projection rebuilt from sequence 1 differs from the live view
    "model_sha_mismatch",  # an installed model's SHA-256 differs from its promotion's (or it was never promoted)
    "dead_letter_without_reason",  # a parked message has no reason
)


class ClientRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One event the chaos client was acknowledged: its id and the stream sequence in the ack."""

    id: str
    seq: int


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """One dead-letter entry as far as the checker cares: where it came from and why it was parked."""

    dlq_seq: int
    reason: str


class Violation(msgspec.Struct, frozen=True, kw_only=True):
    """One broken invariant: its kind, the stream sequence it was seen at (0: none), what it is about, and why."""

    kind: str
    seq: int
    about: str
    detail: str


class CheckReport(msgspec.Struct, frozen=True, kw_only=True):
    """Every violation found, their counts by kind (zeros included), and what was looked at."""

    violations: tuple[Violation, ...]
    by_kind: dict[str, int]
    events: int
    acknowledged: int
    work_items: int

    @property
    def clean(self) -> bool:
        """Whether no invariant was broken."""
        return not self.violations


class _Item(msgspec.Struct, kw_only=True):
    """The checker's own view of one work item (mutable: it lives only inside `lifecycle`)."""

    current: tuple[int, str] | None = None  # the newest assigned attempt and its node
    newest_started: int = 0
    ended: set[tuple[int, str]] = msgspec.field(default_factory=set)  # failed or handed back, none newer started
    failed_attempts: dict[int, str] = msgspec.field(default_factory=dict)  # attempt -> reason
    completed_at: int = 0
    completed_by: tuple[int, str] | None = None  # the attempt whose completion counted
    failed_at: int = 0
    cancelled: bool = False


def lost(log: Sequence[tuple[int, Event]], records: Iterable[ClientRecord]) -> list[Violation]:
    """Acknowledged events missing from the stream, or replaced at their sequence by another event."""
    by_seq = {seq: event.id for seq, event in log}
    out = []
    for record in records:
        stored = by_seq.get(record.seq)
        if stored != record.id:
            what = "nothing" if stored is None else f"event {stored}"
            out.append(Violation(kind="lost", seq=record.seq, about=record.id,
                                 detail=f"acknowledged at sequence {record.seq}, but the stream holds {what} there"))
    return out


def _superseded(item: _Item, key: tuple[int, str]) -> str | None:
    """Why an attempt's completion (or result) would not count now; None when it would."""
    late = key in item.ended and key[0] >= item.newest_started  # see projections/work.py late_completion
    if item.cancelled:
        return "after the item was cancelled"
    if key != item.current and not late:
        return "but the current attempt is " + ("none" if item.current is None else f"{item.current[0]} on {item.current[1]}")
    if item.failed_at and not late:
        return f"after the item was given up on at sequence {item.failed_at}"
    return None


def _completion(item: _Item, event: WorkCompleted, seq: int) -> Violation | None:
    key = (event.attempt, event.node)
    # A superseded attempt's late report is that, even when the item completed meanwhile: judged first,
    # so that duplicate_applied means the attempt that counts reported twice.
    why = _superseded(item, key)
    if why is not None:
        return Violation(kind="superseded_completion", seq=seq, about=event.work_id,
                         detail=f"attempt {event.attempt} on {event.node} completed {why}")
    if item.completed_at:
        return Violation(kind="duplicate_applied", seq=seq, about=event.work_id,
                         detail=f"attempt {event.attempt} on {event.node} completed an item already completed at sequence {item.completed_at}")
    item.completed_at, item.completed_by = seq, key
    return None


def _result(item: _Item, event: SelfplayComplete | TrainingComplete | EvaluationComplete, seq: int) -> Violation | None:
    """A job's result counts exactly when its attempt's completion would (or it is the completed attempt's)."""
    attempt: int = getattr(event, "attempt", 0)  # 0: written before results named their attempt, not judged
    if not attempt:
        return None
    key = (attempt, event.node)
    why = (f"after attempt {item.completed_by[0]} on {item.completed_by[1]} completed the item"
           if item.completed_by not in (None, key) else None if item.completed_by == key else _superseded(item, key))
    if why is None:
        return None
    return Violation(kind="superseded_result", seq=seq, about=event.work_id,
                     detail=f"{event.type_name()} of attempt {attempt} on {event.node} stored {why}")


def _failure(item: _Item, event: WorkFailed, seq: int) -> list[Violation]:
    out = []
    if item.completed_at or item.failed_at:
        earlier = f"completed at sequence {item.completed_at}" if item.completed_at else f"failed at sequence {item.failed_at}"
        out.append(Violation(kind="duplicate_applied", seq=seq, about=event.work_id, detail=f"failed after it {earlier}"))
    reasons = {o.attempt: o.reason for o in event.attempts if o.reason}
    missing = sorted(a for a in item.failed_attempts if a not in reasons)
    if not event.reason or missing:
        what = "no reason" if not event.reason else f"no reason for failed attempt(s) {missing}"
        out.append(Violation(kind="failed_without_reasons", seq=seq, about=event.work_id, detail=f"WORK_FAILED has {what}"))
    if not item.failed_at:
        item.failed_at = seq
    return out


def _step(item: _Item, event: Event, seq: int) -> list[Violation]:
    if isinstance(event, WorkAssigned):
        item.current = (event.attempt, event.node)
    elif isinstance(event, WorkStarted) and event.attempt > item.newest_started:
        item.newest_started = event.attempt
        item.ended = {e for e in item.ended if e[0] >= event.attempt}
    elif isinstance(event, (WorkAttemptFailed, WorkHandedBack)):
        item.ended.add((event.attempt, event.node))
        if isinstance(event, WorkAttemptFailed):
            item.failed_attempts[event.attempt] = event.reason
    elif isinstance(event, WorkCancelled):
        item.cancelled = True
    elif isinstance(event, WorkCompleted):
        found = _completion(item, event, seq)
        return [found] if found else []
    elif isinstance(event, WorkFailed):
        return _failure(item, event, seq)
    elif isinstance(event, (SelfplayComplete, TrainingComplete, EvaluationComplete)):
        found = _result(item, event, seq)
        return [found] if found else []
    return []


_ITEM_EVENTS = (WorkAssigned, WorkStarted, WorkAttemptFailed, WorkHandedBack, WorkCancelled, WorkCompleted, WorkFailed,
                SelfplayComplete, TrainingComplete, EvaluationComplete)


def lifecycle(log: Sequence[tuple[int, Event]], acknowledged: set[str]) -> tuple[list[Violation], int]:
    """Lifecycle violations of every item, and how many items there were.

    Acknowledged work items (WORK_ADDED ids in `acknowledged`) must end completed, failed or
    cancelled; a failure stored after a completion or a completion after a failure are judged
    as projections/work.py's rules say (a late completion of an ended attempt is accepted).
    Decisions refused by the epoch fence are left to `leadership`, not judged twice here.
    """
    items: dict[str, _Item] = {}
    added: dict[str, tuple[int, str]] = {}  # work id -> (seq, event id)
    out: list[Violation] = []
    for seq, event in _fenced(log):
        if isinstance(event, WorkAdded):
            items.setdefault(event.work_id, _Item())
            added.setdefault(event.work_id, (seq, event.id))
        elif isinstance(event, _ITEM_EVENTS):
            item = items.get(event.work_id)
            if item is not None:
                out.extend(_step(item, event, seq))
    for work_id, (seq, event_id) in added.items():
        item = items[work_id]
        if event_id in acknowledged and not (item.completed_at or item.failed_at or item.cancelled):
            out.append(Violation(kind="unfinished", seq=seq, about=work_id, detail="acknowledged, but never completed, failed or cancelled"))
    return out, len(items)


def _believed(event: Event) -> bool:
    """Whether an event is an election the fences believe: its winner announced it (see projections/fencing.py).

    Another node's announcement of someone's win is a forgery the fences ignore; the checker
    ignores it too, so it can neither supersede a real term nor count as a second holder.
    An event without a source (a synthetic history) is taken as its winner's.
    """
    return isinstance(event, LeaderElected) and event.epoch is not None and event.source in ("", event.node)


def _fenced(log: Sequence[tuple[int, Event]]) -> Iterable[tuple[int, Event]]:
    """The log without decisions of a superseded epoch (those are `leadership`'s violations)."""
    newest: dict[str, int] = {}
    role_of: dict[int, str] = {}
    for seq, event in log:
        if isinstance(event, LeaderElected):
            if not _believed(event):
                continue
            assert event.epoch is not None
            role_of.setdefault(event.epoch, event.role)
            newest[event.role] = max(newest.get(event.role, 0), event.epoch)
        elif event.epoch is not None and not isinstance(event, LeaderLost):
            role = role_of.get(event.epoch)
            if role is not None and event.epoch < newest[role]:
                continue
        yield seq, event


# Types only a leader's term publishes (the authority table's coordinator-only types); LEADER_LOST ends a term.
LEADER_TYPES = frozenset(name for name, grant in AUTHORITY.items() if grant.roles == {"coordinator"} and name != "LEADER_LOST")


def _unfenced(event: Event, named: Mapping[int, object]) -> str | None:
    """Why a decision stored after some election carries no usable epoch; None when it does (or is no decision)."""
    if event.epoch is None:
        return "carries no epoch" if event.type_name() in LEADER_TYPES else None
    return None if event.epoch in named else f"carries epoch {event.epoch}, which no election named before it"


def leadership(log: Sequence[tuple[int, Event]]) -> list[Violation]:
    """Epochs strictly increase per role, each epoch has one holder, and no superseded or unfenced decision is stored."""
    newest: dict[str, int] = {}
    holder: dict[int, tuple[str, str]] = {}  # epoch -> (role, node)
    out = []
    for seq, event in log:
        epoch = event.epoch
        if isinstance(event, LeaderLost) or (isinstance(event, LeaderElected) and not _believed(event)):
            continue
        about = f"{event.type_name()} {event.aggregate_id()}"
        if isinstance(event, LeaderElected):
            assert epoch is not None
            held = holder.setdefault(epoch, (event.role, event.node))
            if held != (event.role, event.node):
                out.append(Violation(kind="epoch_two_holders", seq=seq, about=f"epoch {epoch}",
                                     detail=f"elected {event.node} for {event.role}, but it was {held[1]}'s for {held[0]}"))
            elif epoch < newest.get(event.role, 0):
                out.append(Violation(kind="epoch_not_increasing", seq=seq, about=event.role,
                                     detail=f"elected epoch {epoch} for {event.node} after epoch {newest[event.role]}"))
            newest[event.role] = max(newest.get(event.role, 0), epoch)
        elif holder and (why := _unfenced(event, holder)) is not None:
            out.append(Violation(kind="unfenced_decision", seq=seq, about=about, detail=f"{why} (by {event.source or '?'})"))
        elif epoch is not None and epoch in holder and epoch < newest[holder[epoch][0]]:
            role = holder[epoch][0]
            out.append(Violation(kind="stale_decision", seq=seq, about=about,
                                 detail=f"carries epoch {epoch} of {role}, stored after epoch {newest[role]} was elected (by {event.source or '?'})"))
    return out


def models(log: Sequence[tuple[int, Event]]) -> list[Violation]:
    """Every installed model (MODEL_DISTRIBUTED) carries the SHA-256 its promotion named."""
    promoted: dict[str, str] = {}
    installs: list[tuple[int, ModelDistributed]] = []
    for seq, event in _fenced(log):
        if isinstance(event, ModelPromoted):
            promoted[event.model_id] = event.sha256
        elif isinstance(event, ModelDistributed):
            installs.append((seq, event))
    out = []
    for seq, install in installs:  # judged at the end: an install may be stored before a slow promotion's ack
        wanted = promoted.get(install.model_id)
        if wanted != install.sha256:
            why = "it was never promoted" if wanted is None else f"its promotion says {wanted}"
            out.append(Violation(kind="model_sha_mismatch", seq=seq, about=install.model_id,
                                 detail=f"{install.node} installed sha256 {install.sha256}, but {why}"))
    return out


def view_hashes(state: ProjectionSet) -> dict[str, str]:
    """SHA-256 of each projection's encoded state: what a live service and a rebuild compare."""
    state = bundle.aligned(state)  # parts skip events they do not read; compare them at the set's position
    return {name: state_hash(getattr(state, name)) for name in bundle.PARTS}


def state_hash(state: msgspec.Struct) -> str:
    """SHA-256 of one state in a canonical form: equal states hash alike whatever order their maps were filled in."""
    plain = msgspec.to_builtins(state, enc_hook=plain_hook, str_keys=True)  # a loaded state's lazy values decoded
    return hashlib.sha256(json.dumps(plain, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def views(live: Mapping[str, str], rebuilt: Mapping[str, str]) -> list[Violation]:
    """Projections whose hash rebuilt from sequence 1 differs from (or is missing beside) the live view's."""
    return [
        Violation(kind="projection_mismatch", seq=0, about=name,
                  detail=f"live view hash {live.get(name, 'missing')}, rebuilt from sequence 1: {rebuilt.get(name, 'missing')}")
        for name in sorted(set(live) | set(rebuilt))
        if live.get(name) != rebuilt.get(name)
    ]


def dead_letters(entries: Iterable[DeadLetter]) -> list[Violation]:
    """Parked messages with no reason."""
    return [Violation(kind="dead_letter_without_reason", seq=e.dlq_seq, about=f"dead letter {e.dlq_seq}", detail="parked with no reason")
            for e in entries if not e.reason.strip()]


def check(
    log: Sequence[tuple[int, Event]],
    records: Sequence[ClientRecord] = (),
    *,
    live: Mapping[str, str] | None = None,
    rebuilt: Mapping[str, str] | None = None,
    parked: Iterable[DeadLetter] = (),
) -> CheckReport:
    """Judge a whole history (the decoded log in stream order, from sequence 1) against every invariant."""
    work, items = lifecycle(log, {r.id for r in records})
    found = [*lost(log, records), *work, *leadership(log), *models(log), *views(live or {}, rebuilt or {}), *dead_letters(parked)]
    by_kind = {kind: 0 for kind in KINDS}
    for violation in found:
        by_kind[violation.kind] += 1
    return CheckReport(violations=tuple(found), by_kind=by_kind, events=len(log), acknowledged=len(records), work_items=items)
