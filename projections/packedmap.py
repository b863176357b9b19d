"""Ids mapped to short text, packed into one string per hash bucket: what a fold keeps of every retired item or batch.

A fold that retires what settled still has to answer for every id it ever saw (a repeated
report is refused, a late event judged): work's retired items (id -> last attempt and node) and
data's retired batches (id -> games), one entry per item or batch ever made. As a dict, each is
an entry, a key string and a value object per id, which every snapshot load decodes and every
save's settle frees: at a year's log, ~1.6M of each. Packed, the ids live in `BUCKETS` strings
chosen by a stable hash of the id ("\\n<id>\\t<text>\\n..."): a load decodes a few thousand
strings, a lookup hashes the id and searches one string (~400 entries at a year's log), and an
addition copies that one string. The attempts' completed ids are kept the same way
(projections/attempts.py), by window instead of hash, since they are only searched on a miss.

An id holding a tab or a newline, or a text holding a newline, cannot be packed
(`packable`): the folds keep such an entry where it was (it never retires).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import msgspec

from projections.pmap import PMap

BUCKETS = 4096  # a power of two; ~400 ids a bucket at a year's log (a copy of ~12 KB per addition)
_END = "\n"  # ends each entry (and opens the bucket), so "\n<id>\t" finds an id, never a part of one
_SEP = "\t"  # between an id and its text


class PackedMap(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """An immutable map of ids to short texts, one string per hash bucket; `added` returns a new one."""

    buckets: PMap[int, str] = msgspec.field(default_factory=PMap)
    count: int = 0

    def __len__(self) -> int:
        return self.count

    def __contains__(self, key: object) -> bool:
        # Asked by every WORK_ADDED and SELFPLAY_COMPLETE: `get` without its slice and call.
        if not isinstance(key, str):
            return False
        text: str | None = self.buckets.get(bucket_of(key))
        return text is not None and f"{_END}{key}{_SEP}" in text

    def get(self, key: str) -> str | None:
        """The text of `key`, None when it is not in the map."""
        text: str | None = self.buckets.get(bucket_of(key))
        if text is None:
            return None
        needle = f"{_END}{key}{_SEP}"
        at = text.find(needle)
        if at < 0:
            return None
        start = at + len(needle)
        return text[start:text.index(_END, start)]

    def items(self) -> Iterator[tuple[str, str]]:
        """Every (id, text), in no particular order (a pass over all of them: for reports and tests, not folds)."""
        for text in self.buckets.values():
            for entry in text[1:-1].split(_END):
                key, _, value = entry.partition(_SEP)
                yield key, value

    def keys(self) -> Iterator[str]:
        """Every id, in no particular order."""
        return (key for key, _ in self.items())

    def to_dict(self) -> dict[str, str]:
        """A plain dict with the same contents."""
        return dict(self.items())


def packable(key: str, text: str) -> bool:
    """Whether the entry can be packed: no separator in the id, no newline in the text."""
    return _END not in key and _SEP not in key and _END not in text


def added(packed: PackedMap, key: str, text: str) -> PackedMap:
    """`packed` with `key` -> `text` (`key` must not be in it, the entry must be `packable`)."""
    bucket = bucket_of(key)
    before = packed.buckets.get(bucket, _END)
    return PackedMap(buckets=packed.buckets.set(bucket, f"{before}{key}{_SEP}{text}{_END}"), count=packed.count + 1)


def bucket_of(key: str) -> int:
    # crc32, not hash(): a string's hash differs between processes, and the buckets are saved.
    return zlib.crc32(key.encode()) & (BUCKETS - 1)
