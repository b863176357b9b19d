"""Command templates: `worker.templates.<work_type>` expanded into an argv, pure.

A template is split into arguments as a shell would (quotes group words), then each argument's
`{name}` placeholders are filled from the work item, its params and the worker's values. No
shell ever sees the result, so a value with spaces or quotes stays one argument. `{{` and `}}`
are literal braces. An argument that is exactly `{name*}` becomes one argument per
comma-separated part of the value (`--data {data*}` with data="a.npz,b.npz"). A training's
`{data}` and `{input_batches}` come from the item's typed `inputs` (see `input_values`).
"""

from __future__ import annotations

import shlex
import string
from collections.abc import Mapping

import msgspec

from eventbus.events import Scalar, WorkAdded
from workload.sprt import SprtSettings

_FORMATTER = string.Formatter()

# The reference workload's programs; any of them can be replaced in the config.
DEFAULT_TEMPLATES: dict[str, str] = {
    "selfplay": (
        "{python} -m workload.selfplay --board {board_type} --num-players {num_players}"
        " --num-games {num_games} --model {model_path} --out {output_dir}"
    ),
    "training": (
        "{python} -m workload.train --board {board_type} --num-players {num_players}"
        " --data {data*} --init {model_path} --out {output_dir}/candidate.pth"
    ),
    "evaluation": (
        "{python} -m workload.evaluate --board {board_type} --num-players {num_players}"
        " --candidate {candidate} --best {model_path} --games {num_games} --sims {sims} --elo0 {elo0}"
        " --elo1 {elo1} --alpha {alpha} --beta {beta} --max-games {max_games} --rate-anchor {rate_anchor}"
    ),
    # params: models = "id=checkpoint,id=checkpoint@sims,..." (the last K generations), sims; the node's
    # current best joins them
    "tournament": (
        "{python} -m workload.tournament --board {board_type} --num-players {num_players}"
        " --games {num_games} --sims {sims} --best {model_path} --best-id {best_model_id} --models {models*}"
    ),
}


# Values the reference templates use that an item may leave out: the evaluation gate's defaults
# (workload/sprt.py; the pipeline passes its own) and the search budget.
_GATE = SprtSettings()
PARAM_DEFAULTS: dict[str, str] = {
    "sims": "16", "elo0": str(_GATE.elo0), "elo1": str(_GATE.elo1), "alpha": str(_GATE.alpha), "beta": str(_GATE.beta),
    "max_games": str(_GATE.max_games), "rate_anchor": "false",
}


class TemplateError(ValueError):
    """A template that cannot be expanded; the message names the template key and what to fix."""


class WorkerValues(msgspec.Struct, frozen=True, kw_only=True):
    """What the worker itself fills in: interpreter, where the attempt writes, which model plays."""

    python: str
    output_dir: str
    model_path: str  # the config's best model on this node, or "none"
    best_model_id: str  # ... and its id, or "none"
    work_id: str
    attempt: int
    node: str


def scalar_text(value: Scalar | None) -> str:
    """A value as it appears on a command line: booleans as true/false, None as empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def template_values(item: WorkAdded, worker: WorkerValues) -> dict[str, str]:
    """Every placeholder value for one attempt: defaults, item fields, then params, then the worker's (which win)."""
    values = {
        **PARAM_DEFAULTS,
        "work_type": item.work_type,
        "board_type": item.board_type,
        "num_players": str(item.num_players),
        "num_games": str(item.num_games),
        "priority": scalar_text(item.priority),
        "target_node": scalar_text(item.target_node),
        "requested_by": item.requested_by,
    }
    values.update({name: scalar_text(value) for name, value in item.params.items()})
    values.update(input_values(item))
    values.update({name: scalar_text(getattr(worker, name)) for name in WorkerValues.__struct_fields__})
    return values


def input_values(item: WorkAdded) -> dict[str, str]:
    """`data` (paths) and `input_batches` (ids) of a training's inputs, comma-joined for `{data*}`; none without inputs.

    From the item's `inputs`, or its params on items that name their batches there (added before
    `inputs` existed, or an operator's `params.data`); these values win over the params.
    """
    values: dict[str, str] = {}
    if paths := [i.path for i in item.training_inputs()]:
        values["data"] = ",".join(paths)
    if ids := item.input_batch_ids():
        values["input_batches"] = ",".join(ids)
    return values


def _fields(key: str, argument: str) -> list[tuple[str, str]]:
    """(literal text, placeholder name or '') pairs of one argument; raises TemplateError on bad braces."""
    try:
        parsed = list(_FORMATTER.parse(argument))
    except ValueError as exc:  # "Single '}' encountered", "expected '}' before end of string"
        raise TemplateError(f"worker.templates.{key}: unbalanced braces in {argument!r}: {exc}") from None
    pairs = []
    for literal, name, spec, conversion in parsed:
        if name is not None and (spec or conversion):
            raise TemplateError(f"worker.templates.{key}: placeholder {{{name}}} takes no format spec or conversion")
        if name == "" or (name is not None and not name.removesuffix("*").isidentifier()):
            raise TemplateError(f"worker.templates.{key}: bad placeholder {{{name}}} in {argument!r}: use {{name}}")
        pairs.append((literal, name or ""))
    return pairs


def split_template(key: str, template: str) -> list[list[tuple[str, str]]]:
    """A template's arguments, each as (literal, placeholder) pairs; raises TemplateError when malformed."""
    try:
        arguments = shlex.split(template)
    except ValueError as exc:  # "No closing quotation"
        raise TemplateError(f"worker.templates.{key}: {exc}: {template!r}") from None
    if not arguments:
        raise TemplateError(f"worker.templates.{key}: empty command")
    parsed = [_fields(key, argument) for argument in arguments]
    for argument, pairs in zip(arguments, parsed):
        starred = [name for _, name in pairs if name.endswith("*")]
        if starred and (len(pairs) != 1 or pairs[0][0]):
            raise TemplateError(
                f"worker.templates.{key}: {{{starred[0]}}} must be a whole argument, not part of {argument!r}"
            )
    return parsed


def placeholders(key: str, template: str) -> list[str]:
    """The placeholder names a template uses (without the `*`), in order."""
    return [name.removesuffix("*") for pairs in split_template(key, template) for _, name in pairs if name]


def expand(key: str, template: str, values: Mapping[str, str]) -> list[str]:
    """The argv of a template filled with `values`; raises TemplateError naming an unknown placeholder and the key."""
    argv: list[str] = []
    for pairs in split_template(key, template):
        missing = [name.removesuffix("*") for _, name in pairs if name and name.removesuffix("*") not in values]
        if missing:
            raise TemplateError(
                f"worker.templates.{key}: unknown placeholder {{{missing[0]}}}: not a work item field, "
                f"param or worker value (known: {', '.join(sorted(values))})"
            )
        if len(pairs) == 1 and pairs[0][1].endswith("*"):
            argv += [part.strip() for part in values[pairs[0][1][:-1]].split(",") if part.strip()]
            continue
        argv.append("".join(literal + (values[name] if name else "") for literal, name in pairs))
    return argv
