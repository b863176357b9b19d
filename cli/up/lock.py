"""One owner per data dir: OS locks (flock) on files in it, held for a process's lifetime.

Two `rr up` on one data dir ran two nats-servers on one JetStream store and corrupted it. A
flock, unlike a pid file, is released by the kernel when the last process holding it exits,
SIGKILL included, so a crash never leaves a stale lock behind.

    rr up               exclusive lock on <data dir>/rr.lock, its pid (and NATS URL) written in it.
                        Its children (every service and the embedded nats-server) inherit the locked
                        file, named by RR_DATA_DIR_LOCK_FD: the lock lives until the last of them exits,
                        so an orphaned nats-server still keeps a second `rr up` off its store.
    rr-service X alone  shared lock on rr.lock (a node's services share one data dir, as the systemd
                        units do, but no `rr up` may start on it) and an exclusive lock on
                        rr-X.lock with its pid (one X per data dir).

A refused start creates nothing: the lock file is opened, never created, while one exists, and
the data dir is created only once the lock is ours.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Mapping
from pathlib import Path

import msgspec

from cli.up.errors import UpError

LOCK_NAME = "rr.lock"
FD_ENV = "RR_DATA_DIR_LOCK_FD"  # set by rr up in its children: the inherited descriptor of its rr.lock
UP_OWNER = "rr up"


class LockOwner(msgspec.Struct, frozen=True, kw_only=True):
    """What a lock file says about its holder (JSON, one line)."""

    pid: int
    owner: str  # "rr up" or "rr-service <name>"
    nats_url: str = ""
    embedded: bool = False  # the NATS URL is rr up's own embedded server


class DataDirInUse(UpError):
    """Another process holds the data dir's lock: a second owner would corrupt it."""

    def __init__(self, data_dir: Path, lock_path: Path, pids: list[int], owner: LockOwner | None,
                 keepers: dict[int, str] | None = None) -> None:
        self.data_dir, self.lock_path, self.pids, self.owner = data_dir, lock_path, pids, owner
        who = f"{owner.owner} pid {owner.pid}" if owner is not None and owner.pid in pids else describe_pids(pids)
        if keepers:  # the holder exited; what it started still has the lock (and the store) open
            who += " (exited; still held by " + ", ".join(f"{name} pid {pid}" for pid, name in sorted(keepers.items())) + ")"
        super().__init__(
            f"data dir {data_dir} is in use by {who} (lock {lock_path}); stop it first or use another data dir "
            "(--data-dir or RR_DATA_DIR)"
        )


def describe_pids(pids: list[int]) -> str:
    """'pid 12' / 'pids 12, 13' / 'an unknown process'."""
    if not pids:
        return "an unknown process"
    return ("pid " if len(pids) == 1 else "pids ") + ", ".join(map(str, pids))


def service_lock_name(service: str) -> str:
    """The per-service lock file of a service started alone."""
    return f"rr-{service}.lock"


class HeldLock:
    """Locked files of one data dir, held until `close()` or the process exits."""

    def __init__(self, data_dir: Path, fds: list[int], made: Path | None = None) -> None:
        self.data_dir = data_dir
        self.fds = fds  # fds[0] is rr.lock's: what rr up hands its children
        self.made = made  # the topmost directory taking the lock created, None when data_dir existed

    @property
    def fd(self) -> int:
        """The descriptor of <data dir>/rr.lock."""
        return self.fds[0]

    def record(self, owner: LockOwner, fd: int | None = None) -> None:
        """Write the holder's description into its lock file (blocking, tiny)."""
        target = self.fd if fd is None else fd
        os.ftruncate(target, 0)
        os.pwrite(target, msgspec.json.encode(owner) + b"\n", 0)

    def close(self) -> None:
        """Release every lock (closing the descriptors drops them)."""
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = []

    def abandon(self) -> None:
        """Release, and remove what taking the lock created: a start refused later leaves no directory behind."""
        if self.made is not None:
            with contextlib.suppress(OSError):
                (self.data_dir / LOCK_NAME).unlink()  # while still held: no one else can be holding it
        self.close()
        if self.made is None:
            return
        for directory in (self.data_dir, *self.data_dir.parents):
            with contextlib.suppress(OSError):
                directory.rmdir()  # empty ones only: whatever something else put there stays
            if directory == self.made:
                return


def lock_up(data_dir: Path, owner: LockOwner) -> HeldLock:
    """rr up: the exclusive lock on <data_dir>/rr.lock, or DataDirInUse / UpError; creates data_dir only once held."""
    made = first_missing(data_dir)
    fd = _take(data_dir, data_dir / LOCK_NAME, fcntl.LOCK_EX)
    held = HeldLock(data_dir, [fd], made=made)
    held.record(owner)
    return held


def first_missing(path: Path) -> Path | None:
    """The topmost of `path` and its parents that does not exist; None when `path` exists."""
    missing = None
    for candidate in (path, *path.parents):
        if candidate.exists():
            return missing
        missing = candidate
    return missing


def lock_service(service: str, data_dir: Path, env: Mapping[str, str]) -> HeldLock:
    """A service: rr up's inherited lock when started by it, else a shared rr.lock plus an exclusive rr-<service>.lock."""
    inherited = inherited_lock(data_dir, env)
    if inherited is not None:
        return inherited
    shared = _take(data_dir, data_dir / LOCK_NAME, fcntl.LOCK_SH)
    try:
        own = _take(data_dir, data_dir / service_lock_name(service), fcntl.LOCK_EX)
    except BaseException:
        os.close(shared)
        raise
    held = HeldLock(data_dir, [shared, own])
    held.record(LockOwner(pid=os.getpid(), owner=f"rr-service {service}"), fd=own)
    return held


def inherited_lock(data_dir: Path, env: Mapping[str, str]) -> HeldLock | None:
    """rr up's lock on this data dir, inherited as RR_DATA_DIR_LOCK_FD; None when there is none or it is another dir's."""
    text = env.get(FD_ENV, "")
    if not text.isdigit():
        return None
    fd = int(text)
    try:
        mine, theirs = os.fstat(fd), os.stat(data_dir / LOCK_NAME)
    except OSError:
        return None
    if (mine.st_dev, mine.st_ino) != (theirs.st_dev, theirs.st_ino):
        return None  # a config pointed this service at another data dir: it locks that one itself
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the same open file as rr up's: succeeds only if it is that lock
    except OSError:
        return None
    return HeldLock(data_dir, [fd])


def _take(data_dir: Path, path: Path, mode: int) -> int:
    try:
        fd = _open_lock_file(data_dir, path)
    except OSError as exc:
        raise UpError(f"data dir {data_dir} is not writable: {exc.strerror or exc}; use --data-dir or RR_DATA_DIR") from None
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        pids = holders(path)
        keepers = fd_holders(path) if pids and not any(map(pid_alive, pids)) else None
        raise DataDirInUse(data_dir, path, pids, read_owner(path), keepers) from None
    if not os.access(path, os.W_OK):
        os.close(fd)
        raise UpError(f"data dir {data_dir} is not writable: cannot write {path}; use --data-dir or RR_DATA_DIR")
    return fd


def _open_lock_file(data_dir: Path, path: Path) -> int:
    # An existing lock file is opened, never created or truncated: a refused start changes nothing.
    # (os.open's descriptors are not inherited unless passed on explicitly: PEP 446.)
    try:
        return os.open(path, os.O_RDWR)
    except PermissionError:
        return os.open(path, os.O_RDONLY)  # enough to see who holds it; taking it then fails as not writable
    except (FileNotFoundError, NotADirectoryError):
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


def read_owner(path: Path) -> LockOwner | None:
    """The holder a lock file describes; None when absent, empty or unreadable."""
    try:
        return msgspec.json.decode(path.read_bytes().strip() or b"null", type=LockOwner | None)
    except (OSError, msgspec.DecodeError):
        return None


def held_by(path: Path, proc_locks: Path = Path("/proc/locks")) -> list[int]:
    """Pids holding a flock on `path` now, without taking it where /proc/locks can say ([] when free or absent)."""
    try:
        st = path.stat()
    except OSError:
        return []
    try:
        text = proc_locks.read_text()
    except OSError:
        return _held_by_trying(path)
    return locking_pids(text, os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)


def _held_by_trying(path: Path) -> list[int]:
    # No /proc/locks (not Linux): a shared try shows an exclusive holder (rr up) only.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return []
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = read_owner(path)
        return [owner.pid if owner else 0]
    finally:
        os.close(fd)
    return []


def fd_holders(path: Path, proc: Path = Path("/proc")) -> dict[int, str]:
    """Processes with `path` open, by pid, with their command name (Linux /proc; {} elsewhere): who keeps a lock."""
    found: dict[int, str] = {}
    target = str(path.resolve())
    for fd_dir in proc.glob("[0-9]*/fd"):
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) == target for fd in fd_dir.iterdir()):
                found[int(fd_dir.parent.name)] = process_name(fd_dir.parent)
    return found


def process_name(proc_pid: Path) -> str:
    """'rr-service worker' for an rr service, else the command's name (e.g. nats-server)."""
    args = (proc_pid / "cmdline").read_bytes().split(b"\0")
    if b"cli.service_main" in args and args.index(b"cli.service_main") + 1 < len(args):
        return "rr-service " + args[args.index(b"cli.service_main") + 1].decode(errors="replace")
    return (proc_pid / "comm").read_text().strip()


def holders(path: Path) -> list[int]:
    """Pids holding `path` (held_by), else the pid its file records: for the message of a refused start."""
    owner = read_owner(path)
    return held_by(path) or ([owner.pid] if owner else [])


def locking_pids(proc_locks: str, major: int, minor: int, inode: int) -> list[int]:
    """The pids /proc/locks names for one file's flocks (waiters, marked '->', left out)."""
    wanted = f"{major:02x}:{minor:02x}:{inode}"
    pids: list[int] = []
    for line in proc_locks.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted and fields[4].isdigit():
            pid = int(fields[4])
            if pid not in pids:
                pids.append(pid)
    return pids


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (signal 0)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
