"""Distribution settings (`distribution:` in the rr config): the models bucket, where models go, retries, retention."""

from __future__ import annotations

import msgspec

from config.sections.bounds import require_positive

MIB = 1 << 20


class DistributionSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How promoted models travel through the object store to every node's models dir."""

    bucket: str = "rr_models"
    # Where models are installed; None: the worker's `models_dir`, else <data dir>/models.
    models_dir: str | None = None
    keep_last: int = 3  # installed versions kept per config besides the current one
    # The bucket refuses new models past this; 0: no limit (a limit is reserved on the servers' disks up
    # front, next to RR_EVENTS' 20 GiB). The leader's pruning bounds it either way.
    store_max_gib: float = 0.0
    store_keep_candidates_h: float = 72.0  # unpromoted candidates stay in the store this long (for evaluation)
    store_gc_interval_s: float = 600.0  # the leader prunes the bucket this often
    free_margin_mb: float = 256.0  # a download needs the model's size plus this much free disk
    retry_initial_s: float = 1.0  # first wait after a failed download; doubles per failure
    retry_max_s: float = 300.0
    missing_grace_s: float = 30.0  # a promoted model not yet in the store is reported only after this
    idle_timeout_s: float = 30.0  # a download with no chunk for this long has failed
    upload_window_h: float = 72.0  # at start, this node's checkpoints this recent are uploaded if missing
    check_interval_s: float = 30.0  # how often the agent re-checks even without news (backoffs, local files)
    complete_check_s: float = 5.0  # the leader looks for finished distributions this often

    def __post_init__(self) -> None:
        if self.keep_last < 0:
            raise ValueError(f"keep_last must be >= 0, got {self.keep_last}")
        require_positive(self, "retry_initial_s", "retry_max_s", "idle_timeout_s", "check_interval_s", "complete_check_s",
                         "store_gc_interval_s")
        if min(self.free_margin_mb, self.missing_grace_s, self.store_keep_candidates_h, self.store_max_gib) < 0:
            raise ValueError("free_margin_mb, missing_grace_s, store_keep_candidates_h and store_max_gib must be >= 0")

    @property
    def free_margin_bytes(self) -> int:
        """Free disk a download must leave."""
        return int(self.free_margin_mb * MIB)
