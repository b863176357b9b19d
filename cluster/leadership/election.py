"""Electing one leader per singleton role: the shell around lease.py.

One `Elector` per (role, node): it watches the role's lease key, campaigns when the key is
free (if this node is a candidate), renews while it leads, and runs the leader's work only
between its LEADER_ELECTED and its step-down. The decisions (when to campaign, renew, step
down) are lease.py's; this module only performs them and reports what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping

import msgspec

from cluster.leadership import lease
from cluster.leadership.candidacy import Candidacy, candidacy
from cluster.leadership.copywait import COPY_WAIT_MAX_S, CopyWait
from cluster.leadership.supervisor import LoopHealth, LoopState
from cluster.leadership.term import Term, hold_seconds
from config.hosts import load_hosts
from config.sections.leadership import LeadershipSettings
from config.settings import RrConfig
from eventbus.connection import Bus
from eventbus.errors import BusError, ConcurrencyConflict, Fenced, InvalidEvent
from eventbus.events import Event, LeaderElected, LeaderLost, utcnow
from eventbus.history import Record, last_on
from eventbus.integrity import decode_on
from eventbus.leases import LeaseBucket, LeaseRecord, LeaseValue
from eventbus.publisher import FenceToken, Publisher
from eventbus.subjects import election_filter
from eventbus.tasks import raise_if_cancelled, stop_tasks

log = logging.getLogger(__name__)

RESIGN_ANNOUNCE_S = 3.0  # a resigning leader waits this long for LEADER_LOST to be stored, then frees the lease anyway
FAILED_TERM_HOLD_OFF_TTLS = 2  # after a term whose loops could not run, this node waits this many TTLs before campaigning
LATE_ANNOUNCE_EVERY_S = 2.0  # how often a LEADER_LOST the bus refused is tried again
LOOP_ERROR_CHARS = 160  # of a loop's last error, carried in the lease value


LeadFn = Callable[[Term], Awaitable[None]]


class ElectorStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """What one elector has done so far."""

    role: str
    node: str
    phase: str
    epoch: int | None
    leader: str | None  # the holder as last seen
    campaigns: int
    terms_won: int
    terms_lost: int
    renewals: int
    renew_failures: int


class Elector:
    """Campaigns for one role's lease, keeps it, and runs the leader's work only while it may act."""

    def __init__(
        self,
        bus: Bus,
        role: str,
        node_id: str,
        ttl_s: float | None = None,
        *,
        settings: LeadershipSettings | None = None,
        publisher: Publisher | None = None,
        candidate: bool = True,
        replicas: int = 1,
    ) -> None:
        settings = settings or LeadershipSettings()
        if ttl_s is not None:
            settings = msgspec.structs.replace(settings, ttl_s=ttl_s)
        self.role = role
        self.node_id = node_id
        self.settings = settings
        self.publisher = publisher or Publisher(bus)
        self._bus = bus
        self._bucket = LeaseBucket(bus, settings.bucket, replicas=replicas)
        timing = lease.timing_for(settings.ttl_s, settings.renew_every, settings.safety_margin)
        self._state = lease.initial_state(role, node_id, os.urandom(6).hex(), timing, candidate=candidate)
        self._changed = asyncio.Event()
        self._term_task: asyncio.Task[None] | None = None
        self._term_failure: str | None = None
        self._campaign_after = 0.0  # monotonic time before which this node does not campaign (after its loops failed)
        self._stepping_down = False
        self._acquired_at = utcnow()
        self._counts = {"campaigns": 0, "won": 0, "lost": 0, "renewals": 0, "renew_failures": 0}
        self._loops: dict[str, str] = {}  # the term's loops and their health, carried by each renewal
        self._unannounced: list[Event] = []  # ends of terms the bus refused to record; retried until stored
        self._announcing = asyncio.Lock()  # one late announcer at a time (the retry task, a new term's start)
        self._hold_s = hold_seconds(os.environ)  # 0 unless a fault test holds decisions in flight
        self._term_id = ""  # the Nats-Msg-Id of every lease write of the current term ("" when the bucket would drop renewals)
        self._copy_missing = False  # the term ended for want of its copy in the log: campaign again at once
        self._warned: set[str] = set()  # one-time warnings already logged
        self._copies = CopyWait(bus, role, node_id, self._bucket.stream, min(settings.ttl_s, COPY_WAIT_MAX_S),
                                self._state.timing.renew_every_s)

    def report_loops(self, health: Mapping[str, LoopHealth]) -> None:
        """The leader's loops' health, as the next lease renewal carries it (`rr leader`, `rr doctor`)."""
        self._loops = {name: loop_summary(h) for name, h in health.items()}

    # ---- what others read -------------------------------------------------------------

    def acting_epoch(self) -> int | None:
        """The epoch this node may act under right now, or None."""
        state, term = self._state, self._state.term
        if term is None or state.lost_reason is not None or self._stepping_down:
            return None
        if not lease.may_act(term, time.monotonic()):
            return None
        return term.epoch

    def _acting_as(self, epoch: int) -> Callable[[], bool]:
        return lambda: self.acting_epoch() == epoch

    def statistics(self) -> ElectorStatistics:
        """Counters and where this node stands."""
        term = self._state.term
        return ElectorStatistics(
            role=self.role,
            node=self.node_id,
            phase=self._state.phase.value,
            epoch=term.epoch if term is not None else None,
            leader=self._holder_as_seen(),
            campaigns=self._counts["campaigns"],
            terms_won=self._counts["won"],
            terms_lost=self._counts["lost"],
            renewals=self._counts["renewals"],
            renew_failures=self._counts["renew_failures"],
        )

    def _holder_as_seen(self) -> str | None:
        # A leader's own acknowledged writes never come back as a newer record (the watch
        # delivers them at or below the term's revision), so while it leads it names itself.
        if self._state.term is not None:
            return self.node_id
        record = self._state.record
        return record.holder.node if record is not None and record.holder is not None else None

    # ---- the loop ---------------------------------------------------------------------

    async def run(self, lead: LeadFn, stopping: asyncio.Event) -> None:
        """Take part in the election until `stopping` is set; a leader resigns on the way out."""
        await self._wait_bucket(stopping)
        async with asyncio.TaskGroup() as tasks:
            watcher = tasks.create_task(self._watch_forever())
            late = tasks.create_task(self._announce_late_forever())
            try:
                await self._refresh()
                while not stopping.is_set():
                    await self._step(lead, tasks, stopping)
            finally:
                if self._state.phase is lease.Phase.LEADING:
                    await self._step_down("resigned", announce_within=RESIGN_ANNOUNCE_S)
                watcher.cancel()
                late.cancel()

    async def _step(self, lead: LeadFn, tasks: asyncio.TaskGroup, stopping: asyncio.Event) -> None:
        if self._term_failure is not None and self._state.phase is lease.Phase.LEADING:
            self._apply(lease.TermOver(self._term_failure))
            if not self._copy_missing:
                # Its loops could not run here: give the other candidates two TTLs to take the role.
                self._campaign_after = time.monotonic() + FAILED_TERM_HOLD_OFF_TTLS * self.settings.ttl_s
        self._term_failure = None
        self._copy_missing = False
        action = lease.next_action(self._state, time.monotonic())
        if isinstance(action, lease.Campaign) and time.monotonic() < self._campaign_after:
            await self._wait(self._campaign_after, stopping)
        elif isinstance(action, lease.Campaign):
            if await self._campaign(action):
                self._start_term(lead, tasks)
        elif isinstance(action, lease.Renew):
            await self._renew(action)
        elif isinstance(action, lease.StepDown):
            await self._step_down(action.reason)
        else:
            await self._wait(action.until, stopping)

    async def _wait_bucket(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                await self._bucket.ensure()
                return
            except BusError as exc:
                log.warning("lease bucket not ready (%s); retrying", exc)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stopping.wait(), self._state.timing.poll_s)

    async def _wait(self, until: float, stopping: asyncio.Event) -> None:
        self._changed.clear()
        waits = [asyncio.ensure_future(self._changed.wait()), asyncio.ensure_future(stopping.wait())]
        try:
            done, _ = await asyncio.wait(waits, timeout=max(0.0, until - time.monotonic()), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        if not done and self._state.phase is not lease.Phase.LEADING:
            await self._refresh()  # the periodic re-read, in case the watch missed a change

    def _apply(self, fact: lease.Fact) -> None:
        self._state = lease.apply(self._state, fact)

    def _on_record(self, record: LeaseRecord) -> None:
        self._apply(lease.LeaseSeen(record))
        self._changed.set()

    async def _refresh(self) -> None:
        try:
            self._on_record(await self._bucket.read(self.role, timeout=self._state.timing.renew_every_s))
        except BusError as exc:
            log.debug("reading lease %s: %s", self.role, exc)

    async def _watch_forever(self) -> None:
        while True:
            try:
                await self._bucket.watch(self.role, self._on_record)
            except BusError as exc:
                log.debug("watching lease %s: %s; retrying", self.role, exc)
            await asyncio.sleep(self._state.timing.poll_s)

    # ---- the actions --------------------------------------------------------------------

    async def _campaign(self, action: lease.Campaign) -> bool:
        self._counts["campaigns"] += 1
        self._acquired_at = utcnow()
        value = self._lease_value(epoch=0)
        self._term_id = self._new_term_id()
        sent_at = time.monotonic()
        try:
            revision = await self._bucket.acquire(
                self.role, value, expect_revision=action.expect_revision, timeout=self._state.timing.renew_every_s,
                term_id=self._term_id,
            )
        except ConcurrencyConflict:
            await self._refresh()  # someone else was quicker: learn who
            return False
        except BusError as exc:
            log.debug("campaign for %s got no answer: %s", self.role, exc)
            self._apply(lease.CampaignFailed(at=time.monotonic()))
            return False
        self._apply(lease.Won(revision=revision, sent_at=sent_at, previous_node=action.previous_node))
        self._counts["won"] += 1
        return True

    async def _renew(self, action: lease.Renew) -> None:
        term = self._state.term
        assert term is not None
        sent_at = time.monotonic()
        timeout = min(action.deadline - sent_at, self._state.timing.renew_every_s)
        try:
            value = self._lease_value(epoch=term.epoch)
            revision = await self._bucket.renew(self.role, value, revision=action.revision, timeout=timeout, term_id=self._term_id)
        except ConcurrencyConflict:
            self._apply(lease.TermOver("renewal refused: the lease is no longer ours"))
        except BusError as exc:
            self._counts["renew_failures"] += 1
            log.info("renewing %s lease (epoch %d) failed: %s", self.role, term.epoch, exc)
            self._apply(lease.RenewFailed(at=time.monotonic()))
        else:
            self._counts["renewals"] += 1
            self._apply(lease.Renewed(revision=revision, sent_at=sent_at))

    def _new_term_id(self) -> str:
        """One Nats-Msg-Id for every write of the term about to be campaigned for, so that the log keeps only the
        acquisition's copy; none where the bucket's own dedupe window would drop the renewals."""
        if self._bucket.duplicate_window_s >= self.settings.renew_every_s:
            self._warn_once("window", "lease bucket %s drops repeated message ids for %.1f s, longer than a renewal: "
                            "every renewal is copied into the log; run `rr streams init` with the admin credentials "
                            "to shorten its window", self._bucket.name, self._bucket.duplicate_window_s)
            return ""
        return f"lease:{self.role}:{self._state.incarnation}:{os.urandom(4).hex()}"

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    def _lease_value(self, epoch: int) -> LeaseValue:
        return LeaseValue(
            node=self.node_id,
            incarnation=self._state.incarnation,
            epoch=epoch,
            ttl_s=self.settings.lease_ttl_s,
            acquired_at=self._acquired_at,
            loops=dict(self._loops) if epoch else {},
        )

    def _start_term(self, lead: LeadFn, tasks: asyncio.TaskGroup) -> None:
        term = self._state.term
        assert term is not None
        log.info("%s leads %s (epoch %d, previous leader %s)", self.node_id, self.role, term.epoch, term.previous_node)
        handle = Term(self.role, self.node_id, term.epoch, term.previous_node, self.publisher, self._acting_as(term.epoch),
                      on_fenced=self._end_term, hold_s=self._hold_s)
        self._term_task = tasks.create_task(self._serve(handle, lead))

    async def _serve(self, term: Term, lead: LeadFn) -> None:
        # Announce first: the leader's decisions land in the log after its election, so a
        # fence reading the log from the start always knows their epoch.
        try:
            if not term.may_act():
                return
            await self._announce_late()  # an older term's end goes in the log before this one's start
            if not await self._copies.logged(term.epoch, term.may_act):
                if term.may_act():
                    self._copy_missing = True
                    self._end_term(f"the log has no copy of the {self.role} lease's acquiring write (revision "
                                   f"{term.epoch}), which the fences need to believe the election: campaigning again")
                return
            term.fence = await self._announce(term)
            if term.fence is None:
                if term.may_act():
                    self._end_term(f"a newer {self.role} election than epoch {term.epoch} is in the log")
                return
            # After the server's ack: what an operator (and the failover test) can hold the log to.
            log.info("%s announced %s epoch %d in the log (seq %d)", self.node_id, self.role, term.epoch, term.fence.seq)
            if term.may_act():
                await lead(term)
        except Exception as exc:  # the leader's work cannot run: give the role to someone else
            log.exception("%s leader work of epoch %d failed", self.role, term.epoch)
            self._term_failure = f"leader work failed: {type(exc).__name__}: {exc}"
            self._changed.set()

    async def _announce(self, term: Term) -> FenceToken | None:
        """Store this term's LEADER_ELECTED right after the newest election in the log; its fence, or None
        when a newer election is already there (this term is stale and must not act)."""
        subject = election_filter(self.role)
        elected = self.publisher.stamp(LeaderElected(
            role=self.role, node=self.node_id, ttl_s=self.settings.ttl_s, previous_node=term.previous_node, epoch=term.epoch
        ))  # stamped once: a retry keeps its id, so JetStream stores it at most once
        delay = self._state.timing.poll_s
        while term.may_act():
            try:
                last = await last_on(self._bus, subject, timeout=self._state.timing.renew_every_s)
                if last is not None:
                    newest = _election_in(last)
                    if newest is not None and newest.id == elected.id:
                        return FenceToken(subject, last.seq)  # stored by a try whose ack was lost
                    if newest is not None and (newest.epoch or 0) >= term.epoch and not await self._still_ours(term):
                        return None
                # Conditional on the newest election read: two announcements never interleave.
                published = await self.publisher.publish(elected, fence=FenceToken(subject, last.seq if last else 0))
                return FenceToken(subject, published.seq)
            except Fenced:
                continue  # another election landed between the read and the write: judge it
            except BusError as exc:
                # A bus away for a moment (a stream election, no quorum yet) is waited out while
                # the lease holds: it is not a reason to give the term up.
                if not exc.retryable:
                    raise
                log.warning("announcing %s epoch %d: %s; retrying", self.role, term.epoch, exc)
            await asyncio.sleep(delay)
            delay = min(2 * delay, self._state.timing.renew_every_s)
        return None

    async def _still_ours(self, term: Term) -> bool:
        """Whether the lease still holds this term: then an election of a newer epoch in the log is not
        backed by the lease (revisions only grow, and none was written for anyone else since ours) and is
        announced over, not obeyed."""
        record = await self._bucket.read(self.role, timeout=self._state.timing.renew_every_s)
        holder = record.holder
        ours = holder is not None and holder.incarnation == self._state.incarnation and record.epoch == term.epoch
        if ours:
            log.warning("%s: the newest %s election in the log has an epoch the lease never gave; "
                        "announcing epoch %d after it", self.node_id, self.role, term.epoch)
        return ours

    def _end_term(self, reason: str) -> None:
        """End the current term at once (fenced out, or stale): the elector steps down on its next step."""
        self._term_failure = reason
        self._changed.set()

    async def _step_down(self, reason: str, announce_within: float | None = None) -> None:
        term = self._state.term
        assert term is not None
        self._stepping_down = True  # no decision from here on, even while the lease is still valid
        await self._stop_term()
        self._counts["lost"] += 1
        log.warning("%s stops leading %s (epoch %d): %s", self.node_id, self.role, term.epoch, reason)
        # Stamped once, so a late retry keeps its id and the stream's dedupe stores it only once.
        lost = self.publisher.stamp(LeaderLost(role=self.role, node=self.node_id, reason=reason, epoch=term.epoch))
        try:
            # Unbounded but for the publisher's own retry budget: a term's end is worth waiting
            # out a stream failover for; only a shutdown, with its grace period, is in a hurry.
            await asyncio.wait_for(self.publisher.publish(lost), timeout=announce_within)
        except (TimeoutError, BusError) as exc:
            log.warning("could not announce the end of %s epoch %d yet (%s); recorded when the bus answers", self.role, term.epoch, exc)
            self._unannounced.append(lost)
        self._loops = {}
        revision = (self._state.term or term).revision
        with contextlib.suppress(BusError):
            # Deleted only if still at our revision: frees the role now rather than at expiry.
            await self._bucket.release(self.role, revision=revision, timeout=self._state.timing.renew_every_s)
        self._apply(lease.SteppedDown())
        self._stepping_down = False

    async def _stop_term(self) -> None:
        task, self._term_task = self._term_task, None
        if task is not None:
            # The loops' supervisor abandons a loop that ignores cancellation, so this ends
            # within its own bound; the TTL is the outer limit for anything else.
            await stop_tasks([task], self.settings.ttl_s)

    async def _announce_late(self) -> None:
        """Record the ends of terms that the bus refused when they happened (oldest first)."""
        async with self._announcing:
            while self._unannounced:
                lost = self._unannounced[0]
                try:
                    await asyncio.wait_for(self.publisher.publish(lost), timeout=self._state.timing.renew_every_s * 3)
                except (TimeoutError, BusError) as exc:
                    log.debug("end of %s epoch %s still not recorded: %s", self.role, lost.epoch, exc)
                    return
                self._unannounced.pop(0)
                log.info("recorded the end of %s epoch %s late", self.role, lost.epoch)

    async def _announce_late_forever(self) -> None:
        while True:
            await asyncio.sleep(LATE_ANNOUNCE_EVERY_S)
            await self._announce_late()
            raise_if_cancelled()  # a stop that the publish's wait_for lost (Python 3.11): the elector waits on this task


def loop_summary(health: LoopHealth) -> str:
    """One loop's health in a lease value: "running", or its state and last error."""
    if health.state is LoopState.RUNNING:
        return LoopState.RUNNING.value
    return f"{health.state.value}: {health.last_error[:LOOP_ERROR_CHARS]}" if health.last_error else health.state.value


def _election_in(record: Record) -> LeaderElected | None:
    try:
        event = decode_on(record.subject, record.data, record.headers)
    except InvalidEvent:
        return None  # not a believable election; the fence sequence is still this record's
    return event if isinstance(event, LeaderElected) else None


async def load_candidates(config: RrConfig) -> tuple[str, ...]:
    """The nodes whose elections readers believe: `leadership.candidates`, else the hosts file's p2p_voters;
    empty when neither names any (every node may campaign, and the server's permissions decide)."""
    return (await load_candidacy(config, "")).candidates


async def load_candidacy(config: RrConfig, node_id: str) -> Candidacy:
    """This node's candidacy from the config's `leadership.candidates`, else the hosts file's p2p_voters."""
    voters: list[str] = []
    if not config.leadership.candidates and config.hosts_file:
        hosts = await asyncio.to_thread(load_hosts, config.hosts_file)
        voters = list(hosts.p2p_voters)
    return candidacy(node_id, config.leadership.candidates, voters)
