"""Maintenance: lease recovery, slot rebuild, lost reservations, billing repair, the sweep of cancelled batches,
batch completion, pool limit."""

from __future__ import annotations

import contextlib
import logging

from redis.exceptions import LockError

from shared import metrics
from shared.domain import states
from shared.domain.records import Attempt, Job
from shared.errors import ProviderError
from shared.logs import event, get_logger
from shared.pipeline.step import Step
from shared.pipeline.timing import SLOTS_REBUILD_LOCK_S
from shared.stores import attempts as attempt_states
from shared.stores.coordination import BILLING_REPAIR, CONTACT_LOG_RETENTION, POOL_REFRESH

log = get_logger(__name__)

#: Real milliseconds between two runs of the contact log's retention (one process of all runs it).
CONTACT_LOG_RETENTION_EVERY_MS = 3_600_000
#: Attempts one retention run deletes at most per state and chunk, and chunks per state.
RETENTION_CHUNK = 1000
RETENTION_CHUNKS = 20


class Maintenance(Step):
    """The periodic upkeep the clock dyno asks for (the ``maintain`` actor), apart from dispatch."""

    @metrics.step("maintain")
    def maintain(self) -> None:
        """One periodic run: rebuild the slot sets if Redis lost them, read the pool limit, recover expired
        leases, start the safety-net polls of calls no webhook ended, settle lost reservations, repair billing
        (one process a minute), cancel what waits in cancelled batches, complete finished batches and delete attempts
        past the contact log's retention (one process an hour). Safe to run in several processes at once."""
        if not self.slots.known():
            self.ensure_slots()
        self.refresh_pool_limit()
        self.recover_expired()
        self.start_safety_polls()
        self.recover_reservations()
        if self.coordination.once_per(BILLING_REPAIR, int(self.timing.repair_every_s * 1000)):
            self.billing.repair()
        self.sweep_cancelled_batches()
        self.complete_finished_batches()
        self.expire_contact_log()

    def refresh_pool_limit(self) -> None:
        """Read the workspace's concurrency limit from the provider (``get-concurrency``) every few minutes;
        one process of all does it. Outbound calls get the limit less the inbound reserve."""
        if self.config.retell_concurrency_limit:
            return
        if not self.coordination.once_per(POOL_REFRESH, int(self.timing.pool_refresh_s * 1000)):
            return
        try:
            concurrency = self.provider.get_concurrency()
        except ProviderError as exc:
            event(log, "concurrency_limit_unread", level=logging.WARNING, error=str(exc)[:200])
            self.coordination.reopen(POOL_REFRESH)
            return
        if concurrency.limit is None:
            return
        limit = max(1, concurrency.limit - (concurrency.reserved_inbound or 0))
        self.slots.set_pool_limit(limit, ttl_ms=int(self.timing.pool_refresh_s * 3000))
        event(log, "concurrency_limit_read", limit=limit, current=concurrency.current)

    def recover_expired(self, *, limit: int = 1000) -> int:
        """Take over jobs whose lease expired: re-dispatch, re-poll or reconcile — never dial blindly."""
        taken = self.jobs.claim_expired(limit=limit, lease=self._sim(self.timing.dialing_lease_s))
        for job in map(Job.from_doc, taken):
            owner = str(job.lease_owner)  # the new owner the claim wrote
            metrics.RECOVERED.labels(job.status).inc()
            event(log, "lease_recovered", job_id=job.id, state=job.status)
            if job.status == states.QUEUED:
                self.sender.dial(job.id, owner)
            elif job.status == states.IN_CALL:
                self.sender.poll(job.id, owner, job.call_id or "", 0)
            else:
                self.sender.reconcile(job.id, owner)
        return len(taken)

    def start_safety_polls(self, *, limit: int = 1000) -> int:
        """With webhooks, a call in progress is polled only when no webhook ended it by its ``poll_at`` (its ring
        timeout plus a margin): start the polls of those calls, each by one process."""
        started = 0
        now_ms = self.clock.now_ms()
        for job in map(Job.from_doc, self.jobs.due_safety_polls(limit=limit, now_ms=now_ms)):
            owner = job.lease_owner
            if owner and self.jobs.take_safety_poll(job.id, owner, now_ms=now_ms):
                self.sender.poll(job.id, owner, job.call_id or "", 0)
                started += 1
        if started:
            metrics.SAFETY_POLLS.inc(started)
            event(log, "safety_polls_started", calls=started)
        return started

    def ensure_slots(self) -> bool:
        """Rebuild the slot sets if Redis lost them, under a lock: two periodic runs never both rebuild (the
        second would delete slots taken after the first). False when another process holds the lock."""
        lock = self.coordination.rebuild_lock(timeout_s=SLOTS_REBUILD_LOCK_S)
        if not lock.acquire():
            return False
        try:
            if not self.slots.known():  # the holder before us may have rebuilt them already
                self.rebuild_slots()
            return True
        finally:
            with contextlib.suppress(LockError):
                lock.release()

    def rebuild_slots(self) -> None:
        """Refill the Redis slot sets from the calls MongoDB shows in progress (call :meth:`ensure_slots`)."""
        held: dict[str, dict[str, int]] = {}
        now_ms = self.clock.now_ms()
        for job in map(Job.from_doc, self.jobs.calling()):
            if job.attempt_id:
                until = max(job.lease_until or 0, now_ms + 60_000)
                if job.status == states.DIALING:   # its create may still go out: then the call lives its life
                    until = max(job.lease_until or 0, now_ms) + self._slot_lease_ms(self._settings_of(job))
                held.setdefault(job.account_id, {})[job.attempt_id] = until
        self.slots.rebuild(held)
        event(log, "slots_rebuilt", accounts=len(held), calls=sum(len(v) for v in held.values()))

    def recover_reservations(self, *, limit: int = 500) -> int:
        """Settle or release reservations whose call is over or was never placed."""
        older = self.clock.now_ms() - int(self._sim(self.timing.dialing_lease_s).total_seconds() * 1000)
        fixed = 0
        for res in self.billing.open_reservations(older_than_ms=older, limit=limit):
            aid = res.attempt_id
            doc = self.attempts.get(aid)
            attempt = Attempt.from_doc(doc) if doc is not None else None
            if attempt is None or attempt.state in (attempt_states.NOT_PLACED, attempt_states.ORPHANED):
                self.billing.release(aid)
                fixed += 1
            elif attempt.state == attempt_states.ENDED:
                self.billing.settle(aid, duration_ms=attempt.duration_ms)
                fixed += 1
        return fixed

    def sweep_cancelled_batches(self) -> int:
        """Cancel the jobs of cancelled batches that still wait (``pending``, ``queued``, ``waiting_schedule``,
        ``retry_wait``, ``waiting_balance``): a write that raced with the cancel (a finalize or a create failure
        that read the batch still active, an import that passed the door before it) left them where no dispatch
        looks. Jobs in a call go on; their finalize cancels them. A batch leaves the sweep once none of its jobs
        is open, so a run costs one query on batches, plus one update per waiting state and one look for an open
        job per batch cancelled while calls of it go on. Returns how many jobs it cancelled."""
        cancelled = 0
        for batch_id in self.batches.cancelled_to_sweep():
            found = self.jobs.cancel_batch(batch_id)
            if found:
                event(log, "cancelled_jobs_swept", batch_id=batch_id, jobs=found)
                cancelled += found
            if not self.jobs.has_open_jobs(batch_id):
                self.batches.swept(batch_id)
        return cancelled

    def complete_finished_batches(self) -> int:
        """Active batches whose every job is final become ``completed``."""
        active = self.batches.active_ids()
        if not active:
            return 0
        still_open = self.jobs.batches_with_open_jobs(active)
        done = 0
        for batch_id in active:
            if (batch_id not in still_open and self.jobs.has_jobs(batch_id)
                    and self.batches.set_status(batch_id, states.BATCH_COMPLETED, expected=(states.BATCH_ACTIVE,))):
                # Contacts added between the count and the write would be stranded: look once more.
                if self.jobs.has_open_jobs(batch_id):
                    self.batches.set_status(batch_id, states.BATCH_ACTIVE, expected=(states.BATCH_COMPLETED,))
                    continue
                done += 1
                event(log, "batch_completed", batch_id=batch_id)
        return done

    def expire_contact_log(self, *, force: bool = False) -> int:
        """Delete the attempts that ended and were created more than ``CONTACT_LOG_RETENTION_DAYS`` ago, once an
        hour (one process of all; ``force`` skips the gate), in bounded chunks: a run that leaves some (more than
        its chunks) leaves them to the next hour's. Returns how many it deleted."""
        if not force and not self.coordination.once_per(CONTACT_LOG_RETENTION, CONTACT_LOG_RETENTION_EVERY_MS):
            return 0
        cutoff = self.clock.now_ms() - int(self.config.contact_log_retention_days) * 86_400_000
        deleted = self.attempts.delete_ended_before(cutoff, chunk=RETENTION_CHUNK, max_chunks=RETENTION_CHUNKS)
        if deleted:
            event(log, "contact_log_expired", attempts=deleted, days=self.config.contact_log_retention_days)
        return deleted
