"""`--device auto` uses CUDA when torch sees it; the CUDA path itself runs wherever a GPU is visible."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from workload.batched import game_rngs, play_games
from workload.game import board_spec
from workload.net import BatchEvaluator, PolicyValueNet, pick_device, save_checkpoint
from workload.selfplay import play_all
from workload.train import fit

GPU = torch.cuda.is_available()


def test_device_choices_and_a_clear_refusal() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto") == (torch.device("cuda") if GPU else torch.device("cpu"))
    with pytest.raises(ValueError, match="--device 'tpu': choose auto, cpu, cuda or cuda:N"):
        pick_device("tpu")
    if not GPU:
        with pytest.raises(ValueError, match="--device cuda: torch .* sees no CUDA device"):
            pick_device("cuda")


@pytest.mark.timeout(300)
@pytest.mark.skipif(not GPU, reason="no GPU is visible to torch: the CUDA path runs where one is")
def test_the_cuda_path_plays_trains_and_evaluates_like_the_cpu(tmp_path: Path) -> None:
    device = pick_device("auto")
    assert device.type == "cuda"
    torch.manual_seed(3)
    net = PolicyValueNet(board_spec("hex8"))
    # The same games on the GPU as on the CPU (float64: no rounding tie can differ), batched.
    on_gpu = play_games("hex8", BatchEvaluator(_copy(net), device, torch.float64), 8, game_rngs(1, 16))
    on_cpu = play_games("hex8", BatchEvaluator(_copy(net), torch.device("cpu"), torch.float64), 8, game_rngs(1, 16))
    for (_, pig, vg), (_, pic, vc) in zip(on_gpu, on_cpu):
        assert vg == vc and all(np.array_equal(a, b) for a, b in zip(pig, pic))
    # Training on the GPU moves the net there and learns from the games.
    planes, policies, values = play_all("hex8", BatchEvaluator(_copy(net), device), 8, 16, 16, seed=2)
    samples = (np.stack(planes), np.stack(policies), np.array(values, np.float32))
    trained = _copy(net)
    metrics = fit(trained, samples, epochs=2, batch=64, lr=2e-3, device=device, seed=1)
    assert next(trained.parameters()).device.type == "cuda" and np.isfinite(metrics["policy_loss"])
    # The evaluation program picks the GPU by itself.
    save_checkpoint(trained.cpu(), tmp_path / "c.pth", {})
    done = subprocess.run([sys.executable, "-m", "workload.evaluate", "--board", "hex8", "--candidate",
                           str(tmp_path / "c.pth"), "--games", "2", "--max-games", "4", "--seed", "1"],
                          capture_output=True, text=True, timeout=300, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1])["result"]["matches"][0]["games"] >= 1


def _copy(net: PolicyValueNet) -> PolicyValueNet:
    twin = PolicyValueNet(net.spec)
    twin.load_state_dict(net.state_dict())
    return twin
