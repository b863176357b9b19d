"""Headless Chromium for the dashboard tests: dump a page's DOM, take a screenshot, or watch a live page.

A live page is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: commands
on the browser's fd 3, answers on its fd 4, NUL-separated JSON), so no port and no extra package.
Chromium missing is a test failure, not a skip: .ci/run installs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import eventually

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
    "--disable-dev-shm-usage",
]
RUN_TIMEOUT_S = 60.0


def chromium() -> str:
    """The chromium binary; fails the test with the command that installs it when there is none."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail(
            "chromium is not installed: the dashboard tests need a real headless browser; "
            "install it with `apt-get install -y --no-install-recommends chromium` (.ci/run does)"
        )
    return path


async def _run(argv: list[str]) -> tuple[bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT_S)
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    assert proc.returncode == 0, f"chromium exited with {proc.returncode}: {err.decode(errors='replace')[-2000:]}"
    return out, err


# Console errors and uncaught exceptions, kept where dump_dom can read them: installed before the page's own scripts.
ERROR_HOOK = """
window.__errors = [];
const _error = console.error.bind(console);
console.error = (...args) => { window.__errors.push(args.map(String).join(" ")); _error(...args); };
window.addEventListener("error", (e) => window.__errors.push(String(e.message)));
window.addEventListener("unhandledrejection", (e) => window.__errors.push(String(e.reason)));
"""


async def dump_dom(url: str, profile: Path, ready: str = "document.body && document.body.dataset.ready === 'yes'") -> tuple[str, list[str]]:
    """The DOM once the page's `ready` expression is true (the live event stream stays open), and its console errors."""
    async with live_page("about:blank", profile) as page:
        await page.call("Page.enable")
        await page.call("Page.addScriptToEvaluateOnNewDocument", {"source": ERROR_HOOK})
        await page.call("Page.navigate", {"url": url})
        await eventually(lambda: page.evaluate(f"Boolean({ready})"), timeout=RUN_TIMEOUT_S, interval=0.1,
                         message=f"the page at {url} became ready ({ready})")
        dom = await page.evaluate("document.documentElement.outerHTML")
        errors = await page.evaluate("window.__errors || []")
    return str(dom), [str(e) for e in errors]


async def screenshot(url: str, path: Path, profile: Path, size: str = "1280,900", budget_ms: int = 5000) -> None:
    """A PNG of the page after `budget_ms` of virtual time."""
    await _run([chromium(), *FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}",
                f"--screenshot={path}", f"--window-size={size}", url])


class LivePage:
    """One open tab of a running browser: evaluate JavaScript in it while it keeps running."""

    def __init__(self, reader: asyncio.StreamReader, write_fd: int) -> None:
        self._reader = reader
        self._write_fd = write_fd
        self._next_id = 0
        self._session = ""

    async def call(self, method: str, params: dict[str, Any] | None = None, *, session: bool = True) -> dict[str, Any]:
        """Send one DevTools command and return its result (events in between are skipped)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session and self._session:
            message["sessionId"] = self._session
        os.write(self._write_fd, json.dumps(message).encode() + b"\0")
        while True:
            raw = await asyncio.wait_for(self._reader.readuntil(b"\0"), RUN_TIMEOUT_S)
            answer = json.loads(raw[:-1])
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise AssertionError(f"DevTools {method} failed: {answer['error']}")
                return dict(answer.get("result", {}))

    async def open(self, url: str) -> None:
        """Open `url` in a new tab and attach to it."""
        target = await self.call("Target.createTarget", {"url": url}, session=False)
        attached = await self.call("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}, session=False)
        self._session = attached["sessionId"]

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = await self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        return result["result"].get("value")

    async def text(self) -> str:
        """The page's visible text now."""
        return str(await self.evaluate("document.body ? document.body.innerText : ''"))


@contextlib.asynccontextmanager
async def live_page(url: str, profile: Path) -> AsyncIterator[LivePage]:
    """A browser with `url` open in a tab, closed (its whole process group) on exit."""
    commands_r, commands_w = os.pipe()
    answers_r, answers_w = os.pipe()
    argv = [chromium(), *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"]
    # The protocol pipe must be the child's fds 3 and 4 exactly; posix_spawn's dup2 puts it there,
    # from copies numbered 10 and up so that the first dup2 cannot overwrite the second's source.
    safe_r, safe_w = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (commands_r, answers_w))
    actions = [(os.POSIX_SPAWN_DUP2, safe_r, 3), (os.POSIX_SPAWN_DUP2, safe_w, 4)]
    with open(os.devnull, "wb") as devnull:
        actions += [(os.POSIX_SPAWN_DUP2, devnull.fileno(), 1), (os.POSIX_SPAWN_DUP2, devnull.fileno(), 2)]
        pid = os.posix_spawn(argv[0], argv, dict(os.environ), file_actions=actions, setsid=True)
    for fd in (commands_r, answers_w, safe_r, safe_w):
        os.close(fd)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(answers_r, "rb", 0))
    page = LivePage(reader, commands_w)
    try:
        await page.open(url)
        yield page
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(page.call("Browser.close", session=False), 5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        await asyncio.to_thread(os.waitpid, pid, 0)
        transport.close()
        os.close(commands_w)
