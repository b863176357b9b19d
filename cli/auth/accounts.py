"""Which NATS users a fleet needs, pure: one per enabled host, its role from leadership candidacy.

A host that may campaign for leadership (leadership.candidates, else the hosts file's
p2p_voters, or role `coordinator`) gets the coordinator permissions; every other host is a
worker. Disabled hosts get no user, so disabling a host and regenerating revokes it.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from cluster.leadership.candidacy import candidacy
from config.hosts import HostsConfig
from eventbus.authority import Role
from eventbus.errors import InvalidConfig
from eventbus.subjects import token
from servicekit.auth.permissions import inbox_prefix

ADMIN_USER = "admin"


class Account(msgspec.Struct, frozen=True, kw_only=True):
    """One NATS user to create: its name (the node id), role and inbox prefix."""

    user: str
    role: Role
    inbox_prefix: str


def plan_accounts(hosts: HostsConfig, candidates: Sequence[str] = (), *, source: str = "hosts file") -> list[Account]:
    """admin plus one account per enabled host; raises InvalidConfig when the fleet cannot work with them."""
    enabled = {name: entry for name, entry in hosts.hosts.items() if entry.status != "disabled"}
    if not enabled:
        raise InvalidConfig(f"{source}: hosts: no enabled host to make credentials for")
    for name in enabled:
        if token(name) != name:
            raise InvalidConfig(
                f"{source}: hosts.{name}: a node id must be letters, digits, '-', '_' or ':' "
                f"(it is a subject token); rename it, e.g. {token(name)!r}"
            )
        if name == ADMIN_USER:
            raise InvalidConfig(f"{source}: hosts.{name}: '{ADMIN_USER}' is reserved for the operators' user")
    accounts = [Account(user=ADMIN_USER, role="admin", inbox_prefix="_INBOX")]
    for name, entry in sorted(enabled.items()):
        may_lead = candidacy(name, candidates, hosts.p2p_voters)
        coordinator = entry.role == "coordinator" or (may_lead.allowed and may_lead.source != "everyone")
        accounts.append(Account(user=name, role="coordinator" if coordinator else "worker", inbox_prefix=inbox_prefix(name)))
    if not candidates and not hosts.p2p_voters:
        raise InvalidConfig(
            f"{source}: p2p_voters: empty, so every node would campaign for leadership, but workers may not "
            "write the leases KV; list the hosts that may lead under p2p_voters (or leadership.candidates)"
        )
    if not any(a.role == "coordinator" for a in accounts):
        raise InvalidConfig(f"{source}: p2p_voters: none of the hosts that may lead is enabled; enable one or list another")
    return accounts
