"""A small convolutional policy/value network, and loading/saving it as a .pth checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from workload import report
from workload.game import BoardSpec, board_spec


class PolicyValueNet(nn.Module):
    """Conv trunk with a policy head (one logit per cell) and a value head in [-1, 1]."""

    def __init__(self, spec: BoardSpec, channels: int = 32, blocks: int = 3) -> None:
        super().__init__()
        self.spec = spec
        layers: list[nn.Module] = [nn.Conv2d(3, channels, 3, padding=1), nn.ReLU()]
        for _ in range(blocks - 1):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU()]
        self.trunk = nn.Sequential(*layers)
        self.policy = nn.Conv2d(channels, 1, 1)
        self.value = nn.Sequential(nn.Flatten(), nn.Linear(channels * spec.cells, 64), nn.ReLU(), nn.Linear(64, 1), nn.Tanh())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(policy logits of shape (B, cells), value of shape (B,))."""
        h = self.trunk(x)
        return self.policy(h).flatten(1), self.value(h).squeeze(1)


def pick_device(prefer: str = "auto") -> torch.device:
    """`auto`: CUDA when torch sees it, else CPU; `cpu`; `cuda` / `cuda:N`, refused when torch sees none."""
    if prefer not in ("auto", "cpu", "cuda") and not (prefer.startswith("cuda:") and prefer[5:].isdigit()):
        raise ValueError(f"--device {prefer!r}: choose auto, cpu, cuda or cuda:N")
    if prefer == "cpu" or (prefer == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"--device {prefer}: torch {torch.__version__} sees no CUDA device "
                         f"(built for CUDA {torch.version.cuda or 'none'}); use --device auto or cpu")
    return torch.device("cuda" if prefer == "auto" else prefer)


def device_or_fail(prefer: str) -> torch.device:
    """pick_device for a workload program: a bad choice exits 2 with its one-line reason."""
    try:
        return pick_device(prefer)
    except ValueError as exc:
        report.fail(str(exc))
        raise  # unreachable: fail exits


class Evaluator:
    """Runs the net for one position at a time, as search needs: (priors over cells, value for the mover)."""

    def __init__(self, net: PolicyValueNet, device: torch.device) -> None:
        self.net = net.to(device).eval()
        self.device = device

    @torch.no_grad()
    def __call__(self, planes: np.ndarray) -> tuple[np.ndarray, float]:
        x = torch.from_numpy(planes).unsqueeze(0).to(self.device)
        logits, value = self.net(x)
        return torch.softmax(logits[0], 0).cpu().numpy(), float(value[0])


class BatchEvaluator:
    """Runs the net on a batch of positions at once: (priors (B, cells), values (B,)) for the movers."""

    def __init__(self, net: PolicyValueNet, device: torch.device, dtype: torch.dtype = torch.float32) -> None:
        # channels-last convolutions are ~15% faster on CPU at these shapes (and the usual layout on GPUs)
        self.net = net.to(device=device, dtype=dtype, memory_format=torch.channels_last).eval()  # type: ignore[call-overload]  # torch's stubs omit memory_format
        self.device = device
        self.dtype = dtype

    @torch.inference_mode()
    def __call__(self, planes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = torch.from_numpy(planes).to(device=self.device, dtype=self.dtype, memory_format=torch.channels_last)
        logits, value = self.net(x)
        return torch.softmax(logits, 1).cpu().numpy(), value.cpu().numpy()


def save_checkpoint(net: PolicyValueNet, path: Path, meta: dict[str, Any]) -> None:
    """Write weights and metadata atomically (temp file, then rename)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"state_dict": net.state_dict(), "board_type": net.spec.name, "meta": meta}, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path, device: torch.device | None = None) -> tuple[PolicyValueNet, dict[str, Any]]:
    """Read a checkpoint written by save_checkpoint."""
    data = torch.load(path, map_location=device or "cpu", weights_only=True)
    net = PolicyValueNet(board_spec(data["board_type"]))
    net.load_state_dict(data["state_dict"])
    return net, dict(data.get("meta", {}))
