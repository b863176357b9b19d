"""A work request, one way for every door: `rr work add` (JSON or flags) and POST /work/add (JSON).

Both doors turn what they were given into the same WorkSeeds here, with errors that name the
field, and admission (servicekit/admission.py) turns admitted seeds into WORK_ADDED under an id of
the one form `new_work_id` gives. Pure: no I/O beyond what the caller read.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable, Mapping
from typing import Annotated

import msgspec

from config.settings import describe_validation_error
from eventbus.events import Scalar

WORK_ID_PREFIX = "w-"  # an operator's item; the leader's own items are named by the pipeline and the populator


class WorkSeeds(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A work request as an operator writes it (the seeds' POST /work/add body)."""

    work_type: Annotated[str, msgspec.Meta(min_length=1)]
    board_type: Annotated[str, msgspec.Meta(min_length=1)]
    num_players: int
    num_games: int | None = None  # None: the type's default_num_games, refused where its template needs a count
    priority: int | None = None
    target_node: str | None = None
    params: dict[str, Scalar] = {}


class InvalidWork(Exception):
    """A work request that is refused; `field` names what to change."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def new_work_id() -> str:
    """A fresh id for an operator's work item: "w-" and 12 hex digits."""
    return f"{WORK_ID_PREFIX}{secrets.token_hex(6)}"


_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`")


def seeds_problem(exc: msgspec.ValidationError) -> InvalidWork:
    """A decoding error as 'field: what is wrong', the field named first and the known fields listed."""
    text = str(exc)
    if match := _MISSING.match(text):
        return InvalidWork(f"{match['field']}: missing (required: work_type, board_type, num_players)", match["field"])
    if match := _UNKNOWN.match(text):
        return InvalidWork(f"{match['field']}: unknown field (known: {', '.join(WorkSeeds.__struct_fields__)})", match["field"])
    if text.startswith("Expected `object`"):
        return InvalidWork(f"body: expected a JSON object, {text.split(', ', 1)[-1]}", "body")
    described = describe_validation_error(exc)
    return InvalidWork(described, described.split(":", 1)[0])


def decode_seeds(text: str | bytes) -> WorkSeeds:
    """A request from its JSON (a POST body, `rr work add '{...}'`, --json-file); raises InvalidWork naming the field."""
    if not text.strip():
        raise InvalidWork('empty body: send the work item as JSON, e.g. {"work_type": "selfplay", ...}', "body")
    try:
        return msgspec.json.decode(text, type=WorkSeeds)
    except msgspec.ValidationError as exc:
        raise seeds_problem(exc) from None
    except msgspec.DecodeError as exc:
        raise InvalidWork(f"body is not valid JSON: {exc}", "body") from None


def parse_param(text: str) -> tuple[str, Scalar]:
    """One `KEY=VALUE` parameter; the value is JSON where it reads as a number or boolean, else the text itself."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise InvalidWork(f"--param {text!r}: expected KEY=VALUE", "params")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return key, parsed if isinstance(parsed, str | int | float | bool) else value


def seeds_from_fields(fields: Mapping[str, object | None], params: Iterable[str] = ()) -> WorkSeeds:
    """A request from fields given one by one (`rr work add --type ... --param K=V`); None means not given.

    Raises InvalidWork naming the field, as decode_seeds does for the same request written as JSON.
    """
    raw: dict[str, object] = {name: value for name, value in fields.items() if value is not None}
    raw["params"] = dict(parse_param(p) for p in params)
    try:
        return msgspec.convert(raw, WorkSeeds)
    except msgspec.ValidationError as exc:
        raise seeds_problem(exc) from None
