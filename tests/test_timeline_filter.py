"""`rr timeline --work/--model/--node` reads only the subjects its lines depend on, and says exactly what the whole log says."""

from __future__ import annotations

from cli.commands.timeline import read_timeline
from eventbus.connection import Bus
from eventbus.history import replay
from eventbus.publisher import Publisher
from ops.bench.bench_projection import NODES, TRAINER, fleet_log
from projections.timeline import Selector, TimelineBuilder, TimelineLine, node_subjects, subjects_read
from tests.bus_harness import provisioned_bus
from tests.test_forensics import _incident
from tests.test_projections import _sample_log


def test_no_filter_reads_the_whole_log_a_node_its_own_subjects_first_and_a_work_item_its_own_subjects() -> None:
    assert subjects_read(Selector()) is None and subjects_read(Selector(node="gpu-1")) is None
    own, naming = node_subjects("gpu-1")
    assert own == ("rr.evt.*.*.*.gpu-1", "rr.evt.host.gpu-1.>", "rr.evt.leader.>", "rr.evt.lease.>") and "rr.evt.*.*.WORK_ASSIGNED.*" in naming
    subjects = subjects_read(Selector(work="w-1"))
    assert subjects is not None and "rr.evt.work.w-1.>" in subjects and "rr.evt.work.>" not in subjects
    assert subjects_read(Selector(work="w-1", node="gpu-1")) == subjects  # the node only narrows the item's lines


async def _whole(bus: Bus, selector: Selector) -> tuple[list[TimelineLine], int]:
    """The selector's lines folded from the whole log, and the log's length."""
    builder = TimelineBuilder(selector)
    return builder.lines, await replay(bus, builder)


async def test_each_items_and_models_timeline_equals_the_one_folded_from_the_whole_log(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish_many(_incident())
        await Publisher(bus).publish_many(_sample_log(20, prefix="noise"))

        selectors = [Selector(work=w) for w in ("w-1", "w-5", "w-6", "noise-3", "no-such")]
        selectors += [Selector(model=m) for m in ("m-0", "m-1")] + [Selector(work="w-1", model="m-1")]
        for selector in selectors:
            lines, read = await read_timeline(bus, selector)
            expected, total = await _whole(bus, selector)
            assert lines == expected, selector
            assert read < total / 2, f"{selector} read {read} of {total} records"
        lines, _ = await read_timeline(bus, Selector(work="w-1"))
        assert any(line.note.startswith("IGNORED") for line in lines) and any(line.note.startswith("REJECTED") for line in lines)


async def test_a_nodes_timeline_reads_its_own_subjects_and_what_judges_them_and_equals_the_whole_logs(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish_many(_incident())
        await Publisher(bus).publish_many(list(fleet_log(6_000)))  # 31 nodes, each writing its own reports

        # The incident's nodes (a zombie's rejected completion, a stale leader's ignored assignment), a worker,
        # the trainer every batch is copied to, a node no event names, and the leader, which published (and
        # so is named in) most of the log, some records twice (two filters match them). Every node reads all assignments and copy plans (~15% of this
        # mix: their subjects name the leader, not the node), plus its own: about a fifth of the log for a worker.
        for node, share in (("gpu-2", 0.25), ("gpu-3", 0.25), ("gpu-05", 0.25), (TRAINER, 0.5), ("nowhere", 0.2), (NODES[1], 1.5)):
            lines, read = await read_timeline(bus, Selector(node=node))
            expected, total = await _whole(bus, Selector(node=node))
            assert lines == expected, node
            assert read < total * share, f"{node} read {read} of {total} records"
        lines, _ = await read_timeline(bus, Selector(node="gpu-2"))
        assert any(line.note.startswith("IGNORED") for line in lines) and any(line.note.startswith("REJECTED") for line in lines)
        both, _ = await read_timeline(bus, Selector(node="gpu-2", work="w-1"))
        assert both == (await _whole(bus, Selector(node="gpu-2", work="w-1")))[0] and 0 < len(both) < len(lines)
