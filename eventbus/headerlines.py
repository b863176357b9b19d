"""Parsing a NATS message's header lines: nats-py's own rule, at a fraction of its cost per message.

Every stored event reaches its readers with a header block (at least its `Nats-Msg-Id`), and
nats-py parses it before any callback runs: under ops/bench/bench_scheduler.py's `--profile`
its parser was a twentieth of the leader's time, most of it a generator testing each
character of each name for whitespace. `parse` keeps its rule exactly (tests/test_headerlines.py
compares the two on random blocks) and tests a name with one `str.split` instead.
"""

from __future__ import annotations

_CRLF = b"\r\n"


def parse(raw: bytes) -> dict[str, str]:
    """`Name: Value` per CRLF-ended line into a dict, as nats-py's `Client._parse_header_lines`.

    Lines without a colon and names that are not ASCII or hold whitespace are skipped; values
    are stripped and decoded as UTF-8, malformed bytes replaced.
    """
    out: dict[str, str] = {}
    for line in raw.split(_CRLF):
        if not line:
            continue  # the empty lines that end the block
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        try:
            key = name.strip().decode("ascii")
        except UnicodeDecodeError:
            continue
        # str.split() cuts at exactly the characters str.isspace() holds: one piece equal to the
        # name means it has none. An empty name passes, as it does in nats-py.
        if key and key.split() != [key]:
            continue
        out[key] = value.strip().decode("utf-8", "replace")
    return out
