"""Generators of events and hostile payloads, derived from the catalogue, so every new event type is fuzzed.

Three kinds, all built by introspecting the catalogue in eventbus/events/ (nothing is listed by hand):
  - `largest(kind)`: the biggest instance the catalogue's bounds allow (every string and list at
    its bound), to size MAX_EVENT_BYTES and the streams' max_msg_size from;
  - `valid_payloads()`: a hypothesis strategy of wire bytes of any event type with any values
    inside the bounds;
  - `hostile_payloads()`: valid events with broken fields (wrong types, out of bounds, missing,
    naive times), bodies under a subject of another type, oversized and deeply nested JSON, junk.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from typing import Any

import msgspec
import msgspec.inspect as mi
from hypothesis import strategies as st

from eventbus.events import BIG, EVENT_TYPES, MAX_EVENT_BYTES, Event, LeaderElected, encode
from eventbus.subjects import event_subject

ENVELOPE = frozenset(Event.__struct_fields__)
NODES = ("fz-a", "fz-b", "fz-c")


# ---- the largest event the catalogue allows ---------------------------------------------


def largest(kind: type[Event]) -> Event:
    """The biggest instance of `kind` the bounds allow, in plain ASCII."""
    info = mi.type_info(kind)
    assert isinstance(info, mi.StructType)
    return kind(**{f.name: _biggest(f.type, f.name) for f in info.fields})


def _biggest(t: mi.Type, name: str) -> Any:
    if isinstance(t, mi.StrType):
        return "x" * (t.max_length if t.max_length is not None else 64)
    if isinstance(t, mi.BoolType):
        return False
    if isinstance(t, (mi.IntType, mi.FloatType)):
        return t.le if t.le is not None else (t.ge if t.ge is not None else 0)
    if isinstance(t, mi.DateTimeType):
        return dt.datetime(2025, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=-11, minutes=-30), "x"))
    if isinstance(t, mi.ListType):
        assert t.max_length is not None, f"list field {name!r} has no max_length: every list needs a bound"
        return [_biggest(t.item_type, name) for _ in range(t.max_length)]
    if isinstance(t, mi.DictType):
        assert t.max_length is not None, f"dict field {name!r} has no max_length: every dict needs a bound"
        key = t.key_type
        assert isinstance(key, mi.StrType) and key.max_length is not None, f"dict field {name!r} needs bounded keys"
        return {f"{i:06d}".ljust(key.max_length, "k"): _biggest(t.value_type, name) for i in range(t.max_length)}
    if isinstance(t, mi.UnionType):
        options = [_biggest(u, name) for u in t.types if not isinstance(u, mi.NoneType)]
        return max(options, key=lambda v: len(msgspec.json.encode(v)))
    if isinstance(t, mi.LiteralType):
        return max(t.values, key=lambda v: len(str(v)))
    if isinstance(t, mi.StructType):
        return t.cls(**{f.name: _biggest(f.type, f.name) for f in t.fields})
    raise TypeError(f"no largest value for field {name!r} of type {t!r}: teach tests/event_fuzz.py")


# ---- valid events with arbitrary values -------------------------------------------------

_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
_ID = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_:.", min_size=1, max_size=24)


def _strategy(t: mi.Type, name: str) -> st.SearchStrategy[Any]:
    if isinstance(t, mi.StrType):
        return _TEXT if t.max_length is None or t.max_length > 40 else st.text(max_size=t.max_length)
    if isinstance(t, mi.BoolType):
        return st.booleans()
    if isinstance(t, mi.IntType):
        return st.integers(min_value=t.ge, max_value=t.le)
    if isinstance(t, mi.FloatType):
        return st.floats(min_value=t.ge, max_value=t.le, allow_nan=False, allow_infinity=False)
    if isinstance(t, mi.DateTimeType):
        return st.datetimes(timezones=st.just(dt.UTC))
    if isinstance(t, mi.ListType):
        return st.lists(_strategy(t.item_type, name), max_size=min(3, t.max_length or 3))
    if isinstance(t, mi.DictType):
        return st.dictionaries(st.text(max_size=12), _strategy(t.value_type, name), max_size=3)
    if isinstance(t, mi.UnionType):
        return st.one_of(*(_strategy(u, name) for u in t.types))
    if isinstance(t, mi.NoneType):
        return st.none()
    if isinstance(t, mi.LiteralType):
        return st.sampled_from(t.values)
    if isinstance(t, mi.StructType):
        return st.fixed_dictionaries({f.name: _strategy(f.type, f.name) for f in t.fields}).map(lambda kw: t.cls(**kw))
    raise TypeError(f"no strategy for field {name!r} of type {t!r}: teach tests/event_fuzz.py")


def events_of(kind: type[Event], forge: bool = True) -> st.SearchStrategy[Event]:
    """Any valid `kind` event; ids come from a small pool so events meet the same items and nodes.

    With `forge` False no event carries a fencing epoch (see `any_event`).
    """
    info = mi.type_info(kind)
    assert isinstance(info, mi.StructType)
    fields = {}
    for f in info.fields:
        if f.name in ("id",) or (f.name == "epoch" and not forge):
            continue
        if f.name == kind.key_field or f.name in ("node", "source", "work_id", "model_id"):
            fields[f.name] = st.sampled_from(NODES) if f.name in ("node", "source") else _ID
        else:
            fields[f.name] = _strategy(f.type, f.name)
    return st.fixed_dictionaries(fields).map(lambda kw: kind(**kw))


LEADERSHIP = frozenset({"LEADER_ELECTED", "LEADER_LOST"})


# Built once per `forge`: the hostile payloads draw it inside each example, and building a strategy for every type of
# the catalogue (msgspec's type_info and hypothesis' datetimes for each) was most of a fuzz test's time (76 s of 78).
@functools.cache
def any_event(forge: bool = True) -> st.SearchStrategy[Event]:
    """A valid event of any type in the catalogue.

    With `forge` False, no leadership events and no epochs: an election from a node that is not a
    candidate, or of an epoch no lease write acquired, is refused by the fences, but a random
    one may name a real term's epoch; `forged_elections` makes the ones a candidate could publish.
    """
    kinds = [kind for name, kind in EVENT_TYPES.items() if forge or name not in LEADERSHIP]
    return st.one_of(*(events_of(kind, forge) for kind in kinds))


def forged_elections(candidates: tuple[str, ...], roles: tuple[str, ...] = ("scheduler",)) -> st.SearchStrategy[tuple[str, bytes]]:
    """A LEADER_ELECTED a candidate's own credentials may publish: its own win, under its own name, any epoch.

    The server's permissions let it through; the fences must not believe it (no acquisition of
    the lease at that revision by that node is in the log), so scheduling goes on.
    """
    def forged(kw: dict[str, Any]) -> tuple[str, bytes]:
        event = LeaderElected(id=f"{kw['node']}:forged-{kw['epoch']}", source=kw["node"], **kw)
        return _subject(event), encode(event)

    return st.fixed_dictionaries({
        "role": st.sampled_from(roles), "node": st.sampled_from(candidates), "ttl_s": st.floats(0, 60),
        "epoch": st.one_of(st.integers(1, 1000), st.integers(1, BIG), st.just(BIG)),
    }).map(forged)


# ---- hostile payloads -------------------------------------------------------------------


def _as_wire(event: Event, mutate: dict[str, Any]) -> bytes:
    body = msgspec.to_builtins(event)
    for key, value in mutate.items():
        if value is _MISSING:
            body.pop(key, None)
        else:
            body[key] = value
    return json.dumps(body, allow_nan=True).encode()


_MISSING = object()
_BAD_VALUES = st.one_of(
    st.just(_MISSING), st.none(), st.just(10**30), st.just(1e300), st.just(-(10**18)), st.just("x" * 3000),
    st.just(float("nan")), st.just(float("inf")), st.just([[[]]]), st.just({"a": {"b": 1}}), st.just(True),
    st.just("2025-01-01T00:00:00"), st.text(max_size=5),
)


@st.composite
def broken_event(draw: st.DrawFn, forge: bool = True) -> tuple[str, bytes]:
    """A valid event with one to three fields replaced by something its schema forbids, on its own subject."""
    event = draw(any_event(forge))
    names = sorted(n for n in event.__struct_fields__ if forge or n != "epoch")
    mutate = draw(st.dictionaries(st.sampled_from(names), _BAD_VALUES, min_size=1, max_size=3))
    return _subject(event), _as_wire(event, mutate)


@st.composite
def mismatched_event(draw: st.DrawFn, forge: bool = True) -> tuple[str, bytes]:
    """A valid body under the subject of another event (another type, aggregate or id)."""
    body, cover = draw(any_event(forge)), draw(any_event())
    return _subject(cover), encode(body)


def _subject(event: Event) -> str:
    return event_subject(event.aggregate, event.aggregate_id() or "_", event.type_name(), event.source or "fz-a")


@st.composite
def junk(draw: st.DrawFn) -> tuple[str, bytes]:
    """Deeply nested JSON, near-oversized bodies, non-UTF-8 bytes, JSON of the wrong shape."""
    subject = _subject(draw(any_event()))
    depth = draw(st.integers(min_value=500, max_value=20_000))
    kind = draw(st.sampled_from(["nested", "nested_field", "big", "bytes", "shape", "unknown_type"]))
    if kind == "nested":
        return subject, b"[" * depth + b"]" * depth
    if kind == "nested_field":
        return subject, b'{"type": "WORK_ADDED", "extra": ' + b"{\"a\":" * depth + b"1" + b"}" * depth + b"}"
    if kind == "big":
        return subject, b'{"type": "HOST_ONLINE", "node": "' + b"n" * (MAX_EVENT_BYTES - 100) + b'"}'
    if kind == "bytes":
        return subject, draw(st.binary(max_size=200))
    if kind == "shape":
        return subject, json.dumps(draw(st.recursive(st.none() | st.integers() | st.text(max_size=5),
                                                     lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
                                                     max_leaves=10))).encode()
    return subject, b'{"type": "NO_SUCH_EVENT", "x": 1}'


def hostile_payloads(forge: bool = True) -> st.SearchStrategy[tuple[str, bytes]]:
    """(subject, body) pairs a reader of the log must park or record, never crash on."""
    return st.one_of(broken_event(forge), mismatched_event(forge), junk())


def valid_payloads(forge: bool = True) -> st.SearchStrategy[tuple[str, bytes]]:
    """(subject, body) pairs of valid events with arbitrary values (what a buggy but honest node may write)."""
    return any_event(forge).map(lambda e: (_subject(e), encode(e)))
