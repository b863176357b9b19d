"""Every service `rr-service <name>` can run, in one table."""

from __future__ import annotations

from services.runtime import SERVICES, ServiceEntry, register

__all__ = ["SERVICES", "ServiceEntry"]

# One register() call per service; targets are imported only when that service runs.
