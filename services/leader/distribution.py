"""The leader-only distribution loop: MODEL_DISTRIBUTION_COMPLETE decisions and pruning of the models bucket.

Run by the scheduler's leader as `distribution_loop(ctx, term)`; decisions go through
`term.publish`, so they carry the epoch and stop the moment the term may no longer act.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from cluster.distribution.failures import FAILURES
from cluster.distribution.retention import store_deletions
from cluster.leadership.term import NotLeader, Term
from config.sections.distribution import DistributionSettings
from eventbus.errors import BusError
from eventbus.events import utcnow
from eventbus.objectdelete import delete_object, delete_orphan_chunks
from eventbus.objects import list_objects
from eventbus.tasks import raise_if_cancelled
from projections import cluster, models, taint
from projections.base import Folder
from servicekit.livefold import LiveFold, aggregate_subjects, taint_subjects
from servicekit.runtime import ServiceContext
from servicekit.taintoffloop import tainted_off_loop
from services.leader.completion import completions
from services.leader.rollback import rollback_decisions

log = logging.getLogger(__name__)

# Chunks no stored version names are deleted once this old: an upload in progress (at most
# put_file's 600 s) has chunks and no metadata yet.
ORPHAN_GRACE_S = 3600.0
# What the catch-up reads, one consumer per filter (servicekit/livefold.py); the benchmarks read the same.
CATCHUP_SUBJECTS = (*aggregate_subjects("model", "host", "leader", "lease"), *taint_subjects())
ROLLBACK_FOLD_S = 10.0  # a rollback the loop published is folded back before it looks again


async def distribution_loop(ctx: ServiceContext, term: Term) -> None:
    """Decide completed distributions and prune the bucket until the term ends (or is cancelled)."""
    settings: DistributionSettings = ctx.config.distribution
    models_fold, cluster_fold, taint_fold = Folder(models.PROJECTION), Folder(cluster.PROJECTION), Folder(taint.PROJECTION)
    # The agents' own fold rides along only to be snapshotted here: nodes may not write snapshots.
    folders: list[Folder[Any]] = [models_fold, cluster_fold, taint_fold, Folder(FAILURES)]
    live = LiveFold(ctx.bus, folders, CATCHUP_SUBJECTS,
                    snapshots=ctx.config.snapshots, who="distribution loop", replicas=ctx.config.streams.replicas)
    await live.start()  # retried while the bus is away: one error must not end the term
    decided: set[str] = set()  # published by this term, perhaps not folded back yet
    next_gc = time.monotonic() + settings.store_gc_interval_s / 10  # soon after taking office, not at once
    async with asyncio.TaskGroup() as tasks:
        follower = tasks.create_task(live.follow())
        try:
            while True:
                await roll_back(term, live, models_fold.state, taint_fold.state)
                for event in completions(models_fold.state, cluster_fold.state, utcnow()):
                    if event.model_id not in decided:
                        await term.publish(event)
                        decided.add(event.model_id)
                        log.info("distribution of %s complete on %s", event.model_id, ",".join(event.nodes))
                if time.monotonic() >= next_gc:
                    await prune_store(ctx, models_fold.state, settings)
                    next_gc = time.monotonic() + settings.store_gc_interval_s
                raise_if_cancelled()  # a stop that the round's calls lost (Python 3.11's wait_for)
                await live.wait_changed(settings.complete_check_s)
        except NotLeader as exc:
            log.info("distribution loop: %s", exc)
        finally:
            follower.cancel()


async def roll_back(term: Term, live: LiveFold, state: models.ModelsState, marks: taint.TaintState) -> int:
    """Re-promote the newest untainted model of each config whose best is tainted; returns how many.

    Waits until its own decisions are folded back, so the next pass does not decide them again.
    """
    decisions = rollback_decisions(state, await tainted_off_loop(marks))
    last = 0
    for event in decisions:
        last = (await term.publish(event)).seq
        log.warning("rolled %s back to %s: %s", event.previous_model, event.model_id, event.reason)
    if last and not await live.wait_position(last, ROLLBACK_FOLD_S):
        log.warning("distribution loop: own rollback not folded back within %.0fs", ROLLBACK_FOLD_S)
    return len(decisions)


async def prune_store(ctx: ServiceContext, state: models.ModelsState, settings: DistributionSettings) -> int:
    """Delete the models past the retention policy, then orphaned chunks of both buckets; returns how many objects.

    A leader duty: nodes may upload but not delete messages, so the chunks of versions they
    replaced or marked deleted wait for this (servicekit/auth/permissions.py). Errors are
    logged, not raised.
    """
    try:
        objects = await list_objects(ctx.bus, settings.bucket)
        doomed = store_deletions(objects, state, utcnow(), settings.keep_last, settings.store_keep_candidates_h)
        for obj in doomed:
            await delete_object(ctx.bus, settings.bucket, obj.name, only_nuid=obj.nuid)
            log.info("models bucket: deleted %s (past retention)", obj.name)
        for bucket in (settings.bucket, ctx.config.sync.bucket):
            if chunks := await delete_orphan_chunks(ctx.bus, bucket, older_than_s=ORPHAN_GRACE_S):
                log.info("%s: deleted %d chunks of replaced or deleted objects", bucket, chunks)
    except BusError as exc:
        log.warning("models bucket: pruning failed, next time then: %s", exc)
        return 0
    return len(doomed)
