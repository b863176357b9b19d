"""Test helpers shared by fixtures and tests."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar, overload

T = TypeVar("T")
PROJECT_ROOT = Path(__file__).resolve().parents[1]


@overload
async def eventually(
    predicate: Callable[[], Awaitable[T]], timeout: float = 10.0, interval: float = 0.02, message: str = ""
) -> T: ...


@overload
async def eventually(
    predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, message: str = ""
) -> T: ...


async def eventually(
    predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02, message: str = ""
) -> object:
    """Await until predicate() (sync or async) is truthy and return its value; AssertionError on timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last_value: object = None
    last_error: Exception | None = None
    while True:
        # A predicate that raises is "not yet" (a file not written, a leader not elected), as in checkFor.
        try:
            last_value = predicate()
            if inspect.isawaitable(last_value):
                last_value = await last_value
            last_error = None
            if last_value:
                return last_value
        except Exception as exc:  # noqa: BLE001 - retried until the deadline, then reported
            last_error = exc
        if loop.time() >= deadline:
            break
        await asyncio.sleep(interval)
    detail = f"last error: {last_error!r}" if last_error is not None else f"last value: {last_value!r}"
    raise AssertionError(f"not true within {timeout:g} s: {message or 'condition'} ({detail})") from last_error


@contextlib.contextmanager
def mounted_tmpfs(mountpoint: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` ("1m", "64m") mounted at `mountpoint` (created), unmounted on exit; OSError naming why not (root only)."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        raise OSError(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def fill(path: Path) -> None:
    """Write `path` until the disk has no byte left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


TEST_STORE_LIMIT = 1 << 40  # a test server's JetStream store limit (1 TiB): every reservation fits, whatever the disk has free


def pythonpath_without(site: Path, *modules: str) -> str:
    """A PYTHONPATH to the project under which importing any of `modules` fails, as in a venv that never installed them."""
    site.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text("import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules))
    return f"{site}:{PROJECT_ROOT}"
