"""The fleet's plan, pure: names that `down` can find, addresses, roles, what each host reads."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import pytest
import yaml

from cli.auth.accounts import plan_accounts
from cluster.leadership.lease import timing_for
from config.hosts import HostsConfig
from config.settings import RrConfig
from ops.fleet.files import Workload, hosts_file, nats_config, rr_config
from ops.fleet.launch import hidden_dirs, host_env, isolated, process_name
from ops.fleet.plan import FleetError, owns_name, plan_fleet, split_groups, subnet_for
from servicekit.childenv import PROJECT_ROOT, child_env
from tests.fleet_harness import LEASE, TEST_WORKLOAD
from workload.sprt import H1, verdict


def fleet(workers: int = 3, nat: int = 1):
    return plan_fleet("ab12", Path("/tmp/fleets/ab12"), workers=workers, nat=nat, subnet=17)


def test_three_nats_hosts_then_workers_the_last_ones_behind_nat() -> None:
    plan = fleet()
    assert [(h.name, h.kind, h.address, h.nat, h.role) for h in plan.hosts] == [
        ("nats-1", "nats", "10.231.17.2", False, "coordinator"), ("nats-2", "nats", "10.231.17.3", False, "coordinator"),
        ("nats-3", "nats", "10.231.17.4", False, "coordinator"), ("w-1", "worker", "10.231.17.5", False, "training"),
        ("w-2", "worker", "10.231.17.6", False, "selfplay"), ("w-3", "worker", "10.231.17.7", True, "selfplay")]
    assert plan.nats_urls() == ["nats://10.231.17.2:4222", "nats://10.231.17.3:4222", "nats://10.231.17.4:4222"]
    assert len({h.root for h in plan.hosts}) == len(plan.hosts)  # no two hosts share a directory


def test_every_name_carries_the_run_id_fits_the_kernel_and_is_found_by_down() -> None:
    plan = fleet()
    names = [plan.bridge, *(h.namespace for h in plan.hosts), *(h.veth for h in plan.hosts), *(f"{h.veth}p" for h in plan.hosts)]
    assert all(owns_name("ab12", n) and owns_name(None, n) for n in names)
    assert all(len(n) <= 15 for n in [plan.bridge, *(h.veth for h in plan.hosts), *(f"{h.veth}p" for h in plan.hosts)])
    assert not any(owns_name("ab1", n) for n in names)  # another fleet's down leaves this one alone
    assert not any(owns_name(None, n) for n in ("eth0", "lo", "docker0", "rrbr0x", "br-1234"))


def test_bad_requests_are_refused_saying_what_to_change() -> None:
    with pytest.raises(FleetError, match="run id"):
        plan_fleet("Bad-Id", Path("/x"), workers=1, nat=0, subnet=1)
    with pytest.raises(FleetError, match="--nat 3"):
        plan_fleet("a", Path("/x"), workers=2, nat=3, subnet=1)
    with pytest.raises(FleetError, match="no host 'w-9'.*nats-1"):
        fleet().host("w-9")
    with pytest.raises(FleetError, match="w-1 on both sides"):
        split_groups(fleet(), "nats-1,w-1/w-1,nats-2")
    a, b = split_groups(fleet(), "nats-1,w-1/nats-2,nats-3")
    assert ([h.name for h in a], [h.name for h in b]) == (["nats-1", "w-1"], ["nats-2", "nats-3"])


def test_subnets_move_past_those_other_fleets_hold() -> None:
    first = subnet_for("ab12", set())
    assert 1 <= first <= 250 and subnet_for("ab12", {first}) != first


def test_nats_config_clusters_three_servers_fsyncing_every_write() -> None:
    plan = fleet()
    text = nats_config(plan, plan.hosts[1])
    assert 'listen: "10.231.17.3:4222"' in text and "sync_interval: always" in text and 'include "auth.conf"' in text
    assert all(f"nats-route://{h.address}:6222" in text for h in plan.nats_hosts())
    assert '/tmp/fleets/ab12/hosts/nats-2/nats/store' in text


def test_each_hosts_rr_config_loads_and_keeps_its_data_in_its_own_directory() -> None:
    plan = fleet()
    for host in plan.hosts:
        config = msgspec.convert(yaml.safe_load(yaml.safe_dump(rr_config(plan, host, Workload()))), RrConfig)
        assert config.streams.replicas == 3 and config.worker.data_dir == str(host.path("data"))
        assert config.api.host == host.address


# The operator's fleet keeps a second beyond nats-server's longest wait; the test session's shorter lease
# (tests/fleet_harness.py) keeps the longest wait itself.
@pytest.mark.parametrize(("workload", "at_least_s"), [(Workload(), 10.0), (msgspec.convert(LEASE, Workload), 9.0)],
                         ids=["operator-fleet", "test-session-fleet"])
def test_a_fleet_leader_rides_out_the_lease_bucket_electing_a_raft_leader_after_a_server_returns(
        workload: Workload, at_least_s: float) -> None:
    # A cut NATS server rejoins with a higher raft term and its group elects anew; nats-server waits
    # 4-9 s before campaigning (8 s without a lease bucket leader measured on the fleet). A leader
    # whose renewal was sent just before such a gap must still be inside its own deadline after it,
    # or one cut moves the scheduler twice: at the cut and after the heal.
    plan = fleet()
    config = msgspec.convert(yaml.safe_load(yaml.safe_dump(rr_config(plan, plan.hosts[0], workload))), RrConfig)
    timing = timing_for(config.leadership.ttl_s, config.leadership.renew_every, config.leadership.safety_margin)
    rides_out_s = timing.ttl_s - timing.safety_margin_s - timing.renew_every_s
    assert rides_out_s >= at_least_s, f"a leader survives only {rides_out_s:.1f}s without a lease bucket leader"


def test_the_test_sessions_gate_promotes_on_one_won_game_and_never_on_losses_alone() -> None:
    # The test session's fleet plays its gate longer than the fleet's 12 games (tests/fleet_harness.py): still a
    # sequential test on real games, which a candidate passes only by winning one.
    config = msgspec.convert(yaml.safe_load(yaml.safe_dump(rr_config(fleet(), fleet().hosts[0],
                                                                      msgspec.convert(TEST_WORKLOAD, Workload)))), RrConfig)
    gate = config.pipeline.gate
    assert gate.max_games == 40
    assert all(verdict(0, lost, 0, gate).result != H1 for lost in range(gate.max_games + 1))
    assert all(verdict(1, lost, 0, gate).result == H1 for lost in range(gate.max_games))


def test_the_hosts_file_makes_nats_hosts_coordinators_and_workers_workers() -> None:
    plan = fleet()
    hosts = msgspec.convert(hosts_file(plan), HostsConfig)
    roles = {a.user: a.role for a in plan_accounts(hosts)}
    assert roles == {"admin": "admin", "nats-1": "coordinator", "nats-2": "coordinator", "nats-3": "coordinator",
                     "w-1": "worker", "w-2": "worker", "w-3": "worker"}


def test_a_host_runs_with_every_other_hosts_directory_and_the_admin_credentials_hidden() -> None:
    plan = fleet()
    w1 = plan.host("w-1")
    hidden = hidden_dirs(plan, w1)
    assert w1.root not in hidden and "/tmp/fleets/ab12/auth" in hidden
    assert set(hidden) - {"/tmp/fleets/ab12/auth"} == {h.root for h in plan.hosts if h.name != "w-1"}
    argv = isolated(plan, w1, ["prog", "--flag"])
    assert argv[:4] == ["ip", "netns", "exec", w1.namespace] and argv[-2:] == ["prog", "--flag"]


def test_status_names_each_process_by_its_service_job_or_program() -> None:
    assert process_name(["/venv/bin/python", "-m", "cli.service_main", "worker"]) == "worker"
    assert process_name(["/venv/bin/python", "-m", "ops.fleet.host", "agent", "worker"]) == "services"
    assert process_name(["python", "-m", "workload.selfplay", "--board", "hex8"]) == "job:selfplay"
    assert process_name(["/usr/bin/nats-server", "-c", "nats.conf"]) == "nats-server"


def test_a_hosts_services_get_the_child_environment_rr_gives_every_process_and_nothing_of_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", f"/elsewhere{os.pathsep}{PROJECT_ROOT}")
    monkeypatch.setenv("RR_SECRET_OF_THE_MACHINE", "x")
    plan = fleet()
    env = host_env(plan, plan.hosts[3])
    assert env["PYTHONPATH"] == child_env({"PYTHONPATH": os.environ["PYTHONPATH"]})["PYTHONPATH"] == f"{PROJECT_ROOT}{os.pathsep}/elsewhere"
    assert env["PYTHONUNBUFFERED"] == "1" and "RR_SECRET_OF_THE_MACHINE" not in env
    assert (env["RR_NODE_ID"], env["RR_DATA_DIR"]) == (plan.hosts[3].node_id, str(plan.hosts[3].path("data")))
