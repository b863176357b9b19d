"""The envelope every event shares (id, ts, source, v, epoch, trace) and the stamping that fills it."""

from __future__ import annotations

import datetime as dt
import os
from typing import Annotated, ClassVar

import msgspec
from msgspec import Meta

from eventbus.events.bounds import Count, Name, Ref, Time
from eventbus.subjects import event_subject


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Envelope shared by every event; subclasses add the facts."""

    # Unique and namespaced by publisher ("<node>:<random>"); also the Nats-Msg-Id, so a
    # retried publish is deduplicated by JetStream and no two nodes can collide.
    id: Ref = ""
    ts: Time | None = None  # UTC time the event was stamped by its publisher
    source: Ref = ""  # node id of the publisher
    v: Annotated[int, Meta(ge=1, le=1000)] = 1  # schema version of this event type
    epoch: Count | None = None  # leader fencing epoch, set on events that are a leader's decision
    trace: Name | None = None  # W3C traceparent of the operation that produced the event

    # Which aggregate the event belongs to, and the field naming its id; both go in the subject.
    aggregate: ClassVar[str] = ""
    key_field: ClassVar[str] = ""

    @classmethod
    def type_name(cls) -> str:
        """The upper-case name this event has on the wire."""
        tag = cls.__struct_config__.tag
        assert isinstance(tag, str)
        return tag

    def aggregate_id(self) -> str:
        """Id of the aggregate this event is about (a node, a work item, a model ...)."""
        return str(getattr(self, self.key_field))

    def subject(self) -> str:
        """Subject this event is published on: rr.evt.<aggregate>.<id>.<TYPE>.<source>."""
        return event_subject(self.aggregate, self.aggregate_id(), self.type_name(), self.source)



def new_event_id(source: str) -> str:
    """A unique event id namespaced by its publisher, so dedupe never crosses nodes."""
    return f"{source}:{os.urandom(12).hex()}"


def utcnow() -> dt.datetime:
    """Current time in UTC, the only clock events are stamped with."""
    return dt.datetime.now(dt.UTC)


def stamp(event: Event, source: str, trace: str | None = None) -> Event:
    """Fill the envelope of an event that has none yet; a stamped event is left as it is.

    Keeping the id of an already stamped event is what makes a retry idempotent.
    """
    if event.id:
        return event
    return msgspec.structs.replace(
        event,
        id=new_event_id(source),
        ts=utcnow(),
        source=event.source or source,
        trace=event.trace or trace,
    )
