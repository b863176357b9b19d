"""Strict parsing of the numbers HTTP requests carry (query parameters, Content-Length).

`int()` accepts Unicode digits ("²", "٣") and refuses more than 4300 of them with a ValueError,
so a number from a client is parsed here: ASCII digits only, and a bounded count of them.
"""

from __future__ import annotations

MAX_DIGITS = 18  # below 2**63: every count, sequence and length a request may carry


def ascii_count(text: str) -> int | None:
    """The non-negative integer `text` spells in 1 to MAX_DIGITS ASCII digits, else None."""
    if not 0 < len(text) <= MAX_DIGITS or not (text.isascii() and text.isdigit()):
        return None
    return int(text)
