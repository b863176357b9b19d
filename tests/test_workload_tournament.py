"""Tournament work: a round robin among nets and the anchors, rated on one scale, orders nets of known strength."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from eventbus.events import ModelRated
from services.worker.jobs import JobOutcome
from services.worker.protocol import AttemptKey
from services.worker.results import outcome_events
from tests import background_runs
from tests.procs.known_strength_tournament import ITEM, TournamentReport
from workload.tournament import parse_player


@pytest.mark.timeout(400)
def test_tournament_ratings_order_three_nets_of_known_strength(request: pytest.FixtureRequest) -> None:
    # A fresh net, a zeroed one (exactly the pure search) and one trained on the pure search's games, in a round robin
    # with the anchors as the tournament template runs it: tests/procs/known_strength_tournament.py, a background run
    # (tests/background_runs.py) whose 20 s of one core pass beside the tests before this one, which judges its result.
    code, output = background_runs.result(request.config, "tournament", timeout=390)
    assert code == 0, f"the tournament run exited {code}:\n{output[-6000:]}"
    result = msgspec.json.decode(output.splitlines()[-1], type=TournamentReport).result
    assert result["players"] == ["fresh", "hex8_2p-search16", "random", "trained", "zero"]
    assert len(result["pairings"]) == 10 and all(p["wins"] + p["losses"] + p["draws"] == 8 for p in result["pairings"])
    events = outcome_events(ITEM, AttemptKey("tour-1", 1), "n1", JobOutcome(exit_code=0, stop_reason=None,
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
