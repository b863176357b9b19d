"""bench_learning's fold of a run into rated curves, and its PNG."""

from __future__ import annotations

import datetime as dt
import zlib
from pathlib import Path

import msgspec

from eventbus import events as ev
from ops.bench.bench_learning import chart, curves

T0 = dt.datetime(2026, 12, 6, 6, 0, tzinfo=dt.UTC)


def at(minutes: float, event: ev.Event) -> ev.Event:
    return msgspec.structs.replace(event, ts=T0 + dt.timedelta(minutes=minutes))


LOG = [
    at(1, ev.ModelRated(model_id="hex8_2p-search16", board_type="hex8", num_players=2, elo=600, interval=90, kind="anchor")),
    at(1, ev.ModelRated(model_id="h1", board_type="hex8", num_players=2, elo=750, interval=120)),
    at(1.5, ev.ModelPromoted(model_id="h1", board_type="hex8", num_players=2, sha256="a", generation=1)),
    at(3, ev.ModelRated(model_id="h2", board_type="hex8", num_players=2, elo=700, interval=130)),  # rejected
    at(5, ev.ModelRated(model_id="h3", board_type="hex8", num_players=2, elo=900, interval=150)),
    at(5.5, ev.ModelPromoted(model_id="h3", board_type="hex8", num_players=2, sha256="b", generation=2)),
    at(6, ev.ModelPromoted(model_id="s1", board_type="square8", num_players=2, sha256="c", generation=1)),  # unrated
]


def test_curves_list_promoted_generations_with_time_and_rating() -> None:
    result = curves(LOG, T0)
    hex8 = result["hex8_2p"]
    assert [(g["generation"], g["minutes"], g["elo"], g["interval"]) for g in hex8["generations"]] == [
        (1, 1.5, 750, 120), (2, 5.5, 900, 150)]
    assert hex8["anchor"]["elo"] == 600 and hex8["rated_not_promoted"] == 1
    assert result["square8_2p"]["generations"][0]["elo"] is None


def test_the_chart_is_a_png_with_a_drawn_line(tmp_path: Path) -> None:
    path = tmp_path / "elo.png"
    chart(curves(LOG, T0), path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    idat = data[data.index(b"IDAT") + 4:data.index(b"IEND") - 8]
    pixels = zlib.decompress(idat)
    assert len(pixels) == height * (1 + 3 * width)
    assert bytes((31, 119, 180)) in pixels  # the first config's colour was drawn


def test_the_best_models_are_checked_against_the_anchor_and_random_play(tmp_path: Path) -> None:
    from config.nodedirs import canonical_path
    from ops.bench.bench_learning import check_best
    from workload.game import board_spec
    from workload.net import PolicyValueNet, save_checkpoint

    assert check_best(tmp_path, "hex8_2p", 2, 4) is None  # nothing installed
    save_checkpoint(PolicyValueNet(board_spec("hex8")), canonical_path(tmp_path, "hex8", 2), {})
    found = check_best(tmp_path, "hex8_2p", 2, 4)
    assert found is not None and found["games"] == 2
    assert 0.0 <= found["vs_anchor_win_rate"] <= 1.0 and 0.0 <= found["policy_vs_random_win_rate"] <= 1.0
