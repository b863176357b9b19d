"""/election/start, /lease/request, /admin/shutdown and /admin/reset: the rules, then each on a running `rr up`."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from eventbus import events as ev
from eventbus.leases import LeaseRecord, LeaseValue
from projections import work
from services.api import leasecontrol as lc
from services.api import nodeadmin as na
from services.api.control import NodeControl
from services.api.errors import ApiError
from services.api.tokens import Principal, TokensFile, issue
from tests.api_harness import _request
from tests.helpers import eventually
from tests.up_harness import Up, rr_up

NODE = "lap-c"
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

# Jobs that run ~8 s printing progress, then exit 0; nothing else queued or trained.
LONG_JOBS = """
streams: {{events_max_gib: 1}}  # rr up reserves the streams on the disk: tests need little
scheduler: {{populator_enabled: false}}
pipeline: {{enabled: false}}
api: {{tokens_file: {tokens}}}
worker:
  templates:
    selfplay: "{{python}} -m tests.procs.worker_child --pids {{output_dir}}/pids --progress 80 --progress-every 0.1"
"""


def _held(node: str, revision: int, epoch: int) -> LeaseRecord:
    value = LeaseValue(node=node, incarnation="i", epoch=epoch, ttl_s=6, acquired_at=T0)
    return LeaseRecord(role="scheduler", revision=revision, state="held", holder=value)


def _item(status: work.WorkStatus, attempt: int, ended: tuple[tuple[int, str], ...] = ()) -> work.WorkItem:
    return work.WorkItem(work_id="w-1", work_type="selfplay", board_type="hex8", num_players=2, status=status,
                         attempt=attempt, node=NODE, ended=ended)


# ---- the rules, pure -----------------------------------------------------------------------------------


def test_a_lease_request_is_granted_to_its_holder_free_to_campaign_for_or_409_naming_the_other_holder() -> None:
    assert lc.lease_answer(_held("gpu-1", 9, 7), "gpu-1")[0] == 200 and lc.lease_answer(_held("gpu-1", 9, 7), "gpu-1")[1].granted
    status, doc = lc.lease_answer(_held("gpu-1", 9, 7), "gpu-2")
    assert status == 409 and doc.holder == "gpu-1" and doc.epoch == 7 and "POST /election/start" in doc.detail
    status, doc = lc.lease_answer(LeaseRecord(role="scheduler", revision=12, state="deleted"), "gpu-2")
    assert status == 200 and not doc.granted and doc.holder is None and "deleted" in doc.detail
    assert lc.not_a_candidate("gpu-2", ()) is None and lc.not_a_candidate("gpu-2", ("gpu-2",)) is None
    assert (lc.not_a_candidate("gpu-9", ("gpu-1", "gpu-2")) or "").startswith("node_id: gpu-9 is not a leadership candidate")


def test_a_reset_removes_only_attempts_that_can_never_count() -> None:
    keep_current = _item(work.WorkStatus.PENDING, 2, ended=((2, NODE),))
    assert na.superseded(keep_current, 2, NODE) is None  # its late completion would still count
    assert na.superseded(keep_current, 1, NODE) == "attempt 1 of w-1, superseded by attempt 2"
    assert na.superseded(_item(work.WorkStatus.COMPLETED, 3), 1, NODE) is None  # which attempt completed is not recorded
    assert na.superseded(_item(work.WorkStatus.CANCELLED, 1), 1, NODE) == "attempt 1 of w-1, which was cancelled"
    assert na.superseded(None, 1, NODE) is None
    state = work.WorkState(items=work.WorkState().items.set("w-1", keep_current))
    dirs = [na.AttemptDir(path=Path(f"/w/jobs/w-1/a{n}"), item_token="w-1", attempt=n) for n in (1, 2)]
    assert na.reset_plan(state, NODE, dirs) == ([(Path("/w/jobs/w-1/a1"), "attempt 1 of w-1, superseded by attempt 2")], 1)
    assert na.attempt_dir_of(Path("/w/jobs/w-1/a12")) == na.AttemptDir(path=Path("/w/jobs/w-1/a12"), item_token="w-1", attempt=12)
    assert na.attempt_dir_of(Path("/w/jobs/w-1/notes")) is None
    assert na.wrong_node("gpu-2", "gpu-1") == "node_id: this API runs on node gpu-1, not gpu-2; send the request to gpu-2's own API"
    assert na.busy(work.WorkState(items=work.WorkState().items.set("w-1", _item(work.WorkStatus.RUNNING, 2))), NODE, ["w-9/a1"]) == [
        "w-1/a2", "w-9/a1"]


# ---- on a running rr up --------------------------------------------------------------------------------


def _tokens(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    issued = {user: issue(user, role) for user, role in ((NODE, "coordinator"), ("gpu-2", "worker"), ("ops", "admin"))}
    path = tmp_path / "api-tokens.yaml"
    path.write_bytes(msgspec.yaml.encode(TokensFile(tokens=[entry for _, entry in issued.values()])))
    return path, {user: token for user, (token, _) in issued.items()}


def _config(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    tokens_file, tokens = _tokens(tmp_path)
    config = tmp_path / "rr.yaml"
    config.write_text(LONG_JOBS.format(tokens=tokens_file))
    return config, tokens


async def _post(up: Up, path: str, body: dict[str, Any] | None, token: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    data = json.dumps(body).encode() if body is not None else b""
    answer = await asyncio.to_thread(_request, up.api + path, "POST", data, headers)
    return answer.status, answer.json()


async def _get(up: Up, path: str) -> tuple[int, Any]:
    answer = await asyncio.to_thread(_request, up.api + path, "GET", None, {})
    return answer.status, answer.json()


async def _leader_epoch(up: Up) -> int | None:
    try:
        status, doc = await _get(up, "/election/status")
    except OSError:
        return None  # not listening yet
    leader = doc.get("leaders", {}).get("scheduler") if status == 200 else None
    return leader["epoch"] if leader and leader.get("node") == NODE and leader.get("epoch") else None


@pytest.mark.timeout(240)
async def test_election_start_makes_the_leader_step_down_and_lease_request_says_who_holds_the_lease(tmp_path: Path) -> None:
    config, token = _config(tmp_path)
    async with rr_up(tmp_path / "data", config, NODE) as up:
        epoch = await eventually(lambda: _leader_epoch(up), timeout=90, interval=0.3, message=f"{NODE} leads the scheduler")

        assert (await _post(up, "/election/start", {}, None))[0] == 401
        status, doc = await _post(up, "/election/start", {}, token["gpu-2"])
        assert status == 403 and "may not start an election" in doc["error"], doc
        status, doc = await _post(up, "/election/start", {"roles": "scheduler"}, token["ops"])
        assert status == 400 and doc["error"].startswith("roles: unknown field (known: role, reason)"), doc
        status, doc = await _post(up, "/election/start", {"role": "Sched uler"}, token["ops"])
        assert status == 400 and "role" in doc["error"], doc

        status, doc = await _post(up, "/election/start", {"reason": "move the leader off this box"}, token["ops"])
        assert status == 200, doc
        assert (doc["previous_leader"], doc["epoch"]) == (NODE, epoch)

        async def stepped_down_and_reelected() -> list[ev.Event] | None:
            log = [e for _, e in await up.log()]
            lost = [e for e in log if isinstance(e, ev.LeaderLost) and e.epoch == epoch]
            newer = [e for e in log if isinstance(e, ev.LeaderElected) and (e.epoch or 0) > epoch]
            return [*lost, *newer] if lost and newer else None

        lost, elected = (await eventually(stepped_down_and_reelected, timeout=60, interval=0.3, message="a newer election"))[:2]
        assert isinstance(lost, ev.LeaderLost) and "lease deleted" in lost.reason
        new_epoch = await eventually(lambda: _leader_epoch_past(up, epoch), timeout=30, interval=0.3, message="the API sees it")
        assert new_epoch == elected.epoch  # type: ignore[attr-defined]

        status, doc = await _post(up, "/lease/request", {}, token[NODE])
        assert (status, doc["granted"], doc["holder"], doc["epoch"]) == (200, True, NODE, new_epoch), doc
        status, doc = await _post(up, "/lease/request", {"node_id": "gpu-7"}, token["ops"])
        assert (status, doc["granted"], doc["holder"]) == (409, False, NODE), doc
        status, doc = await _post(up, "/lease/request", {"node_id": "gpu-7"}, token[NODE])
        assert status == 403 and "may not request a lease for node gpu-7" in doc["error"], doc
        assert (await _post(up, "/lease/request", {}, token["gpu-2"]))[0] == 403
        status, doc = await _post(up, "/lease/request", {"role": 5}, token[NODE])
        assert status == 400 and "role" in doc["error"], doc


async def _leader_epoch_past(up: Up, epoch: int) -> int | None:
    now = await _leader_epoch(up)
    return now if now is not None and now > epoch else None


@pytest.mark.timeout(300)
def _work_log(log: list[tuple[int, ev.Event]], data: Path) -> str:
    """The work events of a run, one a line, and the worker's log: what a failed drain test prints to explain itself."""
    lines = [f"{seq} {e.type_name()} {msgspec.structs.asdict(e)}" for seq, e in log if e.aggregate == "work"]
    worker_log = data / "logs" / "worker.log"
    tail = worker_log.read_text()[-6000:] if worker_log.exists() else "(no worker log)"
    return "\n".join(["the log's work events:", *lines, "worker.log:", tail])


async def test_shutdown_drains_the_node_and_reset_refuses_while_it_holds_work_then_removes_superseded_attempts(
    tmp_path: Path,
) -> None:
    config, token = _config(tmp_path)
    data = tmp_path / "data"
    added = ev.WorkAdded(work_id="w-drain", work_type="selfplay", board_type="hex8", num_players=2, num_games=1)
    async with rr_up(data, config, NODE) as up:
        await up.publisher().publish(added)

        async def running() -> bool:
            # As the API sees it (what the calls below judge): the api may start serving after the job started.
            try:
                status, doc = await _get(up, "/status")
            except OSError:
                return False  # not listening yet
            return status == 200 and doc["work"]["counts"]["running"] == 1

        await eventually(running, timeout=90, interval=0.3, message="the job runs, as the API sees it")
        status, doc = await _post(up, "/admin/reset", {"node_id": NODE}, token["ops"])
        assert status == 409 and "holds work (w-drain/a1)" in doc["error"], doc

        assert (await _post(up, "/admin/shutdown", {"node_id": NODE}, None))[0] == 401
        status, doc = await _post(up, "/admin/shutdown", {"node_id": NODE}, token[NODE])
        assert status == 403 and "may not shut a node down" in doc["error"], doc
        status, doc = await _post(up, "/admin/shutdown", {"node_id": "gpu-9"}, token["ops"])
        assert status == 409 and doc["error"].startswith("node_id: this API runs on node lap-c, not gpu-9"), doc
        status, doc = await _post(up, "/admin/shutdown", {}, token["ops"])
        assert status == 400 and doc["error"].startswith("node_id: missing"), doc

        status, doc = await _post(up, "/admin/shutdown", {"node_id": NODE}, token["ops"])
        assert status == 200 and doc["running"] == ["w-drain/a1"] and doc["pid"] == up.proc.pid, doc
        code, err = await up.wait_exit(60)
        assert code == 0, err[-3000:]
    attempt_1 = data / "worker" / NODE / "jobs" / "w-drain" / "a1"
    assert attempt_1.is_dir()

    async with rr_up(data, config, NODE) as up:
        async def completed_again() -> list[ev.Event] | None:
            log = [e for _, e in await up.log()]
            done = any(isinstance(e, ev.WorkCompleted) and e.work_id == added.work_id for e in log)
            return log if done else None

        log = await eventually(completed_again, timeout=120, interval=0.2, message="the item completed after the restart")
        handed = [e for e in log if isinstance(e, ev.WorkHandedBack)]
        assert [(e.work_id, e.attempt) for e in handed] == [(added.work_id, 1)], _work_log(await up.log(), data)
        assert not any(isinstance(e, ev.WorkAttemptFailed) for e in log), "a drain consumes no attempt"

        async def reset() -> dict[str, Any] | None:
            status, doc = await _post(up, "/admin/reset", {"node_id": NODE}, token["ops"])
            return doc if status == 200 else None  # 409 until the worker has dropped its record of the job

        # A cancelled item's leftover attempt and a fetched candidate: what a reset may remove.
        worker_dir = data / "worker" / NODE
        (worker_dir / "jobs" / "w-gone" / "a1").mkdir(parents=True)
        (worker_dir / "jobs" / "w-gone" / "a1" / "games.npz").write_bytes(b"x" * 1000)
        (worker_dir / "candidates").mkdir(exist_ok=True)
        (worker_dir / "candidates" / "m-1.pth").write_bytes(b"y" * 500)
        gone = ev.WorkAdded(work_id="w-gone", work_type="selfplay", board_type="hex8", num_players=2, num_games=1)
        await up.publisher().publish_many([gone, ev.WorkCancelled(work_id="w-gone", reason="not needed")])

        async def cancel_folded() -> bool:
            status, doc = await _get(up, "/work/status?status=cancelled")
            return status == 200 and [i["work_id"] for i in doc["items"]] == ["w-gone"]

        await eventually(cancel_folded, timeout=30, interval=0.3, message="the API folded the cancel")
        doc = await eventually(reset, timeout=30, interval=0.5, message="the reset is accepted")
        removed = {Path(r["path"]).relative_to(worker_dir).as_posix(): (r["bytes"], r["why"]) for r in doc["removed"]}
        assert removed.keys() == {"jobs/w-gone/a1", "candidates"}, doc
        assert removed["jobs/w-gone/a1"] == (1000, "attempt 1 of w-gone, which was cancelled")
        assert doc["freed_bytes"] >= 1500 and doc["kept_attempts"] == 2, doc  # w-drain completed: both of its attempts stay
        assert attempt_1.is_dir() and not (worker_dir / "jobs" / "w-gone" / "a1").exists()


async def test_shutdown_signals_only_the_rr_up_that_is_still_this_apis_parent() -> None:
    signalled: list[int] = []
    admin = Principal(user="ops", role="admin")
    orphan = NodeControl(node_id=NODE, up_pid=4242, stop=signalled.append, parent=lambda: 1)
    with pytest.raises(ApiError, match="the rr up \\(pid 4242\\) that started this API has exited"):
        await orphan.shutdown(admin, na.ShutdownBody(node_id=NODE), work.WorkState())
    alone = NodeControl(node_id=NODE, stop=signalled.append)
    with pytest.raises(ApiError, match="not started by `rr up`"):
        await alone.shutdown(admin, na.ShutdownBody(node_id=NODE), work.WorkState())
    child = NodeControl(node_id=NODE, up_pid=4242, stop=signalled.append, parent=lambda: 4242)
    assert (await child.shutdown(admin, na.ShutdownBody(node_id=NODE), work.WorkState())).pid == 4242
    with pytest.raises(ApiError, match="already shutting down"):
        await child.shutdown(admin, na.ShutdownBody(node_id=NODE), work.WorkState())
    assert signalled == [4242]
