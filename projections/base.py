"""Shared fold machinery: the projection descriptor, anomalies, and folding records or events into a state.

A projection is a pure function `apply(state, event, seq) -> state` plus the event types it
reads. The drivers here decode only those types (the type is the subject's fifth token), so a
projection of hosts does not pay to decode a million work events; every record, read or not,
advances `last_seq`, the stream position stored with the state (STYLE 13).
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, Union

import msgspec

from eventbus.errors import InvalidEvent
from eventbus.events import EVENT_TYPES, Event, by_type_decoder, strict_decoder
from eventbus.events.bounds import MAX_EVENT_BYTES
from eventbus.integrity import decode_on, mismatch
from eventbus.leasecopy import COPY_TYPE, decode_copy

log = logging.getLogger(__name__)

ANOMALIES_KEPT = 100  # the newest anomalies kept in a state; the count covers all of them
CAUSE_CHARS = 300  # an anomaly's cause is cut to this many characters: an event cannot grow a state


class Anomaly(msgspec.Struct, frozen=True, kw_only=True):
    """An event a projection refused to apply (illegal transition, unknown item, bad data), and why."""

    seq: int
    type: str
    about: str  # the aggregate id: a work item, a node, a model ...
    reason: str


class State(Protocol):
    """What every projection state has: its stream position and its anomalies."""

    # Read-only members, so that frozen Structs satisfy the protocol.
    @property
    def last_seq(self) -> int: ...
    @property
    def anomalies(self) -> tuple[Anomaly, ...]: ...
    @property
    def anomaly_count(self) -> int: ...


S = TypeVar("S", bound=State)
S_co = TypeVar("S_co", covariant=True)


def config_key(board_type: str, num_players: int) -> str:
    """The seeds' name of a training config: board type x number of players, e.g. hex8_2p."""
    return f"{board_type}_{num_players}p"


def rejected(state: S, seq: int, event: Event, reason: str) -> S:
    """`state` with the event recorded as an anomaly instead of applied (never silently dropped)."""
    anomaly = Anomaly(seq=seq, type=event.type_name(), about=event.aggregate_id(), reason=reason)
    return msgspec.structs.replace(
        state,  # type: ignore[type-var]
        last_seq=seq,
        anomalies=(state.anomalies + (anomaly,))[-ANOMALIES_KEPT:],
        anomaly_count=state.anomaly_count + 1,
    )


def undecodable(state: S, seq: int, type_name: str, error: str) -> S:
    """`state` with an unreadable message recorded as an anomaly."""
    anomaly = Anomaly(seq=seq, type=type_name, about="", reason=f"undecodable: {error}")
    return msgspec.structs.replace(
        state,  # type: ignore[type-var]
        last_seq=seq,
        anomalies=(state.anomalies + (anomaly,))[-ANOMALIES_KEPT:],
        anomaly_count=state.anomaly_count + 1,
    )


# [fold errors recorded by this process] (`failed`): a fold holding its maps open
# (projections/openmap.py) compares it around an event to learn that the event must be redone;
# read as FOLD_ERRORS[0], with no call, since it is read twice for every event a rebuild folds.
FOLD_ERRORS: list[int] = [0]


def failed(state: S, seq: int, event: Event, exc: Exception) -> S:
    """`state` with an event whose application raised recorded as an anomaly naming the sequence and the cause."""
    FOLD_ERRORS[0] += 1
    cause = f"fold error: {type(exc).__name__}: {exc}"[:CAUSE_CHARS]
    log.warning("fold of %s at seq %d failed, recorded as an anomaly: %s", type(state).__name__, seq, cause)
    return rejected(state, seq, event, cause)


A = TypeVar("A", bound=Callable[..., Any])


def total(apply: A) -> A:
    """The fold `apply(state, event, seq)` made total: it never raises on an event it is given.

    The log never forgets, so an event that broke a fold would break it again after every
    restart; instead the error is recorded as an anomaly (sequence and cause) and folding goes on.
    Every fold's `apply` is wrapped by this one decorator.
    """

    @functools.wraps(apply)
    def applied(state: Any, event: Event, seq: int) -> Any:
        try:
            return apply(state, event, seq)
        except Exception as exc:  # noqa: BLE001 - any bug or odd value in one event must not stop the fold
            return failed(state, seq, event, exc)

    applied.__wrapped_fold__ = apply  # type: ignore[attr-defined]
    return applied  # type: ignore[return-value]


def disagreeing(state: S, seq: int, event: Event, problem: str) -> S:
    """`state` with an event whose body disagrees with its subject recorded as an anomaly, not applied."""
    return rejected(state, seq, event, f"subject and body disagree: {problem}")


def at_position(state: S, seq: int) -> S:
    """`state` moved to stream position `seq` (for records the projection does not read)."""
    if state.last_seq == seq:
        return state
    return msgspec.structs.replace(state, last_seq=seq)  # type: ignore[type-var]


class Folding(Protocol[S_co]):
    """A fold's state held open while many events are folded into it, built only when read.

    What `Projection.folding` gives: a fold made of parts (the bundle) hands each event to the
    parts that read it instead of building its whole state per event; the scheduler's queue holds
    the maps it writes on most events open (projections/openmap.py). Its `state()` must equal what `apply` event by event gives
    (tests/test_projections.py and tests/test_openmap.py fold both ways).
    """

    def apply(self, event: Event, seq: int) -> None:
        """Fold one event (never raises: the parts' folds are total)."""

    def state(self) -> S_co:
        """The state after every event applied so far."""


@dataclass(frozen=True)
class Projection(Generic[S]):
    """A named, versioned fold; bump `version` whenever the state's shape or meaning changes."""

    name: str
    version: int
    initial: Callable[[], S]
    apply: Callable[[S, Event, int], S]
    reads: frozenset[str]  # event type names folded; other records only advance last_seq
    finish: Callable[[S], S] | None = None  # normalises a folded state before it is read or saved
    folding: Callable[[S], Folding[S]] | None = None  # opens a state for folding many events (Folder uses it)

    def finished(self, state: S) -> S:
        """`state` ready to be read, compared or saved."""
        return state if self.finish is None else self.finish(state)

    def __post_init__(self) -> None:
        if not hasattr(self.apply, "__wrapped_fold__"):  # every fold is total, whoever wrote it
            object.__setattr__(self, "apply", total(self.apply))

    @functools.cached_property
    def decoder(self) -> Callable[[bytes], Event]:
        """A strict decoder for exactly the event types this projection reads (raises InvalidEvent)."""
        kinds = tuple(EVENT_TYPES[name] for name in sorted(self.reads))
        return strict_decoder(Union[kinds] if len(kinds) > 1 else kinds[0])

    @functools.cached_property
    def typed_decoder(self) -> Callable[[str, bytes], Event]:
        """`decoder` given the type the subject names, which a body opening with that tag is decoded as directly."""
        return by_type_decoder((EVENT_TYPES[name] for name in self.reads), self.decoder)


class Record(Protocol):
    """A stored message as eventbus.history reads it (read-only members: its Record is frozen)."""

    @property
    def seq(self) -> int: ...
    @property
    def subject(self) -> str: ...
    @property
    def data(self) -> bytes: ...
    @property
    def headers(self) -> dict[str, str] | None: ...


def type_of(subject: str) -> str:
    """The event type a subject carries (rr.evt.<aggregate>.<id>.<TYPE>.<source>), '' if it is not one."""
    parts = subject.split(".")
    return parts[4] if len(parts) == 6 else ""


class Folder(Generic[S]):
    """Folds records into one projection as they arrive (incremental) or all at once (rebuild)."""

    def __init__(self, projection: Projection[S], state: S | None = None) -> None:
        self.projection = projection
        self._state: S = state if state is not None else projection.initial()
        self._seq = self._state.last_seq  # position reached; the state catches up when read
        self._reads = projection.reads
        self._decode = projection.typed_decoder
        self._fold = projection.apply
        self._opening = projection.folding
        self._open: Folding[S] | None = None  # while events go to projection.folding, it holds the state
        self._fast = _fast_paths(self._reads)

    @property
    def state(self) -> S:
        """The folded state, at the position of the last record seen."""
        self._state = at_position(self._settled(), self._seq)
        return self._state

    def _settled(self) -> S:
        if self._open is not None:
            self._state, self._open = self._open.state(), None
        return self._state

    def _apply(self, event: Event, seq: int) -> None:
        if self._opening is None:
            self._state = self._fold(self._state, event, seq)
            return
        if self._open is None:
            self._open = self._opening(self._state)
        self._open.apply(event, seq)

    def start_from(self, state: S) -> None:
        """Resume from `state` (a snapshot's) instead of the empty one; only before anything was folded."""
        if self._seq != 0:
            raise RuntimeError(f"{self.projection.name}: start_from after folding up to seq {self._seq}")
        self._state, self._seq, self._open = state, state.last_seq, None

    def __call__(self, record: Record) -> None:
        """Fold one record; one already folded (seq <= last_seq) is ignored, so resuming is idempotent."""
        seq = record.seq
        if seq <= self._seq:
            return
        self._seq = seq
        subject = record.subject
        parts = subject.split(".")  # once, for the type here and the subject check below (type_of's rule)
        kind = parts[4] if len(parts) == 6 else ""
        fast = self._fast.get(kind)
        if fast is None:
            if kind in self._reads:
                self._decoded(record, seq, kind, parts)
            return  # else only the position moves, and `state` applies it when read
        # A rebuild comes here for nearly every record: the common case inlined, in the order of the
        # general path (`_decoded`), which takes anything else. The body opens with its subject's
        # tag and decodes as that type; the subject's tokens equal the body's (`mismatch`'s fast test).
        tag, decode, aggregate, key = fast
        data = record.data
        if data.startswith(tag) and len(data) <= MAX_EVENT_BYTES:
            try:
                event = decode(data)
            except Exception:  # noqa: BLE001 - the general path decodes it again and records why it fails
                self._decoded(record, seq, kind, parts)
                return
            if parts[2] == aggregate and parts[5] == event.source and parts[3] == getattr(event, key) and parts[1] == "evt" and parts[0] == "rr":
                if self._opening is None:
                    self._state = self._fold(self._state, event, seq)
                else:
                    held = self._open
                    if held is None:
                        held = self._open = self._opening(self._state)
                    held.apply(event, seq)
                return
        self._decoded(record, seq, kind, parts)

    def _decoded(self, record: Record, seq: int, kind: str, parts: list[str]) -> None:
        # The general path for a record of a type this projection reads: decode (a lease copy from its
        # headers), check it against its subject, then fold it or record why not.
        try:
            # A lease copy is the server's, read from its headers; every other event from its body.
            event = decode_copy(record.subject, record.headers, record.data) if kind == COPY_TYPE else self._decode(kind, record.data)
        except InvalidEvent as exc:
            self._state = undecodable(self._settled(), seq, kind, str(exc))
            return
        problem = mismatch(record.subject, event, parts)
        if problem is not None:
            self._state = disagreeing(self._settled(), seq, event, problem)
        else:
            self._apply(event, seq)


def _fast_paths(reads: frozenset[str]) -> dict[str, tuple[bytes, Callable[[bytes], Event], str, str]]:
    # Per type read (lease copies aside, decoded from their headers): the tag its bodies open with,
    # its own decoder, and what its subject's aggregate token and id token must equal.
    return {
        name: (f'{{"type":"{name}",'.encode(), msgspec.json.Decoder(kind).decode, kind.aggregate, kind.key_field)
        for name, kind in ((name, EVENT_TYPES[name]) for name in reads if name in EVENT_TYPES and name != COPY_TYPE)
    }


class UntilFolder(Folder[S]):
    """Folds records while their events' time is not after `at`; from the first later one, nothing more."""

    def __init__(self, projection: Projection[S], at: dt.datetime, state: S | None = None) -> None:
        super().__init__(projection, state)
        self.at = at
        self.done = False
        self.read = 0  # records judged, the first later one included; a reader may deliver more before it stops

    def __call__(self, record: Record) -> None:
        """Fold one record unless the time bound was passed (every record is decoded: its time decides)."""
        if self.done or record.seq <= self._seq:
            return
        self.read += 1
        kind = type_of(record.subject)
        try:
            event = decode_on(record.subject, record.data, record.headers)
        except InvalidEvent as exc:
            self._seq = record.seq
            if kind in self._reads:
                self._state = undecodable(self._settled(), record.seq, kind, str(exc))
            return
        if not not_after(event, self.at):
            self.done = True
            return
        self._seq = record.seq
        if kind in self._reads:
            self._apply(event, record.seq)


def fold_records(projection: Projection[S], records: Iterable[Record], state: S | None = None) -> S:
    """The state after folding `records` (stream order) onto `state` (default: empty)."""
    folder = Folder(projection, state)
    for record in records:
        folder(record)
    return projection.finished(folder.state)


def fold_events(projection: Projection[S], events: Iterable[tuple[int, Event]], state: S | None = None) -> S:
    """The state after folding already decoded (seq, event) pairs; what a rebuild from records gives too."""
    state = state if state is not None else projection.initial()
    for seq, event in events:
        if seq <= state.last_seq:
            continue
        if event.type_name() in projection.reads:
            state = projection.apply(state, event, seq)
        else:
            state = at_position(state, seq)
    return projection.finished(state)


def not_after(event: Event, at: dt.datetime) -> bool:
    """Whether an event belongs to the cluster as it was at `at` (events without a time always do)."""
    return event.ts is None or event.ts <= at
