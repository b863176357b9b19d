"""Command templates: `worker.templates.<work_type>` expanded into an argv, pure.

A template is split into arguments as a shell would (quotes group words), then each argument's
`{name}` placeholders are filled from the work item, its params and the worker's values. No
shell ever sees the result, so a value with spaces or quotes stays one argument. `{{` and `}}`
are literal braces. An argument that is exactly `{name*}` becomes one argument per
comma-separated part of the value (`--data {data*}` with data="a.npz,b.npz"). A training's
`{data}` and `{input_batches}` come from the item's typed `inputs` (see `input_values`).
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from config.sections.gate import SprtSettings
from config.sections.templates import TemplateError, split_template
from eventbus.events import Scalar, WorkAdded

# Values the reference templates use that an item may leave out: the evaluation gate's defaults
# (workload/sprt.py; the pipeline passes its own) and the search budget.
_GATE = SprtSettings()
PARAM_DEFAULTS: dict[str, str] = {
    "sims": "16", "elo0": str(_GATE.elo0), "elo1": str(_GATE.elo1), "alpha": str(_GATE.alpha), "beta": str(_GATE.beta),
    "max_games": str(_GATE.max_games), "rate_anchor": "false",
}


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
