"""The dial pipeline: load, decide, write, send — one method per pipeline step.

:class:`Pipeline` holds the stores and clients of one process; the dramatiq actors
(``workers/actors.py``) and the webhook handler call its methods and nothing else. Every write
is a conditional update, so each method is safe to run twice with the same message and against
a concurrent twin in another process. Time comes from the shared clock; durations of the
campaign (windows, retries, calls) are simulated time, while waits that protect the provider or
cover a slow process (leases, back-off after a provider error) are real time converted with
:meth:`Clock.simulated_seconds`.
"""
from __future__ import annotations

from shared.dial import Dial
from shared.dispatch import Dispatch
from shared.finalize import Finalize
from shared.maintenance import Maintenance
from shared.poll import Poll
from shared.reconcile import Reconcile
from shared.step import Step
from shared.timing import (  # noqa: F401 - the pipeline's public names
    DEFAULT_CALL_GRACE_S,
    DEFAULT_DIAL_GUARD_S,
    DEFAULT_DIALING_LEASE_S,
    DEFAULT_DISPATCH_LIMIT,
    DEFAULT_EARLY_TOLERANCE_S,
    DEFAULT_FENCE_MARGIN_S,
    DEFAULT_HORIZON_S,
    DEFAULT_LOOKUP_MAX_PAGES,
    DEFAULT_MAX_CLOCK_AGE_S,
    DEFAULT_MAX_REPLAYS,
    DEFAULT_NO_SLOT_RETRY_S,
    DEFAULT_POLL_LEASE_MARGIN_S,
    DEFAULT_POOL_REFRESH_S,
    DEFAULT_PROVIDER_BACKOFF_S,
    DEFAULT_QUEUED_LEASE_S,
    DEFAULT_RECENT_S,
    DEFAULT_RECONCILE_GRACE_S,
    DEFAULT_RECONCILE_RETRY_S,
    DEFAULT_REPAIR_EVERY_S,
    DEFAULT_REPLAY_WINDOW_S,
    DEFAULT_STOP_GRACE_S,
    DISPATCH_LOCK_MS,
    SLOTS_REBUILD_LOCK_S,
    BatchSource,
    Provider,
    Sender,
    Timing,
)

__all__ = ["BatchSource", "Pipeline", "Provider", "Sender", "Step", "Timing"]


class Pipeline(Dispatch, Dial, Reconcile, Poll, Finalize, Maintenance):
    """Every step of one process's pipeline (the actors and the webhook handler call its methods)."""
