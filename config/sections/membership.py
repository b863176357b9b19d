"""Membership settings (`membership:` in the rr config): heartbeat pace and when a silent node is offline."""

from __future__ import annotations

from typing import Literal

import msgspec

GpuProbe = Literal["auto", "nvidia-smi", "torch", "none"]


class MembershipSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How agents beat and how the leader decides a node is gone; every node reads the same file."""

    heartbeat_interval_s: float = 5.0
    missed_beats_offline: int = 3  # a node silent for this many intervals is declared offline
    # A node whose event loop lags more than this is shown as lagging by `rr nodes`.
    lag_threshold_s: float = 0.25
    sweep_fraction: float = 0.25  # the leader looks for silent nodes every interval x this
    gpu_probe: GpuProbe = "auto"  # auto: nvidia-smi when on PATH, else torch.cuda where a GPU driver's device files exist
    gpu_probe_timeout_s: float = 30.0  # the first beat waits this long at most for the GPU probe
    # The filesystem whose free space is reported; None: the data dir (RR_DATA_DIR, as `rr up` and the
    # worker use it), since that is what fills up, not necessarily the root disk.
    disk_path: str | None = None
    jobs_file: str | None = None  # JSON list of running jobs kept by the worker (servicekit/jobsfile.py)

    def __post_init__(self) -> None:
        if not self.heartbeat_interval_s > 0:
            raise ValueError(f"heartbeat_interval_s must be > 0, got {self.heartbeat_interval_s}")
        if self.missed_beats_offline < 1:
            raise ValueError(f"missed_beats_offline must be >= 1, got {self.missed_beats_offline}")
        if not 0 < self.sweep_fraction <= 1:
            raise ValueError(f"sweep_fraction must be in (0, 1], got {self.sweep_fraction}")
        if self.lag_threshold_s <= 0 or self.gpu_probe_timeout_s <= 0:
            raise ValueError("lag_threshold_s and gpu_probe_timeout_s must be > 0")

    @property
    def silence_s(self) -> float:
        """Seconds without a heartbeat after which a node is offline."""
        return self.heartbeat_interval_s * self.missed_beats_offline

    @property
    def sweep_every_s(self) -> float:
        """Seconds between the leader's looks for silent nodes."""
        return self.heartbeat_interval_s * self.sweep_fraction
