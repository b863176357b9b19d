"""What each declared stream holds now, for `rr streams info` and health checks."""

from __future__ import annotations

import msgspec
import nats.errors
import nats.js.errors

from eventbus.connection import Bus
from eventbus.errors import BusUnavailable
from eventbus.streams import StreamSettings, declared_streams


class StreamState(msgspec.Struct, frozen=True, kw_only=True):
    """One stream's size, sequence range and replication; `exists` False when never provisioned."""

    name: str
    exists: bool
    messages: int = 0
    bytes: int = 0
    first_seq: int = 0
    last_seq: int = 0
    consumers: int = 0
    replicas: int = 0
    storage: str = ""
    leader: str | None = None


async def stream_states(bus: Bus, settings: StreamSettings | None = None) -> list[StreamState]:
    """The state of every declared stream, in declaration order; raises BusUnavailable if JetStream is silent."""
    states: list[StreamState] = []
    for spec in declared_streams(settings or StreamSettings()):
        try:
            info = await bus.js.stream_info(spec.name)
        except nats.js.errors.NotFoundError:
            states.append(StreamState(name=spec.name, exists=False))
            continue
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError) as exc:
            raise BusUnavailable(f"JetStream did not answer for stream {spec.name}: {exc}") from None
        states.append(
            StreamState(
                name=spec.name,
                exists=True,
                messages=info.state.messages,
                bytes=info.state.bytes,
                first_seq=info.state.first_seq,
                last_seq=info.state.last_seq,
                consumers=info.state.consumer_count,
                replicas=info.config.num_replicas or 1,
                storage=str(getattr(info.config.storage, "value", info.config.storage) or ""),
                leader=info.cluster.leader if info.cluster else None,
            )
        )
    return states
