"""Many selfplay games at once: their searches advance in lockstep and every leaf they reach goes through the net in one batch.

The search is workload/mcts.py's PUCT, move for move: each game has its own random
generator (seeded from the job's seed and the game's index), so a game is the same whether it is
played alone or among many; only the net's batch size changes, and with it nothing but float
rounding. The net's fixed cost per call (~0.4 ms on a CPU core) is paid once per batch instead of
once per leaf, and each game remembers the net's answers for the positions it has met (the next
move's search revisits most of the previous one's subtree), which changes no answer, only its cost.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from workload.game import EMPTY, GameState, board_spec, encode, legal_moves, new_game, play
from workload.mcts import choose

# planes (B, 3, rows, cols) -> (priors (B, cells), values (B,)), the value for the player to move
BatchEvaluateFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
Sample = tuple[list[np.ndarray], list[np.ndarray], list[float]]  # planes, search policies, outcomes per position
Cache = dict[bytes, tuple[np.ndarray, float]]  # position -> the net's (priors over cells, value), per game


def uniform_batch(planes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """No network: equal priors and a neutral value for every position (search alone)."""
    return np.ones((len(planes), planes.shape[2] * planes.shape[3]), dtype=np.float32), np.zeros(len(planes), np.float32)


def game_rngs(seed: int | None, games: int) -> list[np.random.Generator]:
    """One generator per game, from the job's seed and the game's index (fresh entropy without a seed)."""
    root = np.random.SeedSequence(seed)
    return [np.random.default_rng(s) for s in root.spawn(games)]


class Node:
    """mcts.Node's statistics, plus what the lockstep search keeps to select quickly: c_puct * priors and the visit total."""

    __slots__ = ("state", "moves", "priors", "scaled", "visits", "values", "children", "terminal_value", "total")

    def __init__(self, state: GameState, moves: np.ndarray | None = None) -> None:
        self.state = state
        self.moves = legal_moves(state) if moves is None or state.over else moves
        self.priors = self.scaled = np.zeros(len(self.moves), dtype=np.float32)
        self.visits = np.zeros(len(self.moves), dtype=np.float32)
        self.values = np.zeros(len(self.moves), dtype=np.float32)
        self.children: dict[int, Node] = {}
        self.terminal_value: float | None = None if not state.over else (0.0 if state.winner == 0 else 1.0)
        self.total = 0


class _Game:
    """One game in progress and the samples it has produced."""

    def __init__(self, state: GameState, rng: np.random.Generator) -> None:
        self.state = state
        self.rng = rng
        self.planes: list[np.ndarray] = []
        self.policies: list[np.ndarray] = []
        self.movers: list[int] = []
        self.cache: Cache = {}

    def sample(self) -> Sample:
        winner = self.state.winner
        values = [0.0 if winner == 0 else (1.0 if m == winner else -1.0) for m in self.movers]
        return self.planes, self.policies, values


def encode_many(states: list[GameState]) -> np.ndarray:
    """game.encode of each state, written straight into one batch."""
    boards = np.stack([s.board for s in states])
    movers = np.array([s.to_move for s in states], dtype=np.int8)[:, None, None]
    out = np.empty((len(states), 3, *boards.shape[1:]), dtype=np.float32)
    out[:, 0] = boards == movers
    out[:, 1] = boards == 3 - movers
    out[:, 2] = boards == EMPTY
    return out


def _expand_all(nodes: list[Node], caches: list[Cache], evaluate: BatchEvaluateFn, c_puct: float) -> list[float]:
    """Set the priors of `nodes` (node k of the game whose cache is caches[k]) from the net, the positions
    their games have not met in one batch; returns their values (for the player to move)."""
    keys = [n.state.board.tobytes() + bytes((n.state.to_move,)) for n in nodes]
    missing = {key: n for key, n, cache in zip(keys, nodes, caches) if key not in cache}
    if missing:
        priors, values = evaluate(encode_many([n.state for n in missing.values()]))
        fresh = {key: (p, float(v)) for key, p, v in zip(missing, priors, values)}
        for key, cache in zip(keys, caches):
            if key in fresh:
                cache[key] = fresh[key]
    out = []
    for node, key, cache in zip(nodes, keys, caches):
        p_all, value = cache[key]
        _set_priors(node, p_all[node.moves], c_puct)
        out.append(value)
    return out


def _set_priors(node: Node, p: np.ndarray, c_puct: float) -> None:
    total = p.sum()
    node.priors = p / total if total > 0 else np.full(len(p), 1.0 / max(1, len(p)), dtype=np.float32)
    node.scaled = c_puct * node.priors


def _descend(root: Node) -> tuple[list[tuple[Node, int]], Node, float | None]:
    """Select down to a new or terminal child: (path, that child, its value if already known)."""
    node, path = root, []
    while True:
        # mcts._simulate's PUCT score; values are 0 where visits are, so q needs no mask
        visits = node.visits
        i = int(np.argmax(node.values / np.maximum(visits, 1) + node.scaled * (math.sqrt(node.total + 1) / (1 + visits))))
        path.append((node, i))
        move = int(node.moves[i])
        child = node.children.get(move)
        if child is None:  # its legal moves are its parent's but the one just played
            child = node.children[move] = Node(play(node.state, move), np.delete(node.moves, i))
            return path, child, child.terminal_value
        if child.terminal_value is not None:
            return path, child, child.terminal_value
        node = child


def _backup(path: list[tuple[Node, int]], value: float) -> None:
    # `value` is for the player who moved into the leaf; it flips sign at every level (negamax).
    for node, i in reversed(path):
        node.visits[i] += 1
        node.values[i] += value
        node.total += 1
        value = -value


def search_many(roots: list[Node], rngs: list[np.random.Generator], evaluate: BatchEvaluateFn, simulations: int,
                c_puct: float = 1.5, noise: float = 0.25, caches: list[Cache] | None = None) -> list[np.ndarray]:
    """Visit counts per cell for each root after `simulations` playouts each, leaves evaluated in batches."""
    caches = caches if caches is not None else [{} for _ in roots]
    _expand_all(roots, caches, evaluate, c_puct)
    for root, rng in zip(roots, rngs):
        if noise > 0 and len(root.moves):
            noisy = (1 - noise) * root.priors + noise * rng.dirichlet([0.3] * len(root.moves)).astype(np.float32)
            # numpy's stubs widen float * float32-array to float64; at run time it stays float32 (NEP 50).
            root.priors, root.scaled = noisy, c_puct * noisy  # type: ignore[assignment]
    for _ in range(simulations):
        waiting: list[tuple[list[tuple[Node, int]], Node, Cache]] = []
        for root, cache in zip(roots, caches):
            path, leaf, known = _descend(root)
            if known is not None:
                _backup(path, known)
            else:
                waiting.append((path, leaf, cache))
        if waiting:
            values = _expand_all([leaf for _, leaf, _ in waiting], [c for _, _, c in waiting], evaluate, c_puct)
            for (path, _, _), v in zip(waiting, values):
                _backup(path, -v)
    out = []
    for root in roots:
        counts = np.zeros(root.state.spec.cells, dtype=np.float32)
        counts[root.moves] = root.visits
        out.append(counts)
    return out


def play_games(board: str, evaluate: BatchEvaluateFn, sims: int, rngs: list[np.random.Generator],
               explore_moves: int = 8, on_done: Callable[[int], None] | None = None) -> list[Sample]:
    """Selfplay games, one per generator, all at once; the samples of each, in the generators' order."""
    spec = board_spec(board)
    games = [_Game(new_game(spec), rng) for rng in rngs]
    finished = 0
    while True:
        active = [g for g in games if not g.state.over]
        if not active:
            return [g.sample() for g in games]
        roots = [Node(g.state) for g in active]
        searched = search_many(roots, [g.rng for g in active], evaluate, sims, caches=[g.cache for g in active])
        for g, counts in zip(active, searched):
            g.planes.append(encode(g.state))
            g.policies.append(counts / counts.sum())
            g.movers.append(g.state.to_move)
            g.state = play(g.state, choose(counts, 1.0 if g.state.moves < explore_moves else 0.0, g.rng))
            if g.state.over:
                g.cache.clear()
                finished += 1
                if on_done is not None:
                    on_done(finished)
