"""A training's batches travel as WORK_ADDED's typed `inputs`: a config with many long-named batches still gets
its training item, and every reader (pipeline, worker command, TRAINING_STARTED/COMPLETE) takes them; items
that name their batches in params, as before `inputs` existed, still work (pure, no server)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from config.nodedirs import received_path
from config.sections.templates import DEFAULT_TEMPLATES
from eventbus.events import INPUT_PATH_MAX, ArtifactRef, BatchInput, SelfplayComplete, WorkAdded, decode, encode
from servicekit.templates import WorkerValues, expand, template_values
from services.leader.pipeline import MAX_TRAINING_BATCHES, decide
from services.worker.protocol import AttemptKey
from services.worker.results import TrainingResult, domain_events, training_started
from services.worker.runner import missing_batches, with_local_batches
from tests.test_scheduler_pipeline import SETTINGS, fold

WORKER = WorkerValues(python="py", output_dir="/out", model_path="none", best_model_id="none", work_id="t", attempt=1,
                      node="trainer")


def long_path(n: int) -> str:
    """A 150-character batch path, as a fleet's nodes report them."""
    stem = f"/var/lib/rr/data/worker/selfplay-hex8_2p-generation-7/jobs/sp-{n:04d}-a1/out/batch-{n:04d}"
    return (stem + "-" + "x" * 150)[: 150 - len(".npz")] + ".npz"


def long_batch(n: int) -> SelfplayComplete:
    return SelfplayComplete(
        batch_id=f"sp-{n:04d}-a1", work_id=f"sp-{n:04d}", node="n1", board_type="hex8", num_players=2, num_games=10,
        num_samples=600, data=ArtifactRef(path=long_path(n), size_bytes=100, sha256=f"s{n}"),
    )


def training_of(view_events: list[SelfplayComplete]) -> WorkAdded:
    [item] = decide(fold(view_events), SETTINGS)
    assert isinstance(item, WorkAdded) and item.work_type == "training"
    return item


def test_a_training_over_sixty_long_named_batches_is_a_valid_event_naming_the_newest_fifty() -> None:
    item = training_of([long_batch(n) for n in range(1, 61)])
    wire = decode(encode(item))  # the joined params of these paths (~7,500 characters) were refused here
    assert isinstance(wire, WorkAdded) and wire == item
    newest = range(61 - MAX_TRAINING_BATCHES, 61)
    assert wire.inputs == [BatchInput(batch_id=f"sp-{n:04d}-a1", path=long_path(n)) for n in newest]
    assert all(len(i.path) == 150 for i in wire.inputs)
    assert set(wire.params) == {"model_id"}, "no joined data/input_batches params any more"


def test_the_folded_training_counts_its_batches_as_read_so_no_second_one_is_added() -> None:
    batches = [long_batch(n) for n in range(1, 61)]
    item = training_of(batches)
    view = fold([*batches, item])
    assert view.trained_through["hex8_2p"] == view.batch_seq["sp-0060-a1"]
    assert decide(view, SETTINGS) == []


def test_the_worker_command_and_its_training_facts_read_the_typed_inputs() -> None:
    item = decode(encode(training_of([long_batch(n) for n in range(1, 61)])))
    assert isinstance(item, WorkAdded)
    argv = expand("training", DEFAULT_TEMPLATES["training"], template_values(item, WORKER))
    data = argv[argv.index("--data") + 1: argv.index("--init")]
    assert data == [long_path(n) for n in range(11, 61)]
    ids = [f"sp-{n:04d}-a1" for n in range(11, 61)]
    started = training_started(item, "trainer")
    assert (started.work_id, started.input_batches, started.parent_model) == (item.work_id, ids, None)
    result = TrainingResult(board_type="hex8", num_players=2, path="/out/candidate.pth", sha256="ab" * 32)
    [complete] = domain_events(item, AttemptKey(work_id=item.work_id, attempt=1), "trainer", result, [])
    assert complete.input_batches == ids  # type: ignore[attr-defined]


@pytest.mark.parametrize("shape", ["inputs", "params (before inputs)"])
def test_the_worker_reads_the_sync_copy_of_a_batch_written_elsewhere_and_names_the_missing_ones(tmp_path: Path,
                                                                                                shape: str) -> None:
    here = tmp_path / "b-local.npz"
    here.write_bytes(b"local")
    copied = received_path(tmp_path / "sync", "hex8", 2, "b-remote", "/elsewhere/b-remote.npz")
    copied.parent.mkdir(parents=True)
    copied.write_bytes(b"synced")
    named = {"b-local": str(here), "b-remote": "/elsewhere/b-remote.npz", "b-lost": "/elsewhere/b-lost.npz"}
    if shape == "inputs":
        item = WorkAdded(work_id="t-1", work_type="training", board_type="hex8", num_players=2,
                         inputs=[BatchInput(batch_id=b, path=p) for b, p in named.items()])
    else:
        item = WorkAdded(work_id="t-1", work_type="training", board_type="hex8", num_players=2,
                         params={"data": ",".join(named.values()), "input_batches": ",".join(named)})
    resolved = with_local_batches(item, tmp_path / "sync")
    # Local files stay, synced copies replace the origin's path, a batch found nowhere keeps its path.
    assert [i.path for i in resolved.inputs] == [str(here), str(copied), "/elsewhere/b-lost.npz"]
    assert resolved.input_batch_ids() == list(named)
    assert missing_batches(resolved) == ["/elsewhere/b-lost.npz"]
    assert template_values(resolved, WORKER)["data"] == f"{here},{copied},/elsewhere/b-lost.npz"


def test_an_item_naming_its_batches_in_params_as_before_still_trains_on_them(tmp_path: Path) -> None:
    old = WorkAdded(work_id="train-hex8_2p-1-s2", work_type="training", board_type="hex8", num_players=2,
                    params={"data": "/data/b1.npz,/data/b2.npz", "input_batches": "b1,b2", "model_id": "m",
                            "parent_model": "m0"})
    old = decode(encode(old))  # type: ignore[assignment]
    assert isinstance(old, WorkAdded) and old.inputs == []
    assert old.training_inputs() == [BatchInput(batch_id="b1", path="/data/b1.npz"),
                                     BatchInput(batch_id="b2", path="/data/b2.npz")]
    argv = expand("training", DEFAULT_TEMPLATES["training"], template_values(old, WORKER))
    assert argv[argv.index("--data") + 1: argv.index("--init")] == ["/data/b1.npz", "/data/b2.npz"]
    started = training_started(old, "trainer")
    assert (started.input_batches, started.parent_model) == (["b1", "b2"], "m0")
    batches = [long_batch(1), long_batch(2)]
    legacy = WorkAdded(work_id="t-old", work_type="training", board_type="hex8", num_players=2,
                       params={"data": f"{long_path(1)},{long_path(2)}", "input_batches": "sp-0001-a1,sp-0002-a1"})
    view = fold([*batches, legacy])
    assert view.trained_through["hex8_2p"] == view.batch_seq["sp-0002-a1"]


def test_an_operators_item_with_paths_alone_keeps_them_and_looks_up_no_copies(tmp_path: Path) -> None:
    item = WorkAdded(work_id="w-1", work_type="training", board_type="hex8", num_players=2,
                     params={"data": "/elsewhere/a.npz,/elsewhere/b.npz"})
    assert [(i.batch_id, i.path) for i in item.training_inputs()] == [("", "/elsewhere/a.npz"), ("", "/elsewhere/b.npz")]
    assert item.input_batch_ids() == []
    assert with_local_batches(item, tmp_path / "sync") is item
    assert template_values(item, WORKER)["data"] == "/elsewhere/a.npz,/elsewhere/b.npz"


def test_a_batch_whose_path_no_training_input_may_name_is_an_anomaly_and_the_others_still_train() -> None:
    too_long = msgspec.structs.replace(long_batch(3), data=ArtifactRef(path="/d/" + "x" * INPUT_PATH_MAX, size_bytes=1, sha256="s"))
    view = fold([long_batch(1), long_batch(2), too_long])
    assert "sp-0003-a1" not in view.batch_seq
    [anomaly] = view.anomalies
    assert anomaly.type == "SELFPLAY_COMPLETE" and "shorten worker.data_dir" in anomaly.reason
    item = training_of([long_batch(1), long_batch(2), too_long])
    assert decode(encode(item)) == item and item.input_batch_ids() == ["sp-0001-a1", "sp-0002-a1"]
