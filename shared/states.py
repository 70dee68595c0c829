"""Job and batch states (see DESIGN.md, "Job states")."""

from __future__ import annotations

# Job states.
PENDING = "pending"
QUEUED = "queued"
DIALING = "dialing"
IN_CALL = "in_call"
COMPLETED = "completed"
WAITING_SCHEDULE = "waiting_schedule"
RETRY_WAIT = "retry_wait"
WAITING_BALANCE = "waiting_balance"
FAILED = "failed"
CANCELLED = "cancelled"

JOB_STATES = (
    PENDING, QUEUED, DIALING, IN_CALL, COMPLETED, WAITING_SCHEDULE, RETRY_WAIT, WAITING_BALANCE, FAILED, CANCELLED,
)
#: Waiting in MongoDB for ``next_try_at``; the scheduler claims these.
CLAIMABLE = (PENDING, WAITING_SCHEDULE, RETRY_WAIT)
#: Held by a process under a lease (``lease_owner``, ``lease_until``).
LEASED = (QUEUED, DIALING, IN_CALL)
#: Never change again.
FINAL = (COMPLETED, FAILED, CANCELLED)
#: Not yet handed to the provider: what cancelling a batch finishes.
NOT_DIALED = (PENDING, QUEUED, WAITING_SCHEDULE, RETRY_WAIT, WAITING_BALANCE)

# Batch states.
BATCH_ACTIVE = "active"
BATCH_PAUSED = "paused"
BATCH_CANCELLED = "cancelled"
BATCH_COMPLETED = "completed"
#: The provider refused to place its calls for a reason no contact can fix (bad key, no payment, a caller id
#: or agent it does not know): nothing is dialed until an operator resumes it. ``held_reason`` says why.
BATCH_HELD = "held"
BATCH_STATES = (BATCH_ACTIVE, BATCH_PAUSED, BATCH_CANCELLED, BATCH_COMPLETED, BATCH_HELD)
