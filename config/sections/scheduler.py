"""Scheduler settings (`scheduler:` in the rr config): capability table, priority weights, attempts, backlog."""

from __future__ import annotations

from typing import Annotated

import msgspec

from config.sections.backoff import Backoff


class CapabilityRule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which work a node may take: a work type (and boards, "*" for any) needing this much GPU memory."""

    work_type: str
    boards: tuple[str, ...] = ("*",)
    min_vram_gb: float = 0.0  # on a GPU node
    cpu_ok: bool = False  # whether a node without GPU may run it

    def covers(self, work_type: str, board_type: str) -> bool:
        """Whether this rule speaks about that kind of work."""
        return self.work_type == work_type and ("*" in self.boards or board_type in self.boards)


# The seeds' GPU table: <= 8 GB VRAM hex8 selfplay; 12-16 GB square8 selfplay; >= 24 GB training and
# the large hexagonal board; CPU-only nodes CPU selfplay on the small boards.
DEFAULT_CAPABILITIES: tuple[CapabilityRule, ...] = (
    CapabilityRule(work_type="selfplay", boards=("hex8",), min_vram_gb=0.0, cpu_ok=True),
    CapabilityRule(work_type="selfplay", boards=("square8",), min_vram_gb=12.0, cpu_ok=True),
    CapabilityRule(work_type="selfplay", boards=("*",), min_vram_gb=24.0),
    CapabilityRule(work_type="training", min_vram_gb=24.0),
    CapabilityRule(work_type="evaluation", min_vram_gb=8.0, cpu_ok=True),
    CapabilityRule(work_type="tournament", min_vram_gb=8.0, cpu_ok=True),
    CapabilityRule(work_type="sync", cpu_ok=True),
)

# Which work each role of the hosts file takes.
DEFAULT_ROLE_WORK: dict[str, tuple[str, ...]] = {
    "selfplay": ("selfplay", "evaluation", "tournament", "sync"),
    "cpu_selfplay": ("selfplay", "sync"),
    "nn_training": ("training", "evaluation", "tournament", "sync"),
    "training": ("training", "evaluation", "tournament", "sync"),
    "evaluation": ("evaluation", "tournament", "sync"),
    "mixed": ("selfplay", "training", "evaluation", "tournament", "sync"),
    "coordinator": (),
}


class PriorityWeights(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Weights of the config priority terms (see policy.config_priority)."""

    curriculum: float = 1.0
    freshness: float = 0.5
    elo_velocity: float = 0.5
    freshness_horizon_h: float = 6.0  # games this old count as fully stale
    elo_velocity_ref: float = 50.0  # Elo per hour that counts as "fast"
    elo_velocity_window_h: float = 24.0  # promotions this recent give a config's Elo per hour


class SchedulerSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything the scheduler's policy and protocol read."""

    capabilities: tuple[CapabilityRule, ...] = DEFAULT_CAPABILITIES
    role_work: dict[str, tuple[str, ...]] = msgspec.field(default_factory=lambda: dict(DEFAULT_ROLE_WORK))
    curriculum: dict[str, float] = {}  # "hex8_2p" -> weight; configs absent get 1.0
    weights: PriorityWeights = PriorityWeights()
    max_attempts: Annotated[int, msgspec.Meta(ge=1)] = 3  # failed attempts; hand-backs do not count
    # Hand-backs (worker stopped, node offline) cost no attempt, but a job that takes its node
    # down every time must not loop forever: an item handed back this often is given up too.
    max_hand_backs: Annotated[int, msgspec.Meta(ge=1)] = 20
    attempt_deadline_s: dict[str, float] = msgspec.field(default_factory=lambda: {
        "selfplay": 3600.0, "training": 7200.0, "evaluation": 1800.0, "tournament": 3600.0, "sync": 900.0})
    progress_timeout_s: float = 300.0  # an attempt silent this long is stalled
    # A pending item no alive node can run (target gone, capability missing) fails after this long; 0: never.
    unschedulable_fail_after_s: Annotated[float, msgspec.Meta(ge=0)] = 900.0
    default_max_parallel_jobs: int = 2  # slots of a node the hosts file does not list (or with no hosts file)
    assign_every_s: float = 0.5  # how often the leader looks for work to assign and attempts to supervise
    backlog_per_node: int = 2  # populator keeps this many pending selfplay items per idle slot
    populator_games: int = 200
    populator_enabled: bool = True
    # A failed attempt's item is assigned again only after base_s, doubling per failed attempt, at most cap_s.
    retry_backoff: Backoff = Backoff(base_s=5.0, cap_s=300.0)
    # The populator adds no selfplay to a config whose last n items failed until this backoff's delay(n) has passed.
    populator_backoff: Backoff = Backoff(base_s=30.0, cap_s=1800.0)
    # The leader saves its queue state every this many folded events, so that the next leader
    # folds only the tail after it (start-up in seconds with a year of events); 0: never.
    snapshot_every_events: Annotated[int, msgspec.Meta(ge=0)] = 50_000
