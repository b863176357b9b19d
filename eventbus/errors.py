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


class StorageFull(BusUnavailable):
    """The server could not store a write: its disk (or its JetStream storage limit) is full.

    Retryable: once space is freed the same write succeeds; until then it is an incident to
    report (the message says what to free or lower), not a reason to crash.
    """


# 10047: "insufficient storage resources available" (a stream's reservation); 10023: "insufficient
# resources", what nats-server 2.15 answers a publish once JetStream's storage limit is used up.
STORAGE_FULL_CODES = (10047, 10023)
STORAGE_FULL_WORDS = ("insufficient storage", "no space left", "storage resources", "insufficient resources")


def storage_full(err_code: int | None, description: str) -> bool:
    """Whether a JetStream error says the store is out of space."""
    text = description.lower()
    return err_code in STORAGE_FULL_CODES or any(word in text for word in STORAGE_FULL_WORDS)


class BucketMissing(BusError):
    """A write went to a KV bucket whose stream does not exist (deleted under its writer): create it again."""


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


class Fenced(BusError):
    """A leader's decision was refused by the server: a newer election was stored after its own. Never retry;
    the term is over."""

    def __init__(self, subject_filter: str, expected: int, detail: str = "") -> None:
        self.subject_filter = subject_filter
        self.expected = expected
        super().__init__(
            f"fenced: a newer election than the one at sequence {expected} is on {subject_filter}"
            + (f" ({detail})" if detail else "")
        )


class TooManyResults(BusError):
    """The server refused a read that matched more than it answers in one request: ask narrower, or read another way."""


class InvalidEvent(BusError):
    """A message is not a valid event of the catalog (bad JSON, unknown type, wrong fields)."""


class StreamSetupError(BusError):
    """A stream or consumer could not be provisioned as declared; the message says which and why."""


class InvalidConfig(BusError):
    """Configuration is wrong; the message names the file, the key and what is wrong. Never retry."""


def is_transient(exc: BaseException) -> bool:
    """Whether retrying later can help: the bus was away or slow (timeouts, no responders, 503 during an election).

    Knows nats-py's own errors too, for calls that let them through; a group is transient when
    every error in it is.
    """
    import nats.errors  # here, not at the top: the error tree itself stays free of nats
    import nats.js.errors

    if isinstance(exc, BaseExceptionGroup):
        return all(is_transient(e) for e in exc.exceptions)
    if isinstance(exc, BusError):
        return exc.retryable
    if isinstance(exc, (TimeoutError, ConnectionError, nats.errors.NoRespondersError, nats.errors.ConnectionClosedError,
                        nats.errors.ConnectionReconnectingError, nats.errors.StaleConnectionError,
                        nats.errors.OutboundBufferLimitError, nats.js.errors.ServiceUnavailableError,
                        nats.js.errors.NoStreamResponseError)):
        return True
    return isinstance(exc, nats.js.errors.APIError) and exc.code in (503, 408)
