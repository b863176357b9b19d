"""The api service run in-process on a real nats-server, an HTTP client for it, and a realistic event log."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgspec

from config.sections.api import ApiSettings
from config.settings import RrConfig
from eventbus import events as ev
from eventbus.connection import Bus
from eventbus.natsserver import free_port
from eventbus.publisher import Published, Publisher
from servicekit.options import CommonOptions
from servicekit.runtime import ServiceContext
from services.api import service as api_service
from tests.bus_harness import provisioned_bus
from tests.helpers import eventually

T0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=2)
H100 = ev.HostResources(cpu_count=32, memory_gb=256.0, gpus=[ev.GpuInfo(name="H100", memory_gb=80.0)] * 2)
A10 = ev.HostResources(cpu_count=16, memory_gb=64.0, gpus=[ev.GpuInfo(name="A10", memory_gb=24.0)])
DEADLINE = T0 + dt.timedelta(hours=5)


def fleet_log() -> list[ev.Event]:
    """A small fleet's day: leaders, nodes (one gone offline), work in every state, models, Elo, data."""
    facts: list[tuple[str, ev.Event]] = [
        ("gpu-1", ev.LeaderElected(role="scheduler", node="gpu-1", ttl_s=3.0, epoch=4)),
        ("gpu-2", ev.LeaderElected(role="promoter", node="gpu-2", ttl_s=3.0, epoch=2)),
        ("gpu-1", ev.HostOnline(node="gpu-1", roles=["selfplay", "nn_training"], version="0.1.0", resources=H100, epoch=4)),
        ("gpu-1", ev.HostOnline(node="gpu-2", roles=["selfplay"], version="0.1.0", resources=H100, epoch=4)),
        ("gpu-1", ev.HostOnline(node="gpu-3", roles=["evaluation"], version="0.1.0", resources=A10, epoch=4)),
        ("gpu-1", ev.HostOnline(node="cpu-9", roles=["sync"], version="0.1.0", resources=ev.HostResources(cpu_count=8, memory_gb=32.0), epoch=4)),
        ("gpu-1", ev.HostOffline(node="cpu-9", reason="heartbeat_timeout", silence_s=15.0, last_seen=T0, epoch=4)),
        *(("operator", ev.WorkAdded(work_id=f"w-{i}", work_type="selfplay", board_type=("hex8", "square8")[i % 2],
                                    num_players=2, num_games=1000, requested_by="operator")) for i in range(1, 6)),
        ("gpu-1", ev.WorkAssigned(work_id="w-1", node="gpu-1", attempt=1, deadline=DEADLINE, epoch=4)),
        ("gpu-1", ev.WorkStarted(work_id="w-1", node="gpu-1", attempt=1, pid=101)),
        ("gpu-1", ev.WorkCompleted(work_id="w-1", node="gpu-1", attempt=1, duration_s=80.0)),
        ("gpu-1", ev.WorkAssigned(work_id="w-2", node="gpu-2", attempt=1, deadline=DEADLINE, epoch=4)),
        ("gpu-2", ev.WorkStarted(work_id="w-2", node="gpu-2", attempt=1, pid=202)),
        ("gpu-2", ev.WorkProgress(work_id="w-2", node="gpu-2", attempt=1, fraction=0.4)),
        ("gpu-1", ev.WorkAssigned(work_id="w-3", node="gpu-3", attempt=1, deadline=DEADLINE, epoch=4)),
        ("gpu-1", ev.WorkFailed(work_id="w-4", reason="gave up after 3 attempts", epoch=4)),
        ("gpu-2", ev.SelfplayComplete(batch_id="b-1", work_id="w-1", node="gpu-1", board_type="hex8", num_players=2,
                                      num_games=1000, num_samples=30000)),
    ]
    parent = None
    for k, rating in enumerate((1500.0, 1545.0, 1590.0)):
        model = f"m-hex8-{k}"
        facts += [
            ("gpu-1", ev.TrainingComplete(model_id=model, work_id=f"t-{k}", node="gpu-1", board_type="hex8", num_players=2,
                                          input_batches=["b-1"], parent_model=parent,
                                          checkpoint=ev.ArtifactRef(path=f"{model}.pt", size_bytes=1000, sha256="ab" * 32))),
            ("gpu-3", ev.EvaluationComplete(model_id=model, work_id=f"e-{k}", node="gpu-3", opponent=parent or "random",
                                            games=100, wins=60, losses=35, draws=5, win_rate=0.6, elo=70.0)),
            ("gpu-2", ev.ModelRated(model_id=model, board_type="hex8", num_players=2, elo=rating, interval=40.0 + 10 * k,
                                    games=140, opponents=[parent or "random"], evaluation_work_id=f"e-{k}", epoch=2)),
        ]
        if k < 2:  # the newest is promoted below, after a rejected candidate
            facts.append(("gpu-2", ev.ModelPromoted(model_id=model, board_type="hex8", num_players=2, sha256="ab" * 32,
                                                    generation=k + 1, reason="SPRT accepted H1", previous_model=parent,
                                                    epoch=2)))
        parent = model
    facts += [
        ("gpu-2", ev.ModelRated(model_id="m-hex8-x", board_type="hex8", num_players=2, elo=1480.0, interval=60.0, games=60,
                                opponents=["m-hex8-1"], epoch=2)),  # rated, never promoted
        ("gpu-2", ev.ModelPromoted(model_id="m-hex8-2", board_type="hex8", num_players=2, sha256="ab" * 32, generation=3,
                                   reason="SPRT accepted H1", previous_model="m-hex8-1", epoch=2)),
        ("gpu-1", ev.ModelDistributed(model_id="m-hex8-2", node="gpu-1", sha256="ab" * 32, seconds=1.0)),
    ]
    return [
        msgspec.structs.replace(e, id=f"{src}:fleet-{i}", source=src, ts=T0 + dt.timedelta(minutes=2 * i))
        for i, (src, e) in enumerate(facts, 1)
    ]


@dataclass
class Answer:
    """An HTTP answer: status, headers, raw body."""

    status: int
    headers: Headers
    body: bytes

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


class Headers(dict[str, str]):
    """Response headers, looked up regardless of case (HTTP names are case-insensitive)."""

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        """The header's value, or `default`."""
        return super().get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())


def _headers(message: Any) -> Headers:
    return Headers((name.lower(), value) for name, value in message.items())


def _request(url: str, method: str, body: bytes | None, headers: dict[str, str]) -> Answer:
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return Answer(response.status, _headers(response.headers), response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return Answer(exc.code, _headers(exc.headers), exc.read())


async def _answers(base: str) -> bool:
    answer = await asyncio.to_thread(_request, base + "/health", "GET", None, {})
    return answer.status in (200, 503)


@dataclass
class RunningApi:
    """The api service of node gpu-1, serving on `base`."""

    base: str
    bus: Bus
    ctx: ServiceContext
    task: asyncio.Future[None]

    async def get(self, path: str) -> Answer:
        """GET `path` from a thread (the HTTP server answers from its own threads; the loop stays free)."""
        return await asyncio.to_thread(_request, self.base + path, "GET", None, {})

    async def send(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> Answer:
        """Any request, from a thread."""
        return await asyncio.to_thread(_request, self.base + path, method, body, headers or {})

    async def publish(self, *events: ev.Event) -> list[Published]:
        """Append events to the log, as the cluster's services would."""
        return await Publisher(self.bus).publish_many(list(events))


async def wait_caught_up(base: str, seq: int) -> None:
    """Until the api at `base` says it is healthy and has folded the log up to `seq`."""

    async def folded() -> bool:
        answer = await asyncio.to_thread(_request, base + "/health", "GET", None, {})
        doc = answer.json()
        return answer.status == 200 and doc["last_seq"] >= seq

    await eventually(folded, timeout=15, message=f"the api folded the log to seq {seq}")


@contextlib.asynccontextmanager
async def running_api(nats_url: str, config: RrConfig | None = None, *, bus: Bus | None = None, **settings: Any) -> AsyncIterator[RunningApi]:
    """The api service in this process on a free port (with `config`'s other sections), stopped (and checked to stop) on exit.

    It runs as node gpu-1 on a bus of its own, or on `bus` (already provisioned, e.g. with a node's
    credentials on a server enforcing them) as that bus's node.
    """
    async with contextlib.AsyncExitStack() as stack:
        if bus is None:
            bus = await stack.enter_async_context(provisioned_bus(nats_url, node_id="gpu-1"))
        port = free_port()
        config = msgspec.structs.replace(config or RrConfig(), api=ApiSettings(port=port, **settings))
        ctx = ServiceContext("api", bus, config, CommonOptions(nats_url=nats_url, node_id=bus.node_id, config_path=None))
        task = asyncio.ensure_future(api_service.main(ctx))
        base = f"http://127.0.0.1:{port}"
        try:
            # Listening (any answer, 503 while it catches up included), or the service failed.
            await eventually(lambda: task.done() or _answers(base), message=f"the api listens on {base}")
            if task.done():
                task.result()
            yield RunningApi(base, bus, ctx, task)
        finally:
            ctx.stopping.set()
            await asyncio.wait_for(task, timeout=10)
