"""The distributor's pure core and file installs: steps, uploads, repairs, completion, retention, backoff."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from cluster.distribution.failures import FAILURES, corrupt_reports
from cluster.distribution.retention import KeptVersion, current_models, promotion_history, store_deletions, versions_to_delete
from config.nodedirs import best_link_path, canonical_path, version_path
from eventbus.events import (
    ArtifactRef,
    Event,
    HostOffline,
    HostOnline,
    ModelDistributed,
    ModelDistributionFailed,
    ModelPromoted,
    TrainingComplete,
)
from eventbus.objects import StoredObject
from projections import cluster, models
from projections.base import fold_events
from projections.models import checkpoint_of
from servicekit.filehash import copy_hashed, sha256_file
from servicekit.retry import RetryTable, delay_s
from services.distributor import install
from services.distributor.install import LocalModels
from services.distributor.plan import Activate, Announce, CopyLocal, Download, is_alive, next_steps, repairer, uploads_due
from services.leader.completion import completions, needs_models
from tests.terms import in_term

T0 = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
SHA = {name: f"{i:064x}" for i, name in enumerate(["m1", "m2", "m3", "m4", "m5"], start=1)}


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def trained(model_id: str, node: str, minutes: float = 0, board: str = "hex8") -> TrainingComplete:
    ref = ArtifactRef(path=f"/ckpt/{model_id}.pth", size_bytes=100, sha256=SHA[model_id], node=node)
    return TrainingComplete(model_id=model_id, work_id=f"w-{model_id}", node=node, board_type=board, num_players=2,
                            checkpoint=ref, ts=at(minutes))


def promoted(model_id: str, minutes: float = 1, board: str = "hex8", generation: int = 1) -> ModelPromoted:
    return ModelPromoted(model_id=model_id, board_type=board, num_players=2, sha256=SHA[model_id], size_bytes=100,
                         generation=generation, ts=at(minutes))


def distributed(model_id: str, node: str) -> ModelDistributed:
    return ModelDistributed(model_id=model_id, node=node, sha256=SHA[model_id], ts=at(2))


def fold(projection, events: list[Event]):  # type: ignore[no-untyped-def]
    return fold_events(projection, list(enumerate(in_term(events), start=1)))


def online(node: str, roles: tuple[str, ...] = ()) -> HostOnline:
    return HostOnline(node=node, roles=list(roles), ts=T0)


# ---- steps ---------------------------------------------------------------------------


def test_a_promoted_model_is_downloaded_by_a_node_that_did_not_train_it() -> None:
    state = fold(models.PROJECTION, [trained("m1", "n1"), promoted("m1")])
    steps = next_steps(state, LocalModels(), "n2")
    assert [type(s) for s in steps] == [Download] and steps[0].model.model_id == "m1"


def test_the_trainer_copies_its_own_checkpoint() -> None:
    state = fold(models.PROJECTION, [trained("m1", "n1"), promoted("m1")])
    [step] = next_steps(state, LocalModels(), "n1")
    assert isinstance(step, CopyLocal) and step.checkpoint.path == "/ckpt/m1.pth"
    # ... unless that copy proved unusable: then it downloads like any other node
    [step] = next_steps(state, LocalModels(), "n1", no_local={"m1"})
    assert isinstance(step, Download)


def test_an_installed_version_is_activated_then_announced_once() -> None:
    state = fold(models.PROJECTION, [promoted("m1")])
    installed = LocalModels(versions={"hex8_2p": {"m1": 100}})
    [step] = next_steps(state, installed, "n2")
    assert isinstance(step, Activate)
    active = LocalModels(versions={"hex8_2p": {"m1": 100}}, active={"hex8_2p": "m1"})
    assert [type(s) for s in next_steps(state, active, "n2")] == [Announce]
    announced = fold(models.PROJECTION, [promoted("m1"), distributed("m1", "n2")])
    assert next_steps(announced, active, "n2") == []


def test_a_version_of_the_wrong_size_is_fetched_again() -> None:
    state = fold(models.PROJECTION, [promoted("m1")])
    truncated = LocalModels(versions={"hex8_2p": {"m1": 99}}, active={"hex8_2p": "m1"})
    assert [type(s) for s in next_steps(state, truncated, "n2")] == [Download]


def test_only_the_newest_promotion_of_each_config_is_wanted() -> None:
    state = fold(models.PROJECTION, [promoted("m1"), promoted("m2", 2), promoted("m3", 3, board="square8")])
    steps = next_steps(state, LocalModels(), "n9")
    assert sorted(s.model.model_id for s in steps) == ["m2", "m3"]


def test_uploads_are_the_nodes_own_promoted_and_recent_checkpoints() -> None:
    events: list[Event] = [trained("m1", "n1", 0), trained("m2", "n1", 600), trained("m3", "n2", 600), promoted("m1")]
    due = uploads_due(fold(models.PROJECTION, events), "n1", since=at(300))
    assert [model_id for model_id, _ in due] == ["m1", "m2"]  # m1 promoted (old), m2 recent; m3 is n2's


def test_the_repairer_is_the_trainer_if_alive_else_the_first_alive_holder() -> None:
    events: list[Event] = [trained("m1", "n3"), promoted("m1"), distributed("m1", "n2"), distributed("m1", "n1"),
                           online("n1"), online("n2"), online("n3")]
    state = fold(models.PROJECTION, events)
    nodes = fold(cluster.PROJECTION, events)
    assert repairer(state.models["m1"], is_alive(nodes)) == "n3"
    nodes = fold(cluster.PROJECTION, [*events, HostOffline(node="n3", reason="silent", ts=at(3))])
    assert repairer(state.models["m1"], is_alive(nodes)) == "n1"


def test_failures_stay_open_until_the_node_installs() -> None:
    failed = ModelDistributionFailed(model_id="m1", node="n2", kind="corrupt", reason="x", object_nuid="v1")
    state = fold(FAILURES, [failed])
    assert corrupt_reports(state) == {"m1": {"v1"}}
    assert corrupt_reports(fold(FAILURES, [failed, distributed("m1", "n2")])) == {}


# ---- completion ----------------------------------------------------------------------


def test_distribution_completes_when_every_alive_node_needing_models_has_it() -> None:
    base: list[Event] = [online("n1"), online("n2"), online("c0", ("coordinator",)), promoted("m1")]
    one = fold(models.PROJECTION, [*base, distributed("m1", "n1")])
    nodes = fold(cluster.PROJECTION, base)
    assert completions(one, nodes, at(5)) == []
    both = fold(models.PROJECTION, [*base, distributed("m1", "n1"), distributed("m1", "n2")])
    [done] = completions(both, nodes, at(5))
    assert done.model_id == "m1" and done.nodes == ["n1", "n2"] and done.seconds == 240.0
    gone = fold(cluster.PROJECTION, [*base, HostOffline(node="n2", reason="silent", ts=at(3))])
    assert [e.model_id for e in completions(one, gone, at(5))] == ["m1"]  # an offline node is not waited for


def test_coordinators_need_no_models_and_unknown_roles_do() -> None:
    state = fold(cluster.PROJECTION, [online("c", ("coordinator",)), online("l"), online("g", ("selfplay",))])
    assert [needs_models(state.nodes[n]) for n in ("c", "l", "g")] == [False, True, True]


# ---- retention -----------------------------------------------------------------------


def test_a_node_keeps_the_current_model_and_the_last_n_promoted_before_it() -> None:
    state = fold(models.PROJECTION, [promoted(m, i) for i, m in enumerate(["m1", "m2", "m3", "m4"], start=1)])
    kept = [KeptVersion(config="hex8_2p", stem=m) for m in ["m1", "m2", "m3", "m4", "stranger"]]
    doomed = versions_to_delete(kept, promotion_history(state), current_models(state), keep_last=1)
    assert [v.stem for v in doomed] == ["m1", "m2"]  # m4 current, m3 the last before it; a stranger is left alone


def test_the_store_keeps_retained_models_and_young_candidates() -> None:
    events: list[Event] = [promoted("m1", 1), promoted("m2", 2), trained("m3", "n1", 0), trained("m4", "n1", 60 * 80)]
    state = fold(models.PROJECTION, events)
    now = at(60 * 90)
    objects = [StoredObject(bucket="b", name=n, size=1, sha256="", nuid=n) for n in ("m1", "m2", "m3", "m4")]
    unknown_old = StoredObject(bucket="b", name="x", size=1, sha256="", nuid="x", mtime=at(0).isoformat())
    unknown_new = StoredObject(bucket="b", name="y", size=1, sha256="", nuid="y", mtime=now.isoformat())
    doomed = store_deletions([*objects, unknown_old, unknown_new], state, now, keep_last=0, keep_candidates_h=72)
    assert sorted(o.name for o in doomed) == ["m1", "m3", "x"]  # m2 current, m4 a young candidate, y new


# ---- backoff -------------------------------------------------------------------------


@given(st.integers(min_value=1, max_value=200), st.floats(min_value=0.01, max_value=10), st.floats(min_value=10, max_value=600))
def test_backoff_doubles_and_is_capped(failures: int, initial: float, cap: float) -> None:
    assert delay_s(failures, initial, cap) <= cap
    assert delay_s(failures + 1, initial, cap) >= delay_s(failures, initial, cap)


def test_waiting_retries_at_the_initial_pace_and_future_due_times_only() -> None:
    table = RetryTable(1.0, 60.0)
    table.failed("a", 100.0)
    table.failed("a", 101.0)
    assert table.failures("a") == 2 and not table.due("a", 102.0) and table.due("a", 103.0)
    table.failed("b", 100.0, grow=False)
    table.failed("b", 100.0, grow=False)
    assert table.failures("b") == 1 and table.due("b", 101.0)
    assert table.next_due(500.0) is None  # passed due times never make a waiter spin


# ---- installing files ----------------------------------------------------------------


def test_activation_installs_under_the_seeds_names_atomically(tmp_path: Path) -> None:
    root = tmp_path / "models"
    version = version_path(root, "hex8", 2, "m1")
    version.parent.mkdir(parents=True)
    version.write_bytes(b"one")
    canonical = install.activate(root, "hex8", 2, version)
    link = best_link_path(root, "hex8", 2)
    assert canonical == canonical_path(root, "hex8", 2) == root / "canonical_hex8_2p.pth"
    assert os.readlink(link) == "canonical_hex8_2p.pth" and link.read_bytes() == b"one"
    assert install.scan(root) == LocalModels(versions={"hex8_2p": {"m1": 3}}, active={"hex8_2p": "m1"})
    with link.open("rb") as reader:  # a job that opened the old model keeps reading it
        second = version_path(root, "hex8", 2, "m2")
        second.write_bytes(b"two!")
        install.activate(root, "hex8", 2, second)
        assert reader.read() == b"one"
    assert link.read_bytes() == b"two!" and install.scan(root).active == {"hex8_2p": "m2"}
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]


def test_copy_hashed_reports_size_and_digest(tmp_path: Path) -> None:
    src = tmp_path / "a"
    src.write_bytes(b"x" * 3_000_000)
    size, sha = copy_hashed(src, tmp_path / "b")
    assert (size, sha) == sha256_file(tmp_path / "b") and size == 3_000_000


def test_the_models_fold_keeps_checkpoint_paths_with_their_node() -> None:
    event = msgspec.structs.replace(trained("m1", "n1"), checkpoint=ArtifactRef(path="/p", size_bytes=1, sha256="s"))
    ref = checkpoint_of(fold(models.PROJECTION, [event]).models["m1"])
    assert ref is not None and (ref.node, ref.path) == ("n1", "/p")
