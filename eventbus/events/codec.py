"""The wire form: one line of JSON an event, and decoding that turns every failure into InvalidEvent."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from eventbus.errors import InvalidEvent
from eventbus.events.base import Event
from eventbus.events.bounds import MAX_EVENT_BYTES, TEXT_MAX
from eventbus.events.registry import AnyEvent
from eventbus.limits import ID_MAX

_encoder = msgspec.json.Encoder()


def strict_decoder(kind: Any) -> Callable[[bytes], Any]:
    """A decoder of `kind` whose every failure is InvalidEvent (oversized, too deep, bad JSON, a bound broken).

    Nothing else may escape: a poison message must be parked or recorded, never crash its reader.
    """
    decoder = msgspec.json.Decoder(kind)

    def decode_strict(data: bytes) -> Any:
        if len(data) > MAX_EVENT_BYTES:
            raise InvalidEvent(f"message of {len(data)} bytes is larger than the {MAX_EVENT_BYTES} an event may be")
        try:
            return decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise InvalidEvent(str(exc)[:TEXT_MAX]) from None
        except RecursionError:  # msgspec recurses per nesting level; JSON nested thousands deep ends here
            raise InvalidEvent("JSON nested too deeply") from None
        except Exception as exc:  # noqa: BLE001 - whatever else a hostile payload triggers is still invalid
            raise InvalidEvent(f"{type(exc).__name__}: {exc}"[:TEXT_MAX]) from None

    return decode_strict


def by_type_decoder(kinds: Iterable[type[Event]], fallback: Callable[[bytes], Any]) -> Callable[[str, bytes], Any]:
    """A decoder of bodies whose type the subject names: `decode(type_name, data)`, equal to `fallback(data)`.

    A tagged union's decoder first finds the tag, then the type; a body that opens with the tag of
    the type its subject names (as every body we encode does: msgspec writes the tag first) is
    decoded by that type's own decoder, ~30% less per event. Anything else, and any failure,
    goes to `fallback` (the union's strict decoder), so the result or the error is exactly its.
    """
    typed = {k.type_name(): (f'{{"type":"{k.type_name()}",'.encode(), msgspec.json.Decoder(k)) for k in kinds}

    def decode_by_type(type_name: str, data: bytes) -> Any:
        known = typed.get(type_name)
        if known is not None and len(data) <= MAX_EVENT_BYTES and data.startswith(known[0]):
            try:
                return known[1].decode(data)
            except Exception:  # noqa: BLE001, S110 - the union decoder fails it the same way, and says why
                pass
        return fallback(data)

    return decode_by_type


_decode = strict_decoder(AnyEvent)


def encode(event: Event) -> bytes:
    """One line of JSON for the wire."""
    return _encoder.encode(event)


def decode(data: bytes) -> Event:
    """Decode one event; raises InvalidEvent naming what is wrong (bad JSON, unknown type, a field, a bound)."""
    event: Event = _decode(data)
    return event


def checked(event: Event) -> bytes:
    """The event's wire form, if every reader will accept it; else InvalidEvent naming the field and bound."""
    data = encode(event)
    try:
        decode(data)
    except InvalidEvent as exc:
        raise InvalidEvent(f"{event.type_name()} {event.aggregate_id()[:ID_MAX]!r} breaks the event schema: {exc}") from None
    return data

