"""A config file took new content: which keys changed, old and new."""

from __future__ import annotations

from typing import Annotated, ClassVar

import msgspec
from msgspec import Meta

from eventbus.events.base import Event
from eventbus.events.bounds import CHANGE_VALUE_MAX, CHANGES_MAX, Name, Path, Ref


class ConfigChange(msgspec.Struct, frozen=True, kw_only=True):
    """One key that changed between two versions of a config file."""

    key: Ref
    old: Annotated[str, Meta(max_length=CHANGE_VALUE_MAX)] | None = None  # JSON of the old value; None when the key was added
    new: Annotated[str, Meta(max_length=CHANGE_VALUE_MAX)] | None = None  # JSON of the new value; None when the key was removed


class ConfigChanged(Event, tag="CONFIG_CHANGED", kw_only=True):
    """A config file took a new content; what changed, key by key."""

    aggregate: ClassVar[str] = "config"
    key_field: ClassVar[str] = "name"
    name: Name
    path: Path = ""
    sha256: Name = ""
    changes: Annotated[list[ConfigChange], Meta(max_length=CHANGES_MAX)] = []
