"""What several pipeline steps do to a call attempt: give back what it holds, hold the batches, retry for free,
send the create and record the call.

One :class:`CallOps` per step object (:attr:`shared.pipeline.step.Step.calls`), given the stores, clients, clock and
timing it uses; the dial, the reconcile and the finalize call its public methods, and no step calls another step's
private method.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from shared import metrics
from shared.clock import Clock, ServerTime, to_ms
from shared.config import Config
from shared.domain import states
from shared.domain.call_settings import CallSettings, default_call_settings
from shared.domain.calling_window import applicable_profiles
from shared.domain.contact_policy import ContactPolicy, contact_keys, limits_of
from shared.domain.decisions import (
    Also,
    DialResult,
    DialStep,
    batch_stopped,
    check_before_send,
    decide_free_retry,
    next_poll_delay_s,
    safety_poll_at_ms,
)
from shared.domain.reasons import Reason, because
from shared.domain.records import Attempt, Job
from shared.errors import (
    AgentNotFound,
    CallerIdRejected,
    CallNotFound,
    CreateOutcomeUnknown,
    DialAborted,
    InvalidDestination,
    PaymentRequired,
    ProviderAuthError,
    ProviderError,
    RateLimited,
)
from shared.logs import event, get_logger, mask_phone
from shared.pipeline.interfaces import BatchSource, Provider, Sender
from shared.pipeline.rounds import fail_round, next_phone
from shared.pipeline.timing import Timing
from shared.provider.retell import Call
from shared.stores.attempts import AttemptStore
from shared.stores.batches import BatchStore
from shared.stores.billing import Billing
from shared.stores.contact_history import DAY_MS, ContactHistory
from shared.stores.dnc import DncStore
from shared.stores.jobs import JobStore, Lease
from shared.stores.slots import Slots

if TYPE_CHECKING:
    from shared.cache.batch_cache import CachedBatch

log = get_logger(__name__)

#: Real seconds for which the decision's read of the do-not-call lists also stands for the check right before
#: the send (the two are normally a few milliseconds apart); past it the lists are read again. Small beside
#: ``PIPELINE_DIAL_GUARD_S``, which must cover the time from that check to the provider.
DNC_FRESH_S = 0.1
#: Real seconds after an attempt's ``created_at`` within which its first send needs no ``last_sent_at`` of its own.
SENT_AT_FRESH_S = 1.0


def settings_in(cached: CachedBatch | None, config: Config) -> CallSettings:
    """The settings of a batch cache entry, or the global defaults when there is no entry or its stored settings
    no longer validate (``cached.settings_error`` then says why)."""
    if cached is not None and cached.settings is not None:
        return cached.settings
    return default_call_settings(config)


def stopped_in(cached: CachedBatch | None) -> Reason | None:
    """Why the batch of this cache entry lets none of its jobs wait any more (cancelled, or gone: see
    :func:`~shared.domain.decisions.batch_stopped`); None while the batch goes on."""
    return batch_stopped(cached.doc if cached else None)


class CallOps:
    """The operations on a call attempt that the steps share, over the stores, clients, clock and timing of the step
    that holds it.

    :param provider: gives the provider client at each use (the step's current one).
    :param policy: an account's contact policy (None: it has none), as the step reads it.
    """

    def __init__(self, *, jobs: JobStore, attempts: AttemptStore, batches: BatchStore, cache: BatchSource,
                 billing: Billing, slots: Slots, dnc: DncStore, history: ContactHistory, sender: Sender,
                 provider: Callable[[], Provider], policy: Callable[[str], ContactPolicy | None], clock: Clock,
                 config: Config, timing: Timing) -> None:
        self.jobs = jobs
        self.attempts = attempts
        self.batches = batches
        self.cache = cache
        self.billing = billing
        self.slots = slots
        self.dnc = dnc
        self.history = history
        self.sender = sender
        self.get_provider = provider
        self.policy_of = policy
        self.clock = clock
        self.config = config
        self.timing = timing

    @property
    def provider(self) -> Provider:
        return self.get_provider()

    def _lang(self) -> str:
        return self.config.lang

    def _settings_of(self, job: Job) -> CallSettings:
        return settings_in(self.cache.get(job.batch_id), self.config)

    def _stopped(self, job: Job) -> Reason | None:
        return stopped_in(self.cache.get(job.batch_id))

    def give_back(self, job: Job, aid: str, *, turn: bool = True) -> None:
        """Give back what the attempt holds: its slot, its balance hold and (``turn``) its contact policy turn (an
        attempt never placed no longer counts against the callee's caps)."""
        self.slots.release(job.account_id, aid)
        self.billing.release(aid)
        if turn:
            self._forget_turn(job, aid)

    def _forget_turn(self, job: Job, aid: str) -> None:
        """The attempt was not placed: it no longer counts against the callee's caps."""
        limits = limits_of(self.policy_of(job.account_id),
                           applicable_profiles(self._settings_of(job), job.phone, config=self.config))
        if limits is None:
            return
        self.history.forget(job.account_id, contact_keys(job.contact, job.phone), aid,
                            keep_ms=self.clock.now_ms() - limits.history_days * DAY_MS)

    def free_retry(self, job: Job, reason: Reason, *, expected: Sequence[str], lease_owner: str | None = None,
                   where: Mapping[str, Any] | None = None,
                   retry_after_s: float | None = None, also: Also | None = None) -> dict[str, Any] | None:
        """A provider fault that spends no attempt: back to ``pending`` after a growing wait, within the budget;
        past ``PIPELINE_MAX_FREE_RETRIES`` of them in a row, the round fails and says why. ``expected``,
        ``lease_owner``, ``where``: what the job's transition requires of it
        (:meth:`shared.stores.jobs.JobStore.release`); ``also``: further fields written with it (a call's result)."""
        used = job.free_retries
        wait_s = decide_free_retry(used, limit=self.config.pipeline_max_free_retries, retry_after_s=retry_after_s,
                                   base_s=self.config.pipeline_free_retry_base_s)
        if wait_s is None:
            metrics.FREE_RETRIES.labels("budget_spent").inc()
            return fail_round(self.jobs, job.id, because("free_retries_spent", used=used, last=reason),
                              self._settings_of(job), job=job, expected=expected, lease_owner=lease_owner,
                              also=also)
        metrics.FREE_RETRIES.labels("retried").inc()
        return self.jobs.release(job.id, self.clock.now() + self.clock.simulated_wait(wait_s), reason,
                                 inc={"free_retries": 1, **(also.inc if also else {})}, expected=expected,
                                 lease_owner=lease_owner, where=where, set_=also.set_ if also else None)

    def hold(self, job: Job, reason: Reason, *, batch_id: str | None, expected: Sequence[str],
             lease_owner: str | None = None, where: Mapping[str, Any] | None = None,
             also: Also | None = None) -> dict[str, Any] | None:
        """Hold the batch (or every active batch) until an operator resumes it; the job waits, unspent (``expected``,
        ``lease_owner``, ``where``, ``also``: as for :meth:`free_retry`)."""
        self.hold_batches(job, reason, batch_id=batch_id)
        return self.jobs.release(job.id, self.clock.now(), because("batch_held", held=reason), expected=expected,
                                 lease_owner=lease_owner, where=where, inc=also.inc if also else None,
                                 set_=also.set_ if also else None)

    def hold_batches(self, job: Job, reason: Reason, *, batch_id: str | None) -> None:
        """Hold the batch (or, ``batch_id`` None, every active batch) until an operator resumes it."""
        text = reason.text(self._lang())
        held = self.batches.hold(text, batch_id=batch_id, seen_at=job.dialed_at)
        metrics.BATCHES_HELD.inc(len(held))
        event(log, "batches_held", level=logging.WARNING, batches=len(held), reason=text[:300],
              reason_code=reason.code)

    def create(self, job: Job, attempt: Attempt, settings: CallSettings, lease_owner: str,
               lease_until: int, *, reserved: int | None, replay: bool = False,
               dnc_read_at: float | None = None, retry_s: float | None = None) -> DialStep | DialResult:
        """Send the attempt's create (its id as the idempotency key) and record the call.

        Right before every send, the batch must not be cancelled (as the batch cache knows it: a cancel reaches
        it by pub/sub), and :func:`shared.domain.decisions.check_before_send` checks the fence (this
        process's lease outlasts the create) and the calling window at the same moment; when it fails
        before the first send, nothing reached the provider. ``replay``: the attempt's create was sent
        before with an unknown outcome; then :class:`~shared.errors.DialAborted` goes to the caller.

        The do-not-call lists are read again right before the send unless the decision read them less than
        :data:`DNC_FRESH_S` ago (``dnc_read_at``, a monotonic instant): a dial that stalled, waited or is a
        replay always reads them again.

        Every send is recorded on the attempt as ``last_sent_at`` (the reconcile step counts from it when nothing
        can still be on its way), except a first send within :data:`SENT_AT_FRESH_S` of the attempt's
        ``created_at``, which stands for it. ``retry_s``: real seconds before the reconcile that follows an
        unknown outcome (default ``reconcile_retry_s``).
        """
        job_id, aid = job.id, attempt.id
        retry_ms = int((self.timing.reconcile_retry_s if retry_s is None else retry_s) * 1000)
        try:
            call = self.provider.create_phone_call(
                from_number=attempt.from_number or self.config.call_from_number,
                to_number=attempt.to_number,
                agent_id=attempt.agent_id,
                dynamic_variables=dict(job.contact.variables),
                metadata={"job_id": job_id, "attempt_id": aid, "attempt": attempt.dial,
                          "round": attempt.round, "batch_id": job.batch_id},
                ring_timeout_s=settings.ring_timeout,
                max_call_duration_s=settings.max_call_duration,
                idempotency_key=aid,
                precheck=self._precheck(job, attempt, settings, lease_until, replay=replay, dnc_read_at=dnc_read_at),
            )
        except DialAborted as exc:
            if replay:
                raise
            return self._abort_dial(job, aid, exc, lease_owner)
        except CreateOutcomeUnknown as exc:
            metrics.PROVIDER_ERRORS.labels(exc.kind).inc()
            event(log, "create_outcome_unknown", job_id=job_id, attempt_id=aid, error=str(exc)[:300])
            self.sender.reconcile(job_id, lease_owner, delay_ms=retry_ms)
            return DialResult.RECONCILE
        except ProviderError as exc:
            metrics.PROVIDER_ERRORS.labels(exc.kind).inc()
            if replay:
                return self._replay_refused(job_id, aid, exc, lease_owner, retry_ms)
            return self._create_failed(job, aid, exc, lease_owner)
        if not replay:
            metrics.DIALS.inc()
        return self.record_call(job_id, aid, job.account_id, call, lease_owner, settings, reserved=reserved)

    def _precheck(self, job: Job, attempt: Attempt, settings: CallSettings, lease_until: int, *, replay: bool,
                  dnc_read_at: float | None) -> Callable[[], None]:
        """The check run right before every send of ``attempt``'s create (see :meth:`create`): it raises
        :class:`~shared.errors.DialAborted` when the send must not happen, and records the send otherwise."""
        phone = attempt.to_number
        contact_tz = job.contact.timezone
        need_real_s = self.timing.create_timeout_s + self.timing.fence_margin_s
        sends = 0   # how many times this create has passed the check (and been sent)

        def precheck() -> None:
            nonlocal sends
            stopped = self._stopped(job)   # the batch cache: no read while its listener is subscribed
            if stopped is not None:
                raise DialAborted("cancelled", stopped)
            fresh = dnc_read_at is not None and time.monotonic() - dnc_read_at < DNC_FRESH_S
            if not fresh and self.dnc.listed(job.account_id, [phone]):
                metrics.DNC_BLOCKED.labels("send").inc()
                raise DialAborted("dnc", because("dnc_number"))
            trusted = self._clock_trusted()   # first: ``now`` then comes from the reading this check validated
            now = self.clock.now()
            problem = check_before_send(
                now=now, lease_until_ms=lease_until,
                real_seconds=self.clock.real_seconds((lease_until - to_ms(now)) / 1000), need_real_s=need_real_s,
                clock_trusted=trusted, settings=settings, phone=phone, contact_timezone=contact_tz,
                guard=self.clock.simulated_wait(self.timing.dial_guard_s), lang=self._lang())
            if problem is not None:
                raise problem
            sends += 1
            if replay or sends > 1 or self.clock.real_seconds(
                    (to_ms(now) - attempt.created_at) / 1000) > SENT_AT_FRESH_S:
                self.attempts.sent(attempt.id, to_ms(now))

        return precheck

    def _replay_refused(self, job_id: str, aid: str, exc: ProviderError, lease_owner: str,
                        retry_ms: int) -> DialResult:
        """The provider refused a send again of an ambiguous create: that says nothing of the earlier send, which
        may have made the call, so the outcome is still unknown and the reconcile comes back."""
        wait_s = max(retry_ms / 1000, float(getattr(exc, "retry_after_s", None) or 0.0))
        event(log, "replay_refused", job_id=job_id, attempt_id=aid, error=type(exc).__name__)
        self.sender.reconcile(job_id, lease_owner, delay_ms=int(wait_s * 1000))
        return DialResult.RECONCILE

    def _clock_trusted(self) -> bool:
        source = self.clock.source
        if not isinstance(source, ServerTime):
            return True  # a process without a server time (tests of one process) trusts its own clock
        return source.trusted(max_uncertainty_s=self.config.pipeline_max_skew_ms / 1000,
                              max_age_s=self.timing.max_clock_age_s)

    def _abort_dial(self, job: Job, aid: str, exc: DialAborted,
                    lease_owner: str) -> DialStep | DialResult:
        """Nothing was sent: the attempt is not placed, the hold and the slot go back, the job waits."""
        job_id = job.id
        metrics.DIAL_ABORTS.labels(exc.kind).inc()
        event(log, "dial_aborted", job_id=job_id, attempt_id=aid, kind=exc.kind, reason=exc.reason.text(self._lang()),
              reason_code=exc.reason.code)
        if not self.attempts.not_placed(aid, because("not_sent", why=exc.reason), owner=lease_owner):
            return DialStep.STALE  # recovery took the attempt over: it decides
        self.give_back(job, aid)
        own: Lease = {"lease_owner": lease_owner, "expected": (states.DIALING,)}
        stopped = self._stopped(job)
        if stopped is not None:  # the batch was cancelled meanwhile: nothing was sent, and the job waits for nothing
            self.jobs.cancel(job_id, stopped, **own)
            return DialStep.CANCELLED
        if exc.kind == "window" and exc.next_try_at is not None:
            self.jobs.postpone(job_id, exc.next_try_at, exc.reason, inc={"postponed_by_schedule": 1}, **own)
            metrics.POSTPONED_BY_SCHEDULE.inc()
        elif exc.kind == "dnc":
            # Decided again at once: the decision passes the number over (or fails the contact).
            self.jobs.release(job_id, self.clock.now(), exc.reason, **own)
            self.sender.schedule(job.account_id)
        else:
            retry_at = self.clock.now() + self.clock.simulated_wait(self.timing.no_slot_retry_s)
            self.jobs.release(job_id, retry_at, exc.reason, **own)
        return DialResult(f"aborted_{exc.kind}")

    def _create_failed(self, job: Job, aid: str, exc: ProviderError,
                       lease_owner: str) -> DialStep | DialResult:
        """The provider refused the create: nothing was placed. What happens depends on who can fix it."""
        job_id = job.id
        if not self.attempts.not_placed(aid, because("provider_said", error=str(exc)[:300]), owner=lease_owner):
            return DialStep.STALE
        self.give_back(job, aid)
        own: Lease = {"lease_owner": lease_owner, "expected": (states.DIALING,)}
        event(log, "create_failed", job_id=job_id, attempt_id=aid, error=type(exc).__name__)
        stopped = self._stopped(job)
        if stopped is not None:
            # The batch was cancelled while the create was on its way: nothing was placed, and the job waits for
            # nothing. A refusal that concerns the whole workspace still holds the other batches.
            if isinstance(exc, ProviderAuthError | PaymentRequired):
                self.hold_batches(job, because("provider_refused", error=str(exc)), batch_id=None)
            self.jobs.cancel(job_id, stopped, **own)
            return DialStep.CANCELLED
        if isinstance(exc, InvalidDestination):
            # Only a refusal that names the destination marks the contact's number: never one naming the caller id.
            next_phone(self.jobs, job_id, because("invalid_destination", error=str(exc)), self._settings_of(job),
                       invalid=True, **own)
            return DialResult.INVALID_NUMBER
        if isinstance(exc, ProviderAuthError | PaymentRequired):
            # The workspace (every account shares its API key) cannot place calls: hold every batch.
            self.hold(job, because("provider_refused", error=str(exc)), batch_id=None, **own)
            return DialResult.HELD
        if isinstance(exc, CallerIdRejected | AgentNotFound):
            code = "provider_refused_caller_id" if isinstance(exc, CallerIdRejected) else "provider_refused_agent"
            self.hold(job, because(code, error=str(exc)), batch_id=job.batch_id, **own)
            return DialResult.HELD
        if exc.retryable or isinstance(exc, RateLimited):
            retry_after = exc.retry_after_s if isinstance(exc, RateLimited) else None
            self.free_retry(job, because("provider_error", error=str(exc)), retry_after_s=retry_after, **own)
            return DialResult.PROVIDER_ERROR
        # Any other refusal is about this request: the round fails (bounded by max_attempts), never a loop.
        fail_round(self.jobs, job_id, because("provider_refused", error=str(exc)), self._settings_of(job), job=job,
                   **own)
        return DialResult.REFUSED

    def record_call(self, job_id: str, aid: str, account_id: str, call: Call, lease_owner: str,
                    settings: CallSettings, *, reserved: int | None = None) -> DialResult:
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
        won = self.jobs.record_call(job_id, lease_owner, aid, set_=fields)
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
                return DialResult.ORPHANED
            return DialResult.RECORDED_ELSEWHERE  # whoever holds the job now records (or has recorded) this same call
        event(log, "call_created", job_id=job_id, attempt_id=aid, call_id=call.call_id,
              to=mask_phone(getattr(call, "to_number", "") or ""))
        if not self.timing.webhooks:
            self.sender.poll(job_id, lease_owner, call.call_id, 0, delay_ms=self.clock.real_ms(next_poll_delay_s(0)))
        return DialResult.DIALED

    def _stop_quietly(self, call_id: str) -> None:
        try:
            self.provider.stop_call(call_id)
        except CallNotFound:
            pass
        except ProviderError as exc:
            event(log, "stop_call_failed", call_id=call_id, error=str(exc))
