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

import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

import pytz
from cachetools import TTLCache
from redis.exceptions import LockError

from shared import attempts as attempt_states
from shared import metrics, states
from shared.accounts import AccountStore
from shared.attempts import AttemptStore, attempt_id
from shared.batches import BatchStore
from shared.call_settings import parse_call_settings
from shared.clock import Clock, ServerTime, from_ms, to_ms
from shared.config import DEFAULT_PIPELINE_DIAL_GUARD_S, DEFAULT_RETELL_CREATE_TIMEOUT_S, Config
from shared.contact_history import DAY_MS, ContactHistory
from shared.contact_policy import ContactPolicy, Touch, capped_until, contact_keys
from shared.decisions import (
    DialStep,
    PollStep,
    attempt_deadline_ms,
    check_before_send,
    decide_dial,
    decide_free_retry,
    decide_poll,
    next_poll_delay_s,
    stop_retry_delay_s,
)
from shared.dnc import DNC_OUTCOME, DncStore
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
from shared.jobs import JobStore, choose_retry_delay
from shared.logs import event, get_logger, mask_phone
from shared.outcomes import EFFECTS, ROUND_ENDING, Effect, Outcome, classify, reason_text
from shared.redis_keys import (
    BILLING_REPAIR_LOCK,
    SLOTS_REBUILD_LOCK,
    dispatch_lock_key,
    dispatch_turn_key,
    pool_refresh_key,
    workspace_limit_key,
)
from shared.retell import IDEMPOTENCY_WINDOW_S, Call
from shared.schedule import NoAllowedTime, next_allowed_time, resolve_timezones
from shared.slots import Acquired, Slots

log = get_logger(__name__)

#: Real seconds a job may stay ``queued`` past its dispatch delay before recovery re-dispatches it.
DEFAULT_QUEUED_LEASE_S = 60.0
#: Real seconds a job may stay ``dialing`` (longer than the create request's 30 s timeout) before recovery.
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
#: Real seconds between a create with an unknown outcome and sending it again with the same key.
DEFAULT_RECONCILE_RETRY_S = 2.0
#: Times an attempt's create is sent again with its idempotency key (each up to the client's own sends).
DEFAULT_MAX_REPLAYS = 5
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
#: Real milliseconds one account's dispatch may hold its lock (released as soon as it is done).
DISPATCH_LOCK_MS = 2000
#: Real seconds the slot rebuild may hold its lock.
SLOTS_REBUILD_LOCK_S = 60.0
#: Real seconds the hot path reuses the list of active batches and the accounts' limits.
DEFAULT_RECENT_S = 1.0
#: Most jobs one schedule_due run dispatches per account.
DEFAULT_DISPATCH_LIMIT = 1000
#: Real seconds before a calling window closes in which no call is started: a call decided now reaches the
#: provider a moment later (a few MongoDB writes and the create request). ``PIPELINE_DIAL_GUARD_S``.
DEFAULT_DIAL_GUARD_S = DEFAULT_PIPELINE_DIAL_GUARD_S


class Sender(Protocol):
    """How the pipeline sends its next messages (the dramatiq actors implement it)."""

    def dial(self, job_id: str, lease_owner: str, *, delay_ms: int = 0) -> None: ...
    def poll(self, job_id: str, lease_owner: str, call_id: str, n: int, *, delay_ms: int = 0) -> None: ...
    def reconcile(self, job_id: str, lease_owner: str, *, delay_ms: int = 0) -> None: ...
    def schedule(self, account_id: str | None = None) -> None: ...


class Provider(Protocol):
    """The blocking provider client (:class:`shared.retell.SyncRetellClient`)."""

    def create_phone_call(self, **kwargs: Any) -> Any: ...
    def get_call(self, call_id: str) -> Any: ...
    def stop_call(self, call_id: str) -> None: ...
    def find_calls_by_metadata(self, to_number: str, key: str, value: str, *, since_ms: int | None = None,
                               max_pages: int = 50) -> list: ...
    def get_concurrency(self) -> Any: ...


class BatchSource(Protocol):
    """The batch cache: ``get(batch_id)`` returns an object with ``doc``, ``settings``, ``settings_error``."""

    def get(self, batch_id: str) -> Any: ...


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
    max_replays: int = DEFAULT_MAX_REPLAYS
    replay_window_s: float = DEFAULT_REPLAY_WINDOW_S
    max_clock_age_s: float = DEFAULT_MAX_CLOCK_AGE_S
    pool_refresh_s: float = DEFAULT_POOL_REFRESH_S
    lookup_max_pages: int = DEFAULT_LOOKUP_MAX_PAGES
    early_tolerance_s: float = DEFAULT_EARLY_TOLERANCE_S

    @classmethod
    def from_config(cls, config: Config) -> Timing:
        lease = config.pipeline_lease_s
        return cls(queued_lease_s=lease, dialing_lease_s=config.dialing_lease_s, poll_lease_margin_s=lease,
                   stop_grace_s=lease / 2,
                   dial_guard_s=config.pipeline_dial_guard_s, create_timeout_s=config.retell_create_timeout_s)


@dataclass(kw_only=True)
class Pipeline:
    """Everything one process needs to run the pipeline."""

    jobs: JobStore
    attempts: AttemptStore
    batches: BatchStore
    accounts: AccountStore
    cache: BatchSource
    billing: Any
    slots: Slots
    provider: Provider
    sender: Sender
    clock: Clock
    config: Config
    dnc: DncStore
    history: ContactHistory
    timing: Timing = field(default_factory=Timing)
    #: Active batches per account and account limits, reused for a second (real time) by the hot path.
    _recent: TTLCache = field(default_factory=lambda: TTLCache(maxsize=4096, ttl=DEFAULT_RECENT_S), repr=False)
    _recent_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _remembered(self, key: str, load: Callable[[], Any]) -> Any:
        with self._recent_lock:
            if key in self._recent:
                return self._recent[key]
        value = load()
        with self._recent_lock:
            self._recent[key] = value
        return value

    def _account(self, account_id: str) -> Mapping[str, Any] | None:
        """The account document (re-read at most once a second)."""
        return self._remembered(f"account:{account_id}", lambda: self.accounts.get(account_id))

    def _limit(self, account_id: str) -> int:
        """The account's provider concurrency limit."""
        return self.accounts.concurrency_limit(self._account(account_id))

    def _policy(self, account_id: str) -> ContactPolicy | None:
        """The account's contact policy (a change applies within a second)."""
        return self.accounts.contact_policy(self._account(account_id))

    # -- helpers -----------------------------------------------------------------------------

    def _sim(self, real_seconds: float) -> timedelta:
        """A real-time wait expressed on the shared clock."""
        return timedelta(seconds=self.clock.simulated_seconds(real_seconds))

    def _sim_ms(self, real_seconds: float) -> int:
        """A real-time wait as simulated milliseconds."""
        return int(self.clock.simulated_seconds(real_seconds) * 1000)

    def _slot_lease_ms(self, settings: Any) -> int:
        """A slot's lease: the call's longest life (ring, max duration, grace) plus the lease margin."""
        life_s = settings.ring_timeout + settings.max_call_duration + self.timing.call_grace_sim_s
        return int(life_s * 1000) + self._sim_ms(self.timing.poll_lease_margin_s)

    def _real_ms(self, sim_seconds: float) -> int:
        return max(0, int(self.clock.real_seconds(sim_seconds) * 1000))

    def _lang(self) -> str:
        return self.config.lang

    # -- schedule_due ------------------------------------------------------------------------

    def schedule_due(self, account_id: str | None = None, *, periodic: bool = False) -> int:
        """Dispatch due jobs of active batches, at most as many per account as it has free slots.

        The periodic run (from the clock dyno) first rebuilds the slot sets if Redis lost them,
        recovers expired leases, settles lost reservations and completes finished batches.
        Returns the number of jobs dispatched.
        """
        if periodic:
            if not self.slots.known():
                self.ensure_slots()
            self.refresh_pool_limit()
            self.recover_expired()
            self.recover_reservations()
            if self.slots.redis.set(BILLING_REPAIR_LOCK, "1", nx=True,
                                    px=int(self.timing.repair_every_s * 1000)):
                self.billing.repair()
            self.complete_finished_batches()
        return self._dispatch(self._active_batches(), only=account_id)

    def _dispatch(self, active: Mapping[str, list[str]], *, only: str | None = None) -> int:
        """Dispatch due jobs of ``active`` accounts (or ``only`` one), fairly within the workspace's pool.

        The pool's free slots are shared out in turn: each account gets at most an even share of what
        is left (an account with fewer due jobs leaves the rest to the next ones), and the first account
        changes from one run to the next, so one large campaign never starves a small one.
        """
        accounts = [only] if only else sorted(active)
        accounts = [a for a in accounts if a in active]
        if not accounts:
            return 0
        if len(accounts) > 1:
            turn = int(self.slots.redis.incr(dispatch_turn_key(self.slots.workspace))) % len(accounts)
            accounts = accounts[turn:] + accounts[:turn]
        pool_free = self._pool_free()
        dispatched = 0
        for i, acc in enumerate(accounts):
            if pool_free <= 0:
                break
            share = -(-pool_free // (len(accounts) - i))  # an even share of what is left, rounded up
            claimed = max(0, self._dispatch_account(acc, active[acc], cap=share))
            pool_free -= claimed
            dispatched += claimed
        return dispatched

    def _pool_limit(self) -> int:
        """Calls the workspace allows in flight: ``RETELL_CONCURRENCY_LIMIT``, else what the provider said last
        (:meth:`refresh_pool_limit`), else the default account limit (the provider's own default)."""
        if self.config.retell_concurrency_limit:
            return self.config.retell_concurrency_limit

        def read() -> int:
            raw = self.slots.redis.get(workspace_limit_key(self.slots.workspace))
            return int(raw) if raw else self.config.default_concurrency_limit
        return self._remembered("pool-limit", read)

    def _pool_free(self) -> int:
        """Free slots of the workspace: its limit, less the calls in flight and the jobs queued to dial."""
        now_ms = self.clock.now_ms()
        return self._pool_limit() - self.slots.pool_in_use(now_ms=now_ms) - self._queued_count(None)

    def refresh_pool_limit(self) -> None:
        """Read the workspace's concurrency limit from the provider (``get-concurrency``) every few minutes;
        one process of all does it. Outbound calls get the limit less the inbound reserve."""
        if self.config.retell_concurrency_limit:
            return
        workspace = self.slots.workspace
        if not self.slots.redis.set(pool_refresh_key(workspace), "1", nx=True,
                                    px=int(self.timing.pool_refresh_s * 1000)):
            return
        try:
            concurrency = self.provider.get_concurrency()
        except ProviderError as exc:
            event(log, "concurrency_limit_unread", level=logging.WARNING, error=str(exc)[:200])
            self.slots.redis.delete(pool_refresh_key(workspace))
            return
        if concurrency.limit is None:
            return
        limit = max(1, concurrency.limit - (concurrency.reserved_inbound or 0))
        self.slots.redis.set(workspace_limit_key(workspace), limit, px=int(self.timing.pool_refresh_s * 3000))
        event(log, "concurrency_limit_read", limit=limit, current=concurrency.current)

    def _active_batches(self) -> dict[str, list[str]]:
        by_account: dict[str, list[str]] = {}
        for doc in self.batches.coll.find({"status": states.BATCH_ACTIVE, "settings_error": {"$exists": False}},
                                          {"_id": 1, "account_id": 1}):
            by_account.setdefault(doc["account_id"], []).append(doc["_id"])
        return by_account

    def refill(self, account_id: str) -> int:
        """A slot of the account was freed: dispatch its next due jobs now, in this thread.

        Sending a ``schedule_due`` message instead would cost one more trip through the broker
        (up to its poll interval) for every call. When another process is dispatching for the
        account at this moment, a (debounced) message makes sure the slot is not forgotten.
        """
        active = self._remembered("active", self._active_batches)
        if account_id not in active:
            return 0
        if len(active) > 1:
            # Several accounts share the workspace's pool: the freed slot goes to whoever's turn it is.
            return self._dispatch(active)
        dispatched = self._dispatch_account(account_id, active[account_id], cap=self._pool_free())
        if dispatched < 0:
            self.sender.schedule(account_id)
            return 0
        return dispatched

    def _dispatch_account(self, account_id: str, batch_ids: list[str], *, cap: int) -> int:
        """Claim and send as many due jobs as the account has free slots, at most ``cap`` (its share of the
        workspace's pool); -1 when another process is at it."""
        lock = self.slots.redis.lock(dispatch_lock_key(account_id), timeout=DISPATCH_LOCK_MS / 1000, blocking=False)
        if not lock.acquire():
            return -1
        try:
            now_ms = self.clock.now_ms()
            limit = self._limit(account_id)
            queued = self._queued_count(account_id)
            budget = min(limit - self.slots.in_use(account_id, now_ms=now_ms) - queued, cap,
                         self.timing.dispatch_limit)
            if budget <= 0:
                return 0
            horizon = self._sim(self.timing.horizon_s)
            lease = horizon + self._sim(self.timing.queued_lease_s)
            claimed = self.jobs.claim_due(limit=budget, lease=lease, horizon=horizon, batch_ids=batch_ids,
                                          account_id=account_id)
            for job in claimed:
                delay = self.clock.real_delay_ms(from_ms(job["next_try_at"]))
                self.sender.dial(job["_id"], job["lease_owner"], delay_ms=delay)
            return len(claimed)
        finally:
            with contextlib.suppress(LockError):  # expired and maybe taken by another process: not ours to delete
                lock.release()

    def _queued_count(self, account_id: str | None) -> int:
        """Jobs queued to dial, of one account or (None) of every account."""
        match: dict[str, Any] = {"status": states.QUEUED}
        if account_id is not None:
            match["account_id"] = account_id
        rows = self.jobs.coll.aggregate([{"$match": match}, {"$group": {"_id": "$status", "n": {"$sum": 1}}}])
        return sum(int(r["n"]) for r in rows)

    # -- recovery ----------------------------------------------------------------------------

    def recover_expired(self, *, limit: int = 1000) -> int:
        """Take over jobs whose lease expired: re-dispatch, re-poll or reconcile — never dial blindly."""
        taken = self.jobs.claim_expired(limit=limit, lease=self._sim(self.timing.dialing_lease_s))
        for job in taken:
            metrics.RECOVERED.labels(job["status"]).inc()
            event(log, "lease_recovered", job_id=job["_id"], state=job["status"])
            if job["status"] == states.QUEUED:
                self.sender.dial(job["_id"], job["lease_owner"])
            elif job["status"] == states.IN_CALL:
                self.sender.poll(job["_id"], job["lease_owner"], job.get("call_id", ""), 0)
            else:
                self.sender.reconcile(job["_id"], job["lease_owner"])
        return len(taken)

    def ensure_slots(self) -> bool:
        """Rebuild the slot sets if Redis lost them, under a lock: two periodic runs never both rebuild (the
        second would delete slots taken after the first). False when another process holds the lock."""
        lock = self.slots.redis.lock(SLOTS_REBUILD_LOCK, timeout=SLOTS_REBUILD_LOCK_S, blocking=False)
        if not lock.acquire():
            return False
        try:
            if not self.slots.known():  # the holder before us may have rebuilt them already
                self.rebuild_slots()
            return True
        finally:
            with contextlib.suppress(LockError):
                lock.release()

    def rebuild_slots(self) -> None:
        """Refill the Redis slot sets from the calls MongoDB shows in progress (call :meth:`ensure_slots`)."""
        held: dict[str, dict[str, int]] = {}
        for job in self.jobs.coll.find({"status": {"$in": [states.DIALING, states.IN_CALL]}},
                                       {"account_id": 1, "attempt_id": 1, "lease_until": 1}):
            if job.get("attempt_id"):
                until = max(int(job.get("lease_until", 0)), self.clock.now_ms() + 60_000)
                held.setdefault(job["account_id"], {})[job["attempt_id"]] = until
        self.slots.rebuild(held)
        event(log, "slots_rebuilt", accounts=len(held), calls=sum(len(v) for v in held.values()))

    def recover_reservations(self, *, limit: int = 500) -> int:
        """Settle or release reservations whose call is over or was never placed."""
        older = self.clock.now_ms() - int(self._sim(self.timing.dialing_lease_s).total_seconds() * 1000)
        fixed = 0
        for res in self.billing.open_reservations(older_than_ms=older, limit=limit):
            aid = res.attempt_id
            attempt = self.attempts.get(aid)
            if attempt is None or attempt["state"] in (attempt_states.NOT_PLACED, attempt_states.ORPHANED):
                self.billing.release(aid)
                fixed += 1
            elif attempt["state"] == attempt_states.ENDED:
                self.billing.settle(aid, duration_ms=int(attempt.get("duration_ms") or 0))
                fixed += 1
        return fixed

    def complete_finished_batches(self) -> int:
        """Active batches whose every job is final become ``completed``."""
        active = [d["_id"] for d in self.batches.coll.find({"status": states.BATCH_ACTIVE}, {"_id": 1})]
        if not active:
            return 0
        open_rows = self.jobs.coll.aggregate([
            {"$match": {"batch_id": {"$in": active}, "status": {"$nin": list(states.FINAL)}}},
            {"$group": {"_id": "$batch_id", "n": {"$sum": 1}}},
        ])
        still_open = {r["_id"] for r in open_rows}
        done = 0
        for batch_id in active:
            if (batch_id not in still_open and self.jobs.coll.find_one({"batch_id": batch_id}, {"_id": 1})
                    and self.batches.set_status(batch_id, states.BATCH_COMPLETED, expected=(states.BATCH_ACTIVE,))):
                # Contacts added between the count and the write would be stranded: look once more.
                if self.jobs.coll.find_one({"batch_id": batch_id, "status": {"$nin": list(states.FINAL)}}, {"_id": 1}):
                    self.batches.set_status(batch_id, states.BATCH_ACTIVE, expected=(states.BATCH_COMPLETED,))
                    continue
                done += 1
                event(log, "batch_completed", batch_id=batch_id)
        return done

    # -- dial --------------------------------------------------------------------------------

    def dial(self, job_id: str, lease_owner: str) -> str:
        """The dial step for one job; returns what happened (a :class:`DialStep` or a dial result)."""
        job = self.jobs.get(job_id)
        cached = self.cache.get(job["batch_id"]) if job else None
        listed = self._listed(job, lease_owner)
        now = self.clock.now()
        decision = decide_dial(job, lease_owner=lease_owner, batch=cached.doc if cached else None,
                               settings=cached.settings if cached else None,
                               settings_error=cached.settings_error if cached else None, now=now,
                               lang=self._lang(), guard=self._sim(self.timing.dial_guard_s),
                               early=self._sim(self.timing.early_tolerance_s), listed=listed)
        metrics.DIAL_DECISIONS.labels(decision.step.value).inc()
        if decision.dnc_skipped:
            metrics.DNC_BLOCKED.labels("decision").inc()
        if decision.step == DialStep.STALE:
            return decision.step
        assert job is not None  # decide_dial says STALE for a missing job
        self._log_decision(job, cached, decision, now)
        own = {"lease_owner": lease_owner, "expected": (states.QUEUED,)}
        if decision.step == DialStep.EARLY:
            assert decision.next_try_at is not None
            self.sender.dial(job_id, lease_owner, delay_ms=max(1, self.clock.real_delay_ms(decision.next_try_at)))
        elif decision.step in (DialStep.BATCH_GONE, DialStep.CANCELLED):
            self.jobs.transition(job_id, to=states.CANCELLED, set_={"last_error": decision.reason}, **own)
        elif decision.step == DialStep.PAUSED:
            self.jobs.release(job_id, now, decision.reason or "batch paused", **own)
        elif decision.step == DialStep.SETTINGS_INVALID:
            self.batches.record_settings_error(job["batch_id"], cached.settings_error)
            self.jobs.release(job_id, now, decision.reason or "invalid settings", **own)
        elif decision.step == DialStep.OUTSIDE_WINDOW:
            assert decision.next_try_at is not None
            self.jobs.reschedule(job_id, decision.next_try_at, decision.reason or "outside calling window",
                                 inc={"postponed_by_schedule": 1}, **own)
            metrics.POSTPONED_BY_SCHEDULE.inc()
            event(log, "postponed_by_schedule", job_id=job_id, until=decision.next_try_at.isoformat(),
                  reason=decision.reason)
        elif decision.step in (DialStep.MAX_ATTEMPTS, DialStep.NO_PHONE, DialStep.NO_WINDOW):
            self.jobs.mark_failed(job_id, decision.reason or "failed", terminal=True, **own)
        elif decision.step == DialStep.DO_NOT_CALL:
            self.jobs.transition(job_id, to=states.FAILED, unset=("next_try_at",), **own,
                                 set_={"last_error": decision.reason, "outcome": DNC_OUTCOME,
                                       "finished_at": self.clock.now_ms()})
        elif decision.step == DialStep.DNC_ROUND_END:
            self.jobs.mark_failed(job_id, decision.reason or "do not call", call_settings=cached.settings, job=job,
                                  **own)
        else:
            assert decision.phone_index is not None
            return self._place_call(job, cached, decision.phone_index, lease_owner)
        return decision.step

    def _log_decision(self, job: Mapping[str, Any], cached: Any, decision: Any, now: Any) -> None:
        """One line per dial decision, as the original worker wrote: the settings used (the batch's, or the
        defaults when it has none), the window's verdict and why, what the create would send (ring timeout,
        max duration), and which attempt of how many, and how many numbers a do-not-call list passed over.
        The number is masked. Nothing is computed when info lines are not logged."""
        if not log.isEnabledFor(logging.INFO):
            return
        settings = cached.settings if cached else None
        stored = (cached.doc or {}).get("call_settings") if cached else None
        fields: dict[str, Any] = {
            "job_id": job["_id"], "batch_id": job["batch_id"], "step": decision.step.value,
            "settings": "invalid" if cached and settings is None else ("batch" if stored else "defaults"),
        }
        index = decision.phone_index if decision.phone_index is not None else int(job.get("phone_index", 0))
        phones = job["contact"]["phones"]
        phone = phones[min(index, len(phones) - 1)]
        fields["to"] = mask_phone(phone)
        if decision.step == DialStep.OUTSIDE_WINDOW:
            fields.update(window="closed", window_reason=decision.reason)
        elif decision.step in (DialStep.PROCEED, DialStep.MAX_ATTEMPTS) and settings is not None:
            zones = resolve_timezones(settings, phone, contact_timezone=job["contact"].get("timezone"),
                                      config=self.config)
            local = now.astimezone(pytz.timezone(zones[0]))
            fields.update(window="open", window_reason=f"{local:%a %H:%M} in {', '.join(zones)}")
        elif decision.reason:
            fields["reason"] = decision.reason
        if settings is not None:
            fields.update(ring_timeout_s=settings.ring_timeout, max_call_duration_s=settings.max_call_duration,
                          attempt=f"{int(job.get('tries', 0)) + 1}/{settings.max_attempts}")
        if decision.dnc_skipped:
            fields["dnc_skipped"] = decision.dnc_skipped
        event(log, "dial_decision", **fields)

    def _listed(self, job: Mapping[str, Any] | None, lease_owner: str) -> frozenset[str]:
        """The job's numbers on its account's or the global do-not-call list (one query); nothing is read for a
        message the decision will drop anyway (a vanished job, another state, another lease)."""
        if job is None or job.get("status") != states.QUEUED or job.get("lease_owner") != lease_owner:
            return frozenset()
        return self.dnc.listed(job["account_id"], job["contact"]["phones"])

    def _place_call(self, job: Mapping[str, Any], cached: Any, phone_index: int, lease_owner: str) -> str:
        """Claim the job (``queued -> dialing``), take its balance hold and slot, record the attempt, create the call.

        Winning the conditional transition comes first: a process that loses it (the same message
        delivered twice) has taken nothing and gives nothing back. From then on this process alone owns
        the job, the hold and the slot of the attempt, until its lease ends.
        """
        settings = cached.settings
        job_id, account_id = job["_id"], job["account_id"]
        aid = attempt_id(job, phone_index)
        now_ms = self.clock.now_ms()
        lease_until = now_ms + self._sim_ms(self.timing.dialing_lease_s)
        won = self.jobs.transition(
            job_id, to=states.DIALING, inc={"dials": 1}, lease_owner=lease_owner, expected=(states.QUEUED,),
            set_={"attempt_id": aid, "phone_index": phone_index, "dialed_at": now_ms, "lease_until": lease_until},
            unset=("stop_requested_at", "stop_acked", "stop_attempts"))
        if won is None:
            return DialStep.STALE
        own = {"lease_owner": lease_owner, "expected": (states.DIALING,)}

        reservation = self.billing.reserve(account_id, attempt_id=aid, job_id=job_id,
                                           max_call_duration_s=settings.max_call_duration)
        if not reservation.ok:
            return self._insufficient_balance(won, settings, reservation, own)

        slot = self.slots.acquire(account_id, aid, limit=self._limit(account_id), now_ms=now_ms,
                                  lease_ms=self._slot_lease_ms(settings), pool_limit=self._pool_limit())
        if slot != Acquired.YES:
            self.billing.release(aid)
            retry_at = self.clock.now() + self._sim(self.timing.no_slot_retry_s)
            self.jobs.release(job_id, retry_at, "no free provider slot" if slot == Acquired.NO
                              else "provider slots being rebuilt", **own)
            if slot == Acquired.UNKNOWN:
                self.sender.schedule(None)
            return "no_slot"

        refused = self._take_turn(won, settings, phone_index, aid, now_ms, lease_owner)
        if refused is not None:
            self.slots.release(account_id, aid)
            self.billing.release(aid)
            return refused

        batch = cached.doc
        attempt = {
            "_id": aid, "job_id": job_id, "batch_id": job["batch_id"], "account_id": account_id,
            "round": int(job.get("tries", 0)) + 1, "phone_index": phone_index, "dial": int(won.get("dials", 1)),
            "to_number": job["contact"]["phones"][phone_index], "created_at": now_ms, "due_at": job.get("next_try_at"),
            "owner": lease_owner, "from_number": batch.get("from_number") or self.config.call_from_number,
            "agent_id": batch.get("agent_id") or self.config.retell_agent_id,
        }
        if job["contact"].get("external_id") not in (None, ""):
            attempt["external_id"] = job["contact"]["external_id"]
        if not self.attempts.insert(attempt):
            # Recovery recorded this attempt first, as not placed, while this process was stalled: it gave back
            # the hold and the slot then, and this process took them again since. A not-placed attempt has no
            # owner left, so what is held in its name is nobody's: give it back.
            if (self.attempts.get(aid) or {}).get("state") == attempt_states.NOT_PLACED:
                self.slots.release(account_id, aid)
                self.billing.release(aid)
                self._forget_turn(won, aid)
            return DialStep.STALE
        metrics.DIAL_LAG.observe(max(0.0, (now_ms - int(job.get("next_try_at", now_ms))) / 1000))
        return self._create(won, attempt, settings, lease_owner, lease_until,
                            reserved=int(getattr(reservation, "amount", 0) or 0))

    def _take_turn(self, job: Mapping[str, Any], settings: Any, phone_index: int, aid: str, now_ms: int,
                   lease_owner: str) -> str | None:
        """The account's contact policy: record this call against the callee's keys, or, when a cap says no,
        the job waits (``waiting_schedule``) for the first instant the caps and the window allow. None: go on."""
        account_id = job["account_id"]
        policy = self._policy(account_id)
        if policy is None:
            return None
        contact = job["contact"]
        phone = contact["phones"][phone_index]
        zone = pytz.timezone(resolve_timezones(settings, phone, contact_timezone=contact.get("timezone"),
                                               config=self.config)[0])
        now = from_ms(now_ms)
        # The latest the call can be finalized: its deadline, the stop grace, then recovery of a dead poller.
        until = attempt_deadline_ms(now_ms, ring_timeout_s=settings.ring_timeout, grace_s=self.timing.call_grace_sim_s,
                                    max_call_duration_s=settings.max_call_duration)
        until += self._sim_ms(self.timing.stop_grace_s + self.timing.poll_lease_margin_s)
        touch = Touch(at_ms=now_ms, attempt_id=aid, until_ms=until)
        refused = self.history.reserve(account_id, contact_keys(contact, phone), touch,
                                       keep_ms=now_ms - policy.history_days * DAY_MS,
                                       decide=lambda calls: capped_until(policy, calls, now, zone))
        if refused is None:
            return None
        allowed_from, why = refused
        own = {"lease_owner": lease_owner, "expected": (states.DIALING,)}
        try:
            at = next_allowed_time(settings, allowed_from, phone, contact_timezone=contact.get("timezone"),
                                   config=self.config)
        except NoAllowedTime as exc:
            self.jobs.mark_failed(job["_id"], f"{why}; {exc}", terminal=True, **own)
            return DialStep.NO_WINDOW
        self.jobs.reschedule(job["_id"], at, why, inc={"postponed_by_policy": 1}, **own)
        metrics.POSTPONED_BY_POLICY.inc()
        event(log, "postponed_by_policy", job_id=job["_id"], to=mask_phone(phone), until=at.isoformat(), reason=why)
        return "capped"

    def _forget_turn(self, job: Mapping[str, Any], aid: str) -> None:
        """The attempt was not placed: it no longer counts against the callee's caps."""
        policy = self._policy(job["account_id"])
        if policy is None:
            return
        phones = job["contact"]["phones"]
        phone = phones[min(int(job.get("phone_index", 0)), len(phones) - 1)]
        self.history.forget(job["account_id"], contact_keys(job["contact"], phone), aid,
                            keep_ms=self.clock.now_ms() - policy.history_days * DAY_MS)

    def _create(self, job: Mapping[str, Any], attempt: Mapping[str, Any], settings: Any, lease_owner: str,
                lease_until: int, *, reserved: int | None, replay: bool = False) -> str:
        """Send the attempt's create (its id as the idempotency key) and record the call.

        Right before every send, :func:`shared.decisions.check_before_send` checks the fence (this
        process's lease outlasts the create) and the calling window at the same moment; when it fails
        before the first send, nothing reached the provider. ``replay``: the attempt's create was sent
        before with an unknown outcome; then :class:`~shared.errors.DialAborted` goes to the caller.
        """
        job_id, aid = job["_id"], attempt["_id"]
        phone = attempt["to_number"]
        contact_tz = job["contact"].get("timezone")
        need_real_s = self.timing.create_timeout_s + self.timing.fence_margin_s

        def precheck() -> None:
            if self.dnc.listed(job["account_id"], [phone]):
                metrics.DNC_BLOCKED.labels("send").inc()
                raise DialAborted("dnc", "the number is on a do-not-call list")
            now = self.clock.now()
            problem = check_before_send(
                now=now, lease_until_ms=lease_until,
                real_seconds=self.clock.real_seconds((lease_until - to_ms(now)) / 1000), need_real_s=need_real_s,
                clock_trusted=self._clock_trusted(), settings=settings, phone=phone, contact_timezone=contact_tz,
                guard=self._sim(self.timing.dial_guard_s), lang=self._lang())
            if problem is not None:
                raise problem

        try:
            call = self.provider.create_phone_call(
                from_number=attempt.get("from_number") or self.config.call_from_number,
                to_number=phone,
                agent_id=attempt.get("agent_id"),
                dynamic_variables=dict(job["contact"].get("variables", {})),
                metadata={"job_id": job_id, "attempt_id": aid, "attempt": int(attempt.get("dial", 1)),
                          "round": int(attempt.get("round", 1)), "batch_id": job["batch_id"]},
                ring_timeout_s=settings.ring_timeout,
                max_call_duration_s=settings.max_call_duration,
                idempotency_key=aid,
                precheck=precheck,
            )
        except DialAborted as exc:
            if replay:
                raise
            return self._abort_dial(job, aid, exc, lease_owner)
        except CreateOutcomeUnknown as exc:
            metrics.PROVIDER_ERRORS.labels(exc.kind).inc()
            event(log, "create_outcome_unknown", job_id=job_id, attempt_id=aid, error=str(exc)[:300])
            self.sender.reconcile(job_id, lease_owner, delay_ms=int(self.timing.reconcile_retry_s * 1000))
            return "reconcile"
        except ProviderError as exc:
            metrics.PROVIDER_ERRORS.labels(exc.kind).inc()
            if replay:
                # A refusal of this send says nothing of the earlier one, which may have made the call: still unknown.
                wait_s = max(self.timing.reconcile_retry_s,
                             float(getattr(exc, "retry_after_s", None) or 0.0))
                event(log, "replay_refused", job_id=job_id, attempt_id=aid, error=type(exc).__name__)
                self.sender.reconcile(job_id, lease_owner, delay_ms=int(wait_s * 1000))
                return "reconcile"
            return self._create_failed(job, aid, exc, lease_owner)
        if not replay:
            metrics.DIALS.inc()
        return self._record_call(job_id, aid, job["account_id"], call, lease_owner, settings, reserved=reserved)

    def _clock_trusted(self) -> bool:
        source = self.clock.source
        if not isinstance(source, ServerTime):
            return True  # a process without a server time (tests of one process) trusts its own clock
        return source.trusted(max_uncertainty_s=self.config.pipeline_max_skew_ms / 1000,
                              max_age_s=self.timing.max_clock_age_s)

    def _abort_dial(self, job: Mapping[str, Any], aid: str, exc: DialAborted, lease_owner: str) -> str:
        """Nothing was sent: the attempt is not placed, the hold and the slot go back, the job waits."""
        job_id = job["_id"]
        metrics.DIAL_ABORTS.labels(exc.kind).inc()
        event(log, "dial_aborted", job_id=job_id, attempt_id=aid, kind=exc.kind, reason=exc.reason)
        if not self.attempts.not_placed(aid, f"not sent: {exc.reason}", owner=lease_owner):
            return DialStep.STALE  # recovery took the attempt over: it decides
        self.slots.release(job["account_id"], aid)
        self.billing.release(aid)
        self._forget_turn(job, aid)
        own = {"lease_owner": lease_owner, "expected": (states.DIALING,)}
        if exc.kind == "window" and exc.next_try_at is not None:
            self.jobs.reschedule(job_id, exc.next_try_at, exc.reason, inc={"postponed_by_schedule": 1}, **own)
            metrics.POSTPONED_BY_SCHEDULE.inc()
        elif exc.kind == "dnc":
            # Decided again at once: the decision passes the number over (or fails the contact).
            self.jobs.release(job_id, self.clock.now(), exc.reason, **own)
            self.sender.schedule(job["account_id"])
        else:
            self.jobs.release(job_id, self.clock.now() + self._sim(self.timing.no_slot_retry_s), exc.reason, **own)
        return f"aborted_{exc.kind}"

    def _insufficient_balance(self, job: Mapping[str, Any], settings: Any, reservation: Any,
                              own: Mapping[str, Any]) -> str:
        """The batch's ``on_insufficient_balance``: fail the contact, or park it until a top-up."""
        after = self.billing.on_insufficient_balance(job, settings, reservation, lease_owner=own["lease_owner"],
                                                     expected=own["expected"])
        return str(after["status"]) if after else DialStep.STALE

    def _create_failed(self, job: Mapping[str, Any], aid: str, exc: ProviderError, lease_owner: str) -> str:
        """The provider refused the create: nothing was placed. What happens depends on who can fix it."""
        job_id, account_id = job["_id"], job["account_id"]
        if not self.attempts.not_placed(aid, str(exc)[:300], owner=lease_owner):
            return DialStep.STALE
        self.slots.release(account_id, aid)
        self.billing.release(aid)
        self._forget_turn(job, aid)
        own = {"lease_owner": lease_owner, "expected": (states.DIALING,)}
        event(log, "create_failed", job_id=job_id, attempt_id=aid, error=type(exc).__name__)
        if isinstance(exc, InvalidDestination):
            # Only a refusal that names the destination marks the contact's number: never one naming the caller id.
            self.jobs.advance_phone(job_id, f"invalid number: {exc}", self._settings_of(job), invalid=True, **own)
            return "invalid_number"
        if isinstance(exc, ProviderAuthError | PaymentRequired):
            # The workspace (every account shares its API key) cannot place calls: hold every batch.
            self._hold(job, f"the provider refused the call: {exc}", batch_id=None, own=own)
            return "held"
        if isinstance(exc, CallerIdRejected | AgentNotFound):
            what = "caller id" if isinstance(exc, CallerIdRejected) else "agent"
            self._hold(job, f"the provider refused the batch's {what}: {exc}", batch_id=job["batch_id"], own=own)
            return "held"
        if exc.retryable or isinstance(exc, RateLimited):
            retry_after = exc.retry_after_s if isinstance(exc, RateLimited) else None
            self._free_retry(job, f"provider error: {exc}", own, retry_after_s=retry_after)
            return "provider_error"
        # Any other refusal is about this request: the round fails (bounded by max_attempts), never a loop.
        self.jobs.mark_failed(job_id, f"the provider refused the call: {exc}", call_settings=self._settings_of(job),
                              job=job, **own)
        return "refused"

    def _free_retry(self, job: Mapping[str, Any], reason: str, own: Mapping[str, Any], *,
                    retry_after_s: float | None = None) -> dict[str, Any] | None:
        """A provider fault that spends no attempt: back to ``pending`` after a growing wait, within the budget;
        past ``PIPELINE_MAX_FREE_RETRIES`` of them in a row, the round fails and says why."""
        used = int(job.get("free_retries", 0) or 0)
        wait_s = decide_free_retry(used, limit=self.config.pipeline_max_free_retries, retry_after_s=retry_after_s,
                                   base_s=self.config.pipeline_free_retry_base_s)
        if wait_s is None:
            metrics.FREE_RETRIES.labels("budget_spent").inc()
            return self.jobs.mark_failed(
                job["_id"], f"provider faults in a row, {used} free retries spent: {reason}",
                call_settings=self._settings_of(job), job=job, expected=own["expected"],
                lease_owner=own.get("lease_owner"))
        metrics.FREE_RETRIES.labels("retried").inc()
        return self.jobs.reschedule(job["_id"], self.clock.now() + self._sim(wait_s), reason, status=states.PENDING,
                                    inc={"free_retries": 1}, **own)

    def _hold(self, job: Mapping[str, Any], reason: str, *, batch_id: str | None,
              own: Mapping[str, Any]) -> dict[str, Any] | None:
        """Hold the batch (or every active batch) until an operator resumes it; the job waits, unspent."""
        held = self.batches.hold(reason, batch_id=batch_id, seen_at=job.get("dialed_at"))
        metrics.BATCHES_HELD.inc(len(held))
        event(log, "batches_held", level=logging.WARNING, batches=len(held), reason=reason[:300])
        return self.jobs.reschedule(job["_id"], self.clock.now(), f"batch held: {reason}", status=states.PENDING,
                                    **own)

    def _record_call(self, job_id: str, aid: str, account_id: str, call: Any, lease_owner: str,
                     settings: Any, *, reserved: int | None = None) -> str:
        poll_delay_s = next_poll_delay_s(0)
        lease_ms = self._in_call_lease_ms(settings or self._default_settings())
        # The attempt learns its call first: a webhook may finalize the call as soon as the job is in_call,
        # and a process that takes the job over reads the call from the attempt.
        self.attempts.set_call(aid, call.call_id)
        fields: dict[str, Any] = {"call_id": call.call_id, "lease_until": lease_ms}
        if reserved is not None:
            fields["reserved"] = reserved
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
        self.sender.poll(job_id, lease_owner, call.call_id, 0, delay_ms=self._real_ms(poll_delay_s))
        return "dialed"

    def _stop_quietly(self, call_id: str) -> None:
        try:
            self.provider.stop_call(call_id)
        except CallNotFound:
            pass
        except ProviderError as exc:
            event(log, "stop_call_failed", call_id=call_id, error=str(exc))

    # -- reconcile ---------------------------------------------------------------------------

    def reconcile(self, job_id: str, lease_owner: str) -> str:
        """A ``dialing`` job whose create may or may not have reached the provider: settle it before anything else.

        Sent by the dial step after an unknown outcome (same owner), or by recovery after the dialing
        lease ended (new owner). In order: the attempt was never recorded (insert it as not placed:
        nothing was sent); its call is known (record it); it is not too old for the provider's
        idempotency (send the same create again with the same key: the provider answers with the call
        it made, or makes it now, once); otherwise look it up by metadata, and declare it not placed
        only once nothing can still be on its way.
        """
        job = self.jobs.get(job_id)
        if job is None or job.get("status") != states.DIALING or job.get("lease_owner") != lease_owner:
            return "stale"
        aid = job.get("attempt_id")
        if not aid:
            return self._not_placed(job, None, lease_owner, "dial interrupted before an attempt was chosen")
        attempt = self.attempts.get(aid)
        if attempt is None:
            if self.attempts.insert({"_id": aid, "job_id": job_id, "batch_id": job["batch_id"],
                                     "account_id": job["account_id"], "state": attempt_states.NOT_PLACED,
                                     "owner": lease_owner, "error": "dial interrupted before the attempt was recorded",
                                     "phone_index": job.get("phone_index"), "round": int(job.get("tries", 0)) + 1}):
                return self._not_placed(job, aid, lease_owner, "dial interrupted before the provider was called")
            attempt = self.attempts.get(aid)
            if attempt is None:
                return "retry"
        if attempt["state"] in (attempt_states.NOT_PLACED, attempt_states.ORPHANED):
            return self._not_placed(job, aid, lease_owner, attempt.get("error") or "not placed")
        if attempt.get("call_id"):
            metrics.RECONCILES.labels("known").inc()
            return self._record_call(job_id, aid, job["account_id"], self._known_call(attempt), lease_owner,
                                     self._settings_of(job))
        if attempt.get("owner") != lease_owner and not self.attempts.take_over(aid, lease_owner):
            self.sender.reconcile(job_id, lease_owner)  # the attempt changed under us: look again
            return "retry"
        cached = self.cache.get(job["batch_id"])
        age_real_s = self.clock.real_seconds((self.clock.now_ms() - int(attempt.get("created_at", 0))) / 1000)
        if (cached is not None and cached.settings is not None and age_real_s < self.timing.replay_window_s
                and int(attempt.get("replays", 0)) < self.timing.max_replays):
            lease_until = self._extend_dialing_lease(job_id, lease_owner)
            if lease_until is None:
                return "stale"
            self.attempts.count_replay(aid)
            try:
                result = self._create(job, attempt, cached.settings, lease_owner, lease_until, reserved=None,
                                      replay=True)
            except DialAborted as exc:
                event(log, "replay_not_sent", job_id=job_id, attempt_id=aid, kind=exc.kind, reason=exc.reason)
            else:
                metrics.RECONCILES.labels("replayed" if result == "dialed" else result).inc()
                return result
        return self._look_up(job, attempt, lease_owner)

    def _known_call(self, attempt: Mapping[str, Any]) -> Call:
        return Call(call_id=attempt["call_id"], call_status="registered", to_number=attempt.get("to_number"))

    def _look_up(self, job: Mapping[str, Any], attempt: Mapping[str, Any], lease_owner: str) -> str:
        """Find the attempt's call by its metadata; not placed only once nothing can still be on its way."""
        job_id, aid = job["_id"], attempt["_id"]
        try:
            found = self.provider.find_calls_by_metadata(attempt["to_number"], "attempt_id", aid,
                                                         since_ms=int(attempt.get("created_at", 0)) - 3_600_000,
                                                         max_pages=self.timing.lookup_max_pages)
        except ProviderError as exc:  # the provider failed, or the number has too many calls to read them all
            metrics.PROVIDER_ERRORS.labels(exc.kind).inc()
            give_up_at = self._attempt_deadline_ms(job, attempt) + self._sim_ms(self.timing.dialing_lease_s)
            if self.clock.now_ms() > give_up_at:
                return self._give_up(job, attempt, lease_owner, f"its call could not be looked up: {exc}")
            metrics.RECONCILES.labels("retry").inc()
            self._extend_dialing_lease(job_id, lease_owner)
            self.sender.reconcile(job_id, lease_owner, delay_ms=int(self.timing.provider_backoff_s * 1000))
            return "retry"
        if found:
            metrics.RECONCILES.labels("found").inc()
            event(log, "reconciled_call_found", job_id=job_id, attempt_id=aid, call_id=found[0].call_id)
            return self._record_call(job_id, aid, job["account_id"], found[0], lease_owner, self._settings_of(job))
        settled_after = (int(attempt.get("created_at", 0)) + self._sim_ms(self.timing.dialing_lease_s)
                         + self._sim_ms(self.timing.reconcile_grace_s))
        if self.clock.now_ms() < settled_after:
            metrics.RECONCILES.labels("retry").inc()
            self._extend_dialing_lease(job_id, lease_owner)
            self.sender.reconcile(job_id, lease_owner, delay_ms=int(self.timing.reconcile_grace_s * 1000))
            return "retry"
        reason = "create outcome unknown; no call found at the provider"
        if not self.attempts.not_placed(aid, reason, owner=lease_owner):
            self.sender.reconcile(job_id, lease_owner)
            return "retry"
        metrics.RECONCILES.labels("not_placed").inc()
        event(log, "reconciled_not_placed", job_id=job_id, attempt_id=aid)
        return self._not_placed(job, aid, lease_owner, "provider did not create the call")

    def _attempt_deadline_ms(self, job: Mapping[str, Any], attempt: Mapping[str, Any]) -> int:
        settings = self._settings_of(job)
        return attempt_deadline_ms(int(attempt.get("created_at", 0)), ring_timeout_s=settings.ring_timeout,
                                   max_call_duration_s=settings.max_call_duration,
                                   grace_s=self.timing.call_grace_sim_s)

    def _give_up(self, job: Mapping[str, Any], attempt: Mapping[str, Any], lease_owner: str, reason: str) -> str:
        """Past the attempt's deadline its call, if it ever existed, is over, and it still cannot be found:
        the attempt ends with an unknown outcome and counts (a failed round, the retry delay applies), so a
        person who may have been called is not called again at once, and the job does not wait forever."""
        aid = attempt["_id"]
        if not self.attempts.end(aid, {"outcome": "unknown", "finalized_by": "deadline", "charge": 0,
                                       "finalized_at": self.clock.now_ms(), "error": reason[:300]}):
            return "stale"
        self.slots.release(job["account_id"], aid)
        self.billing.release(aid)
        metrics.RECONCILES.labels("given_up").inc()
        event(log, "reconcile_given_up", level=logging.WARNING, job_id=job["_id"], attempt_id=aid, reason=reason[:200])
        self.jobs.mark_failed(job["_id"], f"create outcome unknown past the deadline: {reason}",
                              call_settings=self._settings_of(job), job=job, expected=(states.DIALING,),
                              lease_owner=lease_owner)
        return "given_up"

    def _not_placed(self, job: Mapping[str, Any], aid: str | None, lease_owner: str, reason: str) -> str:
        """The attempt never reached the provider: give back its slot and hold, and the job is due again now."""
        if aid:
            self.slots.release(job["account_id"], aid)
            self.billing.release(aid)
            self._forget_turn(job, aid)
        self.jobs.release(job["_id"], self.clock.now(), reason, expected=(states.DIALING,), lease_owner=lease_owner)
        return "not_placed"

    def _extend_dialing_lease(self, job_id: str, lease_owner: str) -> int | None:
        """A fresh dialing lease for the owner; its end (ms), or None when the job is no longer its own."""
        until = self.clock.now_ms() + self._sim_ms(self.timing.dialing_lease_s)
        result = self.jobs.coll.update_one({"_id": job_id, "status": states.DIALING, "lease_owner": lease_owner},
                                           {"$set": {"lease_until": until}})
        return until if result.modified_count == 1 else None

    # -- poll and finalize -------------------------------------------------------------------

    def poll(self, job_id: str, lease_owner: str, call_id: str, n: int) -> str:
        """Ask the provider about an in-progress call; re-send itself until the call is over.

        One MongoDB read per poll: the in-call lease already covers the call's longest life, so a
        poll writes nothing unless it has to stop the call. The lease token in the message keeps
        a single poll chain per call (a chain whose token was taken over by recovery stops). Past the
        attempt's deadline the call is stopped (the stop retried with backoff while it fails), and a
        call the provider still calls going a stop grace later, or cannot tell about, ends here as a
        timeout: no attempt holds its job, slot and hold forever.
        """
        job = self.jobs.get(job_id)
        if (job is None or job.get("status") != states.IN_CALL or job.get("lease_owner") != lease_owner
                or (call_id and job.get("call_id") != call_id)):
            return "stale"
        call_id = job["call_id"]
        call: Call | None
        try:
            call = self.provider.get_call(call_id)
        except CallNotFound:
            call = Call(call_id=call_id, call_status="error", disconnection_reason="error_unknown")
        except ProviderError as exc:
            metrics.PROVIDER_ERRORS.labels(exc.kind).inc()
            call = None
        if call is not None and call.is_final:
            return self.finalize(job_id, call, lease_owner=lease_owner)
        settings = self._settings_of(job)
        step = decide_poll(final=False, start_ms=call.start_timestamp_ms if call else None,
                           created_ms=int(job.get("dialed_at") or self.clock.now_ms()), now_ms=self.clock.now_ms(),
                           max_call_duration_s=settings.max_call_duration, ring_timeout_s=settings.ring_timeout,
                           grace_s=self.timing.call_grace_sim_s,
                           stop_grace_s=self.clock.simulated_seconds(self.timing.stop_grace_s))
        if step == PollStep.FORCE_END:
            return self._force_end(job, call, lease_owner)
        if step == PollStep.STOP and not job.get("stop_acked"):
            return self._stop_past_limit(job, lease_owner, n)
        if call is None:
            return self._poll_again(job_id, lease_owner, call_id, n, max(next_poll_delay_s(n), 5.0))
        return self._poll_again(job_id, lease_owner, call_id, n, 1.0 if step == PollStep.STOP
                                else next_poll_delay_s(n))

    def _stop_past_limit(self, job: Mapping[str, Any], lease_owner: str, n: int) -> str:
        """Ask the provider to end a call past its limits; a failed stop is tried again with backoff."""
        job_id, call_id = job["_id"], job["call_id"]
        now = self.clock.now_ms()
        fields: dict[str, Any] = {"stop_requested_at": job.get("stop_requested_at") or now}
        try:
            self.provider.stop_call(call_id)
            fields["stop_acked"] = True
        except CallNotFound:
            fields["stop_acked"] = True
        except ProviderError as exc:
            metrics.PROVIDER_ERRORS.labels(exc.kind).inc()
            event(log, "stop_call_failed", call_id=call_id, error=str(exc)[:200], attempt=job.get("stop_attempts", 0))
        self.jobs.coll.update_one({"_id": job_id, "status": states.IN_CALL, "lease_owner": lease_owner},
                                  {"$set": fields, "$inc": {"stop_attempts": 1}})
        if not job.get("stop_requested_at"):
            self.attempts.mark(job["attempt_id"], {"stopped_for_timeout": True, "stop_requested_at": now})
            event(log, "call_stopped_past_max_duration", job_id=job_id, call_id=call_id)
        if fields.get("stop_acked"):
            return self._poll_again(job_id, lease_owner, call_id, n, 1.0)
        wait_real = stop_retry_delay_s(int(job.get("stop_attempts", 0)) + 1)
        self.sender.poll(job_id, lease_owner, call_id, n + 1, delay_ms=int(wait_real * 1000))
        return "stop_retry"

    def _force_end(self, job: Mapping[str, Any], call: Call | None, lease_owner: str) -> str:
        """The call outlived its deadline by the stop grace: end the attempt here, as a timeout.

        The duration charged is what is known: from the provider's start (if it ever reported one) to now.
        """
        now = self.clock.now_ms()
        start = call.start_timestamp_ms if call is not None else None
        ended = Call(call_id=job["call_id"], call_status="ended", disconnection_reason="manual_stopped",
                     start_timestamp_ms=start, end_timestamp_ms=now,
                     duration_ms=max(0, now - start) if start is not None else 0,
                     to_number=call.to_number if call is not None else None)
        self.attempts.mark(job["attempt_id"], {"forced_end": True})
        event(log, "call_forced_end", level=logging.WARNING, job_id=job["_id"], call_id=job["call_id"],
              reachable=call is not None)
        metrics.FORCED_ENDS.inc()
        return self.finalize(job["_id"], ended, lease_owner=lease_owner, source="deadline")

    def _settings_of(self, job: Mapping[str, Any]) -> Any:
        """The job's batch settings, or the global defaults when the batch or its settings are gone."""
        cached = self.cache.get(job["batch_id"])
        if cached is not None and cached.settings is not None:
            return cached.settings
        return self._default_settings()

    def _default_settings(self) -> Any:
        return self._remembered("defaults", lambda: parse_call_settings(None, config=self.config))

    def _poll_again(self, job_id: str, lease_owner: str, call_id: str, n: int, delay_sim_s: float) -> str:
        self.sender.poll(job_id, lease_owner, call_id, n + 1, delay_ms=self._real_ms(delay_sim_s))
        return "polling"

    def _in_call_lease_ms(self, settings: Any) -> int:
        """An in-call lease covers the call's longest life (ring, max duration, grace) plus the lease margin."""
        life_s = settings.ring_timeout + settings.max_call_duration + self.timing.call_grace_sim_s
        return self.clock.now_ms() + int((life_s + self._sim(self.timing.poll_lease_margin_s).total_seconds()) * 1000)

    def finalize(self, job_id: str, call: Call, *, lease_owner: str | None = None, source: str = "poll") -> str:
        """Apply an ended call to its job. Shared by the poll actor and the webhook; the second is a no-op."""
        job = self.jobs.get(job_id)
        if job is None or job.get("status") != states.IN_CALL or job.get("call_id") != call.call_id:
            return "duplicate"
        aid = job["attempt_id"]
        cached = self.cache.get(job["batch_id"])
        settings = cached.settings if cached else None
        duration_ms = int(call.duration_ms or 0)
        connected = call.start_timestamp_ms is not None and duration_ms > 0
        outcome = classify(call.disconnection_reason, connected=connected, call_analysis=call.call_analysis)
        reason = reason_text(outcome, call.disconnection_reason, lang=self._lang())
        charge = (self.billing.settle(aid, duration_ms=duration_ms if connected else 0)
                  if job.get("reserved", 1) else 0)  # nothing was reserved: an unlimited plan
        self.attempts.end(aid, {
            "call_id": call.call_id, "outcome": outcome.value, "disconnection_reason": call.disconnection_reason,
            "started_at": call.start_timestamp_ms, "ended_at": call.end_timestamp_ms,
            "duration_ms": duration_ms, "charge": charge, "finalized_by": source, "finalized_at": self.clock.now_ms(),
        })
        self._finish_turn(job, aid, int(call.end_timestamp_ms or self.clock.now_ms()),
                          conversation=connected and outcome != Outcome.VOICEMAIL)
        applied = self._apply_outcome(job, outcome, reason, settings)
        self.slots.release(job["account_id"], aid)
        if applied is None:
            return "duplicate"
        metrics.CALLS.labels(outcome.value).inc()
        fields: dict[str, Any] = {}
        if applied.get("status") == states.RETRY_WAIT:
            chosen = choose_retry_delay(settings, _round_outcome(outcome), self.config)
            metrics.RETRY_DELAY.observe(chosen.delay.total_seconds())
            fields = {"retry_delay_hours": chosen.hours, "retry_delay_for": chosen.outcome or "default"}
        event(log, "call_finalized", job_id=job_id, attempt_id=aid, outcome=outcome.value, source=source,
              status=applied.get("status"), **fields)
        self.refill(job["account_id"])
        return outcome.value

    def _finish_turn(self, job: Mapping[str, Any], aid: str, ended_ms: int, *, conversation: bool) -> None:
        """The call ended: under a contact policy the person is free again, and a conversation starts the quiet
        days (recorded before the job moves on, so a finalize that dies here is redone by the next poll or
        webhook)."""
        policy = self._policy(job["account_id"])
        if policy is None:
            return
        phones = job["contact"]["phones"]
        phone = phones[min(int(job.get("phone_index", 0)), len(phones) - 1)]
        self.history.finish(job["account_id"], contact_keys(job["contact"], phone), aid, ended_ms,
                            conversation=conversation, keep_ms=self.clock.now_ms() - policy.history_days * DAY_MS)

    def _apply_outcome(self, job: Mapping[str, Any], outcome: Outcome, reason: str,
                       settings: Any) -> dict[str, Any] | None:
        job_id = job["_id"]
        where = {"call_id": job["call_id"]}
        effect = EFFECTS[outcome]
        common = {"expected": (states.IN_CALL,)}
        if effect == Effect.COMPLETE:
            return self.jobs.transition(job_id, to=states.COMPLETED, where=where, unset=("next_try_at",),
                                        set_={"outcome": outcome.value, "finished_at": self.clock.now_ms()},
                                        **common)
        if effect in (Effect.NEXT_PHONE, Effect.INVALID_PHONE):
            return self.jobs.advance_phone(job_id, reason, settings, invalid=effect == Effect.INVALID_PHONE,
                                           job=job, outcome=outcome.value, **common)
        if effect == Effect.FAILED_ROUND:
            return self.jobs.mark_failed(job_id, reason, call_settings=settings, job=job, outcome=outcome.value,
                                         **common)
        own = {**common, "where": where}
        if effect == Effect.HOLD:
            return self._hold(job, reason, batch_id=None, own=own)
        return self._free_retry(job, reason, own)


def _round_outcome(outcome: Outcome) -> str | None:
    """The outcome whose retry delay applies when this call's job went to ``retry_wait``: the call's own when it
    can end a round, None (``retry_delay_hours``) when the round failed otherwise (a spent free-retry budget)."""
    return outcome.value if outcome in ROUND_ENDING else None
