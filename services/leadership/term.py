"""One leadership term as the leader's work sees it: its epoch, whether it may still act, fenced publishing."""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from eventbus.events import Event
from eventbus.publisher import Published, Publisher


class NotLeader(Exception):
    """The term is over (or past its deadline): the decision was not taken."""


class Term:
    """Handed to the leader's loops on election; every decision they publish goes through it."""

    def __init__(
        self, role: str, node: str, epoch: int, previous_node: str | None, publisher: Publisher, may_act: Callable[[], bool]
    ) -> None:
        self.role = role
        self.node = node
        self.epoch = epoch
        self.previous_node = previous_node
        self._publisher = publisher
        self._may_act = may_act

    def may_act(self) -> bool:
        """Whether this term still holds an unexpired lease by this node's monotonic clock."""
        return self._may_act()

    def fenced(self, event: Event) -> Event:
        """The event marked as a decision of this term."""
        return msgspec.structs.replace(event, epoch=self.epoch)

    async def publish(self, event: Event, *, expect_last_seq: int | None = None) -> Published:
        """Publish a decision with this term's epoch (only if its aggregate is still at `expect_last_seq`, when given).

        Raises NotLeader once the term may no longer act, ConcurrencyConflict when the aggregate moved on.
        """
        if not self.may_act():
            raise NotLeader(f"{self.role} term {self.epoch} of {self.node} may no longer act")
        return await self._publisher.publish(self.fenced(event), expect_last_seq=expect_last_seq)
