"""Operator controls of a batch: pause, resume, cancel, and reopening a completed batch.

Plain functions over the stores, called by the admin API. Each is one conditional update of the
batch (its expected statuses in the filter), so two operators (or an operator and the pipeline) can
never both win the same change; the batch store publishes the cache invalidation after the write, so
every process sees the new status at once.

- **pause**: ``active|held -> paused``. Jobs are not touched: the dial step reads the batch's status
  and puts each job it was about to dial back to ``pending``; calls already in progress end normally.
- **resume**: ``paused|held -> active`` (leaving ``held`` drops ``held_reason``); the scheduler
  dispatches the waiting jobs on its next run.
- **held** is not a control: the pipeline moves an ``active`` batch to ``held``
  (:meth:`shared.stores.batches.BatchStore.hold`) when the provider refuses its calls for a reason no contact
  can fix (a bad API key, no payment, a caller id or agent it does not know). Its jobs wait as for a
  pause; resume it once the cause is fixed, or pause or cancel it.
- **cancel**: ``active|paused|held -> cancelled``, then every job not yet handed to the provider
  (``pending``, ``queued``, ``waiting_schedule``, ``retry_wait``, ``waiting_balance``) becomes
  ``cancelled``; calls in progress end normally, and their finalize cancels their job unless the call
  completed the contact (or failed it for good). What a write racing with the cancel leaves waiting is
  cancelled by maintenance's sweep (:meth:`shared.pipeline.maintenance.Maintenance.sweep_cancelled_batches`).
  Cancelling a cancelled batch cancels its waiting jobs again (``changed`` False).
- **completed** is not a control either: maintenance
  (:meth:`shared.pipeline.maintenance.Maintenance.complete_finished_batches`) moves an ``active`` batch whose
  every job is final to ``completed``. Pause, resume and cancel refuse a completed batch.
- **reopen**: ``completed -> active``, when contacts are imported into a finished batch so its new
  jobs are dialed; a batch in any other status is left as it is, without error.

Asking for the state a batch is already in changes nothing and is not an error (``changed`` is
False); asking for an impossible move (resuming a cancelled batch, pausing or cancelling a completed
one) raises :class:`Conflict`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.domain import states
from shared.domain.reasons import Reason
from shared.errors import Conflict
from shared.logs import event, get_logger
from shared.stores.batches import BatchStore
from shared.stores.jobs import CANCELLED, JobStore

log = get_logger(__name__)

#: The reason written on the jobs a cancellation finishes.
DEFAULT_CANCEL_REASON = CANCELLED


@dataclass(frozen=True, kw_only=True)
class ControlResult:
    """What a control did.

    :param batch: the batch document after the control.
    :param changed: False when the batch already was in the requested state.
    :param cancelled_jobs: jobs moved to ``cancelled`` (cancel only).
    """

    batch: dict[str, Any]
    changed: bool
    cancelled_jobs: int = 0

    @property
    def status(self) -> str:
        return str(self.batch["status"])


def _refused(batch: dict[str, Any], action: str, allowed: tuple[str, ...]) -> Conflict:
    return Conflict(f"batch {batch['_id']} is {batch['status']}: only a batch that is {' or '.join(allowed)} "
                    f"can be {action}")


def _move(batches: BatchStore, batch_id: str, to: str, expected: tuple[str, ...], action: str) -> ControlResult:
    doc = batches.set_status(batch_id, to, expected=expected)
    if doc is not None:
        event(log, f"batch_{action}", batch_id=doc["_id"])
        return ControlResult(batch=doc, changed=True)
    current = batches.require(batch_id)
    if current["status"] == to:
        return ControlResult(batch=current, changed=False)
    raise _refused(current, action, expected)


def pause_batch(batches: BatchStore, batch_id: str) -> ControlResult:
    """``active|held -> paused``; already paused: unchanged.

    :raises NotFound: no such batch (or a malformed id).
    :raises Conflict: the batch is cancelled or completed.
    """
    return _move(batches, batch_id, states.BATCH_PAUSED, (states.BATCH_ACTIVE, states.BATCH_HELD), "paused")


def resume_batch(batches: BatchStore, batch_id: str) -> ControlResult:
    """``paused|held -> active``; already active: unchanged.

    :raises NotFound: no such batch (or a malformed id).
    :raises Conflict: the batch is cancelled or completed.
    """
    return _move(batches, batch_id, states.BATCH_ACTIVE, (states.BATCH_PAUSED, states.BATCH_HELD), "resumed")


def reopen_batch(batches: BatchStore, batch_id: str) -> ControlResult:
    """``completed -> active`` (new contacts were added); any other status: unchanged, no error.

    :raises NotFound: no such batch (or a malformed id).
    """
    doc = batches.set_status(batch_id, states.BATCH_ACTIVE, expected=(states.BATCH_COMPLETED,))
    if doc is not None:
        event(log, "batch_reopened", batch_id=doc["_id"])
        return ControlResult(batch=doc, changed=True)
    return ControlResult(batch=batches.require(batch_id), changed=False)


def cancel_batch(batches: BatchStore, jobs: JobStore, batch_id: str, *,
                 reason: Reason = DEFAULT_CANCEL_REASON) -> ControlResult:
    """``active|paused|held -> cancelled``, then cancel every job not yet dialed.

    Cancelling a cancelled batch cancels again whatever job is still waiting (maintenance's sweep does it by
    itself within a run; a batch cancelled before the sweep existed may still hold such jobs) and reports
    ``changed=False``.

    :param reason: the reason of the cancelled jobs; default :data:`DEFAULT_CANCEL_REASON`.
    :raises NotFound: no such batch (or a malformed id).
    :raises Conflict: the batch is completed.
    """
    cancellable = (states.BATCH_ACTIVE, states.BATCH_PAUSED, states.BATCH_HELD)
    doc = batches.set_status(batch_id, states.BATCH_CANCELLED, expected=cancellable)
    changed = doc is not None
    if doc is None:
        doc = batches.require(batch_id)
        if doc["status"] != states.BATCH_CANCELLED:
            raise _refused(doc, "cancelled", cancellable)
    cancelled = jobs.cancel_batch(doc["_id"], reason)
    event(log, "batch_cancelled", batch_id=doc["_id"], cancelled_jobs=cancelled, repeated=not changed)
    return ControlResult(batch=doc, changed=changed, cancelled_jobs=cancelled)
