"""Every service `rr-service <name>` can run, in one table."""

from __future__ import annotations

from services.runtime import SERVICES, ServiceEntry, register

__all__ = ["SERVICES", "ServiceEntry"]

# One register() call per service; targets are imported only when that service runs.
register(ServiceEntry(name="scheduler", target="services.scheduler.service:main", description="leader-elected scheduler (candidate on every node listed as one)", on_up=True))
register(ServiceEntry(name="agent", target="services.agent.service:main", description="per-node agent: heartbeats with resources", on_up=True))
