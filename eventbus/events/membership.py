"""Who is in the cluster: hosts coming online and going offline, with what they have."""

from __future__ import annotations

from typing import Annotated, ClassVar

import msgspec
from msgspec import Meta

from eventbus.events.base import Event
from eventbus.events.bounds import Count, Gigabytes, Name, Percent, Ref, Seconds, Text, Time


class GpuInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One GPU of a host."""

    name: Name
    memory_gb: Gigabytes
    utilization: Percent | None = None  # percent, when known


class HostResources(msgspec.Struct, frozen=True, kw_only=True):
    """A host's resources as its agent measured them."""

    cpu_count: Count = 0
    cpu_percent: Percent = 0.0
    memory_gb: Gigabytes = 0.0
    memory_percent: Percent = 0.0
    disk_free_gb: Gigabytes = 0.0
    disk_percent: Percent = 0.0
    gpus: Annotated[list[GpuInfo], Meta(max_length=64)] = []


class HostOnline(Event, tag="HOST_ONLINE", kw_only=True):
    """A node was seen for the first time, or again after being offline."""

    aggregate: ClassVar[str] = "host"
    key_field: ClassVar[str] = "node"
    node: Ref
    reason: Text = "first_seen"
    roles: Annotated[list[Name], Meta(max_length=16)] = []
    version: Name = ""
    resources: HostResources | None = None


class HostOffline(Event, tag="HOST_OFFLINE", kw_only=True):
    """A node fell silent past the configured bound, or left cleanly."""

    aggregate: ClassVar[str] = "host"
    key_field: ClassVar[str] = "node"
    node: Ref
    reason: Text
    last_seen: Time | None = None
    silence_s: Seconds = 0.0
