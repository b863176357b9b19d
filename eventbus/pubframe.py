"""A publish's header block and HPUB frame, built from our own known lines instead of nats-py's header dict.

nats-py's `publish` checks both subjects by regex, and for every header strips and checks its name by
regex, strips the value, replaces its line breaks and encodes both, one `bytearray.extend` at a time:
a leader sending one fenced decision per assignment spent more on that than on the rest of sending it
(ops/bench/README.md, "bench_scheduler: the publish frame built by ourselves"). Here the names are
constants, a value goes through nats-py's rule only when it needs to (surrounding whitespace, a line
break), and the lines a term repeats on every decision (its fence) are encoded once. The frame is the
one nats-py would send for the same headers, byte for byte (tests/test_pubframe.py).
"""

from __future__ import annotations

import functools

from eventbus import headerlines

_HEADER_LINE = b"NATS/1.0\r\n"
_MSG_ID = b"Nats-Msg-Id: "
_TRACE = b"traceparent: "
_CRLF = b"\r\n"
_BREAKS = str.maketrans({"\r": " ", "\n": " "})  # nats-py's rule for a value's line breaks


def header_value(value: str) -> bytes:
    """A header value as nats-py writes it: stripped, line breaks as spaces, UTF-8."""
    if "\r" in value or "\n" in value or value != value.strip():  # rare: ids and traces hold neither
        value = value.strip().translate(_BREAKS)
    return value.encode()


def expected_lines(seq: int, subject_filter: str) -> bytes:
    """The two lines of an expected-last-subject-sequence check: `subject_filter`'s last message is at `seq`."""
    return (b"Nats-Expected-Last-Subject-Sequence: " + header_value(str(seq)) + _CRLF
            + b"Nats-Expected-Last-Subject-Sequence-Subject: " + header_value(subject_filter) + _CRLF)


# A term's fence goes on every one of its decisions: its lines are encoded once.
fence_lines = functools.lru_cache(maxsize=16)(expected_lines)


def header_block(msg_id: str, expected: bytes = b"", trace: str | None = None) -> bytes:
    """The header block of an event's publish: its dedupe id, an expected-last check's lines, its traceparent."""
    block = _HEADER_LINE + _MSG_ID + header_value(msg_id) + _CRLF + expected
    if trace:
        block += _TRACE + header_value(trace) + _CRLF
    return block + _CRLF


def hpub_frame(subject: str, reply: str, block: bytes, payload: bytes) -> bytes:
    """The HPUB command carrying `payload` under the header `block` (nats-py's `hpub_cmd`)."""
    size = len(block)
    return b"".join((f"HPUB {subject} {reply} {size} {size + len(payload)}\r\n".encode(), block, payload, _CRLF))


def parsed(block: bytes) -> dict[str, str]:
    """A header block back as nats-py's publish takes it (a name to its value)."""
    return headerlines.parse(block[len(_HEADER_LINE):])
