"""One human sentence per event: what happened and why, for timelines."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eventbus import events as ev
from projections.base import config_key

# HOST_OFFLINE reasons that only say "it went silent"; the silence itself is the better sentence.
_SILENCE_REASONS = frozenset({"", "heartbeat_timeout", "no_heartbeat", "heartbeat", "silent", "silence", "timeout"})


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _leader_elected(e: ev.LeaderElected) -> str:
    after = f", after {e.previous_node}" if e.previous_node else ""
    return f"{e.node} elected leader of {e.role}{after}"


def _host_online(e: ev.HostOnline) -> str:
    facts = [f"roles {','.join(e.roles)}" if e.roles else "", f"version {e.version}" if e.version else ""]
    if e.resources is not None and e.resources.gpus:
        facts.append(f"{len(e.resources.gpus)}x {e.resources.gpus[0].name}")
    detail = ", ".join(f for f in facts if f)
    return f"host {e.node} online ({e.reason})" + (f": {detail}" if detail else "")


def _host_offline(e: ev.HostOffline) -> str:
    if e.silence_s > 0:
        why = f"no heartbeat for {e.silence_s:.1f}s"
        # The membership loop's own reason already says "no heartbeat for ...".
        if e.reason not in _SILENCE_REASONS and not e.reason.startswith("no heartbeat for"):
            why += f" ({e.reason})"
    else:
        why = e.reason or "no reason given"
    return f"host {e.node} offline: {why}"


def _work_added(e: ev.WorkAdded) -> str:
    games = f", {e.num_games} games" if e.num_games else ""
    by = f" by {e.requested_by}" if e.requested_by else ""
    target = f" for {e.target_node}" if e.target_node else ""
    return f"work {e.work_id} added{by}: {e.work_type} {config_key(e.board_type, e.num_players)}{games}{target}"


def _work_progress(e: ev.WorkProgress) -> str:
    at = f" at {e.fraction:.0%}" if e.fraction is not None else ""
    return f"work {e.work_id} attempt {e.attempt} on {e.node}{at}" + (f": {e.message}" if e.message else "")


def _work_completed(e: ev.WorkCompleted) -> str:
    outputs = f", {len(e.outputs)} output{'s' if len(e.outputs) != 1 else ''}" if e.outputs else ""
    return f"work {e.work_id} attempt {e.attempt} completed on {e.node} in {e.duration_s:.1f}s (exit {e.exit_code}{outputs})"


def _attempt_failed(e: ev.WorkAttemptFailed) -> str:
    code = f" (exit {e.exit_code})" if e.exit_code is not None else ""
    cause = f" -- {e.cause}" if e.cause else ""
    return f"work {e.work_id} attempt {e.attempt} failed on {e.node}: {e.reason}{code}{cause}"


def _handed_back(e: ev.WorkHandedBack) -> str:
    return f"work {e.work_id} attempt {e.attempt} handed back by {e.node} (not a failed attempt): {e.reason}"


def _work_failed(e: ev.WorkFailed) -> str:
    tried = f" after {len(e.attempts)} attempt{'s' if len(e.attempts) != 1 else ''}" if e.attempts else ""
    return f"work {e.work_id} failed{tried}: {e.reason}"


def _selfplay(e: ev.SelfplayComplete) -> str:
    played = f", played by {e.model_id}" if e.model_id else ", random play"
    samples = f" ({e.num_samples} samples)" if e.num_samples else ""
    return (
        f"batch {e.batch_id}: {e.num_games} {config_key(e.board_type, e.num_players)} games{samples} "
        f"on {e.node} by work {e.work_id}{played}"
    )


def _training_complete(e: ev.TrainingComplete) -> str:
    parent = f", parent {e.parent_model}" if e.parent_model else ""
    metrics = "".join(f", {k}={v:.4g}" for k, v in sorted(e.metrics.items())[:3])
    return (
        f"model {e.model_id} trained on {e.node} by work {e.work_id} from {len(e.input_batches)} "
        f"batch{'es' if len(e.input_batches) != 1 else ''}{parent}{metrics}"
    )


def _evaluation(e: ev.EvaluationComplete) -> str:
    elo = f", elo {e.elo:+.0f}" if e.elo is not None else ""
    gate = f", gate {e.verdict} (SPRT llr {e.llr:.2f})" if e.gate and e.llr is not None else ""
    return (
        f"model {e.model_id} evaluated vs {e.opponent} by work {e.work_id} on {e.node}: "
        f"{e.wins}-{e.losses}-{e.draws} of {e.games} (win rate {e.win_rate:.2f}){elo}{gate}"
    )


def _rated(e: ev.ModelRated) -> str:
    against = f" against {', '.join(e.opponents)}" if e.opponents else ""
    return (f"{e.kind} {e.model_id} rated {e.elo:.0f} +- {e.interval:.0f} Elo on the "
            f"{config_key(e.board_type, e.num_players)} scale from {e.games} games{against}")


def _promoted(e: ev.ModelPromoted) -> str:
    after = f", replacing {e.previous_model}" if e.previous_model else ""
    why = f": {e.reason}" if e.reason else ""
    return f"model {e.model_id} promoted for {config_key(e.board_type, e.num_players)}, generation {e.generation}{after}{why}"


def _sync_complete(e: ev.DataSyncComplete) -> str:
    if e.ok:
        return f"batch {e.batch_id} copy {e.transfer_id} to {e.to_node} verified ({_mb(e.size_bytes)} in {e.seconds:.1f}s)"
    return f"batch {e.batch_id} copy {e.transfer_id} to {e.to_node} failed: {e.error or 'no reason given'}"


_SENTENCES: dict[type[ev.Event], Callable[[Any], str]] = {
    ev.LeaderElected: _leader_elected,
    ev.LeaderLost: lambda e: f"{e.node} lost leadership of {e.role}: {e.reason}",
    ev.HostOnline: _host_online,
    ev.HostOffline: _host_offline,
    ev.WorkAdded: _work_added,
    ev.WorkAssigned: lambda e: f"work {e.work_id} attempt {e.attempt} assigned to {e.node}",
    ev.WorkStarted: lambda e: f"work {e.work_id} attempt {e.attempt} started on {e.node}"
    + (f" (pid {e.pid})" if e.pid else ""),
    ev.WorkProgress: _work_progress,
    ev.WorkCompleted: _work_completed,
    ev.WorkAttemptFailed: _attempt_failed,
    ev.WorkHandedBack: _handed_back,
    ev.WorkFailed: _work_failed,
    ev.WorkCancelled: lambda e: f"work {e.work_id} cancelled"
    + (f" by {e.requested_by}" if e.requested_by else "") + (f": {e.reason}" if e.reason else ""),
    ev.WorkUnschedulable: lambda e: f"work {e.work_id} cannot run on any alive node: {e.reason}",
    ev.WorkSchedulable: lambda e: f"work {e.work_id} can run again" + (f": {e.reason}" if e.reason else ""),
    ev.SelfplayComplete: _selfplay,
    ev.TrainingStarted: lambda e: f"training {e.work_id} started on {e.node} for "
    f"{config_key(e.board_type, e.num_players)} from {len(e.input_batches)} batches"
    + (f", parent {e.parent_model}" if e.parent_model else ""),
    ev.TrainingComplete: _training_complete,
    ev.EvaluationComplete: _evaluation,
    ev.ModelPromoted: _promoted,
    ev.ModelRated: _rated,
    ev.ModelDistributed: lambda e: f"model {e.model_id} installed on {e.node} in {e.seconds:.1f}s (sha256 {e.sha256[:12]})",
    ev.ModelDistributionComplete: lambda e: f"model {e.model_id} distributed to {len(e.nodes)} nodes in {e.seconds:.1f}s",
    ev.DataSyncPlanned: lambda e: f"batch {e.batch_id} copy {e.transfer_id} planned {e.from_node} -> {e.to_node} "
    f"({_mb(e.size_bytes)})" + (f": {e.reason}" if e.reason else ""),
    ev.DataSyncComplete: _sync_complete,
    ev.OutputsQuarantined: lambda e: f"quarantine {e.quarantine_id}: {e.kind} {e.target}"
    + (f" since {e.since.isoformat()}" if e.since else "") + f" tainted by {e.requested_by or '?'}: {e.reason}",
    ev.QuarantineLifted: lambda e: f"quarantine {e.quarantine_id} lifted by {e.requested_by or '?'}"
    + (f": {e.reason}" if e.reason else ""),
    ev.ConfigChanged: lambda e: f"config {e.name} changed: "
    + (", ".join(c.key for c in e.changes[:5]) or "content") + (f" (+{len(e.changes) - 5} more)" if len(e.changes) > 5 else ""),
}


def sentence(event: ev.Event) -> str:
    """What the event says happened, with the epoch of a leader's decision."""
    describe = _SENTENCES.get(type(event))
    text = describe(event) if describe else f"{event.type_name().lower()} about {event.aggregate_id()}"
    return text + (f" (epoch {event.epoch})" if event.epoch is not None else "")
