"""The scheduling loops the scheduler leader runs (services/leader/service.py adds them to LEADER_LOOPS)."""

from __future__ import annotations

from services.leader.assigner import assignment_loop
from services.leader.pipeline import pipeline_loop
from services.leader.populator import populator_loop

# Each is `async def loop(ctx, term)`: started on election, cancelled when the term ends.
SCHEDULING_LOOPS = [assignment_loop, pipeline_loop, populator_loop]
