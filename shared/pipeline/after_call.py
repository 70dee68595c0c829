"""Act on what a person said: a conversation's analysis decides its contact (``call_settings.after_call``).

A batch whose ``after_call`` has a rule besides the default (:attr:`shared.domain.call_settings.AfterCall.
needs_analysis`) does not complete a contact when its conversation ends: the finalize applies the rules at once when
the call's object already carries the analysis, and otherwise moves the job to ``analyzing`` (no lease, no slot,
its charge settled). The analysis then decides it where it arrives: the ``call_analyzed`` webhook or a look at the
provider (:meth:`shared.pipeline.analysis.Analysis.record_analysis`) calls :meth:`AfterCallStep.analysis_arrived`.
A job whose analysis was not applied (it came while the finalize was still writing, or a process died in between)
is found by :meth:`AfterCallStep.check_analyzing` (run by the results sweep) once its check is due: first a few
seconds after its attempt's first look, then once the analysis's wait (``PIPELINE_ANALYSIS_WAIT_S``) has ended,
when it moves on without the analysis (as a conversation). Each decision is one conditional write of the job
(``analyzing`` and its call), after the do-not-call entry of an opt-out (an upsert: written twice, listed once).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from shared import metrics
from shared.clock import from_ms
from shared.domain import states
from shared.domain.after_call import AfterCallDecision, decide_after_analysis
from shared.domain.call_settings import CallSettings
from shared.domain.decisions import Also, JobWrite
from shared.domain.reasons import Reason, because
from shared.domain.records import Job
from shared.domain.results import read_analysis
from shared.logs import event, get_logger
from shared.pipeline.rounds import write
from shared.pipeline.step import Step
from shared.stores.dnc import scope_of

log = get_logger(__name__)

#: Jobs checked per run of :meth:`AfterCallStep.check_analyzing`.
DEFAULT_CHECKS_PER_RUN = 100
#: The reason a do-not-call entry made by an opt-out carries.
OPT_OUT_REASON = "opt_out"


class AfterCallStep(Step):
    """``after_call``: a conversation's analysis applied to its job (see the module's docstring)."""

    def await_analysis(self, job: Job, *, now_ms: int) -> JobWrite:
        """The finalize's write of a conversation whose analysis is not there yet: ``analyzing``, checked at
        :meth:`shared.pipeline.timing.Timing.analysis_check_ms`."""
        return JobWrite(states.ANALYZING, {"next_try_at": self.timing.analysis_check_ms(now_ms, self.clock),
                                           **because("awaiting_analysis").fields(self._lang())},
                        where={"call_id": job.call_id})

    def act_on_analysis(self, job: Job, analysis: Mapping[str, Any] | None, settings: CallSettings, *,
                        ended_ms: int, stopped: Reason | None, expected: Sequence[str] = (states.ANALYZING,),
                        also: Also | None = None, source: str) -> dict[str, Any] | None:
        """Decide the job by its conversation's ``analysis`` (None: it never came) and write it: the job after the
        write, or None when it had moved on. ``expected``: the states the job must be in (``in_call`` when the
        finalize decides it in its own write, with ``also``, the call's result)."""
        now = self.clock.now()
        decision = decide_after_analysis(job, analysis, settings, ended=from_ms(ended_ms), now=now,
                                         config=self.config, guard=self._sim(self.timing.dial_guard_s),
                                         stopped=stopped)
        if decision.dnc_numbers:
            self.dnc.add(scope_of(job.account_id), [(n, OPT_OUT_REASON) for n in decision.dnc_numbers],
                         call_id=job.call_id)
        applied = write(self.jobs, job.id, decision.write.plus(also), expected=expected)
        if applied is not None:
            self._record(job, decision, applied, source=source)
        return applied

    def _record(self, job: Job, decision: AfterCallDecision, applied: Mapping[str, Any], *, source: str) -> None:
        metrics.AFTER_CALL_ACTIONS.labels(decision.action.value).inc()
        fields: dict[str, Any] = {}
        if decision.callback is not None and decision.callback.at is not None:
            fields["callback_at"] = decision.callback.at.isoformat()
        if decision.callback_ignored:
            fields["callback_ignored"] = decision.callback_ignored
        if decision.dnc_numbers:
            fields["listed"] = len(decision.dnc_numbers)
        event(log, "after_call_action", job_id=job.id, attempt_id=job.attempt_id, action=decision.action.value,
              status=applied.get("status"), source=source, **fields)

    def analysis_arrived(self, job_id: str, attempt_id: str, analysis: Mapping[str, Any], *, batch_id: str,
                         ended_ms: int | None, source: str) -> dict[str, Any] | None:
        """A conversation's analysis was just kept on its attempt: decide its job, when the batch's ``after_call``
        waits for it and the job still waits for this call's (nothing is read for a batch without rules)."""
        cached = self.cache.get(batch_id)
        settings = self._settings_in(cached)
        if cached is None or not settings.after_call.needs_analysis:
            return None
        job = self._job(job_id)
        if job is None or job.status != states.ANALYZING or job.attempt_id != attempt_id:
            return None
        return self.act_on_analysis(job, analysis, settings, ended_ms=int(ended_ms or self.clock.now_ms()),
                                    stopped=self._stopped(job, cached=cached), source=source)

    def check_analyzing(self, *, limit: int = DEFAULT_CHECKS_PER_RUN) -> int:
        """Decide the jobs waiting for an analysis whose check is due: with the analysis when their attempt has it,
        without it once the attempt's wait has ended (or its attempt is gone); otherwise check again when the wait
        ends. Returns how many were looked at."""
        now = self.clock.now_ms()
        due = self.jobs.analyzing_due(now, limit)
        for doc in due:
            job = Job.from_doc(doc)
            attempt = self.attempts.get(job.attempt_id) if job.attempt_id else None
            analysis = read_analysis(attempt.get("analysis")) if attempt is not None else None
            until = int(attempt.get("analysis_until") or 0) if attempt is not None else 0
            if analysis is None and attempt is not None and not attempt.get("analysis_missing") and now < until:
                self.jobs.check_analysis_later(job.id, int(doc["next_try_at"]),
                                               self.timing.analysis_last_check_ms(until, self.clock))
                continue
            cached = self.cache.get(job.batch_id)
            ended = int((attempt or {}).get("ended_at") or now)
            applied = self.act_on_analysis(job, analysis, self._settings_in(cached), ended_ms=ended,
                                           stopped=self._stopped(job, cached=cached), source="check")
            if applied is None:
                event(log, "after_call_check_refused", level=logging.DEBUG, job_id=job.id)
        return len(due)
