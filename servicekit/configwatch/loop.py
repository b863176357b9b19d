"""The leader's config watch: CONFIG_CHANGED when the rr config or the hosts file differs from what the log recorded.

A file is recorded only once its own loader accepts it: an invalid edit is refused with one log
line (once per content) and never written into the log, where every restarted reader would meet it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path

from cluster.leadership.term import NotLeader, Term
from config.hosts import load_hosts
from config.settings import load_config
from config.yamlfile import read_yaml
from eventbus.errors import InvalidConfig
from eventbus.events import ConfigChanged
from eventbus.history import events
from eventbus.subjects import aggregate_filter
from eventbus.tasks import raise_if_cancelled
from servicekit.configwatch.diff import Flat, batches, bounded, changes, flatten, recorded
from servicekit.runtime import ServiceContext

log = logging.getLogger(__name__)

CHECK_EVERY_S = 10.0
RR_CONFIG, HOSTS = "rr-config", "hosts"  # the aggregate ids of the two files


LOADERS = {RR_CONFIG: load_config, HOSTS: load_hosts}


def read_flat(path: str, name: str = RR_CONFIG) -> tuple[Flat, str]:
    """The file's bounded flat content and SHA-256, if its loader accepts it; else InvalidConfig (blocking)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidConfig(f"{path}: cannot read: {exc.strerror or exc}") from None
    LOADERS[name](path)  # the running services would refuse it on their next start: so does the log
    return bounded(flatten(read_yaml(Path(path), name))), hashlib.sha256(raw).hexdigest()


class Refusals:
    """Says once per file content why it is not recorded, not every check."""

    def __init__(self) -> None:
        self._said: dict[str, str] = {}

    def refused(self, name: str, reason: str) -> None:
        """Log the refusal unless this file was refused for the same reason last time."""
        if self._said.get(name) != reason:
            log.error("config watch: %s refused, not recorded (running services keep the last valid one): %s", name, reason)
        self._said[name] = reason

    def accepted(self, name: str) -> None:
        """The file is valid again."""
        self._said.pop(name, None)


async def last_recorded(ctx: ServiceContext, name: str) -> Flat:
    """What the log last recorded for a file (empty before its first CONFIG_CHANGED)."""
    history = [e async for _s, e in events(ctx.bus, subject=aggregate_filter("config", name)) if isinstance(e, ConfigChanged)]
    return recorded(history)


async def config_watch_loop(ctx: ServiceContext, term: Term, check_every_s: float = CHECK_EVERY_S) -> None:
    """Every `check_every_s`, compare each watched file (as this leader reads it) with the log and publish what changed."""
    files = {name: path for name, path in ((RR_CONFIG, ctx.options.config_path), (HOSTS, ctx.config.hosts_file)) if path}
    if not files:
        return
    known = {name: await last_recorded(ctx, name) for name in files}
    refusals = Refusals()
    try:
        while True:
            for name, path in files.items():
                try:
                    flat, sha256 = await asyncio.to_thread(read_flat, path, name)
                except InvalidConfig as exc:
                    refusals.refused(name, str(exc))
                    continue
                refusals.accepted(name)
                diff = changes(known[name], flat)
                for part in batches(diff):
                    await term.publish(ConfigChanged(name=name, path=str(Path(path).absolute())[:4096], sha256=sha256, changes=part))
                if diff:
                    known[name] = flat
                    log.info("config watch: %s changed: %d keys (%s)", name, len(diff), ", ".join(c.key for c in diff[:10]))
            raise_if_cancelled()  # a stop that a publish's wait_for lost (Python 3.11): a deposed leader stops here
            await asyncio.sleep(check_every_s)
    except NotLeader as exc:
        log.info("config watch: %s", exc)
