"""The after-call rules applied to one job: read it (unless the caller holds it), decide with
:mod:`shared.domain.decisions`, write the result through :class:`~shared.stores.jobs.JobStore` in one conditional
update. Shared by the dial, reconcile and finalize steps and usable on a store alone."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shared.domain import states
from shared.domain.call_settings import CallSettings
from shared.domain.decisions import Also, JobWrite, decide_failed_round, decide_next_phone
from shared.domain.reasons import Reason
from shared.domain.records import Job
from shared.stores.jobs import JobStore


def write(jobs: JobStore, job_id: str, change: JobWrite, *, expected: Sequence[str],
          lease_owner: str | None = None) -> dict[str, Any] | None:
    """Write a decided change; the job after it, or None when it had moved on (another state, lease, round)."""
    return jobs.apply_decision(job_id, change.status, expected=expected, lease_owner=lease_owner,
                               where=change.where, set_=change.set_, unset=change.unset, inc=change.inc)


def _current(jobs: JobStore, job_id: str, job: Job | Mapping[str, Any] | None,
             expected: Sequence[str]) -> Job | None:
    doc = job if job is not None else jobs.get(job_id)
    current = Job.of(doc) if doc is not None else None
    return current if current is not None and current.status in expected else None


def fail_round(jobs: JobStore, job_id: str, reason: Reason, call_settings: CallSettings, *,
               expected: Sequence[str] = states.LEASED, lease_owner: str | None = None,
               job: Job | Mapping[str, Any] | None = None, outcome: str | None = None,
               also: Also | None = None) -> dict[str, Any] | None:
    """A failed round (:func:`~shared.domain.decisions.decide_failed_round`): ``retry_wait``, or ``failed`` after the
    last round. ``job``, when the caller holds the current document, saves a read; ``outcome``: the outcome of
    the call that ended the round, if a call did; ``also``: further fields written with it (a call's result)."""
    current = _current(jobs, job_id, job, expected)
    if current is None:
        return None
    change = decide_failed_round(current, reason, call_settings, now_ms=jobs.clock.now_ms(), config=jobs.config,
                                 outcome=outcome)
    return write(jobs, job_id, change.plus(also), expected=expected, lease_owner=lease_owner)


def next_phone(jobs: JobStore, job_id: str, reason: Reason, call_settings: CallSettings, *, invalid: bool = False,
               expected: Sequence[str] = states.LEASED, lease_owner: str | None = None,
               job: Job | Mapping[str, Any] | None = None, outcome: str | None = None) -> dict[str, Any] | None:
    """The current phone did not reach the contact (:func:`~shared.domain.decisions.decide_next_phone`): the next
    phone now, a failed round when none is left, ``failed`` when every number is invalid."""
    current = _current(jobs, job_id, job, expected)
    if current is None:
        return None
    change = decide_next_phone(current, reason, call_settings, now_ms=jobs.clock.now_ms(), config=jobs.config,
                               invalid=invalid, outcome=outcome)
    return write(jobs, job_id, change, expected=expected, lease_owner=lease_owner)
