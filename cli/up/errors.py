"""The one error `rr up` reports before or while starting: a line an operator can act on."""

from __future__ import annotations


class UpError(Exception):
    """Why `rr up` cannot run (port taken, data dir not writable, no nats-server binary)."""
