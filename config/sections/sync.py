"""Data sync settings (`sync:` in the rr config): which nodes get game data, how fast, and retries."""

from __future__ import annotations

import msgspec

from config.sections.bounds import require_positive

TRAINING_ROLES: tuple[str, ...] = ("nn_training", "training", "mixed")


class SyncSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How the leader plans copies of selfplay batches to training nodes, and how nodes carry them out."""

    bucket: str = "rr_data"
    # Where received batches are written: <data_dir>/sync/<config>/; None: the worker's data dir.
    data_dir: str | None = None
    training_roles: tuple[str, ...] = TRAINING_ROLES
    min_training_vram_gb: float = 24.0  # the seeds' GPU table: training needs >= 24 GB
    max_batch_age_h: float = 48.0  # older batches are not copied any more
    max_inflight_per_node: int = 4  # planned, unfinished copies to one node
    max_plans_per_tick: int = 64
    plan_interval_s: float = 5.0  # the leader plans at least this often (and on news)
    retry_after_s: float = 60.0  # a failed copy is planned again after this, doubling per failure
    retry_max_s: float = 3600.0
    transfer_timeout_s: float = 600.0  # a target gives up on a batch that never reached the store
    poll_initial_s: float = 0.5  # a target looks for the source's upload this often at first, then less
    poll_max_s: float = 10.0
    idle_timeout_s: float = 30.0  # a download with no chunk for this long has failed
    store_max_gib: float = 0.0  # 0: no limit (a limit is reserved on the servers' disks); the TTL bounds it
    store_ttl_h: float = 24.0  # objects in the data bucket expire: they only carry batches between nodes

    def __post_init__(self) -> None:
        require_positive(self, "max_batch_age_h", "plan_interval_s", "retry_after_s", "retry_max_s", "transfer_timeout_s",
                         "poll_initial_s", "poll_max_s", "idle_timeout_s", "store_ttl_h")
        if self.store_max_gib < 0:
            raise ValueError(f"store_max_gib must be >= 0, got {self.store_max_gib}")
        if self.max_inflight_per_node < 1 or self.max_plans_per_tick < 1:
            raise ValueError("max_inflight_per_node and max_plans_per_tick must be >= 1")
