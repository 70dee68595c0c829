"""Finalize an ended call: settle its charge, record the attempt, move the job on, refill the slot."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from shared import metrics
from shared.domain import states
from shared.domain.call_settings import CallSettings, choose_retry_delay
from shared.domain.calling_window import applicable_profiles
from shared.domain.contact_policy import contact_keys, limits_of
from shared.domain.decisions import Also, JobWrite, decide_after_call
from shared.domain.outcomes import EFFECTS, ROUND_ENDING, Effect, Outcome, call_reason, classify
from shared.domain.reasons import Reason
from shared.domain.records import Job
from shared.domain.results import (
    analysis_of,
    analysis_result_update,
    call_extras,
    call_result_update,
    read_analysis,
)
from shared.logs import event, get_logger
from shared.pipeline.rounds import write
from shared.pipeline.step import Step
from shared.provider.retell import Call
from shared.stores.contact_history import DAY_MS

log = get_logger(__name__)


class Finalize(Step):
    """``finalize``: shared by the poll actor and the webhook handler."""

    if TYPE_CHECKING:  # the refill's entry point (:class:`shared.pipeline.dispatch.Dispatch`; the pipeline has both)
        def refill(self, account_id: str) -> int: ...

        # a conversation's analysis applied (:class:`shared.pipeline.after_call.AfterCallStep`)
        def await_analysis(self, job: Job, *, now_ms: int) -> JobWrite: ...

        def act_on_analysis(self, job: Job, analysis: Mapping[str, Any] | None, settings: CallSettings, *,
                            ended_ms: int, stopped: Reason | None, expected: Sequence[str] = ...,
                            also: Also | None = None, source: str) -> dict[str, Any] | None: ...

        def analysis_arrived(self, job_id: str, attempt_id: str, analysis: Mapping[str, Any], *, batch_id: str,
                             ended_ms: int | None, source: str) -> dict[str, Any] | None: ...

    @metrics.step("finalize")
    def finalize(self, job_id: str, call: Call, *, job: Job | Mapping[str, Any] | None = None,
                 lease_owner: str | None = None, source: str = "poll", refill: bool = True) -> str:
        """Apply an ended call to its job. Shared by the poll actor and the webhook; the second is a no-op.

        :param job: the job as the caller just read it (not read again); every write below is conditional on
            the job still being in this call, so a copy that went stale only makes them refused.
        :param refill: dial the account's next due job in this thread once the slot is free (a caller that
            answers someone first, the webhook handler, refills after answering).
        """
        current = self._job(job_id, job)
        if current is None or current.status != states.IN_CALL or current.call_id != call.call_id:
            return "duplicate"
        job = current
        aid = job.attempt_id
        assert aid is not None  # a job in a call, by its attempt
        cached = self.cache.get(job.batch_id)
        settings = self._settings_in(cached)
        duration_ms = int(call.duration_ms or 0)
        connected = call.start_timestamp_ms is not None and duration_ms > 0
        outcome = classify(call.disconnection_reason, connected=connected, call_analysis=call.call_analysis)
        reason = call_reason(outcome, call.disconnection_reason)
        charge = (self.billing.settle(aid, duration_ms=duration_ms if connected else 0)
                  if job.reserved else 0)  # nothing was reserved: an unlimited plan
        now_ms = self.clock.now_ms()
        conversation = connected and outcome != Outcome.VOICEMAIL
        analysis = analysis_of(call.call_analysis)
        extras = call_extras(call.raw, keep_transcript=settings.keep_transcripts)
        ended_here = self.attempts.end(aid, {
            "call_id": call.call_id, "outcome": outcome.value, "disconnection_reason": call.disconnection_reason,
            "started_at": call.start_timestamp_ms, "ended_at": call.end_timestamp_ms,
            "duration_ms": duration_ms, "charge": charge, "finalized_by": source, "finalized_at": now_ms,
            "notify_ended": True,
            **extras, **self.timing.analysis_fields(analysis, connected=connected, now_ms=now_ms, clock=self.clock),
        })
        self._finish_turn(job, aid, int(call.end_timestamp_ms or now_ms), conversation=conversation,
                          settings=settings, outcome=outcome.value)
        stopped = self._stopped(job, cached=cached)
        result_set, result_inc = call_result_update(
            attempt_id=aid, outcome=outcome.value, duration_ms=duration_ms if connected else 0, charge=charge,
            at_ms=int(call.end_timestamp_ms or call.start_timestamp_ms or now_ms), conversation=conversation,
            analysis=analysis, recording_url=extras.get("recording_url"))
        also = Also(result_set, result_inc)
        if conversation and EFFECTS[outcome] == Effect.COMPLETE and settings.after_call.needs_analysis:
            applied = self._after_conversation(job, analysis, settings, stopped=stopped, also=also, now_ms=now_ms,
                                               ended_ms=int(call.end_timestamp_ms or now_ms))
        else:
            applied = self._apply_outcome(job, outcome, reason, settings, stopped=stopped, also=also)
        self.slots.release(job.account_id, aid)
        if applied is None:
            return "duplicate"
        if conversation and analysis is None and not ended_here:
            self._analysis_of_twin(job, aid, waiting=applied.get("status") == states.ANALYZING)
        metrics.CALLS.labels(outcome.value).inc()
        fields: dict[str, Any] = {}
        if applied.get("status") == states.RETRY_WAIT:
            chosen = choose_retry_delay(settings, _round_outcome(outcome))
            metrics.RETRY_DELAY.observe(chosen.delay.total_seconds())
            fields = {"retry_delay_hours": chosen.hours, "retry_delay_for": chosen.outcome or "default"}
        event(log, "call_finalized", job_id=job_id, attempt_id=aid, outcome=outcome.value, source=source,
              status=applied.get("status"), **fields)
        if refill:
            self.refill(job.account_id)
        return outcome.value

    def _after_conversation(self, job: Job, analysis: Mapping[str, Any] | None, settings: CallSettings, *,
                            stopped: Reason | None, also: Also, now_ms: int, ended_ms: int) -> dict[str, Any] | None:
        """A conversation of a batch whose ``after_call`` reads its analysis: decided now when the call's object
        carries it, else the job waits for it (``analyzing``; :mod:`shared.pipeline.after_call`)."""
        if analysis is not None:
            return self.act_on_analysis(job, analysis, settings, ended_ms=ended_ms, stopped=stopped,
                                        expected=(states.IN_CALL,), also=also, source="finalize")
        return write(self.jobs, job.id, self.await_analysis(job, now_ms=now_ms).plus(also),
                     expected=(states.IN_CALL,))

    def _analysis_of_twin(self, job: Job, aid: str, *, waiting: bool) -> None:
        """Another finalize of this call (a poll and a webhook at once) ended the attempt, and this one moved the
        job: the other may have kept an analysis this one's read of the call did not have; it becomes the job's.
        When this one left the job ``waiting`` for that analysis (``analyzing``), the batch's ``after_call`` rules
        decide it now: no later delivery brings the analysis again (the attempt has it), and the results sweep's
        check would come seconds later, a callback asked for in the meantime placed late."""
        attempt = self.attempts.get(aid)
        analysis = read_analysis(attempt.get("analysis")) if attempt is not None else None
        if attempt is None or analysis is None:
            return
        self.jobs.record_analysis(job.id, aid, analysis_result_update(analysis, attempt.get("recording_url")))
        if waiting:
            self.analysis_arrived(job.id, aid, analysis, batch_id=job.batch_id, ended_ms=attempt.get("ended_at"),
                                  source="finalize")

    def _finish_turn(self, job: Job, aid: str, ended_ms: int, *, conversation: bool, settings: CallSettings,
                     outcome: str) -> None:
        """The call ended: under a contact policy or a profile's caps the person is free again, the call's outcome
        is known (a cap may not count it), and a conversation starts the quiet days (recorded before the job moves
        on, so a finalize that dies here is redone by the next poll or webhook)."""
        limits = limits_of(self._policy(job.account_id), applicable_profiles(settings, job.phone, config=self.config))
        if limits is None:
            return
        self.history.finish(job.account_id, contact_keys(job.contact, job.phone), aid, ended_ms,
                            conversation=conversation, outcome=outcome,
                            keep_ms=self.clock.now_ms() - limits.history_days * DAY_MS)

    def _apply_outcome(self, job: Job, outcome: Outcome, reason: Reason, settings: CallSettings, *,
                       stopped: Reason | None, also: Also) -> dict[str, Any] | None:
        """Move the job on (:func:`~shared.domain.decisions.decide_after_call`). ``stopped``: why its batch lets no job
        wait any more (cancelled while the call went on), or None; the job is then cancelled rather than left
        waiting where no dispatch looks. ``also``: the call's result, written with the job's move."""
        job_id = job.id
        expected = (states.IN_CALL,)
        change = decide_after_call(job, outcome, reason, settings, now_ms=self.jobs.clock.now_ms(),
                                   config=self.jobs.config, stopped=stopped)
        if change is not None:
            if EFFECTS[outcome] == Effect.HOLD:
                # The workspace cannot call, whatever this batch does.
                self.calls.hold_batches(job, reason, batch_id=None)
            return write(self.jobs, job_id, change.plus(also), expected=expected)
        this_call = {"call_id": job.call_id}
        if EFFECTS[outcome] == Effect.HOLD:
            return self.calls.hold(job, reason, batch_id=None, expected=expected, where=this_call, also=also)
        return self.calls.free_retry(job, reason, expected=expected, where=this_call, also=also)

def _round_outcome(outcome: Outcome) -> str | None:
    """The outcome whose retry delay applies when this call's job went to ``retry_wait``: the call's own when it
    can end a round, None (``retry_delay_hours``) when the round failed otherwise (a spent free-retry budget)."""
    return outcome.value if outcome in ROUND_ENDING else None
