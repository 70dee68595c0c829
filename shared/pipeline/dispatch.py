"""Dispatch due jobs: ``schedule_due`` and the refill of a freed slot, fairly within the workspace's pool."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from redis.exceptions import LockError

from shared import metrics
from shared.clock import from_ms
from shared.domain import states
from shared.domain.decisions import dispatch_order, fair_share
from shared.domain.records import Job
from shared.pipeline.step import Step
from shared.pipeline.timing import DISPATCH_LOCK_MS

if TYPE_CHECKING:
    from shared.domain.decisions import DialResult, DialStep


class Dispatch(Step):
    """Claims due jobs and sends their dial messages."""

    if TYPE_CHECKING:  # the dial step's entry point (:class:`shared.pipeline.dial.Dial`; the pipeline has both)
        def dial(self, job_id: str, lease_owner: str, *,
                 job: Job | Mapping[str, Any] | None = None) -> DialStep | DialResult: ...

    @metrics.step("dispatch")
    def schedule_due(self, account_id: str | None = None) -> int:
        """Dispatch due jobs of active batches, at most as many per account as it has free slots.

        Returns the number of jobs dispatched. The periodic upkeep (lease recovery, slot rebuild, lost
        reservations, billing repair, batch completion) is :meth:`shared.pipeline.maintenance.Maintenance.maintain`.
        """
        return self._dispatch(self.batches.active_by_account(), only=account_id)

    def _dispatch(self, active: Mapping[str, list[str]], *, only: str | None = None) -> int:
        """Dispatch due jobs of ``active`` accounts (or ``only`` one), fairly within the workspace's pool.

        The pool's free slots are shared out in turn: each account gets at most an even share of what
        is left (an account with fewer due jobs leaves the rest to the next ones), and the first account
        changes from one run to the next, so one large campaign never starves a small one.
        """
        accounts = [only] if only else sorted(active)
        accounts = [a for a in accounts if a in active]
        if not accounts:
            return 0
        if len(accounts) > 1:
            accounts = dispatch_order(accounts, self.coordination.next_turn())
        pool_free = self._pool_free()
        dispatched = 0
        for i, acc in enumerate(accounts):
            if pool_free <= 0:
                break
            share = fair_share(pool_free, len(accounts) - i)
            claimed = max(0, self._dispatch_account(acc, active[acc], cap=share))
            pool_free -= claimed
            dispatched += claimed
        return dispatched

    def _pool_free(self) -> int:
        """Free slots of the workspace: its limit, less the calls in flight and the jobs queued to dial."""
        now_ms = self.clock.now_ms()
        free = self._pool_limit() - self.slots.pool_in_use(now_ms=now_ms)
        return free if free <= 0 else free - self.jobs.count_queued(None)

    @metrics.step("refill")
    def refill(self, account_id: str) -> int:
        """A slot of the account was freed: claim its next due job and dial it now, in this thread.

        No broker hop: the process that freed the slot (the finalize of a poll or of a webhook) places the next
        call itself, so a slot stays empty only for the time of the claim and the dial's own writes. A refill
        claims one job, the freed slot's, with one round trip (:meth:`JobStore.claim_next`), and only when the
        slot sets show room (the account's and the workspace's); wider gaps are the periodic dispatch's, which
        counts the queued jobs too. It takes no lock: refills that race each claim another job, and one that
        races the periodic dispatch for the last slot finds no slot at its dial and waits a moment.
        """
        active = self._remembered("active", self.batches.active_by_account)
        if account_id not in active:
            return 0
        if len(active) > 1:
            # Several accounts share the workspace's pool: the freed slot goes to whoever's turn it is.
            return self._dispatch(active)
        now_ms = self.clock.now_ms()
        if (self._limit(account_id) - self.slots.in_use(account_id, now_ms=now_ms) <= 0
                or self._pool_limit() - self.slots.pool_in_use(now_ms=now_ms) <= 0):
            return 0
        # No dispatch lock: the claim is one conditional update, so concurrent refills each take another job.
        # A state found without due jobs is not asked again for a second (the periodic dispatch still claims
        # from every state), so the end of a campaign costs its refills nothing.
        among = [state for state in states.CLAIMABLE if not self._remembered(f"none-due:{account_id}:{state}",
                                                                              lambda: False)]
        if not among:
            return 0
        horizon = self._sim(self.timing.horizon_s)
        empty: set[str] = set()
        claimed = self.jobs.claim_next(lease=horizon + self._sim(self.timing.queued_lease_s), horizon=horizon,
                                   batch_ids=active[account_id], account_id=account_id, among=among, empty=empty)
        for state in empty:
            self._remember(f"none-due:{account_id}:{state}", True)
        if claimed is None:
            return 0
        job = Job.from_doc(claimed)
        owner = str(job.lease_owner)  # the owner the claim wrote
        delay_ms = self.clock.real_delay_ms(from_ms(job.next_try_at or 0))
        if delay_ms > 0:
            self.sender.dial(job.id, owner, delay_ms=delay_ms)
        else:
            self.dial(job.id, owner, job=job)
        return 1

    def _dispatch_account(self, account_id: str, batch_ids: list[str], *, cap: int) -> int:
        """Claim and send as many due jobs as the account has free slots, at most ``cap`` (its share of the
        workspace's pool); -1 when another process is at it."""
        now_ms = self.clock.now_ms()
        limit = self._limit(account_id)
        if min(limit - self.slots.in_use(account_id, now_ms=now_ms), cap) <= 0:
            return 0  # no room even before counting the queued jobs
        lock = self.coordination.dispatch_lock(account_id, timeout_s=DISPATCH_LOCK_MS / 1000)
        if not lock.acquire():
            return -1
        try:
            queued = self.jobs.count_queued(account_id)
            # At most ``dispatch_limit`` jobs of an account wait in the broker at once: more than a process can
            # dial within their queued lease would expire there and be dispatched again.
            budget = min(limit - self.slots.in_use(account_id, now_ms=now_ms) - queued, cap,
                         self.timing.dispatch_limit - queued)
            if budget <= 0:
                return 0
            horizon = self._sim(self.timing.horizon_s)
            lease = horizon + self._sim(self.timing.queued_lease_s)
            claimed = self.jobs.claim_due(limit=budget, lease=lease, horizon=horizon, batch_ids=batch_ids,
                                          account_id=account_id)
            for job in map(Job.from_doc, claimed):
                delay = self.clock.real_delay_ms(from_ms(job.next_try_at or 0))
                self.sender.dial(job.id, str(job.lease_owner), delay_ms=delay)
            return len(claimed)
        finally:
            with contextlib.suppress(LockError):  # expired and maybe taken by another process: not ours to delete
                lock.release()
