"""The real gate on real games: a freshly initialised net is never promoted, and is rated below the anchor.

The pipeline issues the evaluation item, the worker's default template runs the reference
workload's evaluation program, the worker turns its result line into events, and the pipeline
decides on them: every step as in production except the bus.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from config.sections.pipeline import PipelineSettings
from config.sections.templates import DEFAULT_TEMPLATES
from eventbus.events import ArtifactRef, Event, ModelPromoted, ModelRated, SelfplayComplete, TrainingComplete, WorkAdded, WorkAssigned, WorkCompleted
from servicekit.templates import WorkerValues, expand, template_values
from services.leader.pipeline import decide
from services.leader.pipeline_view import PipelineView, apply
from services.worker.jobs import JobOutcome
from services.worker.protocol import AttemptKey
from services.worker.results import outcome_events
from workload.game import board_spec
from workload.net import PolicyValueNet, save_checkpoint
from workload.ratings import anchor_id

SETTINGS = PipelineSettings(min_new_samples=100, evaluation_games=6)


def fold(events: list[Event], view: PipelineView) -> PipelineView:
    for event in events:
        view = apply(view, event, view.last_seq + 1)
    return view


def run_item(item: WorkAdded, tmp: Path) -> list[Event]:
    """What the worker would publish after running `item` with the default template."""
    values = WorkerValues(python=sys.executable, output_dir=str(tmp), model_path="none", best_model_id="none",
                          work_id=item.work_id, attempt=1, node="n1")
    argv = expand("evaluation", DEFAULT_TEMPLATES["evaluation"], template_values(item, values))
    done = subprocess.run([*argv, "--seed", "3"], capture_output=True, text=True, timeout=300, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])["result"]
    outcome = JobOutcome(exit_code=0, stop_reason=None, stderr_tail="", result=result)
    return outcome_events(item, AttemptKey(item.work_id, 1), "n1", outcome, [])


def assigned(item: WorkAdded) -> WorkAssigned:
    """Its attempt 1 on n1, as the leader would assign it: the work fold closes an item only through an attempt."""
    return WorkAssigned(work_id=item.work_id, node="n1", attempt=1, deadline=dt.datetime(2030, 1, 1, tzinfo=dt.UTC), epoch=1)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("board", ["hex8", "square8"])
def test_a_freshly_initialised_net_is_never_promoted(board: str, tmp_path: Path) -> None:
    torch.manual_seed(11)
    checkpoint = tmp_path / "fresh.pth"
    save_checkpoint(PolicyValueNet(board_spec(board)), checkpoint, {"generation": 1})
    view = fold([SelfplayComplete(batch_id="b1", work_id="sp1", node="n1", board_type=board, num_players=2, num_games=9,
                                  num_samples=200, data=ArtifactRef(path="/d/b1.npz", size_bytes=1, sha256="x"))],
                PipelineView())
    [training] = decide(view, SETTINGS)
    assert isinstance(training, WorkAdded)
    view = fold([training, assigned(training), TrainingComplete(
        model_id=str(training.params["model_id"]), work_id=training.work_id, node="n1", board_type=board, num_players=2,
        checkpoint=ArtifactRef(path=str(checkpoint), size_bytes=checkpoint.stat().st_size, sha256="f"))], view)
    [evaluation] = decide(view, SETTINGS)
    assert isinstance(evaluation, WorkAdded) and evaluation.work_type == "evaluation"
    played = run_item(evaluation, tmp_path)
    gate = next(e for e in played if getattr(e, "gate", False))
    assert gate.opponent == anchor_id(board, 2, SETTINGS.evaluation_sims)  # type: ignore[attr-defined]
    assert gate.verdict in ("H0", "max_games")  # type: ignore[attr-defined]
    view = fold([evaluation, assigned(evaluation), *played], view)
    decided = decide(view, SETTINGS)
    view = fold(decided, view)
    decided += decide(view, SETTINGS)  # ratings wait one round for the anchor's
    assert not [e for e in decided if isinstance(e, ModelPromoted)]
    assert all(isinstance(e, (ModelRated, WorkAdded)) for e in decided)
    assert isinstance(played[-1], WorkCompleted)
    ratings = {e.model_id: e for e in decided if isinstance(e, ModelRated)}
    anchor = ratings[anchor_id(board, 2, SETTINGS.evaluation_sims)]
    fresh = ratings[str(training.params["model_id"])]
    assert fresh.elo < anchor.elo  # the untrained net's value misleads the same search
