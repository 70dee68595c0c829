"""The pipeline's waits: leases, deadlines, horizons and back-offs.

Leases, horizons and back-offs are real seconds (converted to the shared clock with
:meth:`shared.clock.Clock.simulated_seconds`); :class:`Timing` gathers them for one process.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from shared.config import (
    DEFAULT_PIPELINE_ANALYSIS_WAIT_S,
    DEFAULT_PIPELINE_DIAL_GUARD_S,
    DEFAULT_PIPELINE_SAFETY_POLL_S,
    DEFAULT_RETELL_CREATE_TIMEOUT_S,
    Config,
)
from shared.domain.backoff import capped_exponential
from shared.domain.decisions import attempt_deadline_ms
from shared.domain.results import analysis_record
from shared.provider.retell import IDEMPOTENCY_WINDOW_S

if TYPE_CHECKING:
    from shared.clock import Clock
    from shared.domain.call_settings import CallSettings

#: Real seconds a job may stay ``queued`` past its dispatch delay before recovery re-dispatches it.
DEFAULT_QUEUED_LEASE_S = 60.0
#: Real seconds a job may stay ``dialing`` before recovery (longer than one create request's timeout,
#: ``RETELL_CREATE_TIMEOUT_S``, 20 s by default); :meth:`Timing.from_config` makes it 1.5 x ``PIPELINE_LEASE_S``.
DEFAULT_DIALING_LEASE_S = 90.0
#: Real seconds an in-call job's lease extends past its next poll.
DEFAULT_POLL_LEASE_MARGIN_S = 60.0
#: Real seconds ahead the scheduler dispatches (as delayed messages) jobs that become due.
DEFAULT_HORIZON_S = 5.0
#: Real seconds to wait before retrying after a provider fault, when the provider names none.
DEFAULT_PROVIDER_BACKOFF_S = 5.0
#: Real seconds to wait before retrying when the account has no free slot.
DEFAULT_NO_SLOT_RETRY_S = 2.0
#: Real seconds after a dialing lease ended before "not found at the provider" means "not placed".
DEFAULT_RECONCILE_GRACE_S = 10.0
#: Real seconds between a create with an unknown outcome and sending it again with the same key (the first wait:
#: they double up to :data:`shared.domain.decisions.REPLAY_CAP_S`).
DEFAULT_RECONCILE_RETRY_S = 2.0
#: Real seconds after an attempt's first send during which it is sent again with its key rather than looked
#: up: well inside the hour the provider honours the key.
DEFAULT_REPLAY_WINDOW_S = IDEMPOTENCY_WINDOW_S - 600
#: Real seconds of margin the fence keeps between a create's answer and the end of the lease (the time from
#: the check to the send, and the shared time's uncertainty).
DEFAULT_FENCE_MARGIN_S = 1.0
#: Real seconds a dial message may come before its job is due and still be dialed (the broker's timing); a
#: message that comes sooner (a consumer whose clock runs ahead) is sent again for the due time.
DEFAULT_EARLY_TOLERANCE_S = 1.0
#: Pages of a number's calls read at most when an attempt's call is looked up (200 calls a page).
DEFAULT_LOOKUP_MAX_PAGES = 10
#: Real seconds between two readings of the workspace's concurrency limit from the provider.
DEFAULT_POOL_REFRESH_S = 300.0
#: Real seconds after which an unrefreshed reading of the server's time is no longer trusted for dialing.
DEFAULT_MAX_CLOCK_AGE_S = 60.0
#: Simulated seconds a call may run past max_call_duration (or ring past ring_timeout) before it is stopped.
DEFAULT_CALL_GRACE_S = 30.0
#: Real seconds the provider has, after an attempt's deadline, to report its call ended while the stop is retried;
#: then the attempt ends here as a timeout. :meth:`Timing.from_config` makes it half of ``PIPELINE_LEASE_S``, so it
#: ends before the in-call lease does.
DEFAULT_STOP_GRACE_S = 30.0
#: Real seconds between two ledger repairs (posting what dead processes left in account documents).
DEFAULT_REPAIR_EVERY_S = 60.0
#: Real seconds after a call's end before its post-call analysis is first looked for at the provider when the call's
#: object did not carry it yet: without webhooks, and with them (``call_analyzed`` normally comes first).
DEFAULT_ANALYSIS_FIRST_LOOK_S = 5.0
DEFAULT_ANALYSIS_FIRST_LOOK_WEBHOOKS_S = 60.0
#: Longest real wait between two looks for an analysis (the waits double up to it).
DEFAULT_ANALYSIS_LOOK_CAP_S = 60.0
#: Real seconds after its attempt's first look for the analysis (and after the end of its wait) that a job waiting
#: for its conversation's analysis is checked (:mod:`shared.pipeline.after_call`): the analysis normally decided
#: it before.
ANALYSIS_CHECK_MARGIN_S = 10.0
#: Real milliseconds one account's dispatch may hold its lock (released as soon as it is done).
DISPATCH_LOCK_MS = 2000
#: Real seconds the slot rebuild may hold its lock.
SLOTS_REBUILD_LOCK_S = 60.0
#: Real seconds the hot path reuses the list of active batches and the accounts' limits.
DEFAULT_RECENT_S = 1.0
#: Most jobs of one account queued for dialing at once (one schedule_due run dispatches at most this many).
DEFAULT_DISPATCH_LIMIT = 1000
#: Real seconds before a calling window closes in which no call is started: a call decided now reaches the
#: provider a moment later (a few MongoDB writes and the create request). ``PIPELINE_DIAL_GUARD_S``.
DEFAULT_DIAL_GUARD_S = DEFAULT_PIPELINE_DIAL_GUARD_S


@dataclass(kw_only=True)
class Timing:
    """The pipeline's waits (real seconds unless named otherwise); see the ``DEFAULT_*`` constants.

    :meth:`from_config` scales the leases from ``PIPELINE_LEASE_S`` (default 60 s): how long a job
    held by a process that died waits before the scheduler recovers it.
    """

    queued_lease_s: float = DEFAULT_QUEUED_LEASE_S
    dialing_lease_s: float = DEFAULT_DIALING_LEASE_S
    poll_lease_margin_s: float = DEFAULT_POLL_LEASE_MARGIN_S
    horizon_s: float = DEFAULT_HORIZON_S
    provider_backoff_s: float = DEFAULT_PROVIDER_BACKOFF_S
    no_slot_retry_s: float = DEFAULT_NO_SLOT_RETRY_S
    reconcile_grace_s: float = DEFAULT_RECONCILE_GRACE_S
    call_grace_sim_s: float = DEFAULT_CALL_GRACE_S
    stop_grace_s: float = DEFAULT_STOP_GRACE_S
    dispatch_limit: int = DEFAULT_DISPATCH_LIMIT
    repair_every_s: float = DEFAULT_REPAIR_EVERY_S
    dial_guard_s: float = DEFAULT_DIAL_GUARD_S
    create_timeout_s: float = DEFAULT_RETELL_CREATE_TIMEOUT_S
    fence_margin_s: float = DEFAULT_FENCE_MARGIN_S
    reconcile_retry_s: float = DEFAULT_RECONCILE_RETRY_S
    replay_window_s: float = DEFAULT_REPLAY_WINDOW_S
    max_clock_age_s: float = DEFAULT_MAX_CLOCK_AGE_S
    pool_refresh_s: float = DEFAULT_POOL_REFRESH_S
    lookup_max_pages: int = DEFAULT_LOOKUP_MAX_PAGES
    early_tolerance_s: float = DEFAULT_EARLY_TOLERANCE_S
    #: Retell sends call webhooks (``RETELL_WEBHOOKS``): polls are a late safety net, not the end's detector.
    webhooks: bool = False
    #: With webhooks, simulated seconds after a call's ring timeout at which its first poll comes.
    safety_poll_sim_s: float = DEFAULT_PIPELINE_SAFETY_POLL_S
    #: Real seconds after a conversation's end during which its analysis is looked for (``PIPELINE_ANALYSIS_WAIT_S``).
    analysis_wait_s: float = DEFAULT_PIPELINE_ANALYSIS_WAIT_S

    @classmethod
    def from_config(cls, config: Config) -> Timing:
        lease = config.pipeline_lease_s
        return cls(queued_lease_s=lease, dialing_lease_s=config.dialing_lease_s, poll_lease_margin_s=lease,
                   stop_grace_s=lease / 2,
                   dial_guard_s=config.pipeline_dial_guard_s, create_timeout_s=config.retell_create_timeout_s,
                   webhooks=config.retell_webhooks, safety_poll_sim_s=config.pipeline_safety_poll_s,
                   analysis_wait_s=config.pipeline_analysis_wait_s)

    # -- the call's longest life, and the leases and deadlines it sets ---------------------------------------

    def call_life_s(self, settings: CallSettings) -> float:
        """The call's longest life, simulated seconds: it rings, talks its longest, then the grace."""
        return settings.ring_timeout + settings.max_call_duration + self.call_grace_sim_s

    def attempt_deadline_ms(self, created_ms: int, settings: CallSettings) -> int:
        """The hard deadline of an attempt recorded at ``created_ms``: by then its call has rung, talked its longest
        and ended (shared ms): :func:`shared.domain.decisions.attempt_deadline_ms` with this grace."""
        return attempt_deadline_ms(created_ms, ring_timeout_s=settings.ring_timeout,
                                   max_call_duration_s=settings.max_call_duration, grace_s=self.call_grace_sim_s)

    def slot_lease_ms(self, settings: CallSettings, clock: Clock) -> int:
        """A slot's lease (simulated ms), taken when the dial is decided: the create may reach the provider as late
        as the dialing lease's end (a slow reservation, a frozen process, sends again), then the call lives its
        longest life, then the lease margin. A slot that ended sooner could be taken by another dial while its call
        still runs."""
        return (int(clock.simulated_seconds(self.dialing_lease_s) * 1000) + int(self.call_life_s(settings) * 1000)
                + int(clock.simulated_seconds(self.poll_lease_margin_s) * 1000))

    def in_call_lease_until_ms(self, settings: CallSettings, clock: Clock) -> int:
        """When an in-call lease taken now ends: it covers the call's longest life plus the lease margin."""
        margin = timedelta(seconds=clock.simulated_seconds(self.poll_lease_margin_s))
        return clock.now_ms() + int((self.call_life_s(settings) + margin.total_seconds()) * 1000)

    def latest_end_ms(self, created_ms: int, settings: CallSettings, clock: Clock) -> int:
        """The latest an attempt recorded at ``created_ms`` can be finalized: its deadline, the stop grace, then
        the recovery of a dead poller (the in-call lease margin)."""
        return (self.attempt_deadline_ms(created_ms, settings)
                + int(clock.simulated_seconds(self.stop_grace_s + self.poll_lease_margin_s) * 1000))

    # -- the post-call analysis -------------------------------------------------------------------------------

    def analysis_fields(self, analysis: Mapping[str, Any] | None, *, connected: bool, now_ms: int,
                        clock: Clock) -> dict[str, Any]:
        """An ended attempt's analysis fields: the analysis itself when the call's object carried it; for a
        connected call without it, when to look for it first (``analysis_due_at``) and until when
        (``analysis_until``); nothing for a call that never connected (its analysis would say nothing)."""
        if analysis is not None:
            return analysis_record(analysis, now_ms)
        if not connected:
            return {}
        return {"analysis_due_at": now_ms + clock.simulated_ms(self._first_analysis_look_s),
                "analysis_until": now_ms + clock.simulated_ms(self.analysis_wait_s), "analysis_looks": 0}

    @property
    def _first_analysis_look_s(self) -> float:
        """Real seconds from a call's end to the first look for its analysis (a minute when webhooks bring it)."""
        return DEFAULT_ANALYSIS_FIRST_LOOK_WEBHOOKS_S if self.webhooks else DEFAULT_ANALYSIS_FIRST_LOOK_S

    def analysis_check_ms(self, now_ms: int, clock: Clock) -> int:
        """When a job that waits for its conversation's analysis, from ``now_ms`` (its call's finalize), is first
        checked: after its attempt's first look, with a margin."""
        return now_ms + clock.simulated_ms(self._first_analysis_look_s + ANALYSIS_CHECK_MARGIN_S)

    def analysis_last_check_ms(self, until_ms: int, clock: Clock) -> int:
        """When a job whose analysis was still awaited at its first check is checked again: once its attempt's wait
        (``analysis_until``) has ended, with a margin; it then moves on with or without its analysis."""
        return until_ms + clock.simulated_ms(ANALYSIS_CHECK_MARGIN_S)

    def next_analysis_look_ms(self, looks: int, now_ms: int, clock: Clock) -> int:
        """When to look again for an analysis not there at the ``looks``-th look (the waits double up to a minute)."""
        wait = capped_exponential(looks, base=DEFAULT_ANALYSIS_FIRST_LOOK_S, cap=DEFAULT_ANALYSIS_LOOK_CAP_S)
        return now_ms + clock.simulated_ms(wait)
