"""Admission of work requests, pure: one validator for POST /work/add and `rr work add`.

The request itself (its fields, how JSON and flags become one, its errors and ids) is
servicekit/workrequest.py; this module decides whether it can run.

A request (the seeds' JSON) is admitted only when some node could run it as asked: its config
(board and players) is one the workload plays, its work type has a command template, every
placeholder of that template has a value (a `sync` item, served by the sync service, names
`params.batch_id` and `target_node` instead), a count is given where the template uses one (or
`admission.default_num_games` supplies it), its target node is in the hosts file when there is
one, and its numbers are in range. A refusal names the field and lists the valid values; nothing
is appended for it.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from config.hosts import HostsConfig
from config.sections.admission import REFERENCE_CONFIGS, AdmissionSettings
from config.sections.templates import DEFAULT_TEMPLATES, placeholders
from config.settings import RrConfig
from eventbus.events import WorkAdded
from projections.syncwork import SYNC_WORK, missing_fields
from servicekit.templates import WorkerValues, template_values
from servicekit.workrequest import InvalidWork, WorkSeeds, new_work_id

# The worker's own values, only so that template_values can say which placeholders an item fills.
_PROBE_WORKER = WorkerValues(python="", output_dir="", model_path="", best_model_id="", work_id="", attempt=0, node="")


class AdmissionRules(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a request is checked against: the admission settings, the templates and the hosts."""

    settings: AdmissionSettings = AdmissionSettings()
    templates: dict[str, str] = msgspec.field(default_factory=lambda: dict(DEFAULT_TEMPLATES))
    hosts: tuple[str, ...] | None = None  # the hosts file's nodes; None: no hosts file, any node name
    hosts_file: str | None = None

    @property
    def configs(self) -> tuple[str, ...]:
        """The configs the workload plays."""
        return self.settings.configs if self.settings.configs is not None else REFERENCE_CONFIGS


class Refusal(msgspec.Struct, frozen=True, kw_only=True):
    """Why a request is refused: the field, what is wrong with it and what would be valid."""

    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


def rules_for(config: RrConfig, hosts: HostsConfig | None) -> AdmissionRules:
    """The rules of a config and its hosts file (None: no hosts file); `worker.templates` merged over the defaults."""
    kinds = {*DEFAULT_TEMPLATES, *config.worker.templates}
    merged = {kind: template for kind in kinds if (template := config.worker.template_for(kind)) is not None}
    names = tuple(sorted(hosts.hosts)) if hosts is not None else None
    return AdmissionRules(settings=config.admission, templates=merged, hosts=names, hosts_file=config.hosts_file)


def _choices(values: Iterable[object]) -> str:
    return ", ".join(sorted(str(v) for v in values)) or "none"


def config_refusals(seeds: WorkSeeds, rules: AdmissionRules) -> list[Refusal]:
    """An unknown board, or a player count the board is not played with."""
    boards: dict[str, set[int]] = {}
    for config in rules.configs:
        board, _, players = config.rpartition("_")
        boards.setdefault(board, set()).add(int(players[:-1]))
    if seeds.board_type not in boards:
        return [Refusal(field="board_type", reason=f"unknown board {seeds.board_type!r}: choose one of {_choices(boards)}")]
    if seeds.num_players not in boards[seeds.board_type]:
        valid = _choices(boards[seeds.board_type])
        return [Refusal(field="num_players", reason=f"{seeds.board_type} is played by {valid} players, not {seeds.num_players}")]
    return []


def template_refusals(seeds: WorkSeeds, rules: AdmissionRules) -> list[Refusal]:
    """A work type with no command template, a placeholder nothing fills, a count that is needed and missing.

    `sync` has no template: the target node's sync service serves it, so it needs its batch and target instead.
    """
    if seeds.work_type == SYNC_WORK:  # never a process, even where worker.templates names one
        return [Refusal(field=field, reason=reason) for field, reason in missing_fields(seeds.params, seeds.target_node)]
    template = rules.templates.get(seeds.work_type)
    if template is None:
        return [Refusal(field="work_type", reason=(
            f"no command template for {seeds.work_type!r}, so no node can run it: choose one of "
            f"{_choices({*rules.templates, SYNC_WORK})} (or add worker.templates.{seeds.work_type} to the config)"))]
    used = placeholders(seeds.work_type, template)
    probe = WorkAdded(work_id="", work_type=seeds.work_type, board_type=seeds.board_type, num_players=seeds.num_players,
                      params=seeds.params)
    filled = set(template_values(probe, _PROBE_WORKER))  # what the worker will fill: item fields, params, its own
    out = [Refusal(field=f"params.{name}", reason=f"missing: worker.templates.{seeds.work_type} needs {{{name}}}")
           for name in dict.fromkeys(used) if name not in filled]
    if seeds.num_games is None and "num_games" in used and seeds.work_type not in rules.settings.default_num_games:
        out.append(Refusal(field="num_games", reason=(
            f"missing: {seeds.work_type} needs a count (1..{rules.settings.max_num_games}), "
            f"or set admission.default_num_games.{seeds.work_type}")))
    return out


def range_refusals(seeds: WorkSeeds, rules: AdmissionRules) -> list[Refusal]:
    """Numbers out of their bounds, and a target node the hosts file does not list."""
    s = rules.settings
    out = []
    if seeds.num_games is not None and not 1 <= seeds.num_games <= s.max_num_games:
        out.append(Refusal(field="num_games", reason=f"{seeds.num_games} is out of range: 1..{s.max_num_games} (admission.max_num_games)"))
    if seeds.priority is not None and not s.min_priority <= seeds.priority <= s.max_priority:
        out.append(Refusal(field="priority", reason=(
            f"{seeds.priority} is out of range: {s.min_priority}..{s.max_priority} (admission.min_priority/max_priority)")))
    if seeds.target_node is not None and rules.hosts is not None and seeds.target_node not in rules.hosts:
        out.append(Refusal(field="target_node", reason=(
            f"{seeds.target_node!r} is not in the hosts file {rules.hosts_file or ''}: choose one of {_choices(rules.hosts)}")))
    return out


def refusals(seeds: WorkSeeds, rules: AdmissionRules) -> list[Refusal]:
    """Every reason to refuse the request; empty when it is admitted."""
    return config_refusals(seeds, rules) + template_refusals(seeds, rules) + range_refusals(seeds, rules)


def admit(seeds: WorkSeeds, rules: AdmissionRules, *, work_id: str, requested_by: str) -> WorkAdded | list[Refusal]:
    """The WORK_ADDED event of an admitted request (count defaulted), or why it is refused."""
    refused = refusals(seeds, rules)
    if refused:
        return refused
    games = seeds.num_games if seeds.num_games is not None else rules.settings.default_num_games.get(seeds.work_type, 0)
    fields = msgspec.structs.asdict(seeds) | {"num_games": games}
    return WorkAdded(work_id=work_id, requested_by=requested_by, **fields)


def admitted(seeds: WorkSeeds, rules: AdmissionRules, *, requested_by: str) -> WorkAdded:
    """`admit` with a new id, raising InvalidWork (all refusals in one line, the first field named) when refused."""
    result = admit(seeds, rules, work_id=new_work_id(), requested_by=requested_by)
    if isinstance(result, list):
        raise InvalidWork("; ".join(str(r) for r in result), field=result[0].field)
    return result
