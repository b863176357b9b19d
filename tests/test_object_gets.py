"""An object of one chunk is read by two direct gets, no consumer; a bucket without direct gets is read as before."""

from __future__ import annotations

import dataclasses
import io

import pytest

from eventbus.connection import Bus
from eventbus.objects import BucketSpec, ObjectCorrupt, bucket_config, create_bucket_stream, fetch_bytes, put_stream
from tests.bus_harness import provisioned_bus


async def _consumers(bus: Bus, bucket: str) -> int:
    return (await bus.js.stream_info(f"OBJ_{bucket}")).state.consumer_count


async def test_an_object_of_one_chunk_is_read_whole_without_a_consumer_and_one_of_many_by_one(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        await create_bucket_stream(bus, "gets", bucket_config(BucketSpec(name="gets")))
        small, big = b"a cluster start" * 200, bytes(range(256)) * 9000  # 3 kB; ~2.3 MB in 1 MiB chunks
        await put_stream(bus, "gets", "small", io.BytesIO(small), what="small")
        await put_stream(bus, "gets", "big", io.BytesIO(big), what="big")
        assert await fetch_bytes(bus, "gets", "small") == small
        assert await _consumers(bus, "gets") == 0  # an ordered consumer lingers for seconds after its read
        assert await fetch_bytes(bus, "gets", "missing") is None
        assert await fetch_bytes(bus, "gets", "big") == big
        assert await _consumers(bus, "gets") == 1
        assert await fetch_bytes(bus, "no-such-bucket", "small") is None


async def test_a_tampered_object_of_one_chunk_does_not_read(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        await create_bucket_stream(bus, "tampered", bucket_config(BucketSpec(name="tampered")))
        stored = await put_stream(bus, "tampered", "small", io.BytesIO(b"x" * 3000), what="small")
        await bus.js.publish(f"$O.tampered.C.{stored.nuid}", b"one chunk too many")
        with pytest.raises(ObjectCorrupt):
            await fetch_bytes(bus, "tampered", "small")


async def test_a_bucket_without_direct_gets_is_read_by_its_consumer_and_api_as_before(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        config = dataclasses.replace(bucket_config(BucketSpec(name="plain")), allow_direct=False)
        await create_bucket_stream(bus, "plain", config)
        await put_stream(bus, "plain", "small", io.BytesIO(b"y" * 3000), what="small")
        assert await fetch_bytes(bus, "plain", "small") == b"y" * 3000
        assert await fetch_bytes(bus, "plain", "missing") is None
