"""Who leads each role, for `rr leader`, pure: the lease key joined with the latest LEADER_ELECTED event."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import msgspec

from eventbus.events import LeaderElected
from eventbus.leases import LeaseRecord


class LeaderView(msgspec.Struct, frozen=True, kw_only=True):
    """One role's leadership as an operator sees it; `node` is None when the role is free."""

    role: str
    node: str | None
    epoch: int | None
    since: dt.datetime | None  # when this term began
    lease: str  # held, absent, deleted, expired, purged, unreadable
    lease_written_at: dt.datetime | None = None  # the last renewal, by the server's clock
    announced: bool = False  # a LEADER_ELECTED of this epoch is in the log
    last_node: str | None = None  # the latest LEADER_ELECTED, useful when the role is free
    last_epoch: int | None = None
    loops: dict[str, str] = {}  # the leader's loops as its last renewal reported them: name -> "running" or why not
    healthy: bool = True  # False: a leader holds the lease with loops not running

    def loops_down(self) -> list[str]:
        """The leader's loops not running, as "name (state: error)"."""
        return loops_down(self.loops)


def loops_down(loops: Mapping[str, str]) -> list[str]:
    """Of a lease's loop health (name -> "running" or why not), those not running, as "name (state: error)"."""
    return [f"{name} ({state})" for name, state in sorted(loops.items()) if state != "running"]


def leader_view(role: str, record: LeaseRecord, elected: LeaderElected | None) -> LeaderView:
    """Join the role's lease key with its latest election event."""
    holder = record.holder
    loops = dict(holder.loops) if holder is not None else {}
    announced = elected is not None and holder is not None and elected.epoch == record.epoch
    since = None
    if holder is not None:
        since = elected.ts if announced and elected is not None else holder.acquired_at
    return LeaderView(
        role=role,
        node=holder.node if holder is not None else None,
        epoch=record.epoch,
        since=since,
        lease=record.state,
        lease_written_at=record.written_at,
        announced=announced,
        last_node=elected.node if elected is not None else None,
        last_epoch=elected.epoch if elected is not None else None,
        loops=loops,
        healthy=all(state == "running" for state in loops.values()),
    )


def format_table(views: list[LeaderView], now: dt.datetime) -> str:
    """The views as a table for people; a free role reads "none"."""
    rows = [("ROLE", "LEADER", "EPOCH", "SINCE", "NOTE")]
    for v in views:
        if v.node is None:
            last = f"; last leader {v.last_node} (epoch {v.last_epoch})" if v.last_node else ""
            rows.append((v.role, "none", "-", "-", f"free ({v.lease}){last}"))
            continue
        since = f"{v.since:%Y-%m-%d %H:%M:%S}Z ({_ago(now, v.since)} ago)" if v.since else "-"
        notes = [] if v.announced else ["LEADER_ELECTED not in the log yet"]
        if not v.healthy:
            notes.append("UNHEALTHY: loops not running: " + "; ".join(v.loops_down()))
        note = "; ".join(notes)
        rows.append((v.role, v.node, str(v.epoch), since, note))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1]).rstrip() for r in rows)


def _ago(now: dt.datetime, then: dt.datetime) -> str:
    seconds = max(0.0, (now - then).total_seconds())
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
