"""`python -m ops.fleet`: up, status, cut, split, heal, down (root; iproute2; nftables for --nat)."""

from __future__ import annotations

import argparse
import functools
import os
import secrets
import string
import sys
import time
from pathlib import Path

import msgspec

from ops.fleet import netns
from ops.fleet.files import Workload
from ops.fleet.plan import FleetError, FleetPlan, HostPlan, owns_name, plan_fleet, split_groups, subnet_for
from ops.fleet.state import FleetState, Process, load, save, state_path

DEFAULT_ROOT = "/tmp/rr-fleet"
# _heavy_imports: `launch` and `ready` bring in the credentials generator, the config loader and nats-py (0.45 s
# of CPU at each start, 1.5-4 s of wall on the fleet tests' busy 2 cores), which `cut`, `split` and `heal`,
# run many times by the fault tests and ops/chaos, never use: the commands that do import them themselves.


def main(argv: list[str] | None = None) -> int:
    """Run one fleet command; exit 1 with one line on a FleetError."""
    args = parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except FleetError as exc:
        print(f"fleet: {exc}", file=sys.stderr)
        return 1


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m ops.fleet", description=__doc__)
    p.add_argument("--root", type=Path, default=Path(os.environ.get("RR_FLEET_ROOT", DEFAULT_ROOT)),
                   help=f"the fleet's directory: state file, hosts, logs (env RR_FLEET_ROOT; default {DEFAULT_ROOT})")
    sub = p.add_subparsers(required=True)
    up = sub.add_parser("up", help="create the hosts and start NATS and every service; returns once ready")
    up.add_argument("--workers", type=int, default=3, help="worker hosts (default 3)")
    up.add_argument("--nat", type=int, default=0, help="how many worker hosts sit behind NAT (inbound dropped)")
    up.add_argument("--trainers", type=int, default=1, help="worker hosts that train (the rest selfplay and evaluate)")
    up.add_argument("--run-id", default=None, help="1-6 letters/digits in every name (default random)")
    up.add_argument("--timeout", type=float, default=240.0, help="seconds to wait for readiness (default 240)")
    up.add_argument("--workload", default=None, help="JSON overriding the small workload, e.g. '{\"selfplay_games\": 8}'")
    up.set_defaults(func=cmd_up)
    status = sub.add_parser("status", help="hosts, node ids, processes, NATS URLs, how to point rr at the fleet")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
    cut = sub.add_parser("cut", help="take one host off the network")
    cut.add_argument("host")
    cut.set_defaults(func=cmd_cut)
    split = sub.add_parser("split", help="two groups that cannot reach each other: A,B/C,D")
    split.add_argument("groups")
    split.set_defaults(func=cmd_split)
    sub.add_parser("heal", help="undo every cut and split").set_defaults(func=cmd_heal)
    down = sub.add_parser("down", help="end every process and remove every namespace and link of the fleet")
    down.add_argument("--run-id", default=None, help="the fleet to remove when its state file is gone")
    down.add_argument("--all", action="store_true", help="every rr fleet on this machine (by name prefix)")
    down.set_defaults(func=cmd_down)
    return p


def _new_run_id() -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(5))


def cmd_up(args: argparse.Namespace) -> int:
    """Plan, record, create, start, wait."""
    root: Path = args.root.absolute()
    existing = load(root)
    if existing is not None:
        raise FleetError(f"{state_path(root)} exists (fleet {existing.plan.run_id}): `python -m ops.fleet --root {root} down` first")
    run_id = args.run_id or _new_run_id()
    workload = msgspec.json.decode(args.workload, type=Workload) if args.workload else Workload()
    plan = plan_fleet(run_id, root, workers=args.workers, nat=args.nat, trainers=args.trainers,
                      subnet=subnet_for(run_id, netns.taken_subnets()))
    netns.check_tools(plan)
    save(root, FleetState(plan=plan))  # before anything exists: `down` after a crash from here on finds it all
    try:
        return _bring_up(root, plan, workload, args.timeout)
    except FleetError as exc:
        raise FleetError(f"{exc}; the fleet is left as it is for inspection (logs in {root}/hosts/<host>/logs): "
                         f"`python -m ops.fleet --root {root} down` removes it") from None


def _bring_up(root: Path, plan: FleetPlan, workload: Workload, timeout_s: float) -> int:
    """Create the network, start NATS, provision, start services (worker hosts first), wait for readiness."""
    from ops.fleet import launch, ready  # not at the top: see _heavy_imports
    state, run_id = FleetState(plan=plan), plan.run_id
    started = time.monotonic()
    launch.write_files(plan, workload)
    netns.make_bridge(plan)
    for host in plan.hosts:
        netns.make_host(plan, host)
    state = _started(root, state, [launch.start_nats(plan, h) for h in plan.nats_hosts()])
    for host in plan.nats_hosts():
        ready.wait_for(f"nats-server on {host.name} ({host.address})", functools.partial(ready.listening, host.address), 30)
    ready.wait_for("JetStream on the cluster (rr streams init --replicas 3)", lambda: ready.streams_provisioned(plan), 90, 1.0)
    _say(f"fleet {run_id}: {len(plan.hosts)} hosts on {plan.bridge} ({plan.gateway}/24), starting services ...")
    # Worker hosts first: a worker's consumer takes assignments made after it exists, so it must
    # exist before a scheduler leader can see the host's heartbeats and assign to it.
    workers = [h for h in plan.hosts if h.kind == "worker"]
    state = _started(root, state, [launch.start_services(plan, h) for h in workers])
    ready.wait_for("the worker hosts' services (micro discovery, as rr services)", lambda: not ready.missing_services(plan, workers),
                   _left(timeout_s, started), 1.0)
    state = _started(root, state, [launch.start_services(plan, h) for h in plan.nats_hosts()])
    ready.wait_for("every host's services (micro discovery, as rr services)", lambda: not ready.missing_services(plan), _left(timeout_s, started), 1.0)
    ready.wait_for("a scheduler leader (rr leader)", lambda: ready.scheduler_leader(plan) is not None, 60, 1.0)
    save(root, msgspec.structs.replace(state, ready=True))
    _say(f"fleet {run_id}: ready in {time.monotonic() - started:.0f}s")
    print(status_text(load(root) or state))
    return 0


def _left(timeout_s: float, started: float) -> float:
    return max(10.0, timeout_s - (time.monotonic() - started))


def _started(root: Path, state: FleetState, processes: list[Process]) -> FleetState:
    state = msgspec.structs.replace(state, processes=(*state.processes, *processes))
    save(root, state)
    return state


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _state(root: Path) -> FleetState:
    state = load(root.absolute())
    if state is None:
        raise FleetError(f"no fleet in {root.absolute()} ({state_path(root.absolute())} missing): `python -m ops.fleet up` first")
    return state


class ProcessView(msgspec.Struct, frozen=True, kw_only=True):
    """One process of `status --json`."""

    name: str
    pid: int
    alive: bool
    log: str


class HostView(msgspec.Struct, frozen=True, kw_only=True):
    """One host of `status --json`."""

    name: str
    node_id: str
    kind: str
    namespace: str
    address: str
    nat: bool
    role: str
    dir: str
    processes: list[ProcessView]


class FleetView(msgspec.Struct, frozen=True, kw_only=True):
    """`status --json`."""

    run_id: str
    root: str
    ready: bool
    bridge: str
    nats_urls: list[str]
    rr_env: dict[str, str]  # export these to point rr at the fleet
    hosts: list[HostView]


def fleet_view(state: FleetState) -> FleetView:
    """The fleet as `status` shows it: processes checked now."""
    plan = state.plan
    hosts = [HostView(name=h.name, node_id=h.node_id, kind=h.kind, namespace=h.namespace, address=h.address, nat=h.nat,
                      role=h.role, dir=h.root,
                      processes=_processes_of(state, h)) for h in plan.hosts]
    from ops.fleet import ready  # not at the top: see _heavy_imports

    env = ready.operator_env(plan)
    return FleetView(run_id=plan.run_id, root=plan.root, ready=state.ready, bridge=plan.bridge, nats_urls=plan.nats_urls(),
                     rr_env={k: env[k] for k in ("RR_NATS_URL", "RR_NATS_CREDS", "RR_CONFIG")}, hosts=hosts)


def _processes_of(state: FleetState, host: HostPlan) -> list[ProcessView]:
    """What runs on the host now (its namespace), each with its log; recorded processes that died are listed as dead."""
    from ops.fleet import launch  # not at the top: see _heavy_imports

    logs = host.path("logs")
    running = launch.host_processes(host.namespace) if netns.namespace_exists(host.namespace) else []
    views = [ProcessView(name=name, pid=pid, alive=True, log=str(logs / f"{name.removeprefix('job:')}.log"))
             for pid, name in running if not name.startswith("job:")]
    views += [ProcessView(name=name, pid=pid, alive=True, log="(the job's attempt dir, see rr work show)")
              for pid, name in running if name.startswith("job:")]
    seen = {v.pid for v in views}
    views += [ProcessView(name=p.name, pid=p.pid, alive=False, log=p.log) for p in state.processes
              if p.host == host.name and p.pid not in seen]
    return views


def status_text(state: FleetState) -> str:
    """`status` for people: one line per host, then how to use `rr` on the fleet."""
    view = fleet_view(state)
    lines = [f"fleet {view.run_id} ({'ready' if view.ready else 'not ready'}), root {view.root}, bridge {view.bridge}",
             f"{'host':8} {'address':14} {'role':12} {'nat':4} processes"]
    for h in view.hosts:
        procs = " ".join(f"{p.name}:{p.pid}{'' if p.alive else '(dead)'}" for p in h.processes)
        lines.append(f"{h.name:8} {h.address:14} {h.role:12} {'yes' if h.nat else 'no':4} {procs}")
    lines += [f"NATS: {','.join(view.nats_urls)}", "point rr at the fleet:",
              *(f"  export {k}={v}" for k, v in view.rr_env.items()), f"logs: {view.root}/hosts/<host>/logs/<process>.log"]
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    """Print the fleet."""
    state = _state(args.root)
    print(msgspec.json.encode(fleet_view(state)).decode() if args.json else status_text(state))
    return 0


def cmd_cut(args: argparse.Namespace) -> int:
    """Cut one host off."""
    plan = _state(args.root).plan
    netns.cut(plan.host(args.host))
    _say(f"fleet {plan.run_id}: {args.host} cut off (heal to undo)")
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    """Partition two groups."""
    plan = _state(args.root).plan
    a, b = split_groups(plan, args.groups)
    netns.split(a, b)
    _say(f"fleet {plan.run_id}: {','.join(h.name for h in a)} and {','.join(h.name for h in b)} cannot reach each other")
    return 0


def cmd_heal(args: argparse.Namespace) -> int:
    """Undo cuts and splits."""
    plan = _state(args.root).plan
    netns.heal(plan)
    _say(f"fleet {plan.run_id}: healed")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    """End processes, remove namespaces and links, forget the state file; works on what is left of a crashed up."""
    root: Path = args.root.absolute()
    state = load(root)
    run_id = None if args.all else (args.run_id or (state.plan.run_id if state else None))
    if run_id is None and not args.all:
        raise FleetError(f"no fleet state in {root}: give --run-id ID (or --all for every rr fleet here)")
    from ops.fleet import launch  # not at the top: see _heavy_imports

    owned = [ns for ns in netns.namespaces() if owns_name(run_id, ns)]
    ended = launch.end_processes(owned, [p.pid for p in state.processes] if state else [])
    removed = netns.remove_network(run_id)
    if state is not None:
        state_path(root).unlink(missing_ok=True)
    _say(f"fleet {run_id or '(all)'}: ended {len(ended)} processes, removed {len(removed)} namespaces/links")
    return 0

