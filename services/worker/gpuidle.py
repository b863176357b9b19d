"""Idle-GPU detection: a job on a GPU node whose GPUs sit at 0% utilization for `stuck_after_s` is stuck.

Only on nodes where nvidia-smi lists GPUs; sampled (in a thread) only while jobs run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from servicekit.gpuprobe import gpus_from_nvidia_smi, nvidia_smi_path


def next_idle_since(previous: float | None, utilizations: Sequence[float | None], now: float) -> float | None:
    """Since when every GPU has read 0% (monotonic seconds), or None while one is busy or unknown."""
    if not utilizations or any(u is None or u > 0 for u in utilizations):
        return None
    return previous if previous is not None else now


def gpu_stuck_reason(idle_since: float | None, job_started: float, now: float, stuck_after_s: float) -> str | None:
    """Why a job counts as stuck on an idle GPU, or None; idleness before the job started does not count."""
    if idle_since is None or not stuck_after_s:
        return None
    idle_for = now - max(idle_since, job_started)
    if idle_for < stuck_after_s:
        return None
    return f"stuck: GPU idle (0% utilization) for {idle_for:.0f}s (stuck_after_s {stuck_after_s:g})"


class GpuIdleWatch:
    """This node's GPU idleness, from nvidia-smi samples."""

    def __init__(self, smi: str) -> None:
        self._smi = smi
        self.idle_since: float | None = None

    @classmethod
    async def find(cls) -> GpuIdleWatch | None:
        """A watch when nvidia-smi is on PATH and lists at least one GPU, else None (a CPU node)."""
        smi = await asyncio.to_thread(nvidia_smi_path)
        if smi is None or not await asyncio.to_thread(gpus_from_nvidia_smi, smi):
            return None
        return cls(smi)

    async def sample(self) -> None:
        """Read utilization now and update `idle_since`."""
        gpus = await asyncio.to_thread(gpus_from_nvidia_smi, self._smi)
        self.idle_since = next_idle_since(self.idle_since, [g.utilization for g in gpus], time.monotonic())

    def forget(self) -> None:
        """Drop the idle streak (nothing ran between samples, so it says nothing about a new job)."""
        self.idle_since = None
