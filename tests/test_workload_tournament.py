"""Tournament work: a round robin among nets and the anchors, rated on one scale, orders nets of known strength."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from config.sections.templates import DEFAULT_TEMPLATES
from eventbus.events import ModelRated, WorkAdded
from servicekit.templates import WorkerValues, expand, template_values
from services.worker.jobs import JobOutcome
from services.worker.protocol import AttemptKey
from services.worker.results import outcome_events
from workload.game import board_spec
from workload.net import PolicyValueNet, save_checkpoint
from workload.tournament import parse_player


def zero_net() -> PolicyValueNet:
    """Uniform priors and a value of 0 everywhere: exactly the pure search."""
    net = PolicyValueNet(board_spec("hex8"))
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
    return net


def run(module: str, *args: str) -> dict:  # type: ignore[type-arg]
    done = subprocess.run([sys.executable, "-m", f"workload.{module}", *args], capture_output=True, text=True,
                          timeout=280, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["result"]  # type: ignore[no-any-return]


@pytest.mark.timeout(400)
def test_tournament_ratings_order_three_nets_of_known_strength(tmp_path: Path) -> None:
    # Known order, each step shown by the gate and the loop: a fresh net's random value misleads
    # its search (below the pure search); a zeroed net is exactly the pure search; a net trained on
    # the pure search's own games adds to it. Seeded throughout, so the run repeats exactly.
    torch.manual_seed(7)
    save_checkpoint(PolicyValueNet(board_spec("hex8")), tmp_path / "fresh.pth", {})
    save_checkpoint(zero_net(), tmp_path / "zero.pth", {})
    played = run("selfplay", "--board", "hex8", "--num-games", "96", "--sims", "32", "--seed", "1", "--out", str(tmp_path))
    run("train", "--board", "hex8", "--data", played["path"], "--out", str(tmp_path / "trained.pth"), "--epochs", "8",
        "--seed", "1")
    models = ",".join(f"{name}={tmp_path / name}.pth" for name in ("fresh", "zero", "trained"))
    item = WorkAdded(work_id="tour-1", work_type="tournament", board_type="hex8", num_players=2, num_games=8,
                     params={"models": models, "sims": 16})
    values = WorkerValues(python=sys.executable, output_dir=str(tmp_path), model_path="none", best_model_id="none",
                          work_id=item.work_id, attempt=1, node="n1")
    argv = expand("tournament", DEFAULT_TEMPLATES["tournament"], template_values(item, values))
    done = subprocess.run([*argv, "--seed", "5"], capture_output=True, text=True, timeout=280, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])["result"]
    assert result["players"] == ["fresh", "hex8_2p-search16", "random", "trained", "zero"]
    assert len(result["pairings"]) == 10 and all(p["wins"] + p["losses"] + p["draws"] == 8 for p in result["pairings"])
    events = outcome_events(item, AttemptKey("tour-1", 1), "n1", JobOutcome(exit_code=0, stop_reason=None,
                                                                             stderr_tail="", result=result), [])
    rated = {e.model_id: e for e in events if isinstance(e, ModelRated)}
    assert set(rated) == {"fresh", "hex8_2p-search16", "trained", "zero"}  # random play is the scale's zero
    assert 0 < rated["fresh"].elo < rated["zero"].elo < rated["trained"].elo
    assert rated["hex8_2p-search16"].kind == "anchor" and rated["trained"].kind == "tournament"
    assert all(e.interval > 0 and e.evaluation_work_id == "tour-1" for e in rated.values())


def test_player_arguments_are_checked_naming_the_argument() -> None:
    assert parse_player("g3=/m/a.pth", 16) == ("g3", Path("/m/a.pth"), 16)
    assert parse_player("g3=/m/a.pth@64", 16) == ("g3", Path("/m/a.pth"), 64)
    for bad in ("/m/a.pth", "g3=", "g3=/m/a.pth@lots"):
        with pytest.raises(ValueError, match="--models"):
            parse_player(bad, 16)
