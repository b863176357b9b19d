"""Starting and ending the fleet's processes inside their hosts' namespaces, and the files they read (blocking).

Every host reads only its own directory: <host>/etc (rr.yaml, hosts.yaml, credentials.yaml and,
on NATS hosts, nats.conf + auth.conf), <host>/data (RR_DATA_DIR), <host>/home (HOME), <host>/logs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec

from cli.auth.generate import generate
from ops.fleet import netns
from ops.fleet.files import Workload, hosts_file, nats_config, rr_config, to_yaml, worker_templates
from ops.fleet.host import LOGS_ENV
from ops.fleet.plan import FleetPlan, HostPlan
from ops.fleet.state import Process
from servicekit.auth.credentials import CREDENTIALS_ENV
from servicekit.childenv import child_env
from servicekit.looplag import BLOCK_ENV

PROJECT_ROOT = str(Path(__file__).resolve().parents[2])


def admin_credentials(plan: FleetPlan) -> Path:
    """The operator's credentials, in the fleet root (the root namespace's)."""
    return Path(plan.root) / "auth" / "credentials" / "admin.yaml"


def operator_config(plan: FleetPlan) -> Path:
    """The operator's rr config (the fleet's stream settings and hosts file), in the fleet root."""
    return Path(plan.root) / "operator.yaml"


def write_files(plan: FleetPlan, workload: Workload) -> None:
    """Every host's directories and files, and the users `rr auth gen` makes for the fleet's hosts file."""
    auth_dir = Path(plan.root) / "auth"
    auth_dir.mkdir(parents=True, exist_ok=True)
    operator = {**rr_config(plan, plan.hosts[0], workload), "hosts_file": str(auth_dir / "hosts.yaml")}
    # The hosts' templates and nothing else of a worker: `rr work add` admits the work types the fleet runs (synthetic too).
    operator["worker"] = {"templates": worker_templates(workload)}
    operator_config(plan).write_text(to_yaml(operator))
    (auth_dir / "hosts.yaml").write_text(to_yaml(hosts_file(plan)))
    generated = generate(auth_dir / "hosts.yaml", auth_dir)
    for host in plan.hosts:
        for sub in ("etc", "data", "home", "logs", "tmp"):
            host.path(sub).mkdir(parents=True, exist_ok=True)
        (host.path("etc", "hosts.yaml")).write_text(to_yaml(hosts_file(plan)))
        (host.path("etc", "rr.yaml")).write_text(to_yaml(rr_config(plan, host, workload)))
        shutil.copy2(generated.credentials[host.node_id], host.path("etc", "credentials.yaml"))
        if host.kind == "nats":
            host.path("nats", "store").mkdir(parents=True, exist_ok=True)
            shutil.copy2(generated.auth_conf, host.path("etc", "auth.conf"))
            (host.path("etc", "nats.conf")).write_text(nats_config(plan, host))


def host_env(plan: FleetPlan, host: HostPlan) -> dict[str, str]:
    """A service's environment on `host`: its node id, config, credentials and directories; nothing shared."""
    # $RR_DEBUG_BLOCK_LOOP_S (servicekit/looplag.py) passes through: the fleet tests' opt-in loop blocker.
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TERM", "VIRTUAL_ENV", "PYTHONPATH", BLOCK_ENV)}
    return {**child_env(keep, PROJECT_ROOT),
            "RR_NATS_URL": ",".join(plan.nats_urls()), "RR_NODE_ID": host.node_id,
            "RR_CONFIG": str(host.path("etc", "rr.yaml")), CREDENTIALS_ENV: str(host.path("etc", "credentials.yaml")),
            "RR_DATA_DIR": str(host.path("data")), "HOME": str(host.path("home")), "TMPDIR": str(host.path("tmp"))}


# Run inside a private mount namespace: an empty read-only tmpfs over each directory the host must not
# see, then the program. Hosts share this machine's disk; without it a path on one host (a trainer's
# candidate, a selfplay batch) would be readable on another and hide what a real fleet gets wrong.
_HIDE_THEN_EXEC = 'n=$1; shift; while [ "$n" -gt 0 ]; do mount -t tmpfs -o ro,size=4k rrhidden "$1" || exit 1; shift; n=$((n-1)); done; exec "$@"'


def hidden_dirs(plan: FleetPlan, host: HostPlan) -> list[str]:
    """What a host must not read: the other hosts' directories and the operator's credentials (pure)."""
    return [str(Path(plan.root) / "auth"), *(h.root for h in plan.hosts if h.name != host.name)]


def isolated(plan: FleetPlan, host: HostPlan, argv: list[str]) -> list[str]:
    """`argv` in the host's network namespace with the other hosts' directories hidden (pure)."""
    hidden = hidden_dirs(plan, host)
    return ["ip", "netns", "exec", host.namespace, "unshare", "--mount", "--propagation", "private",
            "sh", "-c", _HIDE_THEN_EXEC, "sh", str(len(hidden)), *hidden, *argv]


def spawn(plan: FleetPlan, host: HostPlan, name: str, argv: list[str], env: dict[str, str]) -> Process:
    """Start `argv` on the host (its namespace, its files only), in its own session, output to <host>/logs/<name>.log."""
    log_path = host.path("logs", f"{name}.log")
    with open(log_path, "ab") as log:
        child = subprocess.Popen(isolated(plan, host, argv), stdin=subprocess.DEVNULL,
                                 stdout=log, stderr=subprocess.STDOUT, env=env, cwd=host.path("home"),
                                 start_new_session=True)
    return Process(host=host.name, name=name, pid=child.pid, log=str(log_path))


def start_nats(plan: FleetPlan, host: HostPlan) -> Process:
    """The host's nats-server, clustered with the other two."""
    binary = shutil.which("nats-server") or str(Path(sys.executable).parent / "nats-server")
    return spawn(plan, host, "nats-server", [binary, "-c", str(host.path("etc", "nats.conf"))], host_env(plan, host))


def start_services(plan: FleetPlan, host: HostPlan) -> Process:
    """The host's service manager (ops/fleet/host.py): `rr-service <name>` per planned service, restarted on a crash."""
    env = {**host_env(plan, host), LOGS_ENV: str(host.path("logs"))}
    return spawn(plan, host, "services", [sys.executable, "-m", "ops.fleet.host", *host.services], env)


def end_processes(namespaces: list[str], recorded: list[int], grace_s: float = 5.0) -> list[int]:
    """SIGTERM every process in the namespaces and every recorded pid, SIGKILL what is left after the grace; the pids ended."""
    pids = sorted({*recorded, *(p for ns in namespaces for p in netns.namespace_pids(ns))})
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            _signal(pid, sig)
        deadline = time.monotonic() + (grace_s if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < deadline and any(alive(p) for p in pids):
            time.sleep(0.1)
    return pids


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig) if _leads_group(pid) else os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _leads_group(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie of ours is reaped and counts as gone)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return False


def process_name(argv: list[str]) -> str:
    """A short name for a fleet process from its command line: the rr service, the host manager, a job, else the program (pure)."""
    if "cli.service_main" in argv and argv.index("cli.service_main") + 1 < len(argv):
        return argv[argv.index("cli.service_main") + 1]
    if "ops.fleet.host" in argv:
        return "services"
    job = next((a for a in argv if a.startswith("workload.")), None)
    if job is not None:
        return f"job:{job.removeprefix('workload.')}"
    return Path(argv[0]).name if argv else "?"


def host_processes(namespace: str) -> list[tuple[int, str]]:
    """(pid, name) of every process in a host's namespace, found now (blocking)."""
    found = []
    for pid in netns.namespace_pids(namespace):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        found.append((pid, process_name([a for a in argv if a])))
    return found


def decode_rows(out: str) -> list[dict[str, object]]:
    """A JSON list printed by an `rr ... --json` command (empty on anything else)."""
    try:
        rows = msgspec.json.decode(out.strip() or "[]")
    except msgspec.DecodeError:
        return []
    return rows if isinstance(rows, list) else []
