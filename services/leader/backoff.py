"""Backoff, pure: when a failed item may run again, and which configs the populator rests after failures.

An attempt that fails (fast or not) puts its item back to pending; it is assigned again only
`retry_backoff.delay(n)` after its n-th failure (base, 2x base, 4x base ... up to the cap). The
populator feeds no new selfplay to a config whose last n selfplay items all failed until
`populator_backoff.delay(n)` after the newest failure; one completed item ends the streak. So a
fleet whose every job fails writes a bounded number of events per minute (README: Backoff).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

import msgspec

from config.sections.backoff import Backoff
from projections.pmap import Lookup
from projections.work import WorkItem, WorkStatus
from projections.workretirement import Retired


def retry_at(failures: int, last_failed_at: dt.datetime | None, backoff: Backoff) -> dt.datetime | None:
    """When an item that failed `failures` attempts, the newest at `last_failed_at`, may be assigned again."""
    if failures <= 0 or last_failed_at is None:
        return None
    return last_failed_at + dt.timedelta(seconds=backoff.delay(failures))


class Streak(msgspec.Struct, frozen=True, kw_only=True):
    """A config's selfplay items that failed in a row (since its last completed one), and the newest failure's time."""

    failed: int = 0
    last_failed_at: dt.datetime | None = None
    last_seq: int = 0


def failure_streaks(items: Iterable[WorkItem], work_type: str = "selfplay",
                    retired: Mapping[str, Retired] | None = None) -> dict[str, Streak]:
    """Per config, the items of `work_type` that ended failed after its newest completed one.

    `retired` is the work state's `retired_tally`: a completion that left the items still ends
    the streaks of failures before it.
    """
    cut = {key.split(" ", 1)[1]: t.last_seq for key, t in (retired or {}).items() if key.split(" ", 1)[0] == work_type}
    ended = sorted((i for i in items if i.work_type == work_type and i.status in (WorkStatus.COMPLETED, WorkStatus.FAILED)
                    and i.updated_seq > cut.get(i.config, 0)), key=lambda i: i.updated_seq)
    streaks: dict[str, Streak] = {}
    for item in ended:
        if item.status is WorkStatus.COMPLETED:
            streaks.pop(item.config, None)
            continue
        before = streaks.get(item.config, Streak())
        streaks[item.config] = Streak(failed=before.failed + 1, last_failed_at=item.updated_at, last_seq=item.updated_seq)
    return streaks


def resting_configs(streaks: Lookup[str, Streak], now: dt.datetime, backoff: Backoff) -> dict[str, dt.datetime]:
    """Configs the populator leaves alone now, each with when it may feed them again."""
    out: dict[str, dt.datetime] = {}
    for config, streak in streaks.items():
        until = retry_at(streak.failed, streak.last_failed_at, backoff)
        if until is not None and now < until:
            out[config] = until
    return out
