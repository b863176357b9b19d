"""The API's published contract: /openapi.json comes from the handlers' types, and schemathesis finds no failure on a live API."""

from __future__ import annotations

import msgspec
import pytest
from litestar import Litestar

from config.sections.api import PORT_ENV
from services.api.app import openapi_document
from tests import background_runs
from tests.api_harness import running_api
from tests.procs.api_contract_fuzz import FuzzReport, StRun

pytestmark = pytest.mark.timeout(300)

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


async def test_the_openapi_document_is_made_on_its_first_request_not_at_start_and_then_kept(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[bytes] = []

    def counted(app: Litestar) -> bytes:
        made.append(openapi_document(app))
        return made[-1]

    monkeypatch.setattr("services.api.app.openapi_document", counted)
    async with running_api(nats_url) as api:
        assert (await api.get("/health")).status in (200, 503)
        assert made == []  # the api's start no longer pays for it (~0.45 s of CPU)
        first, second = (await api.get("/openapi.json")).body, (await api.get("/openapi.json")).body
    assert len(made) == 1 and first == second == made[0]


def _judged(request: pytest.FixtureRequest, run: str) -> None:
    """The background run's (tests/procs/api_contract_fuzz.py) schemathesis run `run`: no check failed."""
    code, output = background_runs.result(request.config, "api_contract_fuzz", timeout=590)
    assert code == 0, f"the schemathesis run exited {code}:\n{output[-6000:]}"
    st: StRun = getattr(msgspec.json.decode(output.splitlines()[-1], type=FuzzReport), run)
    assert st.code == 0, st.output[-6000:]
    assert "generated, " in st.output and " failed" not in st.output.split("Test cases:")[-1], st.output[-3000:]


# Both schemathesis runs (about a minute of CPU) are one background run (tests/background_runs.py), which passes beside
# the tests before these: a live API on its own server, a small fleet's day folded, then `st run` with a node's token
# over every endpoint, and with an admin's token over the leadership and admin ones, past their 403.
@pytest.mark.timeout(600)  # beyond the run's own bound, should it still run when the session reaches this test
def test_schemathesis_finds_no_server_error_and_no_answer_off_the_contract(request: pytest.FixtureRequest) -> None:
    _judged(request, "worker")


@pytest.mark.timeout(600)
def test_schemathesis_explores_the_leadership_and_admin_endpoints_past_their_403_with_an_admin_token(
    request: pytest.FixtureRequest,
) -> None:
    _judged(request, "admin")
