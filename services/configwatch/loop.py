"""The leader's config watch: CONFIG_CHANGED when the rr config or the hosts file differs from what the log recorded."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path

import yaml

from eventbus.events import ConfigChanged
from eventbus.history import events
from eventbus.subjects import aggregate_filter
from services.configwatch.diff import Flat, changes, flatten, recorded
from services.leadership.term import NotLeader, Term
from services.runtime import ServiceContext

log = logging.getLogger(__name__)

CHECK_EVERY_S = 10.0
RR_CONFIG, HOSTS = "rr-config", "hosts"  # the aggregate ids of the two files


def read_flat(path: str) -> tuple[Flat, str] | None:
    """The file's flat content and SHA-256; None when it cannot be read or parsed (the loader reports why) (blocking)."""
    try:
        raw = Path(path).read_bytes()
        return flatten(yaml.safe_load(raw) or {}), hashlib.sha256(raw).hexdigest()
    except (OSError, yaml.YAMLError) as exc:
        log.warning("config watch: %s unreadable, not recorded: %s", path, exc)
        return None


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
    try:
        while True:
            for name, path in files.items():
                current = await asyncio.to_thread(read_flat, path)
                if current is None:
                    continue
                flat, sha256 = current
                diff = changes(known[name], flat)
                if diff:
                    await term.publish(ConfigChanged(name=name, path=str(Path(path).absolute()), sha256=sha256, changes=diff))
                    known[name] = flat
                    log.info("config watch: %s changed: %s", name, ", ".join(c.key for c in diff[:10]))
            await asyncio.sleep(check_every_s)
    except NotLeader as exc:
        log.info("config watch: %s", exc)
