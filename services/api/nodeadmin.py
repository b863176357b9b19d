"""Draining and resetting the node an API runs on: the request bodies, the answers and the reset's rules, pure.

`POST /admin/shutdown` drains the node the way `rr up` stops: its worker hands every running
attempt back (WORK_HANDED_BACK, so the leader assigns it again), the services stop, the server
stops, and `rr up` exits 0. `POST /admin/reset` removes only what this node can fetch or make
again, or what can never count: the worker's fetched copies of candidate models and the
directories of attempts that were superseded or cancelled. It refuses while the node holds work.
The log (the JetStream store) and the outputs of attempts that may count are never touched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import msgspec

from eventbus.subjects import token
from projections import work
from services.api.nodework import NodeId, on_node


class ShutdownBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /admin/shutdown: drain and stop the node named (it must be the API's own: a typo stops nothing)."""

    node_id: NodeId


class ShutdownDoc(msgspec.Struct, frozen=True, kw_only=True):
    """POST /admin/shutdown's answer: the stop is under way once this is sent."""

    success: bool
    node_id: str
    pid: int  # the `rr up` process asked to stop
    running: list[str]  # the attempts on this node that its worker hands back ("work_id/a1")
    detail: str


class ResetBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /admin/reset: reset the local state of the node named (the API's own)."""

    node_id: NodeId


class Removed(msgspec.Struct, frozen=True, kw_only=True):
    """One thing a reset removed, and why it was safe to."""

    path: str
    bytes: int
    why: str


class ResetDoc(msgspec.Struct, frozen=True, kw_only=True):
    """POST /admin/reset's answer: what was removed and what was kept."""

    success: bool
    node_id: str
    removed: list[Removed]
    freed_bytes: int
    kept_attempts: int  # attempt directories kept: their results count or may still count


class AttemptDir(msgspec.Struct, frozen=True, kw_only=True):
    """An attempt's directory on disk: <worker dir>/jobs/<token(work_id)>/a<attempt>."""

    path: Path
    item_token: str
    attempt: int


CANDIDATES_WHY = "fetched copies of candidate models: fetched again from the models bucket when an evaluation needs one"


def wrong_node(asked: str, here: str) -> str | None:
    """Why a request naming `asked` must not act on this API's node `here`; None when they agree."""
    if asked == here:
        return None
    return f"node_id: this API runs on node {here}, not {asked}; send the request to {asked}'s own API"


def busy(state: work.WorkState, node: str, held: Iterable[str]) -> list[str]:
    """The attempts that hold `node` now, as "work_id/aN": the log's (assigned, running) and the worker's own records."""
    names = [f"{i.work_id}/a{i.attempt}" for i in on_node(state, node)]
    return sorted(set(names) | set(held))


def attempt_dir_of(path: Path) -> AttemptDir | None:
    """`path` read as jobs/<item token>/a<N>; None for anything else (left alone)."""
    name = path.name
    if not (name.startswith("a") and name[1:].isdigit() and len(name) < 12):
        return None
    return AttemptDir(path=path, item_token=path.parent.name, attempt=int(name[1:]))


def superseded(item: work.WorkItem | None, attempt: int, node: str) -> str | None:
    """Why attempt `attempt` of `item` on `node` can never count (its directory may go); None to keep it.

    Kept: an unknown item (its history may have aged out), every attempt of a completed item (a
    late completion does not record which attempt it was), the current attempt (or one the log
    has not assigned yet), and an ended
    attempt whose late completion the log would still accept.
    """
    if item is None or item.status is work.WorkStatus.COMPLETED:
        return None
    if item.status is work.WorkStatus.CANCELLED:
        return f"attempt {attempt} of {item.work_id}, which was cancelled"
    if attempt >= item.attempt or (attempt, node) in item.ended:
        return None
    return f"attempt {attempt} of {item.work_id}, superseded by attempt {item.attempt}"


def reset_plan(state: work.WorkState, node: str, attempts: Iterable[AttemptDir]) -> tuple[list[tuple[Path, str]], int]:
    """The attempt directories to remove with why, and how many are kept."""
    by_token: Mapping[str, work.WorkItem] = {token(i.work_id): i for i in state.items.values()}
    remove: list[tuple[Path, str]] = []
    kept = 0
    for found in attempts:
        why = superseded(by_token.get(found.item_token), found.attempt, node)
        if why is None:
            kept += 1
        else:
            remove.append((found.path, why))
    return sorted(remove), kept
