"""Poll a call in progress: when to look again, when to stop a call past its limit, when to force its end."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from shared import metrics
from shared.domain import states
from shared.domain.decisions import (
    PollStep,
    decide_poll,
    next_poll_delay_s,
    next_safety_poll_delay_s,
    stop_retry_delay_s,
)
from shared.domain.records import Job
from shared.errors import (
    CallNotFound,
    ProviderError,
)
from shared.logs import event, get_logger
from shared.pipeline.step import Step
from shared.provider.retell import Call

log = get_logger(__name__)


class Poll(Step):
    """The ``poll`` step: a call in progress, read at its likely end; an ended one goes to ``finalize``."""

    # The finalize step's entry point (:class:`shared.pipeline.finalize.Finalize`; the pipeline has both).
    if TYPE_CHECKING:
        def finalize(self, job_id: str, call: Call, *, job: Job | Mapping[str, Any] | None = None,
                     lease_owner: str | None = None, source: str = "poll", refill: bool = True) -> str: ...

    @metrics.step("poll")
    def poll(self, job_id: str, lease_owner: str, call_id: str, n: int) -> str:
        """Ask the provider about an in-progress call; re-send itself until the call is over.

        One MongoDB read per poll: the in-call lease already covers the call's longest life, so a
        poll writes nothing unless it has to stop the call. The lease token in the message keeps
        a single poll chain per call (a chain whose token was taken over by recovery stops). Past the
        attempt's deadline the call is stopped (the stop retried with backoff while it fails), and a
        call the provider still calls going a stop grace later, or cannot tell about, ends here as a
        timeout: no attempt holds its job, slot and hold forever.
        """
        job = self._job(job_id)
        if (job is None or job.status != states.IN_CALL or job.lease_owner != lease_owner
                or (call_id and job.call_id != call_id)):
            return "stale"
        assert job.call_id is not None  # a job in a call
        call_id = job.call_id
        call: Call | None
        try:
            call = self.provider.get_call(call_id)
        except CallNotFound as exc:
            # The provider created this call (its id came from the create's answer) and now says it does not know
            # it: that says nothing of whether the person's phone is ringing. Unknown, like an unreachable
            # provider: polled again, and ended here as a timeout past the attempt's deadline; never a free retry,
            # which would dial the person again within seconds.
            metrics.PROVIDER_ERRORS.labels(exc.kind).inc()
            event(log, "call_not_found", job_id=job_id, call_id=call_id)
            call = None
        except ProviderError as exc:
            metrics.PROVIDER_ERRORS.labels(exc.kind).inc()
            call = None
        if call is not None and call.is_final:
            return self.finalize(job_id, call, job=job, lease_owner=lease_owner)
        settings = self._settings_of(job)
        step = decide_poll(final=False, start_ms=call.start_timestamp_ms if call else None,
                           created_ms=job.dialed_at or self.clock.now_ms(), now_ms=self.clock.now_ms(),
                           max_call_duration_s=settings.max_call_duration, ring_timeout_s=settings.ring_timeout,
                           grace_s=self.timing.call_grace_sim_s,
                           stop_grace_s=self.clock.simulated_seconds(self.timing.stop_grace_s))
        if step == PollStep.FORCE_END:
            return self._force_end(job, call, lease_owner)
        if step == PollStep.STOP and not job.stop_acked:
            return self._stop_past_limit(job, lease_owner, n)
        if step == PollStep.STOP:
            return self._poll_again(job_id, lease_owner, call_id, n, 1.0)
        if self.timing.webhooks:
            # A safety-net chain: the webhook still ends the call; look again rarely, and at its deadline.
            deadline = self.timing.attempt_deadline_ms(job.dialed_at or self.clock.now_ms(), settings)
            wait = next_safety_poll_delay_s(n, now_ms=self.clock.now_ms(), deadline_ms=deadline,
                                            margin_s=self.timing.safety_poll_sim_s)
            return self._poll_again(job_id, lease_owner, call_id, n, wait)
        if call is None:
            return self._poll_again(job_id, lease_owner, call_id, n, max(next_poll_delay_s(n), 5.0))
        return self._poll_again(job_id, lease_owner, call_id, n, next_poll_delay_s(n))

    def _stop_past_limit(self, job: Job, lease_owner: str, n: int) -> str:
        """Ask the provider to end a call past its limits; a failed stop is tried again with backoff."""
        job_id, call_id = job.id, job.call_id
        assert call_id is not None and job.attempt_id is not None  # a job in a call, by its attempt
        now = self.clock.now_ms()
        fields: dict[str, Any] = {"stop_requested_at": job.stop_requested_at or now}
        try:
            self.provider.stop_call(call_id)
            fields["stop_acked"] = True
        except CallNotFound:
            fields["stop_acked"] = True
        except ProviderError as exc:
            metrics.PROVIDER_ERRORS.labels(exc.kind).inc()
            event(log, "stop_call_failed", call_id=call_id, error=str(exc)[:200], attempt=job.stop_attempts)
        self.jobs.record_stop_request(job_id, lease_owner, fields)
        if not job.stop_requested_at:
            self.attempts.mark(job.attempt_id, {"stopped_for_timeout": True, "stop_requested_at": now})
            event(log, "call_stopped_past_max_duration", job_id=job_id, call_id=call_id)
        if fields.get("stop_acked"):
            return self._poll_again(job_id, lease_owner, call_id, n, 1.0)
        wait_real = stop_retry_delay_s(job.stop_attempts + 1)
        self.sender.poll(job_id, lease_owner, call_id, n + 1, delay_ms=int(wait_real * 1000))
        return "stop_retry"

    def _force_end(self, job: Job, call: Call | None, lease_owner: str) -> str:
        """The call outlived its deadline by the stop grace: end the attempt here, as a timeout.

        The duration charged is what is known: from the provider's start (if it ever reported one) to now.
        """
        now = self.clock.now_ms()
        start = call.start_timestamp_ms if call is not None else None
        assert job.call_id is not None and job.attempt_id is not None  # a job in a call, by its attempt
        ended = Call(call_id=job.call_id, call_status="ended", disconnection_reason="manual_stopped",
                     start_timestamp_ms=start, end_timestamp_ms=now,
                     duration_ms=max(0, now - start) if start is not None else 0,
                     to_number=call.to_number if call is not None else None)
        self.attempts.mark(job.attempt_id, {"forced_end": True})
        event(log, "call_forced_end", level=logging.WARNING, job_id=job.id, call_id=job.call_id,
              reachable=call is not None)
        metrics.FORCED_ENDS.inc()
        return self.finalize(job.id, ended, job=job, lease_owner=lease_owner, source="deadline")

    def _poll_again(self, job_id: str, lease_owner: str, call_id: str, n: int, delay_sim_s: float) -> str:
        self.sender.poll(job_id, lease_owner, call_id, n + 1, delay_ms=self._real_ms(delay_sim_s))
        return "polling"
