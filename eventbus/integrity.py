"""Subject and body agree: the one check every reader of the log applies before an event can take effect.

Permissions are granted on subjects (a worker may publish only `rr.evt.*.*.*.<its node>`, and
only its own event types), but readers act on the body. A body that claims another type,
another source or another aggregate than its subject would let whoever may publish one
subject forge any fact, so a mismatch is never applied: consumers park it in the dead-letter
stream with the reason, folds record it as an anomaly and go on.
"""

from __future__ import annotations

from eventbus.errors import InvalidEvent
from eventbus.events import EVENT_TYPES, Event, decode
from eventbus.leasecopy import decode_copy, is_copy
from eventbus.subjects import EVENTS_ROOT, token


class SubjectMismatch(InvalidEvent):
    """An event whose body disagrees with the subject it was stored on: never applied."""


_TAGS = {kind: kind.type_name() for kind in EVENT_TYPES.values()}


def mismatch(subject: str, event: Event, parts: list[str] | None = None) -> str | None:
    """Why the body of `event` disagrees with `subject` (rr.evt.<aggregate>.<id>.<TYPE>.<source>), or None.

    `parts`: the subject already split at its dots, when the caller split it to route the record.
    """
    # Every read of the log passes here: the common case (ids already subject-safe) is compared
    # token by token without building anything; only a difference takes the slow path.
    if parts is None:
        parts = subject.split(".")
    kind = type(event)
    if (
        len(parts) == 6 and parts[0] == "rr" and parts[1] == "evt" and parts[4] == _TAGS.get(kind)
        and parts[2] == kind.aggregate and parts[5] == event.source and parts[3] == getattr(event, kind.key_field)
    ):
        return None
    return _disagreement(subject, parts, event)


def _disagreement(subject: str, parts: list[str], event: Event) -> str | None:
    if len(parts) != 6 or f"{parts[0]}.{parts[1]}" != EVENTS_ROOT:
        return f"subject {subject!r} is not an event subject ({EVENTS_ROOT}.<aggregate>.<id>.<TYPE>.<source>)"
    _, _, aggregate, about, kind, source = parts
    if kind != event.type_name():
        return f"body type {event.type_name()} on a {kind} subject ({subject})"
    if source != token(event.source):
        return f"body source {event.source!r} on a subject of source {source!r} ({subject})"
    about_id = event.aggregate_id()
    if aggregate != event.aggregate or about != token(about_id):
        return f"body is about {event.aggregate}/{about_id} on a subject about {aggregate}/{about} ({subject})"
    return None  # the same once ids are made subject-safe (dots, spaces ... become '_')


def checked(subject: str, event: Event) -> Event:
    """`event` if it agrees with `subject`; raises SubjectMismatch naming the disagreement."""
    problem = mismatch(subject, event)
    if problem is not None:
        raise SubjectMismatch(f"subject and body disagree: {problem}")
    return event


def decode_on(subject: str, data: bytes, headers: dict[str, str] | None = None) -> Event:
    """Decode a stored event and check it against its subject; raises InvalidEvent (SubjectMismatch on disagreement).

    A lease copy (rr.evt.lease.<role>.LEASE_WRITTEN.nats) is the server's, decoded from its
    headers and body (eventbus/leasecopy.py): the record's `headers` must be passed for it.
    """
    if is_copy(subject):
        return decode_copy(subject, headers, data)
    return checked(subject, decode(data))
