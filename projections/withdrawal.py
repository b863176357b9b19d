"""Which work items' results are withdrawn from live data, pure: the rule every view applies.

The rule (README, "Which results count"): the results a work item reported -- its selfplay
batches, its trained candidate, its evaluation scores -- count as live data unless the item
ended failed or cancelled. A failed item's results count again when a completion of it is
accepted after all (a late completion, see projections/work.py); a cancelled item's never do.
Results arrive before their item's WORK_COMPLETED, so a view keeps every result and asks
`counts` when it reads them.
"""

from __future__ import annotations

import msgspec

from eventbus.events import Event, WorkCancelled, WorkCompleted, WorkFailed
from projections.pmap import PMap

FAILED = "failed"
CANCELLED = "cancelled"
KINDS: frozenset[type[Event]] = frozenset({WorkFailed, WorkCancelled, WorkCompleted})
READS = frozenset(t.type_name() for t in KINDS)


class Withdrawals(msgspec.Struct, frozen=True, kw_only=True):
    """Work ids whose results do not count, each with why ("failed" or "cancelled")."""

    items: PMap[str, str] = msgspec.field(default_factory=PMap)

    def counts(self, work_id: str) -> bool:
        """Whether results of this item count as live data."""
        return work_id not in self.items


def apply(withdrawals: Withdrawals, event: Event) -> Withdrawals:
    """The withdrawals after one event (events other than READS leave them as they are)."""
    if isinstance(event, WorkCancelled):
        return Withdrawals(items=withdrawals.items.set(event.work_id, CANCELLED))
    if isinstance(event, WorkFailed) and event.work_id not in withdrawals.items:
        return Withdrawals(items=withdrawals.items.set(event.work_id, FAILED))
    if isinstance(event, WorkCompleted) and withdrawals.items.get(event.work_id) == FAILED:
        return Withdrawals(items=withdrawals.items.remove(event.work_id))  # completed after all
    return withdrawals
