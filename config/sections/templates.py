"""The worker's command templates (`worker.templates`): the defaults, and what a template may say, pure.

A template is split into arguments as a shell would (quotes group words); each argument holds
literal text and `{name}` placeholders, or is exactly `{name*}`. `{{` and `}}` are literal braces.
The config is checked against this syntax at load; servicekit/templates.py fills the placeholders.
"""

from __future__ import annotations

import shlex
import string

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


class TemplateError(ValueError):
    """A template that cannot be expanded; the message names the template key and what to fix."""


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
