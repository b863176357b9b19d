"""The endpoints that act rather than read: ask a leader to step down, request a lease, drain or reset this node.

Each takes an authenticated principal and a decoded body and answers a document or raises an
`ApiError` naming the field; the rules are in leasecontrol.py and nodeadmin.py, the I/O (the
lease bucket, the worker's files, the signal to `rr up`) is handed in by the service.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import msgspec

from eventbus.errors import BusError, ConcurrencyConflict
from eventbus.heartbeats import RunningJob
from projections import work
from services.api import leasecontrol as lc
from services.api import nodeadmin as na
from services.api.errors import RETRY, ApiError
from services.api.tokens import Principal

log = logging.getLogger(__name__)

SHUTDOWN_DELAY_S = 0.3  # the answer leaves before rr up starts stopping the services (this API among them)


def require_role(principal: Principal, roles: tuple[str, ...], what: str) -> None:
    """403 unless the principal's role is one of `roles`."""
    if principal.role not in roles:
        raise ApiError(403, f"{principal.user} (role {principal.role}) may not {what}; use a {' or '.join(roles)} token")


def signal_later(pid: int) -> None:
    """SIGTERM `pid` shortly, once the answer is on its way."""
    asyncio.get_running_loop().call_later(SHUTDOWN_DELAY_S, os.kill, pid, signal.SIGTERM)


class NodeControl:
    """Leadership and node administration for one API, over what the service hands in."""

    def __init__(
        self, *, node_id: str, leases: lc.LeaseKeys | None = None, candidates: tuple[str, ...] = (),
        lease_refusal: str | None = None, up_pid: int | None = None, worker_dir: Path | None = None, jobs_file: Path | None = None,
        stop: Callable[[int], None] = signal_later, parent: Callable[[], int] = os.getppid,
    ) -> None:
        self.node_id = node_id
        self.leases = leases
        self.candidates = candidates
        self.lease_refusal = lease_refusal  # why this API's NATS credentials may not write the leases, if so
        self.up_pid = up_pid  # the `rr up` that started this API (RR_UP_PID); None when started alone
        self.worker_dir = worker_dir  # this node's worker files (config/nodedirs.py)
        self.jobs_file = jobs_file  # the running-jobs file the worker writes and the agent reports (membership.jobs_file)
        self.stop = stop
        self.parent = parent  # this process's parent now: the rr up to signal must still be it
        self.draining = False

    # ---- leadership --------------------------------------------------------------------------------------

    def _keys(self) -> lc.LeaseKeys:
        if self.leases is None:
            raise ApiError(503, "the leadership bucket is not reachable from this API; retry once /health says ok", headers=RETRY)
        return self.leases

    async def election_start(self, principal: Principal, request: lc.ElectionStartBody) -> lc.ElectionStartDoc:
        """Delete the role's lease at its holder's revision: the holder steps down and the candidates elect again."""
        require_role(principal, ("coordinator", "admin"), "start an election")
        if self.lease_refusal is not None:
            raise ApiError(403, f"nothing was changed: {self.lease_refusal}")
        keys = self._keys()
        try:
            for _ in range(lc.RELEASE_TRIES):
                record = await keys.read(request.role)
                if record.holder is None:
                    raise ApiError(409, lc.not_held(record))
                try:
                    await keys.release(request.role, record.revision)
                except ConcurrencyConflict:
                    continue  # renewed between the read and the delete: same holder, newer revision
                log.warning("api: %s (role %s) asked %s to step down as %s leader (epoch %s): %s", principal.user,
                            principal.role, record.holder.node, request.role, record.epoch, request.reason or "no reason given")
                return lc.released(record)
        except BusError as exc:
            raise ApiError(503, f"the {request.role} lease could not be read or released: {exc}; retry", headers=RETRY) from None
        raise ApiError(409, f"the {request.role} lease changed on every try; retry")

    async def lease_request(self, principal: Principal, request: lc.LeaseRequestBody) -> tuple[int, lc.LeaseRequestDoc]:
        """Whether the node may lead the role and holds its lease now (409 naming the holder when another does)."""
        require_role(principal, ("coordinator", "admin"), "request a leadership lease")
        node = request.node_id or principal.user
        if principal.role != "admin" and node != principal.user:
            raise ApiError(403, f"{principal.user} (role {principal.role}) may not request a lease for node {node}; use that node's token")
        if (why := lc.not_a_candidate(node, self.candidates)) is not None:
            raise ApiError(403, why, field="node_id")
        try:
            record = await self._keys().read(request.role)
        except BusError as exc:
            raise ApiError(503, f"the {request.role} lease could not be read: {exc}; retry", headers=RETRY) from None
        return lc.lease_answer(record, node)

    # ---- this node -------------------------------------------------------------------------------------

    def _this_node(self, principal: Principal, asked: str, what: str) -> None:
        require_role(principal, ("admin",), what)
        if (why := na.wrong_node(asked, self.node_id)) is not None:
            raise ApiError(409, why, field="node_id")

    async def _held(self) -> list[str]:
        """The attempts this node's worker says it runs ("work_id/aN"), from the jobs file its heartbeats report."""
        if self.jobs_file is None:
            return []
        return [f"{j.work_id}/a{j.attempt}" for j in await asyncio.to_thread(running_jobs, self.jobs_file)]

    async def shutdown(self, principal: Principal, request: na.ShutdownBody, state: work.WorkState) -> na.ShutdownDoc:
        """Ask the `rr up` running this node to stop: its worker hands running work back, everything exits cleanly."""
        self._this_node(principal, request.node_id, "shut a node down")
        if self.up_pid is None:
            raise ApiError(409, f"this API was not started by `rr up`, so it cannot stop node {self.node_id}'s other services: "
                                "stop them with their service manager (systemctl stop 'rr-*')")
        if self.parent() != self.up_pid:  # rr up is gone and its pid may be another process's by now
            raise ApiError(409, f"the rr up (pid {self.up_pid}) that started this API has exited; stop this node's services by hand")
        if self.draining:
            raise ApiError(409, f"node {self.node_id} is already shutting down")
        running = na.busy(state, self.node_id, await self._held())
        self.draining = True
        log.warning("api: %s asked node %s to shut down; %d attempts to hand back: %s", principal.user, self.node_id,
                    len(running), ", ".join(running) or "none")
        self.stop(self.up_pid)
        detail = (f"rr up (pid {self.up_pid}) stops every service of {self.node_id}: the worker hands its running attempts back "
                  "(WORK_HANDED_BACK) and the leader assigns them elsewhere; then the server stops and rr up exits 0")
        return na.ShutdownDoc(success=True, node_id=self.node_id, pid=self.up_pid, running=running, detail=detail)

    async def reset(self, principal: Principal, request: na.ResetBody, state: work.WorkState) -> na.ResetDoc:
        """Remove what this node can fetch again or what can never count; refused while the node holds work."""
        self._this_node(principal, request.node_id, "reset a node")
        if self.worker_dir is None:
            raise ApiError(409, f"node {self.node_id}'s worker directory is not known to this API")
        running = na.busy(state, self.node_id, await self._held())
        if running:
            raise ApiError(409, f"node {self.node_id} holds work ({', '.join(running[:10])}): nothing was reset; "
                                "wait for it to end or drain the node first (POST /admin/shutdown)")
        removed, kept = await asyncio.to_thread(reset_files, self.worker_dir, state, self.node_id)
        log.warning("api: %s reset node %s: removed %d paths (%d bytes)", principal.user, self.node_id, len(removed),
                    sum(r.bytes for r in removed))
        return na.ResetDoc(success=True, node_id=self.node_id, removed=removed, freed_bytes=sum(r.bytes for r in removed),
                           kept_attempts=kept)


def running_jobs(path: Path) -> list[RunningJob]:
    """The jobs the worker's running-jobs file lists (blocking); [] without one. An unreadable file is not
    "no work": the reset must not go ahead on a guess, so it raises."""
    try:
        return msgspec.json.decode(path.read_bytes(), type=list[RunningJob])
    except FileNotFoundError:
        return []
    except (OSError, msgspec.DecodeError) as exc:
        raise ApiError(409, f"{path}: the worker's running-jobs file cannot be read ({exc}): nothing was done") from None


def size_of(path: Path) -> int:
    """Bytes of the files under `path` (blocking)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def reset_files(worker_dir: Path, state: work.WorkState, node: str) -> tuple[list[na.Removed], int]:
    """Remove the fetched candidates and the attempt directories that can never count (blocking)."""
    found = [a for p in sorted(worker_dir.glob("jobs/*/a*")) if p.is_dir() and (a := na.attempt_dir_of(p)) is not None]
    plan, kept = na.reset_plan(state, node, found)
    candidates = worker_dir / "candidates"
    if candidates.is_dir():
        plan.append((candidates, na.CANDIDATES_WHY))
    removed = []
    for path, why in plan:
        size = size_of(path)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(na.Removed(path=str(path), bytes=size, why=why))
    return removed, kept
