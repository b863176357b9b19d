"""`rr timeline --work/--model/--node` reads only the subjects its lines depend on, and says exactly what the whole log says."""

from __future__ import annotations

from cli.commands.timeline import read_timeline
from eventbus import events as ev
from eventbus.connection import Bus
from eventbus.history import Record, replay
from eventbus.publisher import Publisher
from ops.bench.bench_projection import NODES, TRAINER, fleet_log
from projections import workrefs
from projections.base import fold_events
from projections.timeline import Selector, TimelineBuilder, TimelineLine, node_subjects, subjects_read, work_context
from servicekit.rebuild import state_at_seq
from servicekit.snapshotting import save_state
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
    assert not any("SELFPLAY_COMPLETE" in s or s.startswith("rr.evt.host.") for s in subjects)  # found through the index


def test_the_index_names_each_items_results_by_their_aggregates_and_the_context_reads_them_and_its_nodes() -> None:
    log = [
        ev.SelfplayComplete(batch_id="b-1", work_id="w-1", node="gpu-2", board_type="hex8", num_players=2, num_games=5),
        ev.SelfplayComplete(batch_id="b-1", work_id="w-1", node="gpu-2", board_type="hex8", num_players=2, num_games=5),
        ev.EvaluationComplete(model_id="m-1", work_id="w-6", node="gpu-3", opponent="m-0", games=2, wins=1, losses=1),
        ev.ModelPromoted(model_id="m-1", board_type="hex8", num_players=2, sha256="ab", evaluation_work_id="w-6"),
        ev.ModelPromoted(model_id="m-2", board_type="hex8", num_players=2, sha256="ab"),  # names no evaluation
        ev.WorkAdded(work_id="w-1", work_type="selfplay", board_type="hex8", num_players=2),
    ]
    refs = fold_events(workrefs.PROJECTION, enumerate(log, 1))
    assert refs.refs.to_dict() == {"w-1": ("rr.evt.data.b-1.>",), "w-6": ("rr.evt.model.m-1.>",)} and refs.last_seq == 6
    own = [ev.WorkAdded(work_id="w-1", work_type="selfplay", board_type="hex8", num_players=2, source="gpu-0"),
           ev.WorkStarted(work_id="w-1", node="gpu-2", attempt=1, pid=1, source="gpu-2"),
           ev.WorkStarted(work_id="w-1", node="gpu-3", attempt=2, pid=2, source="gpu-3")]
    assert work_context(own, workrefs.subjects_naming(refs, "w-1")) == (
        "rr.evt.host.gpu-2.>", "rr.evt.host.gpu-3.>", "rr.evt.data.b-1.>")


async def test_a_work_items_timeline_reads_its_own_records_and_the_few_naming_it_not_every_result(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish_many(list(fleet_log(6_000)))  # ~400 selfplay results, ~80 membership changes
        # The API keeps the index's snapshot; the timeline then reads only the results after it.
        await save_state(bus, workrefs.PROJECTION, (await state_at_seq(bus, workrefs.PROJECTION, 5_000)).state)
        works = ("w-00000010", "w-00000199", "t-00000199", "e-00000199", "w-00000390")
        wholes, total = await _whole(bus, *(Selector(work=work) for work in works))
        for work, expected in zip(works, wholes, strict=True):
            lines, read = await read_timeline(bus, Selector(work=work))
            assert lines == expected and lines, work
            assert read < total / 30, f"{work} read {read} of {total} records"  # every result: 1/15


async def _whole(bus: Bus, *selectors: Selector) -> tuple[list[list[TimelineLine]], int]:
    """Each selector's lines folded from the whole log, and the log's length.

    One read of the log feeds every selector's builder: a read per selector cost the tests most of their time.
    """
    builders = [TimelineBuilder(selector) for selector in selectors]

    def each(record: Record) -> None:
        for builder in builders:
            builder(record)

    total = await replay(bus, each)
    return [builder.lines for builder in builders], total


async def test_each_items_and_models_timeline_equals_the_one_folded_from_the_whole_log(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish_many(_incident())
        await Publisher(bus).publish_many(_sample_log(20, prefix="noise"))

        selectors = [Selector(work=w) for w in ("w-1", "w-5", "w-6", "noise-3", "no-such")]
        selectors += [Selector(model=m) for m in ("m-0", "m-1")] + [Selector(work="w-1", model="m-1")]
        wholes, total = await _whole(bus, *selectors)
        for selector, expected in zip(selectors, wholes, strict=True):
            lines, read = await read_timeline(bus, selector)
            assert lines == expected, selector
            assert read < total / 2, f"{selector} read {read} of {total} records"
        lines, _ = await read_timeline(bus, Selector(work="w-1"))
        assert any(line.note.startswith("IGNORED") for line in lines) and any(line.note.startswith("REJECTED") for line in lines)


async def test_a_nodes_timeline_reads_its_own_subjects_and_what_judges_them_and_equals_the_whole_logs(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish_many(_incident())
        # 31 nodes, each writing its own reports. Each node's share of the log read is the same at 2,000 events as at
        # 6,000 (within 0.02), and the longest timelines still hold hundreds of lines: more events bought only time.
        await Publisher(bus).publish_many(list(fleet_log(2_000)))

        # The incident's nodes (a zombie's rejected completion, a stale leader's ignored assignment), a worker,
        # the trainer every batch is copied to, a node no event names, and the leader, which published (and
        # so is named in) most of the log, some records twice (two filters match them). Every node reads all assignments and copy plans (~15% of this
        # mix: their subjects name the leader, not the node), plus its own: about a fifth of the log for a worker.
        shares = (("gpu-2", 0.25), ("gpu-3", 0.25), ("gpu-05", 0.25), (TRAINER, 0.5), ("nowhere", 0.2), (NODES[1], 1.5))
        wholes, total = await _whole(bus, *(Selector(node=node) for node, _ in shares), Selector(node="gpu-2", work="w-1"))
        *per_node, whole_both = wholes
        for (node, share), expected in zip(shares, per_node, strict=True):
            lines, read = await read_timeline(bus, Selector(node=node))
            assert lines == expected, node
            assert read < total * share, f"{node} read {read} of {total} records"
        lines, _ = await read_timeline(bus, Selector(node="gpu-2"))
        assert any(line.note.startswith("IGNORED") for line in lines) and any(line.note.startswith("REJECTED") for line in lines)
        both, _ = await read_timeline(bus, Selector(node="gpu-2", work="w-1"))
        assert both == whole_both and 0 < len(both) < len(lines)
