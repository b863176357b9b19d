"""Which GPUs this host has: nvidia-smi (with utilization), else torch.cuda (no utilization).

Shared by the agent's heartbeats and the worker's idle-GPU check. Every plain function here blocks
(nvidia-smi is a process, torch takes seconds to import): call them through asyncio.to_thread.
`python -m servicekit.gpuprobe` prints gpus_from_torch() as JSON: the agent runs it as a child
(gpus_from_torch_process), which a stop can kill, where a thread importing torch runs on to the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import msgspec

from eventbus.events import GpuInfo

log = logging.getLogger(__name__)

GIB = 1 << 30
# The device files a GPU driver gives processes on Linux (NVIDIA's CUDA, AMD's ROCm, WSL's GPU
# paravirtualisation): torch.cuda opens one of them to see any device, so without them it sees none.
GPU_DEVICE_FILES = ("nvidiactl", "nvidia[0-9]*", "kfd", "dxg")
NVIDIA_SMI_QUERY = ["--query-gpu=name,memory.total,utilization.gpu", "--format=csv,noheader,nounits"]
NVIDIA_SMI_TIMEOUT_S = 10.0


def nvidia_smi_path() -> str | None:
    """Where nvidia-smi is, if it is on PATH."""
    return shutil.which("nvidia-smi")


def gpus_from_nvidia_smi(binary: str) -> list[GpuInfo]:
    """The GPUs nvidia-smi lists, with memory and utilization; [] when it fails (a driver problem is logged)."""
    try:
        out = subprocess.run([binary, *NVIDIA_SMI_QUERY], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("nvidia-smi failed: %s", exc)
        return []
    if out.returncode != 0:
        log.warning("nvidia-smi exited %d: %s", out.returncode, out.stderr.strip()[:200])
        return []
    return parse_nvidia_smi(out.stdout)


def parse_nvidia_smi(text: str) -> list[GpuInfo]:
    """GpuInfo from `nvidia-smi --query-gpu=name,memory.total,utilization.gpu --format=csv,noheader,nounits` output."""
    gpus: list[GpuInfo] = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.rsplit(",", 2)]  # rsplit: a GPU name may hold a comma
        if len(fields) != 3 or not fields[0]:
            continue
        name, memory_mib, utilization = fields
        gpus.append(GpuInfo(name=name, memory_gb=round(_number(memory_mib) / 1024, 2), utilization=_number_or_none(utilization)))
    return gpus


def gpu_device_files(dev: Path = Path("/dev")) -> list[str]:
    """The GPU driver device files under `dev` (GPU_DEVICE_FILES), by name; [] on a host without a GPU driver."""
    return sorted({found.name for pattern in GPU_DEVICE_FILES for found in dev.glob(pattern)})


def torch_may_see_gpus(platform: str, device_files: Sequence[str]) -> bool:
    """Whether asking torch.cuda (seconds of CPU to import) can find a GPU on this platform with these device files.

    On Linux the driver's device files must exist; torch has no CUDA on macOS; elsewhere only torch can tell.
    """
    if platform.startswith("linux"):
        return bool(device_files)
    return platform != "darwin"


def torch_may_see_gpus_here() -> bool:
    """torch_may_see_gpus for this host (blocking: lists /dev)."""
    return torch_may_see_gpus(sys.platform, gpu_device_files())


def gpus_from_torch() -> list[GpuInfo]:
    """The CUDA devices torch sees (no utilization); [] without torch or CUDA. Slow the first time: torch imports."""
    try:
        import torch  # imported here only: seconds to import, and not every node has it
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        gpus.append(GpuInfo(name=props.name, memory_gb=round(props.total_memory / GIB, 2)))
    return gpus


TORCH_PROBE = (sys.executable, "-m", "servicekit.gpuprobe")
_gpus_decoder = msgspec.json.Decoder(list[GpuInfo])


class GpuProbeFailed(Exception):
    """The torch probe's process exited non-zero or printed something that is not a GPU list."""


async def gpus_from_torch_process(argv: Sequence[str] = TORCH_PROBE) -> list[GpuInfo]:
    """gpus_from_torch in a child process (`argv` prints the JSON list); cancelling this kills the child."""
    proc = await asyncio.create_subprocess_exec(*argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = await proc.communicate()
    finally:
        if proc.returncode is None:  # cancelled: the child must not outlive the stop it delays
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise GpuProbeFailed(f"{' '.join(argv)} exited {proc.returncode}: {err.decode(errors='replace').strip()[-200:]}")
    try:
        return _gpus_decoder.decode(out)
    except msgspec.DecodeError as exc:
        raise GpuProbeFailed(f"{' '.join(argv)} printed no GPU list: {exc}") from None


def _number(text: str) -> float:
    value = _number_or_none(text)
    return 0.0 if value is None else value


def _number_or_none(text: str) -> float | None:
    # nvidia-smi prints "[N/A]" or "[Not Supported]" for what a GPU cannot tell.
    try:
        return float(text)
    except ValueError:
        return None


if __name__ == "__main__":
    sys.stdout.buffer.write(msgspec.json.encode(gpus_from_torch()))
