"""Decoding a body as the type its subject names gives exactly what the union decoder gives: the event, or the same error."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from eventbus import events as ev
from eventbus.errors import InvalidEvent
from projections import bundle, cluster
from projections.base import Projection
from tests.test_projections import EVENTS, PROPERTY

# Bodies as a hostile or broken writer might store them: another type's tag, the tag missing or
# repeated, cut short, padded, or not an object at all.
_SPOILERS: list[Callable[[bytes, bytes], bytes]] = [
    lambda b, other: b,
    lambda b, other: other,
    lambda b, other: b.replace(b'"type":', b'"kind":', 1),
    lambda b, other: b[:-1] + b',"type":"HOST_ONLINE"}',
    lambda b, other: b[: len(b) // 2],
    lambda b, other: b" " + b,
    lambda b, other: b.replace(b'"v":1', b'"v":0'),
    lambda b, other: b"[1,2]",
]


def _outcome(decode: Callable[..., ev.Event], *args: Any) -> object:
    try:
        return decode(*args)
    except InvalidEvent as exc:
        return ("invalid", str(exc))


@PROPERTY
@given(EVENTS, EVENTS, st.sampled_from(range(len(_SPOILERS))), st.sampled_from([bundle.PROJECTION, cluster.PROJECTION]))
def test_the_typed_decoder_answers_what_the_union_decoder_answers(
    event: ev.Event, other: ev.Event, spoiler: int, projection: Projection[Any]
) -> None:
    body = _SPOILERS[spoiler](ev.encode(event), ev.encode(other))
    kind = event.type_name()
    assert _outcome(projection.typed_decoder, kind, body) == _outcome(projection.decoder, body)


def test_a_body_of_the_subjects_type_is_decoded_by_that_type_and_anything_else_by_the_union() -> None:
    started = ev.WorkStarted(work_id="w-1", node="gpu-1", attempt=1, source="gpu-1")
    decode = bundle.PROJECTION.typed_decoder
    assert decode("WORK_STARTED", ev.encode(started)) == started
    # On another type's subject the body is still read as what it says it is; the subject check refuses it later.
    assert decode("WORK_COMPLETED", ev.encode(started)) == started
    untagged = b'{"work_id":"w-1","node":"gpu-1","attempt":1}'
    assert _outcome(decode, "WORK_STARTED", untagged) == _outcome(bundle.PROJECTION.decoder, untagged)
    assert _outcome(decode, "WORK_STARTED", untagged)[0] == "invalid"  # type: ignore[index]
