"""HTTP API settings (`api:` in the rr config): where it listens, how often it snapshots, its limits."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

import msgspec

from eventbus.errors import InvalidConfig

PORT_ENV = "RR_API_PORT"  # set by `rr up --api-port` and `rr-service api --api-port`
UP_PID_ENV = "RR_UP_PID"  # set by rr up in its children: the process POST /admin/shutdown asks to stop

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]


class ApiSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The status API and dashboard on one node."""

    # Loopback by default: POST /work/add has no authentication, so exposing it is a choice to make
    # in the config (host: 0.0.0.0 serves the seeds' `curl http://<node>:8770/status` from elsewhere).
    host: str = "127.0.0.1"
    port: Port = 8770  # the seeds' P2P_PORT
    # The service stores the folded projections as the snapshot every this many events, so that
    # `rr status` and a restarted API start near the end of the log instead of at sequence 1.
    snapshot_every_events: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    # ... but at most once per this many seconds: on a busy log a snapshot a minute old costs a
    # reader one minute of events, while one per 10k events could be several MB a second.
    snapshot_min_interval_s: Annotated[float, msgspec.Meta(ge=0)] = 30.0
    recent_events: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 500  # live feed ring size
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 64 * 1024  # larger POST bodies get 413
    publish_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0  # POST /work/add waits this long for the ack
    work_items_shown: Annotated[int, msgspec.Meta(ge=1)] = 100  # /work/status items when ?limit= is not given
    max_connections: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 128  # one more is answered 503 and closed
    # Bearer tokens (services/api/tokens.py, `rr auth token`) for the mutating endpoints; unset: they
    # answer 401, except POST /work/add, which stays open as before until a tokens file is set.
    tokens_file: str | None = None
    # /health is 503 (low_disk) while the filesystem of `storage_path` (None: the data dir, RR_DATA_DIR)
    # has less free than this: a full store stops leadership and the log long before anything else says so.
    storage_path: str | None = None
    min_free_mib: Annotated[int, msgspec.Meta(ge=0)] = 64


def resolved_port(settings: ApiSettings, env: Mapping[str, str]) -> int:
    """The port to listen on: RR_API_PORT when set (rr up --api-port), else the config's."""
    text = env.get(PORT_ENV, "").strip()
    if not text:
        return settings.port
    if not (text.isascii() and text.isdigit()) or len(text) > 5 or not 0 < int(text) < 65536:
        raise InvalidConfig(f"{PORT_ENV}={text!r}: not a TCP port (1..65535)")
    return int(text)
