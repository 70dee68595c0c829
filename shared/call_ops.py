"""What several pipeline steps do to a call attempt: give back what it holds, hold the batches, retry for free,
send the create and record the call.

One :class:`CallOps` per step object (:attr:`shared.step.Step.calls`); the dial, the reconcile and the finalize call
its public methods, and no step calls another step's private method.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from shared.contact_history import DAY_MS
from shared.contact_policy import contact_keys

if TYPE_CHECKING:
    from shared.step import Step


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
