"""The one length limit on identifiers anyone names (node ids, roles, config names), checked everywhere.

Names are derived from a node id (the worker's durable consumer `worker-<node>`, a micro
service's `<service>-<node>`, the subject tokens, the credentials file name); JetStream refuses
a consumer name over 255 characters, so the limit leaves room for every prefix added to it.
Config, the command line and the hosts file call `check_id`, so a long id is refused at once
with one line instead of killing a worker later.
"""

from __future__ import annotations

ID_MAX = 128


def id_problem(value: str) -> str | None:
    """Why `value` cannot be an identifier, or None when it can."""
    if not value:
        return "is empty"
    if len(value) > ID_MAX:
        return f"is {len(value)} characters long; at most {ID_MAX} are allowed"
    if any(c.isspace() or not c.isprintable() for c in value):
        return "contains whitespace or control characters"
    return None
