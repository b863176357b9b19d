"""Rules of the reference game, the search, and the selfplay -> train -> evaluate programs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from workload.game import BOARDS, UnsupportedConfig, board_spec, encode, legal_moves, new_game, play
from workload.mcts import choose, search, uniform_evaluator


def place(board: str, moves: list[tuple[int, int]]):
    """Play (row, col) moves alternately from an empty board."""
    spec = BOARDS[board]
    state = new_game(spec)
    for r, c in moves:
        state = play(state, r * spec.cols + c)
    return state


def test_empty_board_has_every_cell_legal() -> None:
    for spec in BOARDS.values():
        assert len(legal_moves(new_game(spec))) == spec.cells


def test_occupied_cell_is_illegal_and_turns_alternate() -> None:
    state = place("square8", [(0, 0)])
    assert state.to_move == 2
    assert 0 not in legal_moves(state)
    with pytest.raises(ValueError, match="illegal move 0"):
        play(state, 0)
    with pytest.raises(ValueError):
        play(state, 64)


@pytest.mark.parametrize("board", ["square8", "hex8"])
@pytest.mark.parametrize("line", [[(3, c) for c in range(2, 6)], [(r, 4) for r in range(1, 5)]])
def test_four_in_a_row_wins_on_both_boards(board: str, line: list[tuple[int, int]]) -> None:
    filler = [(7, 0), (7, 2), (7, 5)]  # the second player's scattered stones
    moves = [m for pair in zip(line, filler + [(0, 7)]) for m in pair][:7]
    state = place(board, moves)
    assert state.winner == 1 and state.over
    assert len(legal_moves(state)) == 0
    with pytest.raises(ValueError, match="over"):
        play(state, 63)


def test_square_diagonal_wins_but_not_on_hex() -> None:
    # (1,1)-direction is a line on squares and not one of the hexagon's axes.
    diagonal = [(0, 0), (1, 1), (2, 2), (3, 3)]
    filler = [(7, 0), (7, 3), (7, 6)]
    moves = [m for pair in zip(diagonal, filler + [(0, 7)]) for m in pair][:7]
    assert place("square8", moves).winner == 1
    assert place("hex8", moves).winner is None


def test_hex_antidiagonal_wins() -> None:
    anti = [(0, 4), (1, 3), (2, 2), (3, 1)]
    filler = [(7, 0), (7, 3), (7, 6)]
    moves = [m for pair in zip(anti, filler + [(0, 7)]) for m in pair][:7]
    assert place("hex8", moves).winner == 1


def test_three_in_a_row_is_not_a_win() -> None:
    state = place("square8", [(0, 0), (7, 7), (0, 1), (7, 6), (0, 2)])
    assert state.winner is None


def test_full_board_without_line_is_a_draw() -> None:
    # Columns in pairs: a column pattern that never lines up four of one colour on squares.
    spec = BOARDS["square8"]
    pattern = np.array([[1, 1, 2, 2, 1, 1, 2, 2], [2, 2, 1, 1, 2, 2, 1, 1]] * 4, dtype=np.int8)
    first = [(r, c) for r in range(8) for c in range(8) if pattern[r, c] == 1]
    second = [(r, c) for r in range(8) for c in range(8) if pattern[r, c] == 2]
    state = new_game(spec)
    for a, b in zip(first, second):
        state = play(state, a[0] * 8 + a[1])
        assert state.winner is None
        state = play(state, b[0] * 8 + b[1])
    assert state.winner == 0


def test_unknown_board_and_player_count_are_refused() -> None:
    with pytest.raises(UnsupportedConfig, match="square8"):
        board_spec("hexagonal")
    with pytest.raises(UnsupportedConfig, match="2 players"):
        board_spec("hex8", 3)


def test_encode_is_from_the_movers_view() -> None:
    state = place("hex8", [(0, 0)])
    planes = encode(state)
    assert planes.shape == (3, 8, 8)
    assert planes[1, 0, 0] == 1 and planes[0, 0, 0] == 0  # the opponent's stone, seen by player 2


def test_search_finds_the_winning_move() -> None:
    state = place("square8", [(3, 2), (7, 0), (3, 3), (7, 2), (3, 4), (7, 5)])
    counts = search(state, uniform_evaluator, 200)
    assert choose(counts, 0.0, np.random.default_rng(0)) in (3 * 8 + 1, 3 * 8 + 5)


def run(module: str, *args: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-m", f"workload.{module}", *args], capture_output=True,
                         text=True, timeout=120, check=True)
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert any("progress" in line for line in lines)
    return lines[-1]["result"]


def test_selfplay_train_evaluate_programs(tmp_path: Path) -> None:
    played = run("selfplay", "--board", "hex8", "--num-games", "6", "--sims", "8", "--out", str(tmp_path), "--seed", "1")
    assert played["num_games"] == 6 and Path(str(played["path"])).exists()
    data = np.load(str(played["path"]))
    assert data["planes"].shape[0] == played["num_samples"] == data["values"].shape[0]
    assert np.allclose(data["policies"].sum(1), 1.0)
    trained = run("train", "--board", "hex8", "--data", str(played["path"]), "--out", str(tmp_path / "c.pth"),
                  "--epochs", "1", "--seed", "1")
    assert trained["generation"] == 1 and len(str(trained["sha256"])) == 64
    rated = run("evaluate", "--board", "hex8", "--candidate", str(tmp_path / "c.pth"), "--best", str(tmp_path / "c.pth"),
                "--games", "4", "--sims", "4", "--seed", "1", "--max-games", "6")
    matches = {(m["player"], m["opponent"]): m for m in rated["matches"]}  # type: ignore[union-attr]
    assert set(matches) == {("candidate", "best"), ("candidate", "random"), ("candidate", "anchor")}
    gate = matches["candidate", "best"]
    assert gate["gate"] and gate["verdict"] in ("H0", "H1", "max_games") and gate["games"] <= 6  # against itself
    assert matches["candidate", "random"]["games"] == matches["candidate", "anchor"]["games"] == 4


def test_bad_board_fails_with_a_clear_line(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "workload.selfplay", "--board", "nope", "--num-games", "1",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "unknown board type 'nope'" in out.stderr
