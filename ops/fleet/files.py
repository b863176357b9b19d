"""The files each fleet host reads, rendered from the plan (pure): nats-server config, rr config, hosts file.

The workload is kept small (few games, few MCTS simulations, 1 training epoch) so that a
generation finishes in minutes on 2 cores; `Workload` says how small.
"""

from __future__ import annotations

import msgspec
import yaml

from ops.fleet.plan import API_PORT, CLUSTER_PORT, MONITOR_PORT, NATS_PORT, FleetPlan, HostPlan


class Workload(msgspec.Struct, frozen=True, kw_only=True):
    """How much work one generation is: small by default, so a fleet test takes minutes."""

    board: str = "hex8"
    selfplay_games: int = 4
    selfplay_sims: int = 4
    min_new_samples: int = 150
    evaluation_games: int = 4
    evaluation_sims: int = 2
    epochs: int = 1
    # The fleet tests the loop across hosts, not the net: a gate that promotes a candidate on its first
    # non-lost game against its opponent (one win or draw in `gate_games`), never on losses alone.
    gate: dict[str, float | int] = msgspec.field(default_factory=lambda: {"elo0": -2000.0, "elo1": -1000.0, "alpha": 0.45, "beta": 0.45, "max_games": 12})
    heartbeat_s: float = 1.0
    # The scheduler lease (leadership.ttl_s, whole seconds, and renew_every, a fraction of it): see rr_config on
    # why 20 s. A test fleet may take a shorter one with a shorter renewal, which keeps the time a leader rides
    # out without a lease-bucket leader (the TTL less the safety margin and one renewal interval) above the
    # 9 s the cut tests need; every stop, kill and block of a leader then waits a shorter lease out.
    lease_ttl_s: int = 20
    lease_renew_every: float = 0.2
    # ops/chaos's client adds `synthetic` items: a job that only sleeps, so a fault mix runs on 2 cores.
    synthetic_s: float = 1.0
    populator: bool = True  # False: the leader queues no selfplay of its own (a soak of synthetic work only)


def nats_config(plan: FleetPlan, host: HostPlan) -> str:
    """One clustered nats-server: listens on its host's address only, routes to the other two, fsyncs every write."""
    routes = "\n".join(f'    "nats-route://{h.address}:{CLUSTER_PORT}"' for h in plan.nats_hosts())
    return f"""# {host.name} of fleet {plan.run_id}: written by `python -m ops.fleet up`, do not edit.
server_name: "{host.name}"
listen: "{host.address}:{NATS_PORT}"
http: "{host.address}:{MONITOR_PORT}"
jetstream {{
  store_dir: "{host.path('nats', 'store')}"
  sync_interval: always
  max_file_store: 4GB
  max_memory_store: 256MB
}}
cluster {{
  name: "rr{plan.run_id}"
  listen: "{host.address}:{CLUSTER_PORT}"
  routes: [
{routes}
  ]
}}
include "auth.conf"
"""


def hosts_file(plan: FleetPlan) -> dict[str, object]:
    """The fleet's distributed_hosts.yaml: the NATS hosts vote (coordinators), worker hosts run one job at a time."""
    hosts = {h.name: {"status": "ready", "role": h.role, "cpus": 2, "memory_gb": 4,
                      "max_parallel_jobs": 0 if h.kind == "nats" else 1} for h in plan.hosts}
    return {"hosts": hosts, "p2p_voters": [h.name for h in plan.nats_hosts()]}


def worker_templates(w: Workload) -> dict[str, str]:
    """The command each work type runs on a worker host: the small workload's."""
    return {
        "selfplay": ("{python} -m workload.selfplay --board {board_type} --num-players {num_players}"
                     f" --num-games {{num_games}} --model {{model_path}} --out {{output_dir}} --sims {w.selfplay_sims} --device cpu"),
        "training": ("{python} -m workload.train --board {board_type} --num-players {num_players}"
                     f" --data {{data*}} --init {{model_path}} --out {{output_dir}}/candidate.pth --epochs {w.epochs} --device cpu"),
        "evaluation": ("{python} -m workload.evaluate --board {board_type} --num-players {num_players}"
                       " --candidate {candidate} --best {model_path} --games {num_games} --sims {sims} --elo0 {elo0}"
                       " --elo1 {elo1} --alpha {alpha} --beta {beta} --max-games {max_games} --rate-anchor {rate_anchor}"
                       " --device cpu"),
        "synthetic": f"sleep {w.synthetic_s}",
    }


def rr_config(plan: FleetPlan, host: HostPlan, workload: Workload) -> dict[str, object]:
    """The rr config of one host: R3 streams, its own data dir, the small workload, CPU-only capabilities."""
    w = workload
    return {
        # Stream limits are reserved up front on every server: small ones fit the fleet's max_file_store.
        # RR_CONTEXT's default (2 GiB) beside the others left some servers no room to place a 256 MB bucket.
        "streams": {"replicas": 3, "events_max_gib": 1.0, "deadletter_max_gib": 0.25, "context_max_gib": 0.25},
        "hosts_file": str(host.path("etc", "hosts.yaml")),
        # A lease must outlive the lease bucket going leaderless: a raft failover of its leader (4-7 s
        # measured), and again when a cut server rejoins with a higher raft term and the group elects
        # anew (nats-server waits 4-9 s to campaign; 8 s measured here). A leader stops acting
        # safety_margin (0.2) of the TTL before its lease could expire and renews every 0.2 of it:
        # with 20 s it rides out ~12 s without a bucket leader, where 10 s made one cut move the
        # scheduler twice (at the cut, and again after the heal). Workload.lease_* (default 20 s, 0.2).
        "leadership": {"ttl_s": w.lease_ttl_s, "renew_every": w.lease_renew_every},
        "membership": {"heartbeat_interval_s": w.heartbeat_s, "missed_beats_offline": 3, "gpu_probe": "none"},
        "pipeline": {"min_new_samples": w.min_new_samples, "evaluation_games": w.evaluation_games,
                     "evaluation_sims": w.evaluation_sims, "gate": w.gate, "decide_every_s": 0.5},
        "scheduler": {
            # CPU hosts: every kind of work may run without a GPU; trainers only train, so evaluation
            # always runs on a host other than the trainer (the candidate travels through the store).
            "capabilities": [{"work_type": t, "cpu_ok": True} for t in ("selfplay", "training", "evaluation", "sync", "synthetic")],
            "role_work": {"coordinator": [], "training": ["training", "sync", "synthetic"],
                          "selfplay": ["selfplay", "evaluation", "sync", "synthetic"]},
            # Attempts that never start or go silent are re-assigned within minutes, not the default hour.
            "progress_timeout_s": 90.0,
            "attempt_deadline_s": {"selfplay": 240.0, "training": 600.0, "evaluation": 300.0, "tournament": 600.0, "sync": 300.0,
                                   "synthetic": 60.0},
            "populator_games": w.selfplay_games, "populator_enabled": w.populator, "backlog_per_node": 1, "curriculum": {f"{w.board}_2p": 1.0},
        },
        "worker": {
            "data_dir": str(host.path("data")),
            "templates": worker_templates(w),
            "gpu_idle_check": False, "progress_interval_s": 1.0, "grace_s": 5.0,
        },
        "distribution": {"check_interval_s": 2.0, "complete_check_s": 1.0, "retry_initial_s": 0.5, "retry_max_s": 5.0},
        "sync": {"min_training_vram_gb": 0.0, "plan_interval_s": 1.0, "poll_max_s": 2.0, "retry_after_s": 5.0},
        # Bundle snapshots every 100 events: ops/chaos compares the live views they hold with a rebuild from seq 1.
        "api": {"host": host.address, "port": API_PORT, "snapshot_every_events": 100, "snapshot_min_interval_s": 5.0},
    }


def to_yaml(data: object) -> str:
    """YAML as the config loader reads it."""
    return yaml.safe_dump(data, sort_keys=False)
