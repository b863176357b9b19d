"""Evaluations on a node other than the trainer's: the candidate comes from the models bucket, verified by SHA-256."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from config.sections.pipeline import PipelineSettings
from eventbus.connection import Bus
from eventbus.events import ArtifactRef, TrainingComplete, WorkAdded
from eventbus.objects import BucketSpec, ensure_bucket, put_file
from services.leader.pipeline import evaluation_items
from services.leader.pipeline_view import PipelineView, apply
from services.worker.candidates import CandidateFetcher, CandidateRef, CandidateUnavailable, candidate_ref, with_candidate

BUCKET = "rr_models"
CONTENT = b"candidate weights " * 1000
SHA = hashlib.sha256(CONTENT).hexdigest()


def evaluation(**params: str | int) -> WorkAdded:
    return WorkAdded(work_id="eval-m1", work_type="evaluation", board_type="hex8", num_players=2, num_games=4,
                     params=params)


def test_evaluation_items_name_the_candidate_by_id_and_sha256() -> None:
    trained = TrainingComplete(model_id="hex8_2p-t1-s5", work_id="train-hex8_2p-1-s5", node="trainer", board_type="hex8",
                               num_players=2, checkpoint=ArtifactRef(path="/trainer/only/candidate.pth", sha256=SHA,
                                                                     size_bytes=len(CONTENT)))
    [item] = evaluation_items(apply(PipelineView(), trained, 7), PipelineSettings())
    assert isinstance(item, WorkAdded)
    assert candidate_ref(item) == CandidateRef(model_id="hex8_2p-t1-s5", sha256=SHA, size_bytes=len(CONTENT),
                                               origin_path="/trainer/only/candidate.pth")


def test_items_without_a_sha256_or_of_other_types_need_no_fetch() -> None:
    assert candidate_ref(evaluation(candidate="/x.pth", model_id="m1")) is None
    selfplay = WorkAdded(work_id="s", work_type="selfplay", board_type="hex8", num_players=2, params={"candidate_sha256": SHA, "model_id": "m"})
    assert candidate_ref(selfplay) is None
    assert with_candidate(evaluation(candidate="/x.pth"), Path("/here/m1.pth")).params["candidate"] == "/here/m1.pth"


@pytest.fixture
async def models_bucket(bus: Bus) -> Bus:
    await ensure_bucket(bus, BucketSpec(name=BUCKET))
    return bus


async def test_a_candidate_not_on_this_node_is_fetched_from_the_bucket_and_verified(models_bucket: Bus, tmp_path: Path) -> None:
    source = tmp_path / "trainer.pth"
    source.write_bytes(CONTENT)
    await put_file(models_bucket, BUCKET, "m1", source)
    fetcher = CandidateFetcher(models_bucket, BUCKET, tmp_path / "evaluator" / "candidates", wait_s=5)
    ref = CandidateRef(model_id="m1", sha256=SHA, size_bytes=len(CONTENT), origin_path=str(tmp_path / "elsewhere.pth"))
    local = await fetcher.local(ref)
    assert local == tmp_path / "evaluator" / "candidates" / "m1.pth"
    assert hashlib.sha256(local.read_bytes()).hexdigest() == SHA
    assert not list(local.parent.glob("*.part"))


async def test_the_trainers_own_file_is_used_when_it_is_on_this_node(models_bucket: Bus, tmp_path: Path) -> None:
    source = tmp_path / "candidate.pth"
    source.write_bytes(CONTENT)
    fetcher = CandidateFetcher(models_bucket, BUCKET, tmp_path / "cache", wait_s=0.1)
    assert await fetcher.local(CandidateRef(model_id="m1", sha256=SHA, origin_path=str(source))) == source


async def test_a_stored_object_with_another_sha256_fails_the_attempt_and_leaves_no_file(models_bucket: Bus, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.pth"
    wrong.write_bytes(b"not the candidate")
    await put_file(models_bucket, BUCKET, "m1", wrong)
    fetcher = CandidateFetcher(models_bucket, BUCKET, tmp_path / "cache", wait_s=5)
    with pytest.raises(CandidateUnavailable, match="m1.*sha256"):
        await fetcher.local(CandidateRef(model_id="m1", sha256=SHA))
    assert not list((tmp_path / "cache").iterdir())


async def test_an_upload_that_lags_the_evaluation_is_waited_for(models_bucket: Bus, tmp_path: Path) -> None:
    source = tmp_path / "trainer.pth"
    source.write_bytes(CONTENT)
    fetcher = CandidateFetcher(models_bucket, BUCKET, tmp_path / "cache", wait_s=30)
    fetching = asyncio.ensure_future(fetcher.local(CandidateRef(model_id="late", sha256=SHA)))
    await asyncio.sleep(1.0)  # the upload happens while the fetch is already waiting: the point of the test
    assert not fetching.done()
    await put_file(models_bucket, BUCKET, "late", source)
    local = await asyncio.wait_for(fetching, 30)
    assert local.read_bytes() == CONTENT


async def test_a_candidate_never_uploaded_fails_naming_the_bucket_and_the_setting(models_bucket: Bus, tmp_path: Path) -> None:
    fetcher = CandidateFetcher(models_bucket, BUCKET, tmp_path / "cache", wait_s=1.0)
    with pytest.raises(CandidateUnavailable, match=r"not in bucket rr_models.*worker\.candidate_wait_s"):
        await fetcher.local(CandidateRef(model_id="never", sha256=SHA))
