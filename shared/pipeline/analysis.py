"""A call's post-call analysis, when it comes after the call was finalized.

Retell analyses a call some seconds after it ends. When the ended call's object already carries the analysis, the
finalize keeps it with the attempt and the job's result in its own writes. Otherwise the attempt waits for it
(``analysis_due_at``, until ``analysis_until``: ``PIPELINE_ANALYSIS_WAIT_S`` after the end), and one of two paths
brings it: the ``call_analyzed`` webhook (:meth:`Analysis.record_analysis`), or a look at the provider
(:meth:`Analysis.look_for_analyses`, run every few seconds: first 5 real seconds after the end, or a minute with
webhooks, then waits doubling to a minute). Either writes the attempt once, in one round trip (the first analysis
is kept). When the call was the contact's last conversation, the result events' sweep
(:mod:`shared.pipeline.result_events`) copies it into the job's ``result.analysis``, in bulk, without reopening the
job. Past the wait the attempt is marked ``analysis_missing`` and the job waits for it no more.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from shared import metrics
from shared.domain.results import analysis_of, analysis_result_update, call_extras
from shared.errors import ProviderError
from shared.logs import event, get_logger
from shared.pipeline.step import Step
from shared.provider.retell import Call

log = get_logger(__name__)

#: Attempts looked at per run of :meth:`Analysis.look_for_analyses`.
DEFAULT_LOOKS_PER_RUN = 50


class Analysis(Step):
    """``record_analysis`` (the ``call_analyzed`` webhook) and ``look_for_analyses`` (the periodic look)."""

    if TYPE_CHECKING:  # what a kept analysis decides (:class:`shared.pipeline.after_call.AfterCallStep`)
        def analysis_arrived(self, job_id: str, attempt_id: str, analysis: Mapping[str, Any], *, batch_id: str,
                             ended_ms: int | None, source: str) -> dict[str, Any] | None: ...

    @metrics.step("analysis")
    def record_analysis(self, call: Call, *, source: str = "webhook") -> str:
        """Keep ``call``'s analysis on its ended attempt, in one conditional write (the attempt named by the call's
        ``metadata.attempt_id``, set when it was created; else the one holding the call): ``"analyzed"``, or
        ``"not_ready"`` (the call has none yet), ``"unknown_call"``, ``"duplicate"`` (kept already, or the attempt has
        not ended: its finalize keeps what its own read of the call has, and the look brings the rest).

        The contact's result learns it from the result events' sweep, which copies the analyses of conversations
        into their jobs in bulk (:mod:`shared.pipeline.result_events`)."""
        analysis = analysis_of(call.call_analysis)
        if analysis is None:
            return "not_ready"
        aid, batch_id = call.metadata.get("attempt_id"), call.metadata.get("batch_id")
        if not isinstance(aid, str) or not aid or not isinstance(batch_id, str):
            held = self.attempts.of_call(call.call_id)
            if held is None:
                return "unknown_call"
            aid, batch_id = str(held["_id"]), str(held.get("batch_id"))
        cached = self.cache.get(batch_id)
        keep = self._settings_in(cached).keep_transcripts if cached is not None else False
        if not self.attempts.record_analysis(aid, call.call_id, analysis,
                                             call_extras(call.raw, keep_transcript=keep)):
            return "duplicate"
        metrics.ANALYSES.labels("analyzed").inc()
        job_id = call.metadata.get("job_id")
        job_id = job_id if isinstance(job_id, str) and job_id else aid.split(":", 1)[0]
        event(log, "call_analyzed", attempt_id=aid, job_id=job_id, source=source,
              call_successful=analysis.get("call_successful"), sentiment=analysis.get("user_sentiment"))
        self.analysis_arrived(job_id, aid, analysis, batch_id=batch_id, ended_ms=call.end_timestamp_ms,
                              source=source)
        return "analyzed"

    def look_for_analyses(self, *, limit: int = DEFAULT_LOOKS_PER_RUN) -> int:
        """Look at the provider for the analyses due to be looked for now; give up on those past their wait.
        Returns how many were looked at."""
        now = self.clock.now_ms()
        due = self.attempts.analysis_due(now, limit)
        for attempt in due:
            aid = str(attempt["_id"])
            if now >= int(attempt.get("analysis_until") or 0):
                self._analysis_never_came(attempt)
                continue
            looks = int(attempt.get("analysis_looks") or 0)
            if not self.attempts.look_for_analysis(aid, int(attempt["analysis_due_at"]),
                                                   self.timing.next_analysis_look_ms(looks, now, self.clock)):
                continue  # another process looks at it
            call_id = attempt.get("call_id")
            if not call_id:
                continue
            try:
                call = self.provider.get_call(str(call_id))
            except ProviderError as exc:
                event(log, "analysis_look_failed", level=logging.WARNING, attempt_id=aid, error=exc.kind)
                continue   # looked at again at the next look
            self.record_analysis(call, source="poll")
        return len(due)

    def _analysis_never_came(self, attempt: Mapping[str, Any]) -> None:
        aid = str(attempt["_id"])
        if not self.attempts.analysis_missing(aid):
            return
        self.jobs.record_analysis(str(attempt["job_id"]), aid, analysis_result_update(None, None))
        metrics.ANALYSES.labels("missing").inc()
        event(log, "analysis_missing", level=logging.WARNING, attempt_id=aid, job_id=attempt.get("job_id"),
              waited_s=self.timing.analysis_wait_s)
