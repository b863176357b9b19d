"""The scheduling loops the scheduler leader runs (services/scheduler/service.py adds them to LEADER_LOOPS)."""

from __future__ import annotations

from services.scheduler.assigner import assignment_loop
from services.scheduler.pipeline import pipeline_loop
from services.scheduler.populator import populator_loop

# Each is `async def loop(ctx, term)`: started on election, cancelled when the term ends.
SCHEDULING_LOOPS = [assignment_loop, pipeline_loop, populator_loop]
