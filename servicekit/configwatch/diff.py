"""Config files as flat key -> JSON value maps, their differences, and the last content the log recorded (pure).

The log is the only store: the first CONFIG_CHANGED of a file lists every key as added, each later
one only what changed, so folding a file's events from the start gives its last recorded content.
Each fact is bounded: a value whose JSON is over CHANGE_VALUE_MAX is recorded as its SHA-256 and
size (the file itself, named by path and hash on the event, holds it), a key over REF_MAX is cut
and hashed, and a change of many keys is spread over events of at most CHANGES_MAX keys each.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from eventbus.events import CHANGE_VALUE_MAX, CHANGES_MAX, REF_MAX, ConfigChange, ConfigChanged

Flat = dict[str, str]  # dotted key -> the value as JSON


def flatten(document: Any, prefix: str = "") -> Flat:
    """Mappings become dotted keys; anything else (lists included) is one value, as JSON."""
    if isinstance(document, Mapping) and (document or not prefix):
        flat: Flat = {}
        for key, value in document.items():
            flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix or "(top level)": msgspec.json.encode(document, order="sorted").decode()}


def bounded(flat: Flat) -> Flat:
    """The flat map as the log records it: long values become their hash and size, long keys are cut and hashed."""
    return {_bounded_key(key): _bounded_value(value) for key, value in flat.items()}


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _bounded_key(key: str) -> str:
    return key if len(key) <= REF_MAX else f"{key[:REF_MAX - 18]}#{_digest(key)[:16]}"


def _bounded_value(value: str) -> str:
    if len(value) <= CHANGE_VALUE_MAX:
        return value
    return msgspec.json.encode({"sha256": _digest(value), "bytes": len(value.encode())}).decode()


def batches(diff: list[ConfigChange]) -> list[list[ConfigChange]]:
    """The changes in groups of at most CHANGES_MAX, one CONFIG_CHANGED each, in key order."""
    return [diff[i:i + CHANGES_MAX] for i in range(0, len(diff), CHANGES_MAX)]


def changes(old: Flat, new: Flat) -> list[ConfigChange]:
    """Every key added, removed or given another value, in key order."""
    return [
        ConfigChange(key=key, old=old.get(key), new=new.get(key))
        for key in sorted(old.keys() | new.keys())
        if old.get(key) != new.get(key)
    ]


def recorded(history: Iterable[ConfigChanged]) -> Flat:
    """The content the log last recorded for one file: its changes applied in order from nothing."""
    flat: Flat = {}
    for event in history:
        for change in event.changes:
            if change.new is None:
                flat.pop(change.key, None)
            else:
                flat[change.key] = change.new
    return flat
