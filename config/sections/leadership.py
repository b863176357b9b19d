"""Leadership settings (`leadership:` in the rr config): lease TTL, renewal pace, who may campaign."""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

from eventbus.leaserecord import DEDUPE_WINDOW_S
from eventbus.limits import ID_MAX

_BUCKET = re.compile(r"^[A-Za-z0-9_-]+$")


class LeadershipSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How singleton roles (the scheduler, ...) elect their leader on a JetStream KV lease."""

    # Whole seconds: nats-server keeps per-message TTLs in whole seconds and truncates the rest,
    # so a 2.5 s lease would expire after 2 s, before its holder's own deadline.
    ttl_s: float = 3.0
    renew_every: float = 1 / 3  # fraction of the TTL between renewals
    safety_margin: float = 0.2  # fraction of the TTL a leader stops acting before its lease could expire
    # empty: the hosts file's p2p_voters, and without those every node
    candidates: tuple[Annotated[str, msgspec.Meta(min_length=1, max_length=ID_MAX)], ...] = ()
    bucket: str = "rr_leases"

    def __post_init__(self) -> None:
        if self.ttl_s < 1 or self.ttl_s != int(self.ttl_s):
            raise ValueError(
                f"ttl_s must be a whole number of seconds >= 1 (NATS keeps message TTLs in whole seconds), got {self.ttl_s}"
            )
        if not 0 < self.safety_margin < 0.5:
            raise ValueError(f"safety_margin must be a fraction of the TTL in (0, 0.5), got {self.safety_margin}")
        if not 0 < self.renew_every <= (1 - self.safety_margin) / 2:
            # Two renewal attempts must fit before the leader's own deadline.
            raise ValueError(
                f"renew_every must be in (0, {(1 - self.safety_margin) / 2:.3f}] of the TTL "
                f"(two renewals before the safety margin), got {self.renew_every}"
            )
        if self.renew_every_s <= DEDUPE_WINDOW_S:
            # Every write of a term carries one Nats-Msg-Id; the bucket drops a repeat within its window.
            raise ValueError(
                f"renew_every x ttl_s must be more than the lease bucket's {DEDUPE_WINDOW_S} s dedupe window, "
                f"got {self.renew_every_s:.3f} s: raise leadership.renew_every or leadership.ttl_s"
            )
        if not _BUCKET.match(self.bucket):
            raise ValueError(f"bucket must be letters, digits, '-' or '_', got {self.bucket!r}")

    @property
    def lease_ttl_s(self) -> int:
        """The TTL as the server keeps it."""
        return int(self.ttl_s)

    @property
    def renew_every_s(self) -> float:
        """Seconds between renewals."""
        return self.ttl_s * self.renew_every

    @property
    def safety_margin_s(self) -> float:
        """Seconds before the lease could expire at which its holder stops acting."""
        return self.ttl_s * self.safety_margin
