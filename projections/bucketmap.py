"""Ids mapped to values, held in hash buckets: a map read by key that a snapshot decodes one bucket at a time.

The lineage's batches (taint) and the timeline's index (workrefs) grow one entry per batch or
item ever made, and are only read by key (the closure of a quarantine in force goes over them
all; nothing else does). As a PMap of their own, a load builds an entry, a key string and a
`msgspec.Raw` per id: at 2M records 150k each, ~0.07 s apiece, 72% of what was left of the API's
decode. Here the ids go into `packedmap.BUCKETS` buckets by the same stable hash as the packed
retired ids (projections/packedmap.py), each bucket a Struct holding a plain dict: a load builds
a `msgspec.Raw` per bucket (projections/wire.py leaves them as msgpack), and a lookup decodes the
one bucket its id hashes to (~40 entries at 2M, ~400 at a year's log), then keeps it decoded.
A `set` copies its bucket's dict (~1-5 us), where a PMap's copied O(log n) trie nodes.

A subclass names its bucket type (`bucket`, a Struct whose one field is `entries: dict[str, V]`)
and declares `buckets: PMap[int, <bucket type>]`, so that snapshots type its values.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Self

import msgspec

from projections.packedmap import bucket_of
from projections.pmap import PMap

_MISSING: Any = object()


class BucketMap(msgspec.Struct, frozen=True, array_like=True):
    """An immutable map of ids to values in hash buckets; `set` and `remove` return a new one."""

    buckets: PMap[int, Any] = msgspec.field(default_factory=PMap)
    count: int = 0

    bucket: ClassVar[type[Any]]  # the subclass's bucket Struct: one field, `entries`

    @classmethod
    def of(cls, entries: Mapping[str, Any]) -> Self:
        """A map with the contents of `entries`, every bucket built at once (each in the order of `entries`, as `set` appends)."""
        grouped: dict[int, dict[str, Any]] = {}
        for key, value in entries.items():
            index = bucket_of(key)
            found = grouped.get(index)
            if found is None:
                grouped[index] = {key: value}
            else:
                found[key] = value
        bucket = cls.bucket
        return cls(buckets=PMap({index: bucket(entries=held) for index, held in grouped.items()}), count=len(entries))

    def _entries(self, index: int) -> dict[str, Any]:
        found = self.buckets.get(index)
        return _NONE if found is None else found.entries

    def get(self, key: str, default: Any = None) -> Any:
        """The value of `key`, or `default`."""
        return self._entries(bucket_of(key)).get(key, default)

    def __getitem__(self, key: str) -> Any:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self._entries(bucket_of(key))

    def __len__(self) -> int:
        return self.count

    def set(self, key: str, value: Any) -> Self:
        """A new map with `key` bound to `value` (its bucket copied, every other shared)."""
        index = bucket_of(key)
        entries = self._entries(index)
        changed = {**entries, key: value}
        grown = self.count + (len(changed) - len(entries))
        return type(self)(buckets=self.buckets.set(index, self.bucket(entries=changed)), count=grown)

    def remove(self, key: str) -> Self:
        """A new map without `key` (the same map when it is absent)."""
        index = bucket_of(key)
        entries = self._entries(index)
        if key not in entries:
            return self
        left = {k: v for k, v in entries.items() if k != key}
        buckets = self.buckets.set(index, self.bucket(entries=left)) if left else self.buckets.remove(index)
        return type(self)(buckets=buckets, count=self.count - 1)

    def items(self) -> Iterator[tuple[str, Any]]:
        """Every (id, value), bucket by bucket (a pass over all of them decodes every bucket)."""
        for found in self.buckets.values():
            yield from found.entries.items()

    def keys(self) -> Iterator[str]:
        """Every id, bucket by bucket."""
        return (key for key, _ in self.items())

    def values(self) -> Iterator[Any]:
        """Every value, bucket by bucket."""
        return (value for _, value in self.items())

    def __iter__(self) -> Iterator[str]:
        return self.keys()

    def to_dict(self) -> dict[str, Any]:
        """A plain dict with the same contents."""
        return dict(self.items())

    def changed_since(self, older: BucketMap) -> Iterator[str]:
        """The ids bound differently here than in `older` (added, replaced or removed): only changed buckets are read."""
        for index in self.buckets.changed_since(older.buckets):
            mine, theirs = self._entries(index), older._entries(index)
            for key, value in mine.items():
                was = theirs.get(key, _MISSING)
                if was is not value and was != value:
                    yield key
            yield from (key for key in theirs if key not in mine)


_NONE: dict[str, Any] = {}  # an absent bucket's entries: read, never written
