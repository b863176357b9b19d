"""Config files as flat key -> JSON value maps, their differences, and the last content the log recorded (pure).

The log is the only store: the first CONFIG_CHANGED of a file lists every key as added, each later
one only what changed, so folding a file's events from the start gives its last recorded content.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from eventbus.events import ConfigChange, ConfigChanged

Flat = dict[str, str]  # dotted key -> the value as JSON


def flatten(document: Any, prefix: str = "") -> Flat:
    """Mappings become dotted keys; anything else (lists included) is one value, as JSON."""
    if isinstance(document, Mapping) and (document or not prefix):
        flat: Flat = {}
        for key, value in document.items():
            flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix or "(top level)": msgspec.json.encode(document, order="sorted").decode()}


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
