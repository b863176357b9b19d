"""The seeds' POST /work/add body: validated with `rr work add`'s WorkSeeds, errors naming the field."""

from __future__ import annotations

import re
import secrets

import msgspec

from config.settings import describe_validation_error
from services.commands.work import InvalidWork, WorkSeeds


def new_work_id() -> str:
    """An id in the form `rr work add` gives."""
    return f"w-{secrets.token_hex(6)}"


def parse_work(body: bytes) -> WorkSeeds:
    """The seeds' /work/add JSON body, validated as `rr work add` validates it; raises InvalidWork."""
    if not body.strip():
        raise InvalidWork("empty body: send the work item as JSON, e.g. {\"work_type\": \"selfplay\", ...}")
    try:
        seeds = msgspec.json.decode(body, type=WorkSeeds)
    except msgspec.ValidationError as exc:
        raise InvalidWork(work_problem(exc)) from None
    except msgspec.DecodeError as exc:
        raise InvalidWork(f"body is not valid JSON: {exc}") from None
    if not seeds.board_type.strip():
        raise InvalidWork("board_type: must not be empty")
    return seeds


_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`")


def work_problem(exc: msgspec.ValidationError) -> str:
    """'field: what is wrong' for a /work/add body, the field named first as `rr work add` names it."""
    text = str(exc)
    if match := _MISSING.match(text):
        return f"{match['field']}: missing (required: work_type, board_type, num_players)"
    if match := _UNKNOWN.match(text):
        return f"{match['field']}: unknown field (known: {', '.join(WorkSeeds.__struct_fields__)})"
    if text.startswith("Expected `object`"):
        return f"body: expected a JSON object, {text.split(', ', 1)[-1]}"
    return describe_validation_error(exc)
