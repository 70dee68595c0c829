"""What several pipeline steps do to a call attempt: give back what it holds, hold the batches, retry for free,
send the create and record the call.

One :class:`CallOps` per step object (:attr:`shared.step.Step.calls`); the dial, the reconcile and the finalize call
its public methods, and no step calls another step's private method.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from shared import metrics, states
from shared.call_settings import CallSettings
from shared.contact_history import DAY_MS
from shared.contact_policy import contact_keys
from shared.decisions import decide_free_retry, next_poll_delay_s, safety_poll_at_ms
from shared.errors import CallNotFound, ProviderError
from shared.logs import event, get_logger, mask_phone
from shared.reasons import Reason, because
from shared.rounds import fail_round

if TYPE_CHECKING:
    from shared.step import Step

log = get_logger(__name__)

class CallOps:
    """The operations on a call attempt that the steps share, over the stores, clients, clock and timing of the step
    that holds it (read from the step at each use, so a store the step is given later is the one used)."""

    def __init__(self, step: Step) -> None:
        self._step = step

    def __getattr__(self, name: str) -> Any:
        # The step's stores, clients, clock, timing and the helpers every step has (:class:`shared.step.Step`).
        return getattr(self._step, name)

    def give_back(self, job: Mapping[str, Any], aid: str, *, turn: bool = True) -> None:
        """Give back what the attempt holds: its slot, its balance hold and (``turn``) its contact policy turn (an
        attempt never placed no longer counts against the callee's caps)."""
        self.slots.release(job["account_id"], aid)
        self.billing.release(aid)
        if turn:
            self._forget_turn(job, aid)

    def _forget_turn(self, job: Mapping[str, Any], aid: str) -> None:
        """The attempt was not placed: it no longer counts against the callee's caps."""
        policy = self._policy(job["account_id"])
        if policy is None:
            return
        phones = job["contact"]["phones"]
        phone = phones[min(int(job.get("phone_index", 0)), len(phones) - 1)]
        self.history.forget(job["account_id"], contact_keys(job["contact"], phone), aid,
                            keep_ms=self.clock.now_ms() - policy.history_days * DAY_MS)

    def free_retry(self, job: Mapping[str, Any], reason: Reason, own: Mapping[str, Any], *,
                   retry_after_s: float | None = None) -> dict[str, Any] | None:
        """A provider fault that spends no attempt: back to ``pending`` after a growing wait, within the budget;
        past ``PIPELINE_MAX_FREE_RETRIES`` of them in a row, the round fails and says why."""
        used = int(job.get("free_retries", 0) or 0)
        wait_s = decide_free_retry(used, limit=self.config.pipeline_max_free_retries, retry_after_s=retry_after_s,
                                   base_s=self.config.pipeline_free_retry_base_s)
        if wait_s is None:
            metrics.FREE_RETRIES.labels("budget_spent").inc()
            return fail_round(self.jobs, job["_id"], because("free_retries_spent", used=used, last=reason),
                              self._settings_of(job), job=job, expected=own["expected"],
                              lease_owner=own.get("lease_owner"))
        metrics.FREE_RETRIES.labels("retried").inc()
        return self.jobs.reschedule(job["_id"], self.clock.now() + self._sim(wait_s), reason, status=states.PENDING,
                                    inc={"free_retries": 1}, **own)

    def hold(self, job: Mapping[str, Any], reason: Reason, *, batch_id: str | None,
             own: Mapping[str, Any]) -> dict[str, Any] | None:
        """Hold the batch (or every active batch) until an operator resumes it; the job waits, unspent."""
        self.hold_batches(job, reason, batch_id=batch_id)
        return self.jobs.reschedule(job["_id"], self.clock.now(), because("batch_held", held=reason),
                                    status=states.PENDING, **own)

    def hold_batches(self, job: Mapping[str, Any], reason: Reason, *, batch_id: str | None) -> None:
        """Hold the batch (or, ``batch_id`` None, every active batch) until an operator resumes it."""
        text = reason.text(self._lang())
        held = self.batches.hold(text, batch_id=batch_id, seen_at=job.get("dialed_at"))
        metrics.BATCHES_HELD.inc(len(held))
        event(log, "batches_held", level=logging.WARNING, batches=len(held), reason=text[:300],
              reason_code=reason.code)

    def record_call(self, job_id: str, aid: str, account_id: str, call: Any, lease_owner: str,
                    settings: CallSettings, *, reserved: int | None = None) -> str:
        """The provider made ``call`` for the attempt: the attempt learns it, the job goes ``in_call`` (a call its
        job no longer waits for is stopped) and its polls start (without webhooks)."""
        lease_ms = self.timing.in_call_lease_until_ms(settings, self.clock)
        # The attempt learns its call first: a webhook may finalize the call as soon as the job is in_call,
        # and a process that takes the job over reads the call from the attempt.
        self.attempts.set_call(aid, call.call_id)
        fields: dict[str, Any] = {"call_id": call.call_id, "lease_until": lease_ms}
        if reserved is not None:
            fields["reserved"] = reserved
        if self.timing.webhooks:
            # The call's end comes by webhook; maintenance starts the polls only if none came by then.
            fields["poll_at"] = safety_poll_at_ms(self.clock.now_ms(), ring_timeout_s=settings.ring_timeout,
                                                  margin_s=self.timing.safety_poll_sim_s)
        won = self.jobs.transition(job_id, expected=(states.DIALING,), to=states.IN_CALL, lease_owner=lease_owner,
                                   where={"attempt_id": aid}, set_=fields)
        if won is None:
            current = self.jobs.get(job_id)
            attempt = self.attempts.get(aid)
            mine = (current is not None and current.get("attempt_id") == aid and attempt is not None
                    and attempt.get("call_id") == call.call_id)
            if not mine:
                # The job moved on to another attempt while this create was in flight: never let a second call live.
                self._stop_quietly(call.call_id)
                self.attempts.orphaned(aid, call.call_id)
                event(log, "orphan_call_stopped", job_id=job_id, attempt_id=aid, call_id=call.call_id)
                return "orphaned"
            return "recorded_elsewhere"  # whoever holds the job now records (or has recorded) this same call
        event(log, "call_created", job_id=job_id, attempt_id=aid, call_id=call.call_id,
              to=mask_phone(getattr(call, "to_number", "") or ""))
        if not self.timing.webhooks:
            self.sender.poll(job_id, lease_owner, call.call_id, 0, delay_ms=self._real_ms(next_poll_delay_s(0)))
        return "dialed"

    def _stop_quietly(self, call_id: str) -> None:
        try:
            self.provider.stop_call(call_id)
        except CallNotFound:
            pass
        except ProviderError as exc:
            event(log, "stop_call_failed", call_id=call_id, error=str(exc))
