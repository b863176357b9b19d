"""PUCT Monte-Carlo tree search guided by a policy/value evaluator (AlphaZero's search, small)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from workload.game import GameState, encode, legal_moves, play

EvaluateFn = Callable[[np.ndarray], tuple[np.ndarray, float]]


class Node:
    """Statistics of one position: priors, visit counts and value sums per move."""

    __slots__ = ("state", "moves", "priors", "visits", "values", "children", "terminal_value")

    def __init__(self, state: GameState) -> None:
        self.state = state
        self.moves = legal_moves(state)
        self.priors = np.zeros(len(self.moves), dtype=np.float32)
        self.visits = np.zeros(len(self.moves), dtype=np.float32)
        self.values = np.zeros(len(self.moves), dtype=np.float32)
        self.children: dict[int, Node] = {}
        # Value for the player who just moved into this position, when the game is over.
        self.terminal_value: float | None = None if not state.over else (0.0 if state.winner == 0 else 1.0)


def uniform_evaluator(planes: np.ndarray) -> tuple[np.ndarray, float]:
    """No network: equal priors and a neutral value (search alone)."""
    return np.full(planes.shape[1] * planes.shape[2], 1.0, dtype=np.float32), 0.0


def search(root_state: GameState, evaluate: EvaluateFn, simulations: int, c_puct: float = 1.5,
           rng: np.random.Generator | None = None, noise: float = 0.0) -> np.ndarray:
    """Visit counts per cell after `simulations` playouts from `root_state`."""
    root = Node(root_state)
    _expand(root, evaluate)
    if noise > 0 and rng is not None and len(root.moves):
        root.priors = (1 - noise) * root.priors + noise * rng.dirichlet([0.3] * len(root.moves)).astype(np.float32)
    for _ in range(simulations):
        _simulate(root, evaluate, c_puct)
    counts = np.zeros(root_state.spec.cells, dtype=np.float32)
    counts[root.moves] = root.visits
    return counts


def _expand(node: Node, evaluate: EvaluateFn) -> float:
    priors, value = evaluate(encode(node.state))
    p = priors[node.moves]
    node.priors = p / p.sum() if p.sum() > 0 else np.full(len(p), 1.0 / max(1, len(p)), dtype=np.float32)
    return value


def _simulate(node: Node, evaluate: EvaluateFn, c_puct: float) -> float:
    """One playout; returns the value for the player who moved INTO `node` (negamax)."""
    if node.terminal_value is not None:
        return node.terminal_value
    total = node.visits.sum()
    q = np.where(node.visits > 0, node.values / np.maximum(node.visits, 1), 0.0)
    ucb = q + c_puct * node.priors * math.sqrt(total + 1) / (1 + node.visits)
    i = int(np.argmax(ucb))
    move = int(node.moves[i])
    child = node.children.get(move)
    if child is None:
        child = node.children[move] = Node(play(node.state, move))
        value = child.terminal_value if child.terminal_value is not None else -_expand(child, evaluate)
    else:
        value = _simulate(child, evaluate, c_puct)
    node.visits[i] += 1
    node.values[i] += value
    return -value


def choose(counts: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    """A move from visit counts: the most visited at temperature 0, else sampled."""
    if temperature <= 0:
        best = np.flatnonzero(counts == counts.max())
        return int(rng.choice(best))
    p = counts ** (1.0 / temperature)
    return int(rng.choice(len(p), p=p / p.sum()))
