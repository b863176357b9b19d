"""The authority table: every event type has owners, the README prints the table, and the permissions follow it."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventbus.authority import AUTHORITY, ROLES, authority_table, foreign_types, may_publish, owned_types
from eventbus.events import EVENT_TYPES
from servicekit.auth.permissions import admin_permissions, permissions_for
from servicekit.telemetry.permits import subject_covers

README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_event_type_of_the_catalog_has_owners_and_the_table_names_no_other() -> None:
    assert set(AUTHORITY) == set(EVENT_TYPES)
    assert all(grant.roles <= set(ROLES) for grant in AUTHORITY.values())
    # Only the server's copies of lease writes have no owner: no user may publish one.
    assert [name for name, grant in AUTHORITY.items() if not grant.roles] == ["LEASE_WRITTEN"]


def test_leader_decisions_belong_to_coordinators_and_job_reports_to_every_node() -> None:
    for decision in ("LEADER_ELECTED", "WORK_ASSIGNED", "WORK_FAILED", "MODEL_PROMOTED", "DATA_SYNC_PLANNED",
                     "HOST_OFFLINE", "MODEL_DISTRIBUTION_COMPLETE"):
        assert [r for r in ROLES if may_publish(r, decision)] == ["coordinator"], decision
    for report in ("WORK_STARTED", "WORK_COMPLETED", "SELFPLAY_COMPLETE", "TRAINING_COMPLETE", "EVALUATION_COMPLETE",
                   "MODEL_DISTRIBUTED", "DATA_SYNC_COMPLETE"):
        assert [r for r in ROLES if may_publish(r, report)] == ["worker", "coordinator"], report
    assert owned_types("admin") == ("WORK_ADDED", "WORK_CANCELLED", "CONFIG_CHANGED", "OUTPUTS_QUARANTINED", "QUARANTINE_LIFTED")
    assert not may_publish("coordinator", "NO_SUCH_TYPE") and not may_publish("nobody", "WORK_STARTED")


def test_the_readme_prints_the_table_from_the_code() -> None:
    assert authority_table() in README.read_text(), "README.md: paste the output of eventbus.authority.authority_table()"


@pytest.mark.parametrize("role", ["worker", "coordinator"])
def test_a_nodes_permissions_allow_exactly_its_types_under_its_own_name(role: str) -> None:
    allow = permissions_for(role, "gpu-1").publish.allow  # type: ignore[arg-type, union-attr]
    for type_name in EVENT_TYPES:
        own = f"rr.evt.work.w-1.{type_name}.gpu-1"
        assert any(subject_covers(p, own) for p in allow) == may_publish(role, type_name), own
        assert not any(subject_covers(p, f"rr.evt.work.w-1.{type_name}.gpu-2") for p in allow)


def test_admin_is_denied_every_event_type_it_does_not_own_from_any_source() -> None:
    deny = admin_permissions().publish.deny
    for type_name in EVENT_TYPES:
        assert any(subject_covers(p, f"rr.evt.model.m.{type_name}.laptop") for p in deny) == (type_name in foreign_types("admin"))
