"""The nemesis: carries out a schedule's faults on a running fleet and undoes each after its hold (root; blocking calls in threads).

Targets that depend on the moment (the scheduler leader, the RR_EVENTS stream leader, a follower)
are looked up when the fault starts. Undoing is per fault: a cut host comes back only when no
other fault still holds it cut, a split removes only its own hosts' blackhole routes, a killed
nats-server or a restarted host is started again as `python -m ops.fleet up` started it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import msgspec

from cli.commands.leader import last_elected
from eventbus.connection import Bus
from eventbus.errors import BusError
from eventbus.leases import LeaseBucket
from ops.chaos.report import Injected
from ops.chaos.schedule import Fault
from ops.fleet import launch, netns
from ops.fleet.plan import MONITOR_PORT, FleetPlan, HostPlan, split_groups
from ops.fleet.state import Process, load, save

Undo = Callable[[], None]

# A target looked up mid-failover (no leader announced yet, the process restarting under its service
# manager) is asked for again for this long before the fault counts as not injected: skipping it would
# leave exactly the moments the mix most wants to hit (a fault during a failover) out of the run.
TARGET_WAIT_S = 20.0
TARGET_RETRY_S = 1.0


class NoTarget(Exception):
    """The fault has nothing to hit right now (no leader yet, the process is restarting ...)."""


def stream_leader(plan: FleetPlan, stream: str = "RR_EVENTS") -> str | None:
    """The NATS host leading a stream's raft group, asked of each server's monitoring endpoint (blocking)."""
    for host in plan.nats_hosts():
        try:
            with urllib.request.urlopen(f"http://{host.address}:{MONITOR_PORT}/jsz?streams=true", timeout=3) as reply:
                jsz = json.load(reply)
        except (OSError, ValueError):
            continue
        for account in jsz.get("account_details") or []:
            for detail in account.get("stream_detail") or []:
                leader = (detail.get("cluster") or {}).get("leader")
                if detail.get("name") == stream and leader:
                    return str(leader)
    return None


def _pid_of(host: HostPlan, name: str) -> int:
    found = [pid for pid, process in launch.host_processes(host.namespace) if process == name]
    if not found:
        raise NoTarget(f"no {name} running on {host.name}")
    return min(found)  # the oldest: a job's children share no name with a service


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass  # it died meanwhile (another fault killed it): nothing to undo


class Nemesis:
    """Injects faults into one fleet; every injection returns how to undo it."""

    def __init__(self, root: Path, plan: FleetPlan, bus: Bus, *, target_wait_s: float = TARGET_WAIT_S) -> None:
        self.root, self.plan, self.bus = root, plan, bus
        self.target_wait_s = target_wait_s
        self.cuts: Counter[str] = Counter()  # host -> faults holding it cut
        self.stopped: set[int] = set()

    async def leader(self) -> str:
        """The node whose scheduler election the lease backs (a forged election in the log names no target)."""
        record = await LeaseBucket(self.bus).read("scheduler")
        elected = await last_elected(self.bus, "scheduler", record)
        if elected is None or record.holder is None or elected.node != record.holder.node:
            raise NoTarget("no scheduler leader elected yet")
        return elected.node

    async def _leader_or_none(self) -> str:
        """The leader, or "" when it cannot be told right now (a host fault goes ahead; only hit_leader is unknown)."""
        try:
            return await self.leader()
        except (NoTarget, BusError, OSError):  # OSError: nats-py's timeouts
            return ""

    async def inject(self, fault: Fault) -> tuple[Injected, Undo | None]:
        """Start one fault; the record of what it hit and the undo to run after its hold (None: nothing to undo)."""
        deadline = time.monotonic() + self.target_wait_s
        while True:
            started = time.time()
            try:
                victim, hit_leader, undo = await self._start(fault)
            except ValueError as exc:  # FleetError: the plan has no such host; asking again cannot help
                return Injected(fault=fault, started=started, ended=started, error=str(exc)), None
            except (NoTarget, BusError, OSError) as exc:  # BusError, OSError: the leader lookup timed out
                if time.monotonic() + TARGET_RETRY_S > deadline:
                    return Injected(fault=fault, started=started, ended=started, error=str(exc)), None
                await asyncio.sleep(TARGET_RETRY_S)
                continue
            return Injected(fault=fault, started=started, ended=started, victim=victim, hit_leader=hit_leader), undo

    async def _start(self, fault: Fault) -> tuple[str, bool, Undo | None]:
        kind, process = fault.kind.split("_", 1)[0], fault.kind.split("_", 1)[-1]
        if fault.kind in ("kill_leader", "stop_leader", "kill_follower", "stop_follower"):
            leader = await self.leader()
            host = self.plan.host(leader) if process == "leader" else self._follower(leader, fault.pick)
            return await self._service(host, "leader", kind, process == "leader")
        if process in ("worker", "distributor"):
            return await self._service(self.plan.host(fault.target), process, kind, False)
        if fault.kind in ("kill_nats", "kill_stream_leader"):
            name = fault.target if fault.kind == "kill_nats" else await asyncio.to_thread(stream_leader, self.plan)
            if not name:
                raise NoTarget("no RR_EVENTS stream leader reported")
            return await asyncio.to_thread(self._kill_nats, self.plan.host(name))
        leader = await self.leader() if fault.kind == "isolate_leader" else await self._leader_or_none()
        if fault.kind in ("cut_host", "isolate_leader"):
            host = self.plan.host(leader if fault.kind == "isolate_leader" else fault.target)
            return host.name, host.name == leader, await asyncio.to_thread(self._cut, host)
        if fault.kind == "split":
            return fault.target, False, await asyncio.to_thread(self._split, fault.target)
        if fault.kind == "restart_host":
            host = self.plan.host(fault.target)
            return host.name, host.name == leader, await asyncio.to_thread(self._restart, host)
        raise ValueError(f"fault kind {fault.kind!r} has no injection")

    def _follower(self, leader: str, pick: int) -> HostPlan:
        followers = [h for h in self.plan.nats_hosts() if h.name != leader]
        if not followers:
            raise NoTarget("no scheduler follower")
        return followers[pick % len(followers)]

    async def _service(self, host: HostPlan, service: str, kind: str, is_leader: bool) -> tuple[str, bool, Undo | None]:
        pid = await asyncio.to_thread(_pid_of, host, service)
        victim = f"{host.name}/{service} pid {pid}"
        if kind == "kill":
            _signal(pid, signal.SIGKILL)  # the host's service manager restarts it, as systemd would
            return victim, is_leader, None
        _signal(pid, signal.SIGSTOP)
        self.stopped.add(pid)

        def resume() -> None:
            self.stopped.discard(pid)
            _signal(pid, signal.SIGCONT)
        return victim, is_leader, resume

    def _kill_nats(self, host: HostPlan) -> tuple[str, bool, Undo]:
        pid = _pid_of(host, "nats-server")
        _signal(pid, signal.SIGKILL)
        return f"{host.name}/nats-server pid {pid}", False, lambda: self._record(launch.start_nats(self.plan, host))

    def _cut(self, host: HostPlan) -> Undo:
        self.cuts[host.name] += 1
        netns.cut(host)

        def uncut() -> None:
            self.cuts[host.name] -= 1
            if self.cuts[host.name] <= 0:
                netns.ip("link", "set", host.veth, "up", check=False)
        return uncut

    def _split(self, spec: str) -> Undo:
        side_a, side_b = split_groups(self.plan, spec)
        netns.split(side_a, side_b)

        def unsplit() -> None:
            for host in (*side_a, *side_b):
                netns.ip("route", "flush", "type", "blackhole", namespace=host.namespace, check=False)
        return unsplit

    def _restart(self, host: HostPlan) -> Undo:
        """Everything on the host ends as on a clean shutdown (SIGTERM, SIGKILL after the grace); the undo boots it."""
        launch.end_processes([host.namespace], [])

        def boot() -> None:
            if host.kind == "nats":
                self._record(launch.start_nats(self.plan, host))
            self._record(launch.start_services(self.plan, host))
        return boot

    def _record(self, process: Process) -> None:
        """Add a started process to the fleet's state file, so that `down` ends it too."""
        state = load(self.root)
        if state is not None:
            save(self.root, msgspec.structs.replace(state, processes=(*state.processes, process)))

    def heal_all(self) -> None:
        """Every link up, every split gone, every stopped process continued (blocking)."""
        netns.heal(self.plan)
        self.cuts.clear()
        for pid in list(self.stopped):
            _signal(pid, signal.SIGCONT)
        self.stopped.clear()
