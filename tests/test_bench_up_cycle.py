"""The rr up bench reads each log's milestones: the first of each, a child's last NATS close as its exit."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from ops.bench.up_cycle import milestones

UP_LOG = """2026-12-07 20:16:00,213 INFO cli.up.session: streams: RR_EVENTS created
2026-12-07 20:16:00,212 INFO eventbus.connection: nats: disconnected
2026-12-07 20:16:00,222 INFO cli.up.supervisor: service agent started (pid 1, log x)
2026-12-07 20:16:00,281 INFO cli.up.supervisor: service api started (pid 2, log y)
"""
LEADER_LOG = """
=== rr up: starting leader at 2026-12-07T20:16:00+00:00: python -m cli.service_main leader
2026-12-07 20:16:03,951 INFO servicekit.runtime: service leader started on node n1 via nats://127.0.0.1:1
2026-12-07 20:16:04,017 INFO cluster.leadership.election: n1 leads scheduler (epoch 1, previous leader None)
2026-12-07 20:16:05,000 INFO eventbus.connection: nats: disconnected
2026-12-07 20:16:14,792 INFO eventbus.connection: nats: disconnected
"""


def test_each_log_gives_its_first_milestones_and_a_childs_last_close(tmp_path: Path) -> None:
    (tmp_path / "up.log").write_text(UP_LOG)
    (tmp_path / "leader.log").write_text(LEADER_LOG)
    since = dt.datetime(2026, 12, 7, 20, 16, 0).timestamp()
    found = milestones([tmp_path / "up.log", tmp_path / "leader.log"], since)
    assert found["up"] == {"streams": 0.213, "spawned": 0.222}  # rr up's own provisioning connection is no exit
    assert found["leader"] == {"imported": 3.951, "elected": 4.017, "exited": 14.792}
