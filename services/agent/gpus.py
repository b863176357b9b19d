"""Which GPUs this host has, from nvidia-smi each beat (with utilization) or torch.cuda once (torch imports slowly)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from config.sections.membership import GpuProbe
from eventbus.events import GpuInfo
from servicekit.gpuprobe import (
    TORCH_PROBE,
    gpus_from_nvidia_smi,
    gpus_from_torch_process,
    nvidia_smi_path,
    torch_may_see_gpus_here,
)
from servicekit.waits import until_first

log = logging.getLogger(__name__)


class GpuSource:
    """The GPUs to put in the next beat, by the configured probe."""

    def __init__(self, probe: GpuProbe, torch_probe: Sequence[str] = TORCH_PROBE,
                 torch_may_see_gpus: Callable[[], bool] = torch_may_see_gpus_here) -> None:
        self._probe = probe
        self._torch_probe = torch_probe  # the command that prints torch's GPUs (servicekit.gpuprobe)
        self._torch_may_see_gpus = torch_may_see_gpus  # whether this host has a GPU driver torch could use
        self._smi: str | None = None
        self._torch: asyncio.Future[list[GpuInfo]] | None = None
        self._cached: list[GpuInfo] = []

    @property
    def method(self) -> str:
        """How GPUs are found on this host: nvidia-smi, torch or none."""
        if self._smi:
            return "nvidia-smi"
        return "torch" if self._torch is not None else "none"

    async def start(self, timeout: float, stopping: asyncio.Event | None = None) -> None:
        """Pick the probe and take a first reading, waiting at most `timeout` for it, or until `stopping` is set."""
        if self._probe in ("auto", "nvidia-smi"):
            self._smi = await asyncio.to_thread(nvidia_smi_path)
            if self._smi is None and self._probe == "nvidia-smi":
                log.warning("gpu_probe is nvidia-smi but nvidia-smi is not on PATH: no GPUs reported")
        # Importing torch costs seconds of CPU (rr up's agent delayed its first beat ~8 s on a loaded
        # 2-core host, beside the other services' starts): not paid where it cannot find a GPU.
        if self._smi is None and self._probe == "auto" and not await asyncio.to_thread(self._torch_may_see_gpus):
            log.info("agent: no nvidia-smi and no GPU device files: no GPUs, torch not asked")
            return
        if self._smi is None and self._probe in ("auto", "torch"):
            # A child process, not a thread: torch's import takes seconds of CPU, and a stop during
            # it waited for the thread to the end (rr up's stop killed the agent after its grace).
            self._torch = asyncio.ensure_future(gpus_from_torch_process(self._torch_probe))
            # The first beat carries the GPUs when the probe is quick enough; later beats do anyway.
            await until_first(asyncio.shield(self._torch), asyncio.sleep(timeout), *([stopping.wait()] if stopping else []))
        log.info("agent: GPUs found by %s", self.method)

    async def current(self) -> list[GpuInfo]:
        """The GPUs now: a fresh nvidia-smi reading, or torch's once it has answered."""
        if self._smi is not None:
            return await asyncio.to_thread(gpus_from_nvidia_smi, self._smi)
        if self._torch is not None and self._torch.done() and not self._cached:
            try:
                self._cached = self._torch.result()
            except Exception as exc:  # noqa: BLE001 - a broken CUDA install must not stop the heartbeats
                log.warning("torch GPU probe failed: %s", exc)
                self._torch = None
        return self._cached

    async def close(self) -> None:
        """Stop a torch probe still running: its process is killed."""
        if self._torch is not None and not self._torch.done():
            self._torch.cancel()
            await asyncio.wait([self._torch])
            self._torch = None  # cancelled: no reading will come
