"""The whole loop on a real fleet: hosts as network namespaces, 3 clustered NATS servers, one worker host behind NAT.

Marked `fleet` (`pytest -m fleet`); needs root and iproute2, and skips in one line where network
namespaces cannot be created. The session's one fleet (`shared_fleet`, tests/fleet_harness.py)
serves the module's tests in order, before the chaos smoke runs its faults on it; the last test
runs its own fleet, before the shared one is up (tests/conftest.py runs the shared fleet's users last).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from eventbus.events import (
    DataSyncComplete,
    EvaluationComplete,
    HostOffline,
    HostOnline,
    LeaderElected,
    LeaderLost,
    ModelDistributed,
    ModelPromoted,
    SelfplayComplete,
    TrainingComplete,
    WorkAdded,
    WorkAssigned,
    WorkCompleted,
    WorkStarted,
)
from ops.fleet.launch import end_processes, host_processes
from ops.fleet.plan import API_PORT, MONITOR_PORT, FleetPlan
from ops.fleet.ready import missing_services, operator_env
from ops.fleet.state import Process, load
from projections import work as work_projection
from projections.work import WorkState, WorkStatus
from tests.fleet_harness import BLOCK_S, FleetLog, fleet_cmd, fleet_guarded, leftovers, new_run_id, skip_without_namespaces

pytestmark = [pytest.mark.fleet, pytest.mark.timeout(900)]


def poll(log: FleetLog, predicate: Callable[[], Any], timeout: float, message: str) -> Any:
    """Refresh the log until `predicate()` is truthy; fail with `message` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        log.refresh()
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s: {message}")
        time.sleep(0.25)  # pacing between looks at the followed log, not a wait for a condition


@pytest.fixture
def fleet(shared_fleet: FleetLog) -> FleetLog:
    """The session's fleet (tests/fleet_harness.py), pristine for these tests: the chaos smoke runs after them."""
    return shared_fleet


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_one_generation_runs_across_hosts_and_every_worker_host_installs_the_promoted_model(fleet: FleetLog) -> None:
    plan = fleet.plan
    [promoted, *_] = poll(fleet, lambda: fleet.of(ModelPromoted), 600, "a promoted model")
    trained = fleet.of(TrainingComplete, model_id=promoted.model_id)[0]
    selfplay_hosts = {e.node for e in fleet.of(SelfplayComplete)}
    evaluators = {e.node for e in fleet.of(EvaluationComplete, model_id=promoted.model_id)}
    assert len(selfplay_hosts) >= 2 and trained.node == "w-1"
    assert evaluators and trained.node not in evaluators
    assert plan.host("w-3").nat and "w-3" in selfplay_hosts | evaluators  # the NAT host only dialled out, and worked
    # The evaluator had no path to the trainer's file: it fetched the candidate by id and SHA-256.
    for node in evaluators:
        fetched = plan.host(node).path("data", "worker", node, "candidates", f"{promoted.model_id}.pth")
        assert sha256_of(fetched) == trained.checkpoint.sha256  # type: ignore[union-attr]
    for host in (h for h in plan.hosts if h.kind == "worker"):
        # Each host reports installing the first promotion with its digest; a later generation may have
        # been promoted meanwhile, so what the host serves now is the newest promotion it has installed.
        [report, *_] = poll(fleet, lambda h=host.name: fleet.of(ModelDistributed, model_id=promoted.model_id, node=h), 120,
                            f"{promoted.model_id} installed on {host.name}")
        assert report.sha256 == promoted.sha256, host.name
        installed = host.path("data", "models", "canonical_hex8_2p.pth")
        poll(fleet, lambda f=installed: f.exists() and sha256_of(f) in {e.sha256 for e in fleet.of(ModelPromoted)}, 60,
             f"a promoted model served on {host.name}")
    # Training read batches written on other hosts, copied once each by the sync service.
    copies = Counter((e.batch_id, e.to_node) for e in fleet.of(DataSyncComplete) if e.ok)
    assert copies and max(copies.values()) == 1
    assert {b for b, node in copies if node == "w-1"} >= set(trained.input_batches) - {
        e.batch_id for e in fleet.of(SelfplayComplete, node="w-1")}


def dial(plan: FleetPlan, src: str, dst: str, port: int) -> str:
    """From host `src`, a TCP connection to host `dst`: "open", "refused" (reached, nothing listens) or "dropped"."""
    code = (f"import socket\ntry:\n socket.create_connection(({plan.host(dst).address!r}, {port}), timeout=3).close(); print('open')\n"
            "except ConnectionRefusedError: print('refused')\nexcept OSError: print('dropped')")
    done = subprocess.run(["ip", "netns", "exec", plan.host(src).namespace, sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=30)
    return done.stdout.strip()


def test_status_shows_every_host_with_its_services_and_how_to_point_rr_at_the_fleet(fleet: FleetLog) -> None:
    plan = fleet.plan
    view = json.loads(fleet_cmd(Path(plan.root), "status", "--json").stdout)
    assert view["ready"] and view["nats_urls"] == plan.nats_urls()
    assert view["rr_env"]["RR_NATS_URL"] == ",".join(plan.nats_urls()) and Path(view["rr_env"]["RR_NATS_CREDS"]).is_file()
    for host, shown in zip(plan.hosts, view["hosts"], strict=True):
        running = {p["name"] for p in shown["processes"] if p["alive"]}
        expected = {*host.services, "services"} | ({"nats-server"} if host.kind == "nats" else set())
        assert (shown["name"], shown["node_id"], shown["address"], shown["nat"]) == (host.name, host.node_id, host.address, host.nat)
        assert expected <= running, f"{host.name} runs {sorted(running)}"
    # rr nodes, rr status and the dashboard's /status (the api service of a NATS host) show every host online.
    hosts = {h.node_id for h in plan.hosts}
    nodes = json.loads(fleet.rr("nodes", "--json").stdout)
    assert hosts <= {n["node"] for n in nodes if n["status"] == "online"}, nodes
    status = json.loads(fleet.rr("status", "--json").stdout)
    assert hosts <= {n["node_id"] for n in status["nodes"] if n["alive"]}, status["nodes"]
    for api in plan.nats_hosts():
        with urllib.request.urlopen(f"http://{api.address}:{API_PORT}/status", timeout=10) as answer:
            served = json.load(answer)
        assert hosts <= {n["node_id"] for n in served["nodes"] if n["alive"]}, (api.name, served["nodes"])


def test_nat_hosts_take_no_inbound_connection_and_split_and_heal_partition_the_bridge(fleet: FleetLog) -> None:
    plan, root = fleet.plan, Path(fleet.plan.root)
    assert dial(plan, "nats-1", "w-2", 9) == "refused"  # an ordinary host answers (with a reset)
    assert dial(plan, "nats-1", "w-3", 9) == "dropped"  # the NAT host answers nothing
    assert dial(plan, "w-3", "nats-1", 4222) == "open"  # ... but dials out
    fleet_cmd(root, "split", "nats-1,w-1/nats-2,w-2")
    try:
        assert (dial(plan, "w-1", "nats-2", 4222), dial(plan, "w-2", "nats-1", 4222)) == ("dropped", "dropped")
        assert (dial(plan, "w-1", "nats-1", 4222), dial(plan, "w-2", "nats-3", 4222)) == ("open", "open")
    finally:
        fleet_cmd(root, "heal")
    assert dial(plan, "w-1", "nats-2", 4222) == "open"


def pause_selfplay_job(plan: FleetPlan, host: str) -> tuple[str, int, int] | None:
    """SIGSTOP the selfplay job running on `host`: (work id, attempt, pid), None when none runs there now."""
    for pid, name in host_processes(plan.host(host).namespace):
        if name != "job:selfplay":
            continue
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
            os.kill(pid, signal.SIGSTOP)
        except (OSError, ProcessLookupError):
            continue  # it ended meanwhile
        # --out <worker dir>/jobs/<work id>/a<attempt>/out (services/worker/outputs.py)
        out = Path(argv[argv.index("--out") + 1])
        return out.parent.parent.name, int(out.parent.name.removeprefix("a")), pid
    return None


def folded(fleet: FleetLog) -> WorkState:
    state = WorkState()
    for seq, event in fleet.records:
        if event.aggregate == "work":
            state = work_projection.apply(state, event, seq)
    return state


def test_a_worker_host_cut_mid_job_goes_offline_its_item_completes_once_elsewhere_and_its_late_report_is_refused(
        fleet: FleetLog) -> None:
    plan, root = fleet.plan, Path(fleet.plan.root)

    def pause_current() -> tuple[WorkStarted, int] | None:
        paused = pause_selfplay_job(plan, "w-2")
        if paused is None:
            return None
        work_id, attempt, pid = paused
        fleet.refresh()
        assigned = fleet.of(WorkAssigned, work_id=work_id)
        started = fleet.of(WorkStarted, work_id=work_id, node="w-2", attempt=attempt)
        if started and (assigned[-1].node, assigned[-1].attempt) == ("w-2", attempt):
            return started[0], pid
        os.kill(pid, signal.SIGCONT)  # its start is not in the log yet, or a newer attempt superseded it: the next one
        return None

    # The job is paused while the cut is made, so that it is mid-job when the host goes: a job picked
    # from the log alone can end (and report) between the read and the cut, and then its item is
    # done on w-2 and nothing is re-assigned. It runs on, cut off, once the cut is in place.
    victim, pid = poll(fleet, pause_current, 300, "a selfplay job running on w-2, its attempt current")
    try:
        cut_at = fleet.records[-1][0]  # the log as read just before the cut
        fleet_cmd(root, "cut", "w-2")
    finally:
        os.kill(pid, signal.SIGCONT)
    try:
        # Earlier tests' partitions may have flapped w-2 already: only a HOST_OFFLINE after this cut counts.
        poll(fleet, lambda: [e for e in fleet.of(HostOffline, node="w-2") if fleet.seq_of(e) > cut_at], 120,
             "HOST_OFFLINE of w-2 after the cut")
        done = poll(fleet, lambda: [e for e in fleet.of(WorkCompleted, work_id=victim.work_id) if e.node != "w-2"], 300,
                    f"{victim.work_id} re-assigned and completed on another host")
        assert [a.node for a in fleet.of(WorkAssigned, work_id=victim.work_id)][-1] == done[0].node != "w-2"
    finally:
        fleet_cmd(root, "heal")
    back = poll(fleet, lambda: [e for e in fleet.of(HostOnline, node="w-2") if fleet.seq_of(e) > cut_at], 120,
                "w-2 back online after heal")
    assert back
    # w-2 finishes its attempt and reports it once it is back: the stream refuses the end (a newer attempt of
    # the item started meanwhile, services/worker/protocol.py started_fence) and the worker says so.
    refusal = f"end of {victim.work_id} attempt {victim.attempt} not stored: a newer attempt of the item started meanwhile"
    worker_log = fleet.plan.host("w-2").path("logs", "worker.log")
    poll(fleet, lambda: refusal in worker_log.read_text(errors="replace"), 300, f"w-2's worker refused its late end: {refusal}")
    fleet.refresh()
    assert not fleet.of(WorkCompleted, work_id=victim.work_id, node="w-2", attempt=victim.attempt)
    item = folded(fleet).items[victim.work_id]
    assert item.status == WorkStatus.COMPLETED and item.node == done[0].node  # completed once, elsewhere


def stream_leader(plan: FleetPlan, stream: str = "RR_EVENTS") -> str | None:
    """The NATS host leading a stream's raft group, from a server's monitoring endpoint (/jsz)."""
    for host in plan.nats_hosts():
        try:
            with urllib.request.urlopen(f"http://{host.address}:{MONITOR_PORT}/jsz?accounts=true&streams=true", timeout=5) as r:
                jsz = json.load(r)
        except OSError:
            continue
        for account in jsz.get("account_details") or []:
            for detail in account.get("stream_detail") or []:
                if detail.get("name") == stream and (detail.get("cluster") or {}).get("leader"):
                    return str(detail["cluster"]["leader"])
    return None


# What the tests add: a synthetic item (a 1 s sleep, ops/fleet/files.py) that every worker host may run, ahead of the
# populator's selfplay. Default-priority selfplay items queued behind the populator's on the two selfplay hosts: the
# eight of the NATS-cut test were still running when later tests waited on their own item (91 s in one run).
SYNTHETIC = ("--type", "synthetic", "--priority", "1000")


def acked_adds(fleet: FleetLog, count: int, work: tuple[str, ...] = SYNTHETIC) -> list[str]:
    """Work items `rr work add` reported appended (acknowledged by the cluster), of `count` tries made at once."""
    argv = [sys.executable, "-m", "cli.main", "work", "add", *work, "--board", "hex8", "--players", "2", "--games", "1"]
    tries = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=operator_env(fleet.plan))
             for _ in range(count)]
    outputs = [(t.communicate(timeout=60)[0], t.returncode) for t in tries]
    return [out.strip() for out, code in outputs if code == 0]


def restarts_since(plan: FleetPlan, when: str) -> list[str]:
    """Service restarts the hosts' service managers logged at or after `when` (an ISO-like time prefix)."""
    out = []
    for host in plan.hosts:
        for line in host.path("logs", "services.log").read_text().splitlines():
            if " exited " in line and line[:19] >= when:
                out.append(f"{host.name}: {line}")
    return out


def test_a_minority_nats_host_cut_then_the_stream_leaders_host_cut_lose_no_acked_event(fleet: FleetLog) -> None:
    plan = fleet.plan
    root = Path(plan.root)
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
    leader = poll(fleet, lambda: stream_leader(plan), 60, "the RR_EVENTS stream leader")
    minority = next(h.name for h in plan.nats_hosts() if h.name != leader)
    for victim in (minority, leader):
        elected_before = len(fleet.of(LeaderElected, role="scheduler"))
        fleet_cmd(root, "cut", victim)
        try:
            acked = acked_adds(fleet, 4)
        finally:
            fleet_cmd(root, "heal")
        assert acked, f"no write was acknowledged with {victim} cut off: the majority should carry on"
        poll(fleet, lambda acked=acked: set(acked) <= {e.work_id for e in fleet.of(WorkAdded)}, 120,
             f"every acknowledged WORK_ADDED in the log after {victim} was cut")
        assert len(fleet.of(LeaderElected, role="scheduler")) - elected_before <= 1, f"leadership churned when {victim} was cut"
    # Services rode out both faults on their connections' reconnects: none was restarted.
    assert restarts_since(plan, since) == []
    assert poll(fleet, lambda: not missing_services(plan), 120, "every service answering again")


def test_a_worker_host_that_reaches_only_one_nats_server_keeps_working_through_it(fleet: FleetLog) -> None:
    root = Path(fleet.plan.root)
    start = fleet.refresh()[-1][0]

    def completed_after_split() -> list[WorkCompleted]:
        assigned = {(e.work_id, e.attempt) for e in fleet.of(WorkAssigned, node="w-2") if fleet.seq_of(e) > start}
        return [e for e in fleet.of(WorkCompleted, node="w-2") if (e.work_id, e.attempt) in assigned]

    def online() -> bool:
        membership = [e for e in [*fleet.of(HostOnline, node="w-2"), *fleet.of(HostOffline, node="w-2")]]
        return not membership or not isinstance(max(membership, key=fleet.seq_of), HostOffline)

    fleet_cmd(root, "split", "w-2/nats-2,nats-3")
    try:
        # An item for w-2 alone, ahead of the populator's: after the job it runs now, its next is a 1 s sleep,
        # not a whole selfplay job (ops/bench/README.md, "The fleet tests a third faster").
        poll(fleet, lambda: acked_adds(fleet, 1, (*SYNTHETIC, "--target", "w-2")), 60, "a work item for w-2 added")
        poll(fleet, completed_after_split, 300, "w-2 completing an item assigned after it could reach only nats-1")
        poll(fleet, online, 60, "w-2 online while it reaches only nats-1")
    finally:
        fleet_cmd(root, "heal")


def service_rows(fleet: FleetLog) -> list[dict[str, Any]]:
    """`rr services --json`: every running service instance with its status (empty when the command failed)."""
    done = fleet.rr("services", "--json", "--timeout", "5")
    return json.loads(done.stdout) if done.returncode == 0 else []


def test_a_scheduler_whose_event_loop_blocks_past_its_lease_shows_its_lag_and_another_node_takes_over(fleet: FleetLog) -> None:
    fleet.refresh()
    leader = fleet.of(LeaderElected, role="scheduler")[-1].node
    before = fleet.records[-1][0]
    # The leader service's process on its host (the node is the host): a look at /proc, where an `rr services` took seconds.
    pid = next(pid for pid, name in host_processes(fleet.plan.host(leader).namespace) if name == "leader")
    os.kill(pid, signal.SIGUSR2)  # its loop runs time.sleep(BLOCK_S): blocked, not stopped
    taken = poll(fleet, lambda: [e for e in fleet.of(LeaderElected, role="scheduler")
                                 if fleet.seq_of(e) > before and e.node != leader], 120,
                 f"another scheduler elected while {leader}'s loop is blocked")
    # The old leader stepped down once its loop ran again (its lease had expired), and assignments go on. Awaited in
    # the followed log first: each look at `rr services` costs seconds, and the lag is there once the loop runs again.
    poll(fleet, lambda: [e for e in fleet.of(LeaderLost, role="scheduler", node=leader) if fleet.seq_of(e) > before], 120,
         f"LEADER_LOST of {leader} after its blocked loop")
    # The blocked service reports its lag once its loop runs again (rr services: its status endpoint).
    lagged = poll(fleet, lambda: [r for r in service_rows(fleet) if r["name"] == "rr-leader" and r["node"] == leader
                                  and r["status"] and r["status"]["pid"] == pid and r["status"]["loop_lag"]["max_s"] >= BLOCK_S * 0.8],
                  120, f"the scheduler on {leader} reporting a loop lag near {BLOCK_S}s")
    assert lagged[0]["status"]["loop_lag"]["over_threshold"] >= 1
    elected = taken[0]
    [added] = poll(fleet, lambda: acked_adds(fleet, 1), 60, "a work item added after the takeover")
    poll(fleet, lambda: [e for e in fleet.of(WorkAssigned, work_id=added) if fleet.seq_of(e) > fleet.seq_of(elected)], 300,
         f"{added} assigned after {elected.node} took over")


_START_SERVICES = """
import os, sys
from pathlib import Path
from ops.fleet.host import LOGS_ENV
from ops.fleet.launch import host_env, spawn
from ops.fleet.state import load
plan = load(Path(sys.argv[1])).plan
host = plan.host(sys.argv[2])
env = {**host_env(plan, host), LOGS_ENV: str(host.path("logs"))}
if sys.argv[3]:
    env["PYTHONPATH"] = os.pathsep.join([sys.argv[3], env["PYTHONPATH"]])
print(spawn(plan, host, "services", [sys.executable, "-m", "ops.fleet.host", *host.services], env).pid)
"""


def start_host_services(plan: FleetPlan, host: str, shadow: Path | None = None) -> int:
    """Start a host's service manager as `up` does (detached: it outlives the launcher), `shadow` first on its
    PYTHONPATH; its pid."""
    done = subprocess.run([sys.executable, "-c", _START_SERVICES, plan.root, host, str(shadow or "")],
                          capture_output=True, text=True, timeout=60, check=True)
    return int(done.stdout.strip())


def test_a_host_missing_a_python_package_refuses_to_start_its_services_in_one_line_and_the_fleet_carries_on(
        fleet: FleetLog) -> None:
    plan = fleet.plan
    host = plan.host("w-3")
    manager = next(p for p in load(Path(plan.root)).processes if p.host == host.name and p.name == "services")
    # The host's own tmp dir: the only directories a host reads are its own.
    shadow = host.path("tmp", "no-psutil")
    shadow.mkdir(parents=True, exist_ok=True)
    (shadow / "psutil.py").write_text('raise ImportError("No module named \'psutil\' (this host lacks it)")\n')
    logs = {s: host.path("logs", f"{s}.log") for s in host.services}
    sizes = {s: log.stat().st_size if log.exists() else 0 for s, log in logs.items()}
    end_processes([], [manager.pid])
    broken = start_host_services(plan, host.name, shadow)
    try:
        def refusals() -> dict[str, list[str]]:
            out = {}
            for s, log in logs.items():
                with open(log, "rb") as f:
                    f.seek(sizes[s])
                    out[s] = f.read().decode(errors="replace").splitlines()
            return out

        seen = poll(fleet, lambda: (r := refusals()) and all(any("missing Python packages" in line for line in lines)
                                                             for lines in r.values()) and r, 120,
                    f"every service on {host.name} refusing to start for psutil")
        for service, lines in seen.items():
            assert not any("Traceback" in line for line in lines), f"{service} died with a traceback: {lines[-10:]}"
            assert all(line.startswith("rr: missing Python packages: psutil (psutil)") and "pip install psutil" in line
                       for line in lines if "missing" in line), lines
        # A selfplay item, the work w-3 does, ahead of the populator's: it must complete on the other selfplay host.
        [added] = poll(fleet, lambda: acked_adds(fleet, 1, ("--type", "selfplay", "--priority", "1000")), 60,
                       "a work item added with w-3 down")
        done = poll(fleet, lambda: fleet.of(WorkCompleted, work_id=added), 300, f"{added} completed by the rest of the fleet")
        assert done[0].node != host.name
    finally:
        end_processes([], [broken])
        start_host_services(plan, host.name)
    poll(fleet, lambda: not missing_services(plan), 180, f"{host.name}'s services back with psutil")


def test_down_after_a_killed_up_leaves_no_namespace_link_or_process(tmp_path: Path) -> None:
    skip_without_namespaces()
    run_id = new_run_id()
    root = tmp_path / "killed"
    stderr = tmp_path / "up.stderr"
    with fleet_guarded(root, run_id):  # should this test die before its own `down`
        with open(stderr, "wb") as err:
            up = subprocess.Popen([sys.executable, "-m", "ops.fleet", "--root", str(root), "up", "--workers", "2", "--nat", "1",
                                   "--run-id", run_id], stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        try:
            deadline = time.monotonic() + 180
            # Killed once services are starting: namespaces, links, NATS servers and host managers exist.
            while not any(p.name == "services" for p in _processes(root)):
                assert up.poll() is None, f"up exited early: {stderr.read_text()[-1000:]}"
                assert time.monotonic() < deadline, "up never started a host's services"
                time.sleep(0.2)  # pacing of a state-file poll
            os.killpg(up.pid, signal.SIGKILL)
            up.wait(timeout=30)
            assert leftovers(run_id, root), "the killed up left nothing to clean: the test proves nothing"
        finally:
            fleet_cmd(root, "down", timeout=120)
        assert leftovers(run_id, root) == []


def _processes(root: Path) -> list[Process]:
    state = load(root)
    return list(state.processes) if state else []
