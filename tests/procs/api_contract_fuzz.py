"""schemathesis against a live API, once with a node's token and once with an admin's: a report for
tests/test_api_contract.py.

Usage: python -m tests.procs.api_contract_fuzz
For each run it starts a nats-server of its own (random loopback port, store in a temporary directory), runs the api
service in this process on a free port with a tokens file, appends a small fleet's day to the log
(tests/api_harness.py), waits for the API to fold it, runs `st run` over /openapi.json and prints one JSON line, a
`FuzzReport`: each run's exit status and output. About a minute of CPU and no wait, so the session runs it beside the
tests before those (tests/background_runs.py), which judge its report. Warnings are errors here as in the session
(pyproject.toml), so a warning in a handler is a server error schemathesis reports.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import msgspec

from config.sections.api import PORT_ENV
from config.sections.worker import WorkerSettings
from config.settings import RrConfig
from eventbus.natsserver import NatsServer, ServerSpec, free_port
from services.api.tokens import TokensFile, issue
from tests.api_harness import fleet_log, running_api, wait_caught_up
from tests.helpers import TEST_STORE_LIMIT
from tests.procs.stoppable import cancelled_by_sigterm

# not_a_server_error and response_schema_conformance are the point; the rest keep the answers honest.
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance"
ST_TIMEOUT_S = 240


class StRun(msgspec.Struct, frozen=True, kw_only=True):
    """One `st run`: its exit status and output."""

    code: int
    output: str


class FuzzReport(msgspec.Struct, frozen=True, kw_only=True):
    """worker: every endpoint with a node's (worker role) token; admin: the leadership and admin endpoints with an
    admin's token, so that they are explored past their 403."""

    worker: StRun
    admin: StRun


async def schemathesis(base: str, token: str, tmp: Path, *options: str) -> StRun:
    """`st run` against the live API at `base` with `token`."""
    st = shutil.which("st", path=os.path.dirname(sys.executable)) or shutil.which("st")
    if not st:
        return StRun(code=-1, output="schemathesis is not installed: pip install -e '.[test]'")
    proc = await asyncio.create_subprocess_exec(
        st, "run", f"{base}/openapi.json", "--checks", CHECKS, "-H", f"Authorization: Bearer {token}", "--max-examples", "25", "--seed", "1",
        "--workers", "1", "--request-timeout", "20", "--phases", "examples,coverage,fuzzing",
        "--generation-database", "none", "--report-dir", str(tmp), "--no-color", *options,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), ST_TIMEOUT_S)
    finally:
        if proc.returncode is None:  # timed out or cancelled: st goes with it
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return StRun(code=proc.returncode, output=out.decode(errors="replace"))


def tokens_file(tmp: Path, user: str, role: str) -> tuple[str, str]:
    token, entry = issue(user, role)
    path = tmp / "tokens.yaml"
    path.write_bytes(msgspec.yaml.encode(TokensFile(tokens=[entry])))
    return token, str(path)


async def fuzzed(tmp: Path, user: str, role: str, config: RrConfig | None, *options: str) -> StRun:
    """One run on a fresh server: the API with `user`'s token of `role`, the fleet's day folded, then schemathesis."""
    tmp.mkdir()
    token, tokens = tokens_file(tmp, user, role)
    spec = ServerSpec(name="rr-test", port=free_port(), store_dir=str(tmp / "nats" / "jetstream"), max_file_store=TEST_STORE_LIMIT)
    with NatsServer(spec) as server:
        async with running_api(server.url, config, tokens_file=tokens) as api:
            published = await api.publish(*fleet_log())
            await wait_caught_up(api.base, published[-1].seq)
            return await schemathesis(api.base, token, tmp, *options)


async def both(tmp: Path) -> FuzzReport:
    # The worker role is a node's token, so the authenticated endpoints are explored past their 401.
    worker = await fuzzed(tmp / "worker", "gpu-2", "worker", None)
    # Its own worker directory: /admin/reset may remove files there.
    admin_config = RrConfig(worker=WorkerSettings(data_dir=str(tmp / "admin" / "data")))
    admin = await fuzzed(tmp / "admin", "ops", "admin", admin_config, "--include-path-regex", "^/(election|lease|admin)/")
    return FuzzReport(worker=worker, admin=admin)


def main() -> int:
    warnings.simplefilter("error")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="mypy_extensions")
    os.environ.pop(PORT_ENV, None)  # the API's port is the one given, never an operator's override
    with tempfile.TemporaryDirectory(prefix="rr-api-fuzz-") as tmp:
        report = asyncio.run(cancelled_by_sigterm(both(Path(tmp))))
    sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
