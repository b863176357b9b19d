"""The dashboard in a real headless Chromium: live data from the api service, and the live feed moving."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from config.sections.api import PORT_ENV
from eventbus import events as ev
from eventbus.events import utcnow
from services.api.service import STATIC_DIR
from tests.api_harness import fleet_log, running_api, wait_caught_up
from tests.headless import dump_dom, live_page


@pytest.fixture(autouse=True)
def _no_port_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PORT_ENV, raising=False)


def _text(dom: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)</', dom, re.S)
    assert match, f"no element #{element_id} in the DOM"
    return match.group(1)


async def test_the_page_renders_the_clusters_live_data(nats_url: str, tmp_path: Path) -> None:
    async with running_api(nats_url) as api:
        published = await api.publish(*fleet_log())
        page = await api.get("/")
        assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
        assert "gpu-1" not in page.body.decode()  # the HTML is static: everything below came from the API
        late = await api.publish(
            ev.WorkAdded(work_id="w-late", work_type="training", board_type="hex8", num_players=4),
            ev.WorkAssigned(work_id="w-5", node="gpu-1", attempt=1, deadline=utcnow(), epoch=4),
            ev.WorkAttemptFailed(work_id="w-5", node="gpu-1", attempt=1, reason="exited with status 1", exit_code=1,
                                 stderr_tail="Traceback ...", cause="ModuleNotFoundError: No module named numpy"),
        )
        await wait_caught_up(api.base, late[-1].seq)

        dom, console = await dump_dom(api.base + "/", tmp_path / "profile")
    assert console == [], "the page logged errors"
    assert published and "could not load" not in dom.lower()
    assert (_text(dom, "leader"), _text(dom, "alive"), _text(dom, "seq")) == ("gpu-1", "3 of 4", str(late[-1].seq))
    for node in ("gpu-1", "gpu-2", "gpu-3", "cpu-9"):
        assert f"<b>{node}</b>" in dom, node
    assert ">offline<" in dom and ">online<" in dom and "★ scheduler" in dom
    assert "2x H100" in dom and ">promoter<" in dom  # resources and the leader of each role
    assert ">w-2<" in dom and ">running<" in dom  # a work item and its state
    assert ">m-hex8-2<" in dom and ">1590 ± 60<" in dom  # the promoted model with its rating and interval
    # Promoted generations are the line (three points), the rejected candidate a separate mark.
    assert re.search(r'<path class="promoted" d="M[\d.]+,[\d.]+ L[\d.]+,[\d.]+ L[\d.]+,[\d.]+"', dom), "no line of generations"
    assert len(re.findall(r'<circle class="rejected"', dom)) == 1 and "m-hex8-x (not promoted): 1480 ± 60" in dom
    assert "m-hex8-2 (gen 3)" in _text(dom, "elo-legend") or "m-hex8-2 (gen 3)" in dom
    # The feed fetched the event appended after the page was first served.
    assert "work w-late added: training hex8_4p" in _feed(dom)
    # A failed attempt's cause: in the work table and in the feed, not only in `rr work show`.
    assert ">ModuleNotFoundError: No module named numpy<" in dom
    assert "failed on gpu-1: exited with status 1 (exit 1) -- ModuleNotFoundError: No module named numpy" in _feed(dom)


def _feed(dom: str) -> str:
    match = re.search(r'<ol id="feed"[^>]*>(.*?)</ol>', dom, re.S)
    assert match, "no feed in the DOM"
    return match.group(1)


async def test_an_event_published_while_the_page_is_open_appears_in_the_feed_and_the_panels(
    nats_url: str, tmp_path: Path, eventually
) -> None:
    async with running_api(nats_url) as api:
        published = await api.publish(*fleet_log())
        await wait_caught_up(api.base, published[-1].seq)
        async with live_page(api.base + "/", tmp_path / "profile") as page:

            async def shows(*texts: str) -> bool:
                text = await page.text()
                return all(t in text for t in texts)

            await eventually(lambda: shows("gpu-3", "w-2", "m-hex8-2"), timeout=20, message="the page loaded the cluster")
            assert not await shows("gpu-8")
            await api.publish(ev.HostOnline(node="gpu-8", roles=["selfplay"], version="0.2.0", resources=ev.HostResources(cpu_count=4), epoch=4))
            await eventually(lambda: shows("host gpu-8 online"), timeout=10, message="the feed shows the new event")
            await eventually(lambda: shows("4 of 5"), timeout=10, message="the header counts gpu-8 as alive")


def test_the_dashboard_needs_nothing_from_the_network() -> None:
    for path in STATIC_DIR.iterdir():
        text = path.read_text()
        # Only same-origin URLs: no CDN, no fonts, no analytics (the SVG namespace is a name, not a fetch).
        assert not re.search(r"(src|href)=\"(https?:)?//", text), path.name
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), path.name
