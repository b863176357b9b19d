"""`rr timeline --work/--model` reads only the subjects its lines depend on, and says exactly what the whole log says."""

from __future__ import annotations

from eventbus.history import replay
from eventbus.publisher import Publisher
from projections.timeline import Selector, TimelineBuilder, subjects_read
from services.commands.timeline import read_timeline
from tests.bus_harness import provisioned_bus
from tests.test_forensics import _incident
from tests.test_projections import _sample_log


def test_a_node_or_no_filter_reads_the_whole_log_and_a_work_item_its_own_subjects() -> None:
    assert subjects_read(Selector()) is None and subjects_read(Selector(node="gpu-1")) is None
    subjects = subjects_read(Selector(work="w-1"))
    assert subjects is not None and "rr.evt.work.w-1.>" in subjects and "rr.evt.work.>" not in subjects


async def test_each_items_and_models_timeline_equals_the_one_folded_from_the_whole_log(nats_url: str) -> None:
    async with provisioned_bus(nats_url) as bus:
        await Publisher(bus).publish_many(_incident())
        await Publisher(bus).publish_many(_sample_log(20, prefix="noise"))
        total = 0

        async def whole(selector: Selector) -> list:
            nonlocal total
            builder = TimelineBuilder(selector)
            total = await replay(bus, builder)
            return builder.lines

        selectors = [Selector(work=w) for w in ("w-1", "w-5", "w-6", "noise-3", "no-such")]
        selectors += [Selector(model=m) for m in ("m-0", "m-1")] + [Selector(work="w-1", model="m-1")]
        for selector in selectors:
            lines, read = await read_timeline(bus, selector)
            assert lines == await whole(selector), selector
            assert read < total / 2, f"{selector} read {read} of {total} records"
        lines, _ = await read_timeline(bus, Selector(work="w-1"))
        assert any(line.note.startswith("IGNORED") for line in lines) and any(line.note.startswith("REJECTED") for line in lines)
