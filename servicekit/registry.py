"""Every service `rr-service <name>` can run, in one table."""

from __future__ import annotations

from servicekit.runtime import SERVICES, ServiceEntry, register

__all__ = ["SERVICES", "ServiceEntry"]

# One register() call per service; targets are imported only when that service runs.
# The leader was called the scheduler (its lease role still is): `rr-service scheduler` runs it too.
register(ServiceEntry(name="leader", target="services.leader.service:main",
                      description="leader-elected: scheduling, pipeline, membership, distribution and sync plans (candidate on every node listed as one)",
                      on_up=True), formerly=("scheduler",))
register(ServiceEntry(name="agent", target="services.agent.service:main", description="per-node agent: heartbeats with resources", on_up=True))
register(ServiceEntry(name="worker", target="services.worker.service:main", description="runs assigned jobs as processes", on_up=True,
                       data_dir="config.nodedirs:data_dir"))
register(ServiceEntry(name="distributor", target="services.distributor.service:main",
                      description="per-node model distribution: installs every config's promoted model from the object store", on_up=True,
                       data_dir="config.nodedirs:data_dir"))
register(ServiceEntry(name="sync", target="services.sync.service:main",
                      description="per-node data sync: uploads and receives the batches the leader plans", on_up=True,
                       data_dir="config.nodedirs:sync_data_dir"))
register(ServiceEntry(name="api", target="services.api.service:main", description="HTTP status API on :8770 and dashboard", on_up=True))
