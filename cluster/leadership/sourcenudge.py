"""When a new leader waiting for its acquisition's copy asks RR_EVENTS' leader to step down, pure.

The copies come through RR_EVENTS' source of the lease bucket. When the server leading the bucket dies, RR_EVENTS'
leader sets that source up again only on its own growing retry pause (10-46 s measured), and no term can be
announced meanwhile; a new RR_EVENTS leader sets it up at once (eventbus/sourcestall.py). Every publisher to the log
pauses for that election, so it is asked only where it can help and rarely across the fleet:
- only by the lease holder, whose acquisition was acked and is not in the log after `late_after_s` (copies land in
  milliseconds);
- only when the source is stalled: the stream's leader reports an error setting it up, or has heard nothing from it
  (no copy, no heartbeat) during the whole wait;
- only when the stream's leader has held office `MIN_LEADER_TENURE_S`: a leader that has just taken office sets its
  sources up itself, and this bounds step-downs to one per that long whichever node asks, as the server counts it.
"""

from __future__ import annotations

from eventbus.sourcestall import SourceStatus

LATE_AFTER_S = 1.0  # a copy not in the log this long after the ack is late (at most a quarter of the wait)
CHECK_EVERY_S = 1.0  # how often a late copy's source is looked at again
MIN_LEADER_TENURE_S = 5.0  # the longest copy wait: a stream leader silent from its source this long had its chance


def late_after(wait_s: float) -> float:
    """Seconds into a copy wait of `wait_s` after which the source is looked at."""
    return min(LATE_AFTER_S, wait_s / 4)


def stalled(status: SourceStatus, waited_s: float) -> bool:
    """Whether the source has copied nothing, nor sent a heartbeat, for the `waited_s` the copy has been awaited."""
    return status.error is not None or (status.idle_s is not None and status.idle_s >= waited_s)


def should_step_down(status: SourceStatus, waited_s: float, wait_s: float) -> bool:
    """Whether a holder whose acquisition's copy has been awaited `waited_s` (of `wait_s`) asks for a new stream
    leader."""
    if status.leader_tenure_s is None or waited_s < late_after(wait_s):
        return False
    return stalled(status, waited_s) and status.leader_tenure_s >= MIN_LEADER_TENURE_S
