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
from shared.contact_history import DAY_MS
from shared.contact_policy import contact_keys
from shared.decisions import decide_free_retry
from shared.logs import event, get_logger
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
