"""Job, attempt and batch states, and the moves allowed between them (see DESIGN.md, "Job states").

The states are :class:`~enum.StrEnum` members: each equals, hashes and is stored as its string, so a state read
back from MongoDB (a plain string) compares equal to its member. The tables map each state to the states it may
move to; :class:`shared.stores.jobs.JobStore` refuses any job move they do not list.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Any


class JobState(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    DIALING = "dialing"
    IN_CALL = "in_call"
    #: a conversation ended and its analysis is awaited before the contact moves on (``call_settings.after_call``)
    ANALYZING = "analyzing"
    COMPLETED = "completed"
    WAITING_SCHEDULE = "waiting_schedule"
    RETRY_WAIT = "retry_wait"
    WAITING_BALANCE = "waiting_balance"
    FAILED = "failed"
    CANCELLED = "cancelled"


class AttemptState(StrEnum):
    DIALING = "dialing"
    IN_CALL = "in_call"
    ENDED = "ended"
    NOT_PLACED = "not_placed"
    ORPHANED = "orphaned"


class BatchState(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    #: The provider refused to place its calls for a reason no contact can fix (bad key, no payment, a caller id
    #: or agent it does not know): nothing is dialed until an operator resumes it. ``held_reason`` says why.
    HELD = "held"


# Job states.
PENDING = JobState.PENDING
QUEUED = JobState.QUEUED
DIALING = JobState.DIALING
IN_CALL = JobState.IN_CALL
ANALYZING = JobState.ANALYZING
COMPLETED = JobState.COMPLETED
WAITING_SCHEDULE = JobState.WAITING_SCHEDULE
RETRY_WAIT = JobState.RETRY_WAIT
WAITING_BALANCE = JobState.WAITING_BALANCE
FAILED = JobState.FAILED
CANCELLED = JobState.CANCELLED

#: Every job state, as stored (members of :class:`JobState`, typed as the strings they are).
JOB_STATES: tuple[str, ...] = tuple(JobState)
#: Waiting in MongoDB for ``next_try_at``; the scheduler claims these.
CLAIMABLE = (PENDING, WAITING_SCHEDULE, RETRY_WAIT)
#: Held by a process under a lease (``lease_owner``, ``lease_until``).
LEASED = (QUEUED, DIALING, IN_CALL)
#: Never change again.
FINAL = (COMPLETED, FAILED, CANCELLED)
#: Not yet handed to the provider: what cancelling a batch finishes.
NOT_DIALED = (PENDING, QUEUED, WAITING_SCHEDULE, RETRY_WAIT, WAITING_BALANCE)

#: Every move a job makes, from -> the states it may enter, as the pipeline makes them: the claim (a due job is
#: ``queued``), the dial (``queued -> dialing -> in_call``, or back to wait, or failed or cancelled before a call
#: exists), the end of a call, a top-up (``waiting_balance -> pending``) and a batch's cancellation (every state
#: not yet dialed). A final state is never left.
JOB_TRANSITIONS: Mapping[JobState, frozenset[JobState]] = MappingProxyType({
    PENDING: frozenset({QUEUED, CANCELLED}),
    QUEUED: frozenset({DIALING, PENDING, WAITING_SCHEDULE, WAITING_BALANCE, RETRY_WAIT, FAILED, CANCELLED}),
    DIALING: frozenset({IN_CALL, PENDING, WAITING_SCHEDULE, WAITING_BALANCE, RETRY_WAIT, FAILED, CANCELLED}),
    IN_CALL: frozenset({COMPLETED, ANALYZING, PENDING, WAITING_SCHEDULE, RETRY_WAIT, FAILED, CANCELLED}),
    ANALYZING: frozenset({COMPLETED, WAITING_SCHEDULE, PENDING, RETRY_WAIT, FAILED, CANCELLED}),
    WAITING_SCHEDULE: frozenset({QUEUED, CANCELLED}),
    RETRY_WAIT: frozenset({QUEUED, CANCELLED}),
    WAITING_BALANCE: frozenset({PENDING, CANCELLED}),
    COMPLETED: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
})


def _allowed(table: Mapping[Any, frozenset[Any]], kind: type[StrEnum], frm: str, to: str) -> bool:
    try:
        return kind(to) in table[kind(frm)]
    except ValueError:
        return False


def can_move(frm: str, to: str) -> bool:
    """Whether a job may move from state ``frm`` to state ``to`` (:data:`JOB_TRANSITIONS`); False for an unknown
    state."""
    return _allowed(JOB_TRANSITIONS, JobState, frm, to)


def sources(to: str) -> tuple[JobState, ...]:
    """The job states from which ``to`` may be entered, in :data:`JOB_STATES` order."""
    return tuple(frm for frm in JobState if to in JOB_TRANSITIONS[frm])


# Attempt states (see :mod:`shared.stores.attempts`).
ATTEMPT_STATES = tuple(AttemptState)
#: An attempt's moves: the create gave a call id (``in_call``), the call ended (``ended``), the provider never
#: created the call (``not_placed``), or its create answered after the job had moved on (``orphaned``).
ATTEMPT_TRANSITIONS: Mapping[AttemptState, frozenset[AttemptState]] = MappingProxyType({
    AttemptState.DIALING: frozenset({AttemptState.IN_CALL, AttemptState.ENDED, AttemptState.NOT_PLACED,
                                     AttemptState.ORPHANED}),
    AttemptState.IN_CALL: frozenset({AttemptState.ENDED}),
    AttemptState.ENDED: frozenset(),
    AttemptState.NOT_PLACED: frozenset(),
    AttemptState.ORPHANED: frozenset(),
})

# Batch states.
BATCH_ACTIVE = BatchState.ACTIVE
BATCH_PAUSED = BatchState.PAUSED
BATCH_CANCELLED = BatchState.CANCELLED
BATCH_COMPLETED = BatchState.COMPLETED
BATCH_HELD = BatchState.HELD
BATCH_STATES: tuple[str, ...] = tuple(BatchState)
#: A batch's moves (:mod:`shared.stores.batch_controls` and the pipeline): pause (``active|held -> paused``), resume
#: (``paused|held -> active``), cancel (``active|paused|held -> cancelled``), hold (``active -> held``), complete
#: (``active -> completed``, by maintenance once no job is open) and reopen (``completed -> active``).
BATCH_TRANSITIONS: Mapping[BatchState, frozenset[BatchState]] = MappingProxyType({
    BATCH_ACTIVE: frozenset({BATCH_PAUSED, BATCH_CANCELLED, BATCH_HELD, BATCH_COMPLETED}),
    BATCH_PAUSED: frozenset({BATCH_ACTIVE, BATCH_CANCELLED}),
    BATCH_HELD: frozenset({BATCH_ACTIVE, BATCH_PAUSED, BATCH_CANCELLED}),
    BATCH_COMPLETED: frozenset({BATCH_ACTIVE}),
    BATCH_CANCELLED: frozenset(),
})


def can_move_batch(frm: str, to: str) -> bool:
    """Whether a batch may move from status ``frm`` to ``to`` (:data:`BATCH_TRANSITIONS`); False for an unknown
    status."""
    return _allowed(BATCH_TRANSITIONS, BatchState, frm, to)
