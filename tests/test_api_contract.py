"""The API's published contract: /openapi.json comes from the handlers' types, and schemathesis finds no failure on a live API."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import msgspec
import pytest

from config.sections.api import PORT_ENV
from config.sections.worker import WorkerSettings
from config.settings import RrConfig
from services.api.tokens import TokensFile, issue
from tests.api_harness import fleet_log, running_api, wait_caught_up

pytestmark = pytest.mark.timeout(300)

# not_a_server_error and response_schema_conformance are the point; the rest keep the answers honest.
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance"
SEEDS_ENDPOINTS = ("/status", "/health", "/peers", "/work/status", "/work/add", "/work/claim", "/work/complete", "/work/fail",
                   "/work/for-node/{node_id}", "/election/status", "/lease/status", "/gossip/peers", "/admin/config",
                   "/election/start", "/lease/request", "/admin/shutdown", "/admin/reset")


@pytest.fixture(autouse=True)
def _no_port_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PORT_ENV, raising=False)


async def test_openapi_documents_every_endpoint_with_its_types_and_errors(nats_url: str) -> None:
    async with running_api(nats_url) as api:
        answer = await api.get("/openapi.json")
        assert answer.status == 200 and answer.headers["Content-Type"].startswith("application/json")
        spec = answer.json()
    assert spec["openapi"].startswith("3.") and set(SEEDS_ENDPOINTS) <= set(spec["paths"])
    add = spec["paths"]["/work/add"]["post"]
    body = add["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"].endswith("/WorkSeeds") and "num_players" in spec["components"]["schemas"]["WorkSeeds"]["properties"]
    assert {"200", "400", "413", "503"} <= set(add["responses"])
    for path in ("/work/claim", "/election/start", "/lease/request", "/admin/shutdown", "/admin/reset"):
        assert spec["paths"][path]["post"]["security"] == [{"bearer": []}], path
    held = spec["paths"]["/lease/request"]["post"]["responses"]["409"]["content"]["application/json"]["schema"]
    assert held["$ref"].endswith("/LeaseRequestDoc")  # a held lease answers its holder, not an error line
    shutdown = spec["paths"]["/admin/shutdown"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert shutdown["$ref"].endswith("/ShutdownBody") and spec["components"]["schemas"]["ShutdownBody"]["required"] == ["node_id"]
    assert spec["paths"]["/status"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/StatusView")
    assert "leader_id" in spec["components"]["schemas"]["StatusView"]["properties"]


async def _schemathesis(base: str, token: str, tmp_path: Path, *options: str) -> None:
    """Run schemathesis against the live API at `base` with `token`; asserts that no check failed."""
    st = shutil.which("st", path=os.path.dirname(sys.executable)) or shutil.which("st")
    assert st, "schemathesis is not installed: pip install -e '.[test]'"
    proc = await asyncio.create_subprocess_exec(
        st, "run", f"{base}/openapi.json", "--checks", CHECKS, "-H", f"Authorization: Bearer {token}", "--max-examples", "25", "--seed", "1",
        "--workers", "1", "--request-timeout", "20", "--phases", "examples,coverage,fuzzing",
        "--generation-database", "none", "--report-dir", str(tmp_path), "--no-color", *options,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 240)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-6000:]
    assert "generated, " in text and " failed" not in text.split("Test cases:")[-1], text[-3000:]


def _tokens_file(tmp_path: Path, user: str, role: str) -> tuple[str, str]:
    token, entry = issue(user, role)
    tokens_file = tmp_path / "tokens.yaml"
    tokens_file.write_bytes(msgspec.yaml.encode(TokensFile(tokens=[entry])))
    return token, str(tokens_file)


async def test_schemathesis_finds_no_server_error_and_no_answer_off_the_contract(nats_url: str, tmp_path: Path) -> None:
    # A node's token, so that the authenticated endpoints are explored past their 401.
    token, tokens_file = _tokens_file(tmp_path, "gpu-2", "worker")
    async with running_api(nats_url, tokens_file=tokens_file) as api:
        published = await api.publish(*fleet_log())
        await wait_caught_up(api.base, published[-1].seq)
        await _schemathesis(api.base, token, tmp_path)


async def test_schemathesis_explores_the_leadership_and_admin_endpoints_past_their_403_with_an_admin_token(
    nats_url: str, tmp_path: Path,
) -> None:
    token, tokens_file = _tokens_file(tmp_path, "ops", "admin")
    # Its own worker directory: /admin/reset may remove files there.
    config = RrConfig(worker=WorkerSettings(data_dir=str(tmp_path / "data")))
    async with running_api(nats_url, config, tokens_file=tokens_file) as api:
        published = await api.publish(*fleet_log())
        await wait_caught_up(api.base, published[-1].seq)
        await _schemathesis(api.base, token, tmp_path, "--include-path-regex", "^/(election|lease|admin)/")
