"""Every running service answers NATS micro discovery ($SRV.PING / $SRV.INFO) and a status endpoint; `rr services` lists them."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS

from cli import main as cli
from cli.commands.services import format_services, service_rows
from eventbus.consumer import ConsumerSpec, EventConsumer
from eventbus.events import HostOnline
from eventbus.micro import ServiceInfo, discover, semantic_version, status_subject
from eventbus.publisher import Publisher
from servicekit.auth.permissions import Permissions, SubjectRules, permissions_for
from servicekit.options import CommonOptions
from servicekit.runtime import SERVICES, ServiceContext, ServiceEntry, register, run_service
from servicekit.telemetry.permits import may_announce, subject_covers
from servicekit.telemetry.status import ServiceStatus
from tests.bus_harness import provisioned_bus

CONTEXTS: list[ServiceContext] = []


async def consuming_service(ctx: ServiceContext) -> None:
    """A service exposing one consumer of HOST_ONLINE to its status, until stopped."""
    CONTEXTS.append(ctx)

    async def ignore(_event: Any, _where: Any) -> None:
        return None

    spec = ConsumerSpec(durable=f"watcher-{ctx.node_id}", pull_expires_s=0.5)
    consumer = ctx.observed.consumer(EventConsumer(ctx.bus, spec, {HostOnline: ignore}))
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(consumer.run())
        await ctx.stopping.wait()
        await consumer.stop()


@contextlib.asynccontextmanager
async def service_running(url: str, node: str, eventually: Any) -> AsyncIterator[ServiceContext]:
    """tests.test_micro:consuming_service run by run_service on `node` for the block (streams provisioned first)."""
    async with provisioned_bus(url, node_id="provisioner"):
        pass
    entry = ServiceEntry(name="watcher", target="tests.test_micro:consuming_service", description="watches hosts")
    register(entry)
    CONTEXTS.clear()
    task = asyncio.ensure_future(run_service(entry, CommonOptions(nats_url=url, node_id=node, config_path=None), grace_s=5))

    def started() -> ServiceContext | None:
        if task.done():
            task.result()  # a service that failed to start fails the test with its own error
        return CONTEXTS[0] if CONTEXTS else None

    try:
        yield await eventually(started, message="service started")
    finally:
        SERVICES.pop(entry.name, None)
        if CONTEXTS:
            CONTEXTS[0].stopping.set()
        await asyncio.wait_for(task, 15)


async def _request_json(nc: NATS, subject: str) -> dict[str, Any]:
    reply = await nc.request(subject, b"", timeout=2)
    return json.loads(reply.data)  # type: ignore[no-any-return]


def test_versions_that_are_not_semver_become_build_metadata() -> None:
    assert semantic_version("1.2.3") == "1.2.3"
    assert semantic_version("0.0.0-dev") == "0.0.0-dev"
    assert semantic_version("dev") == "0.0.0+dev"
    assert semantic_version("0.1.0 (source tree)") == "0.0.0+0.1.0--source-tree-"


async def test_a_running_service_answers_ping_info_and_status(nats_url: str, eventually: Any) -> None:
    async with provisioned_bus(nats_url, node_id="reader") as bus:
        await Publisher(bus).publish(HostOnline(node="n1", reason="test"))
        async with service_running(nats_url, "node-m", eventually):
            nc = await nats.connect(nats_url)
            try:
                ping = await eventually(lambda: _request_json(nc, "$SRV.PING"), message="$SRV.PING answered")
                assert ping["name"] == "rr-watcher" and ping["type"] == "io.nats.micro.v1.ping_response"
                assert ping["metadata"]["node"] == "node-m"
                info = await _request_json(nc, "$SRV.INFO.rr-watcher")
                assert info["version"] and info["id"] == ping["id"]
                assert [e["subject"] for e in info["endpoints"]] == [status_subject("watcher", "node-m")]
                stats = await _request_json(nc, f"$SRV.STATS.rr-watcher.{ping['id']}")
                assert stats["endpoints"][0]["name"] == "status"

                status = await eventually(lambda: _status_with_handled(nc), message="status shows the consumer")
            finally:
                await nc.close()
    assert status.service == "watcher" and status.node == "node-m" and status.state == "running"
    assert status.loop_lag.samples >= 0 and status.telemetry == "none"
    [consumer] = status.consumers
    assert consumer.durable == "watcher-node-m" and consumer.stats.received == 1
    assert consumer.lag is not None and consumer.lag.pending == 0


async def _status_with_handled(nc: NATS) -> ServiceStatus | None:
    reply = await nc.request(status_subject("watcher", "node-m"), b"", timeout=2)
    status = msgspec.json.decode(reply.data, type=ServiceStatus)
    return status if status.consumers and status.consumers[0].stats.received else None


async def test_rr_services_lists_running_services(nats_url: str, eventually: Any, capsys: pytest.CaptureFixture[str]) -> None:
    async with service_running(nats_url, "node-s", eventually):
        code = await asyncio.to_thread(cli.main, ["services", "--json", "--nats", nats_url, "--timeout", "1"])
        listed = json.loads(capsys.readouterr().out)
    assert code == 0
    [row] = listed
    assert row["name"] == "rr-watcher" and row["node"] == "node-s" and row["state"] == "running"
    assert row["version"] and row["id"]
    assert row["status"]["consumers"][0]["durable"] == "watcher-node-s"


async def test_discovery_with_no_services_answers_nothing_quickly(nats_url: str) -> None:
    async with provisioned_bus(nats_url, node_id="reader") as bus:
        started = asyncio.get_running_loop().time()
        assert await discover(bus, timeout=5) == []
        assert asyncio.get_running_loop().time() - started < 4  # no responders ends the wait early


async def test_a_stopped_service_is_no_longer_discovered(nats_url: str, eventually: Any) -> None:
    async with provisioned_bus(nats_url, node_id="reader") as bus:
        async with service_running(nats_url, "node-x", eventually):
            found = await eventually(lambda: discover(bus, timeout=1), message="service discovered")
            assert [i.name for i in found] == ["rr-watcher"]
        assert await discover(bus, timeout=1) == []


def test_table_shows_services_and_those_whose_status_did_not_answer() -> None:
    info = ServiceInfo(name="rr-agent", id="abc", version="0.1.0", metadata={"node": "n1"})
    silent = ServiceInfo(name="rr-worker", id="def", version="0.1.0", metadata={"node": "n2"})
    status = msgspec.convert({
        "service": "agent", "node": "n1", "version": "0.1.0", "state": "running", "pid": 1,
        "started": dt.datetime(2025, 1, 1, tzinfo=dt.UTC).isoformat(), "uptime_s": 125.0,
        "loop_lag": {"last_s": 0.002, "max_s": 0.01, "over_threshold": 0, "samples": 3},
        "published": {"published": 4, "duplicates": 0},
    }, ServiceStatus)
    rows = service_rows([silent, info], [None, status])
    assert [r.name for r in rows] == ["rr-agent", "rr-worker"]
    header, agent, worker = (line.split() for line in format_services(rows).splitlines())
    assert header[:3] == ["SERVICE", "NODE", "STATE"]
    assert agent == ["rr-agent", "n1", "running", "0.1.0", "2m05s", "2.0ms", "-", "-", "abc"]
    assert worker[:3] == ["rr-worker", "n2", "no"] and worker[-1] == "def"
    assert format_services([]).startswith("no rr services")


def test_subject_patterns_cover_as_nats_matches_them() -> None:
    assert subject_covers("$SRV.>", "$SRV.PING") and subject_covers("$SRV.>", "$SRV.INFO.rr-agent.x")
    assert not subject_covers("$SRV.>", "$SRV")
    assert subject_covers("rr.svc.*.n1.status", "rr.svc.agent.n1.status")
    assert not subject_covers("rr.svc.*.n1.status", "rr.svc.agent.n2.status")
    assert not subject_covers("rr.*", "rr.svc.agent")


def test_only_nodes_whose_permissions_allow_discovery_announce_themselves() -> None:
    subject = status_subject("agent", "n1")
    assert may_announce(permissions_for("admin", "admin"), subject)  # unrestricted
    # servicekit/auth/permissions.py grants every role $SRV.> and its own rr.svc.*.<node>.> subjects.
    assert may_announce(permissions_for("worker", "n1"), subject)
    assert may_announce(permissions_for("coordinator", "n1"), subject)
    assert not may_announce(permissions_for("worker", "n2"), subject)  # another node's status subject
    silent = Permissions(publish=SubjectRules(), subscribe=SubjectRules(allow=("rr.svc.*.n1.>",), deny=("_INBOX.>",)))
    assert not may_announce(silent, subject)  # no $SRV.>: stays silent rather than cause violations
    granted = Permissions(publish=SubjectRules(), subscribe=SubjectRules(allow=("$SRV.>", "rr.svc.*.n1.>"), deny=("_INBOX.>",)))
    assert may_announce(granted, subject)
