"""The fence a worker's first start on a trimmed log is seeded with: the newest kept `cluster` snapshot's, at its position.

The leaders' cluster folds (the distribution loop, the sync planner, the API's parts) keep their
state, the fence among it, in the snapshot bucket, which only coordinators and admin may write.
Only the small `cluster` snapshots are read, never the bundle (a year's: ~1.5 GB). The seed is
the fence at the snapshot's position, which must be one the log still holds (or the one just
before its head): the records between an older one and the log's head aged out, and no fold on
from it could learn them. Whether the fold on from it is taken is the caller's decision
(projections/fenceseed.py `refusal`, once both folds have read the log).
"""

from __future__ import annotations

import asyncio
import logging

import msgspec

from eventbus.connection import Bus
from eventbus.errors import BusError, BusUnavailable
from eventbus.history import last_on
from eventbus.leasecopy import copy_subject
from eventbus.snapshots import kept_index
from projections import cluster
from projections.fenceseed import Terms, copied_term, seed_unusable, seed_view
from projections.fencing import FenceView
from servicekit.snapshotting import load_kept

log = logging.getLogger(__name__)


class Seed(msgspec.Struct, frozen=True, kw_only=True):
    """A fence folded from the log's first record up to `position` by a leader's cluster fold."""

    view: FenceView
    position: int


async def load(bus: Bus, candidates: tuple[str, ...], first_seq: int, end: int) -> Seed | None:
    """The newest kept cluster snapshot's fence not past `end` and at or after `first_seq - 1`; None when there is none to use."""
    try:
        loaded = await load_kept(bus, cluster.PROJECTION, "worker", await kept_index(bus), end)
    except BusUnavailable:
        raise
    except BusError as exc:
        log.warning("worker: the cluster snapshots could not be read (%s): the fence knows only what the log holds", exc)
        return None
    if loaded is None:
        return None
    position, view = loaded.header.last_seq, loaded.state.fence.view
    aged = f"the log's records from {position + 1} to {first_seq - 1} aged out after it" if position < first_seq - 1 else ""
    why = aged or seed_unusable(view, candidates)
    if why:
        log.warning("worker: the fence of the cluster snapshot at seq %d cannot seed this one: %s", position, why)
        return None
    return Seed(view=seed_view(view), position=position)


async def newest_terms(bus: Bus, roles: list[str]) -> Terms:
    """The term each role's newest lease copy in the log names (a direct get each), for the roles whose copies name one."""
    copies = await asyncio.gather(*(last_on(bus, copy_subject(role)) for role in roles))
    named = (copied_term(c.subject, c.data, c.headers) for c in copies if c is not None)
    return dict(term for term in named if term is not None)
