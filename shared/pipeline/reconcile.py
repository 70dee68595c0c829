"""Reconcile a dial whose create had an unknown outcome: send again with the same key, or look the call up."""

from __future__ import annotations

import logging

from shared import metrics
from shared.domain import reasons, states
from shared.domain.call_settings import CallSettings
from shared.domain.decisions import (
    LookUpStep,
    ReconcileStep,
    decide_look_up,
    decide_reconcile,
    decide_reconcile_attempt,
    decide_reconcile_job,
    replay_delay_s,
)
from shared.domain.reasons import Reason, because
from shared.domain.records import Attempt, Job
from shared.errors import DialAborted, ProviderError
from shared.logs import event, get_logger
from shared.pipeline.rounds import fail_round
from shared.pipeline.step import Step
from shared.provider.retell import Call
from shared.stores import attempts as attempt_states
from shared.stores.slots import Acquired

log = get_logger(__name__)


class Reconcile(Step):
    """The ``reconcile`` step: a dial whose create had an unknown outcome, settled before anything else."""

    @metrics.step("reconcile")
    def reconcile(self, job_id: str, lease_owner: str) -> str:
        """A ``dialing`` job whose create may or may not have reached the provider: settle it before anything else.

        Sent by the dial step after an unknown outcome (same owner), or by recovery after the dialing
        lease ended (new owner). In order: the attempt was never recorded (insert it as not placed:
        nothing was sent); its call is known (record it); it is not too old for the provider's
        idempotency (send the same create again with the same key: the provider answers with the call
        it made, or makes it now, once); otherwise look it up by metadata, and declare it not placed
        only once nothing can still be on its way.
        """
        job = self._job(job_id)
        first = decide_reconcile_job(job, lease_owner=lease_owner)
        if first is not None and first.step == ReconcileStep.STALE:
            return "stale"
        assert job is not None  # decide_reconcile_job says STALE for a missing job
        if first is not None:  # NOT_PLACED: the dial stopped before it named its attempt
            assert first.reason is not None  # a job not placed says why
            return self._not_placed(job, None, lease_owner, first.reason)
        aid = job.attempt_id
        assert aid is not None  # decide_reconcile_job says NOT_PLACED for a job without an attempt
        attempt = self.attempts.get(aid)
        decision = decide_reconcile_attempt(attempt, lease_owner=lease_owner)
        if decision.step == ReconcileStep.RECORD_NOT_PLACED:
            unrecorded = because("dial_interrupted_before_record").fields()
            if self.attempts.insert({"_id": aid, "job_id": job_id, "batch_id": job.batch_id,
                                     "account_id": job.account_id, "state": attempt_states.NOT_PLACED,
                                     "owner": lease_owner, "error": unrecorded.pop("last_error"), **unrecorded,
                                     "phone_index": job.phone_index, "round": job.tries + 1}):
                return self._not_placed(job, aid, lease_owner, because("dial_interrupted_before_provider"))
            attempt = self.attempts.get(aid)
            if attempt is None:
                return "retry"
            decision = decide_reconcile_attempt(attempt, lease_owner=lease_owner)
        assert attempt is not None  # decide_reconcile_attempt says RECORD_NOT_PLACED for a missing attempt
        held = Attempt.from_doc(attempt)
        if decision.step == ReconcileStep.NOT_PLACED:
            assert decision.reason is not None  # an attempt not placed says why
            return self._not_placed(job, aid, lease_owner, decision.reason)
        if decision.step == ReconcileStep.FINISH_GIVE_UP:
            # A give-up ended the attempt and stopped before it moved the job: finish it under the current owner.
            return self._finish_give_up(job, held, lease_owner)
        if decision.step == ReconcileStep.KNOWN_CALL:
            metrics.RECONCILES.labels("known").inc()
            return self.calls.record_call(job_id, aid, job.account_id, self._known_call(held), lease_owner,
                                          self._settings_of(job))
        if decision.step == ReconcileStep.TAKE_OVER and not self.attempts.take_over(aid, lease_owner):
            # The attempt changed under us (another process recorded it meanwhile): look again, a moment later.
            self.sender.reconcile(job_id, lease_owner, delay_ms=int(self.timing.reconcile_retry_s * 1000))
            return "retry"
        return self._replay_or_look_up(job, held, lease_owner)

    def _replay_or_look_up(self, job: Job, attempt: Attempt, lease_owner: str) -> str:
        """The attempt is this lease token's and its outcome unknown: send it again while its key protects it,
        else (or when the check before the send stopped it) look it up."""
        cached = self.cache.get(job.batch_id)
        age_real_s = self.clock.real_seconds((self.clock.now_ms() - attempt.created_at) / 1000)
        settings = cached.settings if cached is not None else None
        step = decide_reconcile(age_real_s=age_real_s, replay_window_s=self.timing.replay_window_s,
                                can_send=settings is not None)
        if step == ReconcileStep.REPLAY and settings is not None:
            result = self._replay(job, attempt, lease_owner, settings)
            if result is not None:
                return result
        return self._look_up(job, attempt, lease_owner)

    def _replay(self, job: Job, attempt: Attempt, lease_owner: str,
                settings: CallSettings) -> str | None:
        """Send the attempt's create again with its key; None when the check before the send stopped it (then it
        is looked up instead)."""
        job_id, aid, account_id = job.id, attempt.id, job.account_id
        # A send again may make the call: like any dial it needs a slot. The attempt still holds its own unless its
        # lease ended (a long freeze, a long run of ambiguous answers); then it waits for a free one.
        slot = self.slots.acquire(account_id, aid, limit=self._limit(account_id), now_ms=self.clock.now_ms(),
                                  lease_ms=self._slot_lease_ms(settings), pool_limit=self._pool_limit())
        if slot != Acquired.YES:
            if self._extend_dialing_lease(job_id, lease_owner, extra_s=self.timing.no_slot_retry_s) is None:
                return "stale"
            metrics.RECONCILES.labels("no_slot").inc()
            self.sender.reconcile(job_id, lease_owner, delay_ms=int(self.timing.no_slot_retry_s * 1000))
            return "no_slot"
        replays = attempt.replays
        wait_s = replay_delay_s(replays, base_s=self.timing.reconcile_retry_s)
        # The lease covers this send and the wait before the next one: this owner keeps the attempt meanwhile.
        lease_until = self._extend_dialing_lease(job_id, lease_owner, extra_s=wait_s)
        if lease_until is None:
            return "stale"
        self.attempts.count_replay(aid)
        try:
            result = self.calls.create(job, attempt, settings, lease_owner, lease_until, reserved=None, replay=True,
                                  retry_s=wait_s)
        except DialAborted as exc:
            event(log, "replay_not_sent", job_id=job_id, attempt_id=aid, kind=exc.kind,
                  reason=exc.reason.text(self._lang()), reason_code=exc.reason.code)
            return None
        metrics.RECONCILES.labels("replayed" if result == "dialed" else result).inc()
        return result

    def _known_call(self, attempt: Attempt) -> Call:
        assert attempt.call_id is not None  # decide_reconcile_attempt says KNOWN_CALL for an attempt with a call
        return Call(call_id=attempt.call_id, call_status="registered", to_number=attempt.to_number or None)

    def _look_up(self, job: Job, attempt: Attempt, lease_owner: str) -> str:
        """Find the attempt's call by its metadata; not placed only once nothing can still be on its way."""
        job_id, aid = job.id, attempt.id
        failed: ProviderError | None = None
        give_up_at: int | None = None
        try:
            found = self.provider.find_calls_by_metadata(attempt.to_number, "attempt_id", aid,
                                                         since_ms=attempt.created_at - 3_600_000,
                                                         max_pages=self.timing.lookup_max_pages)
        except ProviderError as exc:  # the provider failed, or the number has too many calls to read them all
            metrics.PROVIDER_ERRORS.labels(exc.kind).inc()
            found, failed = [], exc
            give_up_at = self._attempt_deadline_ms(job, attempt) + self._sim_ms(self.timing.dialing_lease_s)
        last_sent = max(attempt.created_at, attempt.last_sent_at or 0)
        step = decide_look_up(found=bool(found), now_ms=self.clock.now_ms(), last_sent_ms=last_sent,
                              settle_ms=self._sim_ms(self.timing.dialing_lease_s + self.timing.reconcile_grace_s),
                              give_up_at_ms=give_up_at)
        if step == LookUpStep.GIVE_UP:
            return self._give_up(job, attempt, lease_owner, because("lookup_failed", error=str(failed)))
        if step == LookUpStep.RETRY:
            metrics.RECONCILES.labels("retry").inc()
            self._extend_dialing_lease(job_id, lease_owner)
            self.sender.reconcile(job_id, lease_owner, delay_ms=int(self.timing.provider_backoff_s * 1000))
            return "retry"
        if step == LookUpStep.FOUND:
            metrics.RECONCILES.labels("found").inc()
            event(log, "reconciled_call_found", job_id=job_id, attempt_id=aid, call_id=found[0].call_id)
            return self.calls.record_call(job_id, aid, job.account_id, found[0], lease_owner, self._settings_of(job))
        if step == LookUpStep.WAIT:
            metrics.RECONCILES.labels("retry").inc()
            self._extend_dialing_lease(job_id, lease_owner)
            self.sender.reconcile(job_id, lease_owner, delay_ms=int(self.timing.reconcile_grace_s * 1000))
            return "retry"
        if not self.attempts.not_placed(aid, because("create_unknown_no_call"), owner=lease_owner):
            self.sender.reconcile(job_id, lease_owner, delay_ms=int(self.timing.reconcile_retry_s * 1000))
            return "retry"
        metrics.RECONCILES.labels("not_placed").inc()
        event(log, "reconciled_not_placed", job_id=job_id, attempt_id=aid)
        return self._not_placed(job, aid, lease_owner, because("provider_did_not_create"))

    def _attempt_deadline_ms(self, job: Job, attempt: Attempt) -> int:
        return self.timing.attempt_deadline_ms(attempt.created_at, self._settings_of(job))

    def _give_up(self, job: Job, attempt: Attempt, lease_owner: str, reason: Reason) -> str:
        """Past the attempt's deadline its call, if it ever existed, is over, and it still cannot be found:
        the attempt ends with an unknown outcome and counts (a failed round, the retry delay applies), so a
        person who may have been called is not called again at once, and the job does not wait forever.

        The attempt is ended only while this lease token owns it; a process that dies (or a store that fails)
        after that, before the job moved, leaves an ended attempt without a call, which the next reconcile of the
        job (:meth:`_finish_give_up`) completes under whoever owns the job then."""
        aid = attempt.id
        if not self.attempts.end(aid, {"outcome": "unknown", "finalized_by": "deadline", "charge": 0,
                                       "finalized_at": self.clock.now_ms(), "error": reason.text()[:300],
                                       "reason_code": reason.code, "reason_params": dict(reason.params)},
                                 owner=lease_owner):
            return "stale"
        metrics.RECONCILES.labels("given_up").inc()
        event(log, "reconcile_given_up", level=logging.WARNING, job_id=job.id, attempt_id=aid,
              reason=reason.text(self._lang())[:200], reason_code=reason.code)
        return self._finish_give_up(job, attempt, lease_owner, reason=reason)

    def _finish_give_up(self, job: Job, attempt: Attempt, lease_owner: str, *,
                        reason: Reason | None = None) -> str:
        """The given-up attempt's slot and hold go back, and its job's round fails (each step idempotent)."""
        aid = attempt.id
        self.calls.give_back(job, aid, turn=False)  # the call may have been made: it still counts
        why = reason or reasons.of(attempt.doc) or because("not_placed")
        fail_round(self.jobs, job.id, because("create_unknown_past_deadline", why=why),
                   self._settings_of(job), job=job, expected=(states.DIALING,), lease_owner=lease_owner)
        return "given_up"

    def _not_placed(self, job: Job, aid: str | None, lease_owner: str, reason: Reason) -> str:
        """The attempt never reached the provider: give back its slot and hold, and the job is due again now."""
        if aid:
            self.calls.give_back(job, aid)
        self.jobs.release(job.id, self.clock.now(), reason, expected=(states.DIALING,), lease_owner=lease_owner)
        return "not_placed"

    def _extend_dialing_lease(self, job_id: str, lease_owner: str, *, extra_s: float = 0.0) -> int | None:
        """A fresh dialing lease for the owner (``extra_s`` real seconds longer); its end (ms), or None when the job
        is no longer its own."""
        until = self.clock.now_ms() + self._sim_ms(self.timing.dialing_lease_s + extra_s)
        return until if self.jobs.extend_dialing_lease(job_id, lease_owner, until) else None
