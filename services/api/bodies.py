"""JSON request bodies decoded into their Structs, every mistake one line naming the field first."""

from __future__ import annotations

import re
from typing import TypeVar

import msgspec

from config.settings import describe_validation_error

B = TypeVar("B", bound=msgspec.Struct)

_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`")


class BadBody(ValueError):
    """A request body the client must change; the message names the field."""


def decode_body(body: bytes, kind: type[B], *, empty_ok: bool = False) -> B:
    """A JSON request body as `kind`; BadBody naming the field otherwise."""
    if not body.strip():
        if empty_ok:
            return kind()
        raise BadBody(f"empty body: send a JSON object with {', '.join(kind.__struct_fields__)}")
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise BadBody(body_problem(exc, kind)) from None
    except msgspec.DecodeError as exc:
        raise BadBody(f"body is not valid JSON: {exc}") from None


def body_problem(exc: msgspec.ValidationError, kind: type[msgspec.Struct]) -> str:
    """'field: what is wrong' for a request body decoded as `kind`, the field named first."""
    text, known = str(exc), ", ".join(kind.__struct_fields__)
    if match := _MISSING.match(text):
        return f"{match['field']}: missing (required: {known})"
    if match := _UNKNOWN.match(text):
        return f"{match['field']}: unknown field (known: {known})"
    if text.startswith("Expected `object`"):
        return f"body: expected a JSON object, {text.split(', ', 1)[-1]}"
    return describe_validation_error(exc)
