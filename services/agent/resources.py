"""Measuring this host for its heartbeats: CPU, memory and disk (psutil); the GPUs come from servicekit/gpuprobe.py.

Every function here blocks (psutil reads /proc); the agent calls them through asyncio.to_thread.
"""

from __future__ import annotations

import psutil

from eventbus.events import GpuInfo, HostResources
from servicekit.gpuprobe import GIB


def sample_host(disk_path: str, gpus: list[GpuInfo]) -> HostResources:
    """CPU use since the previous call, memory and disk now; `gpus` as probed separately."""
    memory = psutil.virtual_memory()
    disk = psutil.disk_usage(disk_path)
    return HostResources(
        cpu_count=psutil.cpu_count() or 0,
        cpu_percent=psutil.cpu_percent(interval=None),  # since the previous call: the first one says 0.0
        memory_gb=round(memory.total / GIB, 2),
        memory_percent=memory.percent,
        disk_free_gb=round(disk.free / GIB, 2),
        disk_percent=disk.percent,
        gpus=gpus,
    )
