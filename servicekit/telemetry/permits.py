"""Whether a node's NATS credentials let a service answer discovery: announcing without leave is a permission violation.

Pure but for reading the credentials file. A node without credentials (no authentication)
or an admin may; other roles may once servicekit/auth/permissions.py grants `$SRV.>` and the
status subject, with no change here.
"""

from __future__ import annotations

import asyncio
from typing import get_args

from eventbus.authority import Role
from servicekit.auth.credentials import credentials_from_env
from servicekit.auth.permissions import Permissions, permissions_for


def subject_covers(pattern: str, subject: str) -> bool:
    """Whether a NATS subject pattern (with `*` and `>`) matches a literal subject."""
    wanted, given = pattern.split("."), subject.split(".")
    for i, token in enumerate(wanted):
        if token == ">":
            return len(given) > i
        if i >= len(given) or (token != "*" and token != given[i]):
            return False
    return len(wanted) == len(given)


def may_subscribe(permissions: Permissions | None, subject: str) -> bool:
    """Whether these permissions let a client subscribe to `subject` (None: unrestricted)."""
    if permissions is None:
        return True
    rules = permissions.subscribe
    allowed = not rules.allow or any(subject_covers(p, subject) for p in rules.allow)
    return allowed and not any(subject_covers(p, subject) for p in rules.deny)


def may_announce(permissions: Permissions | None, status_subject: str) -> bool:
    """Whether a service may subscribe to the discovery subjects and its status endpoint."""
    return may_subscribe(permissions, "$SRV.PING") and may_subscribe(permissions, status_subject)


async def node_may_announce(node: str, status_subject: str) -> tuple[bool, str]:
    """(may announce, the role that decided) for this process's credentials ($RR_NATS_CREDS)."""
    creds = await asyncio.to_thread(credentials_from_env)
    if creds is None:
        return True, "unauthenticated"
    # A credentials file without a known role gets the narrowest permissions.
    role = creds.role if creds.role in get_args(Role) else "worker"
    return may_announce(permissions_for(role, creds.user), status_subject), role  # type: ignore[arg-type]
