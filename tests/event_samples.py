"""A valid instance of every event type, built from the catalog's own type declarations.

Built by introspection so that an event added to the catalog is covered by the round-trip
tests without anyone remembering to add a sample. Every field, optional ones included, gets
a value other than its default, so a round trip proves each field survives the wire.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

import msgspec
import msgspec.inspect as mi

from eventbus.authority import server_written
from eventbus.events import EVENT_TYPES, Event

ENVELOPE = frozenset(Event.__struct_fields__)
SAMPLE_TIME = dt.datetime(2025, 3, 4, 5, 6, 7, 890123, tzinfo=dt.UTC)
SAMPLE_TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def sample_event(kind: type[Event], n: int = 0, **overrides: Any) -> Event:
    """An unstamped event of `kind` with every field but id/ts/source set; `n` varies the values."""
    values = {f.name: _value(f.type, f.name, n) for f in _fields(kind) if f.name not in ENVELOPE}
    values.update(epoch=n + 1, trace=SAMPLE_TRACE)  # the envelope fields a publisher does not stamp
    values.update(overrides)
    return kind(**values)


# Read once per type: msgspec's type_info walks the type's annotations each call, and tests ask for thousands of samples
# (1,000 of one type took 5.8 s at load 10).
@functools.cache
def _fields(kind: type[Event]) -> tuple[mi.Field, ...]:
    info = mi.type_info(kind)
    assert isinstance(info, mi.StructType)
    return info.fields


# Every type a client publishes, in catalog order: the server writes the lease copies itself,
# and a LEASE_WRITTEN a client published is parked (eventbus/leasecopy.py).
CLIENT_KINDS = [kind for name, kind in EVENT_TYPES.items() if not server_written(name)]


def all_samples(n: int = 0) -> list[Event]:
    """One sample of each type in EVENT_TYPES a client publishes, in catalog order."""
    return [sample_event(kind, n) for kind in CLIENT_KINDS]


def _value(t: mi.Type, name: str, n: int) -> Any:
    if isinstance(t, mi.StrType):
        return f"{name.replace('_', '-')}-{n}"
    if isinstance(t, mi.BoolType):
        return False  # the catalog's booleans default to True (DataSyncComplete.ok)
    if isinstance(t, mi.IntType):
        return _within(t, 3 + n)
    if isinstance(t, mi.FloatType):
        return _within(t, 0.25 + n)
    if isinstance(t, mi.DateTimeType):
        return SAMPLE_TIME + dt.timedelta(seconds=n)
    if isinstance(t, (mi.ListType, mi.TupleType, mi.VarTupleType)):
        return [_value(t.item_type, name, n)]
    if isinstance(t, mi.DictType):
        return {"k": _value(t.value_type, name, n)}
    if isinstance(t, mi.UnionType):
        return _value(next(u for u in t.types if not isinstance(u, mi.NoneType)), name, n)
    if isinstance(t, mi.LiteralType):
        return t.values[0]
    if isinstance(t, mi.StructType):
        return t.cls(**{f.name: _value(f.type, f.name, n) for f in t.fields})
    raise TypeError(f"no sample value for field {name!r} of type {t!r}: teach tests/event_samples.py")


def _within(t: mi.IntType | mi.FloatType, value: Any) -> Any:
    """`value` moved inside the field's declared bounds (the catalogue bounds every number)."""
    if t.le is not None and value > t.le:
        value = t.le
    if t.ge is not None and value < t.ge:
        value = t.ge
    return value


def as_builtins(event: Event) -> dict[str, Any]:
    """The event as the JSON object it is on the wire."""
    return msgspec.to_builtins(event)  # type: ignore[no-any-return]
