"""Fixtures that are real resources: nats-server processes on random loopback ports."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from eventbus.connection import Bus
from eventbus.natsserver import NatsCluster, NatsServer, ServerSpec, free_port
from tests.bus_harness import provisioned_bus
from tests.helpers import eventually as _eventually

DOCKER_ENV = "RR_TEST_DOCKER"


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """One JetStream nats-server with its store in tmp_path, stopped at teardown."""
    spec = ServerSpec(name="rr-test", port=free_port(), store_dir=str(tmp_path / "nats" / "jetstream"))
    with NatsServer(spec) as server:
        yield server


@pytest.fixture
def nats_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The client URL of a JetStream server: a container when RR_TEST_DOCKER=1 and Docker answers, else nats_server."""
    if os.environ.get(DOCKER_ENV) == "1" and _docker_answers():
        yield from _container_url()
        return
    server: NatsServer = request.getfixturevalue("nats_server")
    yield server.url


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]  # only imported when containers are asked for

        client = docker.from_env(timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - any failure means "no daemon": fall back to the binary
        return False


def _container_url() -> Iterator[str]:
    from testcontainers.community.nats import NatsContainer

    with NatsContainer(jetstream=True) as container:
        yield container.nats_uri()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """A started 3-node JetStream cluster with its stores in tmp_path, stopped at teardown."""
    cluster = NatsCluster.create(tmp_path / "cluster", size=3)
    with cluster:
        yield cluster


@pytest.fixture
def eventually() -> Callable[..., Awaitable[Any]]:
    """The `tests.helpers.eventually` poller: `await eventually(predicate, timeout=..., message=...)`."""
    return _eventually


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    """A connection as node "test" to the test server, its streams provisioned (modules may define their own)."""
    async with provisioned_bus(nats_url, node_id="test") as connected:
        yield connected
