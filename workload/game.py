"""Four-in-a-row on two boards: `square8` (8x8 squares, 4 line directions) and `hex8` (8x8 rhombus of hexagons, 3).

Two players alternate placing a stone on an empty cell; the first with four in a line wins;
a full board is a draw. Pure functions over immutable-by-convention numpy states.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EMPTY = 0


@dataclass(frozen=True)
class BoardSpec:
    """Geometry of one board type."""

    name: str
    rows: int
    cols: int
    directions: tuple[tuple[int, int], ...]
    k: int = 4

    @property
    def cells(self) -> int:
        """Number of cells, which is also the size of the policy."""
        return self.rows * self.cols


BOARDS: dict[str, BoardSpec] = {
    "square8": BoardSpec("square8", 8, 8, ((0, 1), (1, 0), (1, 1), (1, -1))),
    # Axial coordinates on a rhombus: the hexagon's three axes.
    "hex8": BoardSpec("hex8", 8, 8, ((0, 1), (1, 0), (1, -1))),
}

SUPPORTED_PLAYERS = (2,)


class UnsupportedConfig(ValueError):
    """The reference game has no such board type or player count."""


def board_spec(board_type: str, num_players: int = 2) -> BoardSpec:
    """The spec of a board type; raises UnsupportedConfig with the choices."""
    if board_type not in BOARDS:
        raise UnsupportedConfig(f"unknown board type {board_type!r}: choose one of {', '.join(BOARDS)}")
    if num_players not in SUPPORTED_PLAYERS:
        raise UnsupportedConfig(f"the reference game is for 2 players, not {num_players}")
    return BOARDS[board_type]


@dataclass(frozen=True)
class GameState:
    """A position: stones (0 empty, 1 first player, 2 second), who moves, and the result once over."""

    spec: BoardSpec
    board: np.ndarray  # int8, shape (rows, cols)
    to_move: int = 1
    moves: int = 0
    winner: int | None = None  # 1 or 2; 0 for a draw; None while playing

    @property
    def over(self) -> bool:
        """Whether the game has ended."""
        return self.winner is not None


def new_game(spec: BoardSpec) -> GameState:
    """The empty board, first player to move."""
    return GameState(spec, np.zeros((spec.rows, spec.cols), dtype=np.int8))


def legal_moves(state: GameState) -> np.ndarray:
    """Flat indices of the empty cells (none once the game is over)."""
    if state.over:
        return np.empty(0, dtype=np.int64)
    return np.flatnonzero(state.board.ravel() == EMPTY)


def play(state: GameState, move: int) -> GameState:
    """The position after the player to move places a stone on `move`; raises ValueError if illegal."""
    if state.over:
        raise ValueError("game is over")
    row, col = divmod(int(move), state.spec.cols)
    if not (0 <= row < state.spec.rows) or state.board[row, col] != EMPTY:
        raise ValueError(f"illegal move {move}")
    board = state.board.copy()
    board[row, col] = state.to_move
    moves = state.moves + 1
    winner: int | None = None
    if _makes_line(board, state.spec, row, col):
        winner = state.to_move
    elif moves == state.spec.cells:
        winner = 0
    return GameState(state.spec, board, 3 - state.to_move, moves, winner)


def _makes_line(board: np.ndarray, spec: BoardSpec, row: int, col: int) -> bool:
    # Only lines through the new stone can have been completed by it.
    player = board[row, col]
    for dr, dc in spec.directions:
        count = 1
        for sign in (1, -1):
            r, c = row + sign * dr, col + sign * dc
            while 0 <= r < spec.rows and 0 <= c < spec.cols and board[r, c] == player:
                count += 1
                r, c = r + sign * dr, c + sign * dc
        if count >= spec.k:
            return True
    return False


def encode(state: GameState) -> np.ndarray:
    """Network input from the mover's point of view: own stones, opponent stones, empty cells."""
    own = state.board == state.to_move
    other = state.board == 3 - state.to_move
    empty = state.board == EMPTY
    return np.stack([own, other, empty]).astype(np.float32)
