"""Batched selfplay: many games at once, leaves through the net in batches, the same games as one at a time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import PROJECT_ROOT, pythonpath_without
from workload.batched import Node, game_rngs, play_games, search_many, uniform_batch
from workload.game import board_spec, new_game, play
from workload.mcts import choose
from workload.net import BatchEvaluator, PolicyValueNet, save_checkpoint


def same_games(a: list, b: list) -> None:
    assert len(a) == len(b)
    for (pa, pia, va), (pb, pib, vb) in zip(a, b):
        assert len(pa) == len(pb) and va == vb
        assert all(np.array_equal(x, y) for x, y in zip(pa, pb))
        assert all(np.array_equal(x, y) for x, y in zip(pia, pib))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("board", ["hex8", "square8"])
def test_batched_and_one_at_a_time_play_the_same_games_for_one_seed(board: str) -> None:
    torch.manual_seed(5)
    # float64, so that the batch size cannot flip a near-tie by float rounding: what is compared is the search.
    net = BatchEvaluator(PolicyValueNet(board_spec(board)), torch.device("cpu"), torch.float64)
    together = play_games(board, net, 6, game_rngs(42, 5))
    alone = [play_games(board, net, 6, [rng])[0] for rng in game_rngs(42, 5)]
    same_games(together, alone)
    assert len({len(p) for p, _, _ in together}) > 1  # the games differ from each other
    other_seed = play_games(board, net, 6, game_rngs(43, 5))
    assert any(len(a[0]) != len(b[0]) or a[2] != b[2] for a, b in zip(together, other_seed))


def test_search_many_finds_the_winning_move_in_every_game_at_once() -> None:
    state = new_game(board_spec("square8"))
    for cell in (3 * 8 + 2, 7 * 8 + 0, 3 * 8 + 3, 7 * 8 + 2, 3 * 8 + 4, 7 * 8 + 5):
        state = play(state, cell)
    rngs = game_rngs(0, 4)
    counts = search_many([Node(state) for _ in rngs], rngs, uniform_batch, 200, noise=0.0)
    for c, rng in zip(counts, rngs):
        assert choose(c, 0.0, rng) in (3 * 8 + 1, 3 * 8 + 5)


def selfplay(out: Path, *args: str, pythonpath: str = str(PROJECT_ROOT)) -> dict[str, np.ndarray]:
    done = subprocess.run([sys.executable, "-m", "workload.selfplay", "--board", "hex8", "--num-games", "5",
                           "--sims", "6", "--seed", "9", "--out", str(out), *args],
                          capture_output=True, text=True, timeout=120, check=True, env={**os.environ, "PYTHONPATH": pythonpath})
    result = json.loads(done.stdout.strip().splitlines()[-1])["result"]
    progress = [json.loads(line)["progress"] for line in done.stdout.splitlines() if '"progress"' in line]
    assert progress == sorted(progress) and progress[-1] == 1.0
    with np.load(result["path"]) as data:
        return {k: data[k] for k in data.files}


@pytest.mark.timeout(300)
def test_the_selfplay_program_writes_the_same_samples_batched_or_not(tmp_path: Path) -> None:
    # Search without a net (a config's first games) needs no torch: these three run where it cannot be imported.
    no_torch = pythonpath_without(tmp_path / "site", "torch")
    batched = selfplay(tmp_path / "a", "--parallel", "5", pythonpath=no_torch)
    one_by_one = selfplay(tmp_path / "b", "--parallel", "1", pythonpath=no_torch)
    uneven = selfplay(tmp_path / "c", "--parallel", "2", pythonpath=no_torch)  # batches of 2, 2 and 1
    for key in ("planes", "policies", "values"):
        assert np.array_equal(batched[key], one_by_one[key]) and np.array_equal(batched[key], uneven[key])
    save_checkpoint(PolicyValueNet(board_spec("hex8")), tmp_path / "net.pth", {})
    with_net = selfplay(tmp_path / "d", "--parallel", "5", "--model", str(tmp_path / "net.pth"))
    assert np.allclose(with_net["policies"].sum(1), 1.0) and len(with_net["values"]) >= 5 * 7
