"""Logs as a leadership term writes them, for folds tested without a server.

A leader decision without an epoch is never admitted (projections/fencing.py), so a
test that folds assignments, promotions or membership changes writes them the way a term does:
its LEADER_ELECTED first, then each decision stamped with the term's epoch.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from eventbus.events import Event, LeaderElected
from eventbus.publisher import Published, Publisher
from projections.fencing import LEADER_DECISIONS

TERM = LeaderElected(role="scheduler", node="lead", epoch=1)


def decided(event: Event, epoch: int = 1) -> Event:
    """The event as a term of `epoch` publishes it: stamped when it is a leader decision without an epoch."""
    if type(event) in LEADER_DECISIONS and event.epoch is None:
        return msgspec.structs.replace(event, epoch=epoch)
    return event


def in_term(events: Iterable[Event], epoch: int = 1) -> list[Event]:
    """The term's election, then the events with their leader decisions stamped with its epoch."""
    return [msgspec.structs.replace(TERM, epoch=epoch), *(decided(e, epoch) for e in events)]


async def as_term(publisher: Publisher, *events: Event, epoch: int = 1, role: str = "scheduler") -> Published:
    """Publish leader decisions as a term of `epoch` held by the publisher's node: its election, then each stamped.

    For tests that stand in for the leader (a node brought online, a model promoted) on a live
    stream; the last decision's acknowledgement is returned.
    """
    node = publisher.stamp(TERM).source
    await publisher.publish(LeaderElected(role=role, node=node, epoch=epoch))
    published: Published | None = None
    for event in events:
        published = await publisher.publish(decided(event, epoch))
    assert published is not None, "as_term needs at least one decision"
    return published
