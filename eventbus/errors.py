"""The one error tree callers of the event bus see; nats-py errors never leak past `eventbus/`.

Each error says whether retrying can help, so a service loop can decide without
knowing anything about NATS.
"""

from __future__ import annotations


class BusError(Exception):
    """Base of every error raised by the event bus."""

    retryable: bool = False


class BusUnavailable(BusError):
    """NATS or JetStream did not answer in time (server down, no quorum, network): retry later."""

    retryable = True


class ConcurrencyConflict(BusError):
    """An expected-last-sequence check failed: someone else wrote first; reload state and retry."""

    retryable = True

    def __init__(self, subject_filter: str, expected: int, detail: str = "") -> None:
        self.subject_filter = subject_filter
        self.expected = expected
        super().__init__(
            f"concurrency conflict on {subject_filter}: expected last sequence {expected}"
            + (f" ({detail})" if detail else "")
        )


class InvalidEvent(BusError):
    """A message is not a valid event of the catalog (bad JSON, unknown type, wrong fields)."""


class StreamSetupError(BusError):
    """A stream or consumer could not be provisioned as declared; the message says which and why."""


class InvalidConfig(BusError):
    """Configuration is wrong; the message names the file, the key and what is wrong. Never retry."""
