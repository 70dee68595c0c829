"""A call's post-call analysis, when it comes after the call was finalized.

Retell analyses a call some seconds after it ends. When the ended call's object already carries the analysis, the
finalize keeps it with the attempt and the job's result in its own writes. Otherwise the attempt waits for it
(``analysis_due_at``, until ``analysis_until``: ``PIPELINE_ANALYSIS_WAIT_S`` after the end), and one of two paths
brings it: the ``call_analyzed`` webhook (:meth:`Analysis.record_analysis`), or a look at the provider
(:meth:`Analysis.look_for_analyses`, run every few seconds: first 5 real seconds after the end, or a minute with
webhooks, then waits doubling to a minute). Either writes the attempt once (the first analysis is kept) and, when
the call was the contact's last conversation, the job's ``result.analysis``, without reopening the job. Past the
wait the attempt is marked ``analysis_missing`` and the job waits for it no more.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from shared import metrics
from shared.domain.results import analysis_of, analysis_result_update, call_extras
from shared.domain.states import AttemptState
from shared.errors import ProviderError
from shared.logs import event, get_logger
from shared.pipeline.step import Step
from shared.provider.retell import Call

log = get_logger(__name__)

#: Attempts looked at per run of :meth:`Analysis.look_for_analyses`.
DEFAULT_LOOKS_PER_RUN = 50


def _conversation(attempt: Mapping[str, Any]) -> bool:
    """The attempt's call connected and was not a voicemail: its analysis is the contact's."""
    return (attempt.get("started_at") is not None and int(attempt.get("duration_ms") or 0) > 0
            and attempt.get("outcome") != "voicemail")


class Analysis(Step):
    """``record_analysis`` (the ``call_analyzed`` webhook) and ``look_for_analyses`` (the periodic look)."""

    @metrics.step("analysis")
    def record_analysis(self, call: Call, *, attempt: Mapping[str, Any] | None = None, source: str = "webhook") -> str:
        """Keep ``call``'s analysis: ``"analyzed"``, or why not (``"not_ready"``: the call has none yet;
        ``"unknown_call"``; ``"not_ended"``: its finalize has not run, and will keep it; ``"duplicate"``)."""
        analysis = analysis_of(call.call_analysis)
        if analysis is None:
            return "not_ready"
        if attempt is None:
            attempt = self._attempt_of(call)
        if attempt is None:
            return "unknown_call"
        if attempt.get("state") != AttemptState.ENDED:
            return "not_ended"
        aid = str(attempt["_id"])
        cached = self.cache.get(str(attempt.get("batch_id")))
        keep = self._settings_in(cached).keep_transcripts if cached is not None else False
        extras = call_extras(call.raw, keep_transcript=keep)
        if not self.attempts.record_analysis(aid, analysis, extras):
            return "duplicate"
        if _conversation(attempt):
            self.jobs.record_analysis(str(attempt["job_id"]), aid,
                                      analysis_result_update(analysis, extras.get("recording_url")))
        metrics.ANALYSES.labels("analyzed").inc()
        event(log, "call_analyzed", attempt_id=aid, job_id=attempt.get("job_id"), source=source,
              call_successful=analysis.get("call_successful"), sentiment=analysis.get("user_sentiment"))
        return "analyzed"

    def _attempt_of(self, call: Call) -> dict[str, Any] | None:
        named = call.metadata.get("attempt_id")
        if isinstance(named, str) and named:
            found = self.attempts.get(named)
            if found is not None and found.get("call_id") in (None, call.call_id):
                return found
        return self.attempts.of_call(call.call_id)

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
            full = self.attempts.get(aid)
            if full is not None:
                self.record_analysis(call, attempt=full, source="poll")
        return len(due)

    def _analysis_never_came(self, attempt: Mapping[str, Any]) -> None:
        aid = str(attempt["_id"])
        if not self.attempts.analysis_missing(aid):
            return
        self.jobs.record_analysis(str(attempt["job_id"]), aid, analysis_result_update(None, None))
        metrics.ANALYSES.labels("missing").inc()
        event(log, "analysis_missing", level=logging.WARNING, attempt_id=aid, job_id=attempt.get("job_id"),
              waited_s=self.timing.analysis_wait_s)
