"""The hosts file as a running leader sees it: re-read whenever it changes, so an edit applies within the term.

The assigner, the populator and the sync planner each hold one `LiveHosts`; the file is read
again (in a thread) only when its modification time or size moved, and a broken edit keeps the
last good content, logged once per edit. The config watch records the same edit as CONFIG_CHANGED.
"""

from __future__ import annotations

import asyncio
import logging
import os

from config.hosts import HostsConfig, load_hosts
from eventbus.errors import InvalidConfig

log = logging.getLogger(__name__)


class LiveHosts:
    """One reader of the hosts file at `path` (None: no hosts file, `read()` returns None)."""

    def __init__(self, path: str | None, who: str) -> None:
        self._path = path
        self._who = who
        self._stamp: tuple[int, int] | None = None  # (mtime, size) of what `current` was read from
        self.current: HostsConfig | None = None  # the last good content

    async def read(self) -> HostsConfig | None:
        """The hosts file now: re-read when it changed since the last read, else the last good content."""
        if self._path is None:
            return None
        stamp = await asyncio.to_thread(_stamp, self._path)
        if stamp is not None and stamp == self._stamp:
            return self.current
        try:
            hosts = await asyncio.to_thread(load_hosts, self._path)
        except InvalidConfig as exc:
            if stamp != self._stamp:
                log.warning("%s: %s; keeping the last good hosts file", self._who, exc)
            self._stamp = stamp
            return self.current
        if self.current is not None and hosts != self.current:
            log.info("%s: hosts file %s changed; applied", self._who, self._path)
        self._stamp, self.current = stamp, hosts
        return hosts


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size
