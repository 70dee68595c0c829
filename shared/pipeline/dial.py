"""Dial one job: decide, claim, reserve, take a slot, insert the attempt, then create the call."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import pytz

from shared import metrics
from shared.cache.batch_cache import CachedBatch
from shared.clock import from_ms
from shared.domain import states
from shared.domain.call_settings import CallSettings
from shared.domain.calling_window import (
    NoAllowedTime,
    applicable_profiles,
    next_allowed_time,
    resolve_timezones,
)
from shared.domain.contact_policy import Touch, contact_keys, limits_capped_until, limits_of
from shared.domain.decisions import (
    BalanceStep,
    DialDecision,
    DialResult,
    DialStep,
    balance_now_covers,
    decide_dial,
    decide_insufficient_balance,
)
from shared.domain.reasons import because
from shared.domain.records import Attempt, Job
from shared.logs import event, get_logger, mask_phone
from shared.pipeline.rounds import fail_round
from shared.pipeline.step import Step
from shared.stores import attempts as attempt_states
from shared.stores.attempts import attempt_id
from shared.stores.billing import Billing, Reservation, ReservationStatus
from shared.stores.contact_history import DAY_MS
from shared.stores.dnc import DNC_OUTCOME
from shared.stores.jobs import JobStore, Lease
from shared.stores.slots import Acquired

log = get_logger(__name__)

def insufficient_balance(jobs: JobStore, billing: Billing, job: Job | Mapping[str, Any], settings: CallSettings,
                         reservation: Reservation, *, lease_owner: str | None = None,
                         expected: Iterable[str] = (states.QUEUED, states.DIALING),
                         retry_at: datetime | None = None) -> dict[str, Any] | None:
    """Apply a refused reservation to its job (:func:`~shared.domain.decisions.decide_insufficient_balance`).

    Held by calls in progress (the balance covers the call, the available amount does not): back to ``pending``
    at ``retry_at`` (default now), reason "held by calls in progress", like a dial that found no free slot; a
    call that ends frees what it held and its finalize's refill dials again. Otherwise the batch's
    ``on_insufficient_balance``: ``fail``: the job fails terminally with reason "insufficient balance" ("account
    not found" for an unknown account). ``wait``: the job goes to ``waiting_balance`` and the account is marked
    (:meth:`Billing.note_waiting`); a top-up (or a PUT that adds balance, or creates the account), or a settle or
    release that leaves enough available, puts it back to ``pending``. One of them landing between the refused
    reservation and this write would miss the job, so the mark reads the account back and the job is released
    at once when the call now fits (:func:`~shared.domain.decisions.balance_now_covers`).

    :param job: the job, or its document (its id and account are used).
    :param lease_owner: the lease token the dial holds.
    :param expected: the states the job may be in (default the leased ones before a call exists).
    :param retry_at: when a job whose balance is held by calls is due again.
    Returns the job after the write, or None when the job had moved on.
    """
    job = Job.of(job)
    unknown = reservation.status == ReservationStatus.UNKNOWN_ACCOUNT
    decision = decide_insufficient_balance(settings, unknown_account=unknown,
                                           held_by_calls=reservation.status == ReservationStatus.HELD_BY_CALLS)
    expected = tuple(expected)
    if decision.step == BalanceStep.RETRY:
        return jobs.release(job.id, retry_at or jobs.clock.now(), decision.reason, expected=expected,
                            lease_owner=lease_owner)
    if decision.step == BalanceStep.FAIL:
        return jobs.fail(job.id, decision.reason, expected=expected, lease_owner=lease_owner)
    parked = jobs.park_for_balance(job.id, decision.reason, expected=expected, lease_owner=lease_owner)
    if parked is None:
        return None
    funds = billing.note_waiting(job.account_id, reservation.needed)
    if funds is not None and balance_now_covers(metered=funds[0].metered, available=funds[1],
                                                needed=reservation.needed, unknown_account=unknown):
        back = jobs.unpark(job.id)
        return back or parked
    return parked


class Dial(Step):
    """The ``dial`` step (the module docstring says what it does, in order)."""

    @metrics.step("dial")
    def dial(self, job_id: str, lease_owner: str, *,
             job: Job | Mapping[str, Any] | None = None) -> DialStep | DialResult:
        """The dial step for one job; returns what happened (the :class:`DialStep` that stopped it, or the
        :class:`DialResult` of placing the call).

        :param job: the job as its claim just returned it (a refill dialing in its own thread): not read again.
        """
        current = self._job(job_id, job)
        cached = self.cache.get(current.batch_id) if current else None
        listed = self._listed(current, lease_owner)
        listed_at = time.monotonic()
        now = self.clock.now()
        settings = self._settings_in(cached)
        decision = decide_dial(current, lease_owner=lease_owner, batch=cached.doc if cached else None,
                               settings=settings,
                               settings_error=cached.settings_error if cached else None, now=now,
                               lang=self._lang(), guard=self._sim(self.timing.dial_guard_s),
                               early=self._sim(self.timing.early_tolerance_s), listed=listed)
        metrics.DIAL_DECISIONS.labels(decision.step.value).inc()
        if decision.dnc_skipped:
            metrics.DNC_BLOCKED.labels("decision").inc()
        if decision.step == DialStep.STALE:
            return decision.step
        assert current is not None  # decide_dial says STALE for a missing job
        self._log_decision(current, cached, decision, now)
        own: Lease = {"lease_owner": lease_owner, "expected": (states.QUEUED,)}
        if decision.step == DialStep.PROCEED:
            assert decision.phone_index is not None
            return self._place_call(current, cached, decision.phone_index, lease_owner, dnc_read_at=listed_at)
        if decision.step == DialStep.EARLY:
            assert decision.next_try_at is not None
            self.sender.dial(job_id, lease_owner, delay_ms=max(1, self.clock.real_delay_ms(decision.next_try_at)))
            return decision.step
        reason = decision.reason
        assert reason is not None  # every other step says why
        if decision.step in (DialStep.BATCH_GONE, DialStep.CANCELLED):
            self._cancel(job_id, reason, own)
        elif decision.step == DialStep.PAUSED:
            self.jobs.release(job_id, now, reason, **own)
        elif decision.step == DialStep.SETTINGS_INVALID:
            assert cached is not None  # the decision read its settings error
            self.batches.record_settings_error(current.batch_id, cached.settings_error)
            self.jobs.release(job_id, now, reason, **own)
        elif decision.step == DialStep.OUTSIDE_WINDOW:
            assert decision.next_try_at is not None
            self.jobs.postpone(job_id, decision.next_try_at, reason, inc={"postponed_by_schedule": 1}, **own)
            metrics.POSTPONED_BY_SCHEDULE.inc()
            event(log, "postponed_by_schedule", job_id=job_id, until=decision.next_try_at.isoformat(),
                  reason=reason.text(self._lang()), reason_code=reason.code)
        elif decision.step in (DialStep.MAX_ATTEMPTS, DialStep.NO_PHONE, DialStep.NO_WINDOW):
            self.jobs.fail(job_id, reason, **own)
        elif decision.step == DialStep.DO_NOT_CALL:
            self.jobs.fail(job_id, reason, set_={"outcome": DNC_OUTCOME}, **own)
        elif decision.step == DialStep.DNC_ROUND_END:
            fail_round(self.jobs, job_id, reason, settings, job=current, **own)
        return decision.step

    def _log_decision(self, job: Job, cached: CachedBatch | None, decision: DialDecision, now: datetime) -> None:
        """One line per dial decision, as the original worker wrote: the settings used (the batch's, or the
        defaults when it has none), the window's verdict and why, what the create would send (ring timeout,
        max duration), and which attempt of how many, and how many numbers a do-not-call list passed over.
        The number is masked. Nothing is computed when info lines are not logged."""
        if not log.isEnabledFor(logging.INFO):
            return
        settings = cached.settings if cached else None
        stored = (cached.doc or {}).get("call_settings") if cached else None
        fields: dict[str, Any] = {
            "job_id": job.id, "batch_id": job.batch_id, "step": decision.step.value,
            "settings": "invalid" if cached and settings is None else ("batch" if stored else "defaults"),
        }
        phone = job.phone_at(decision.phone_index if decision.phone_index is not None else job.phone_index)
        fields["to"] = mask_phone(phone)
        if decision.step == DialStep.OUTSIDE_WINDOW and decision.reason:
            fields.update(window="closed", window_reason=decision.reason.text(self._lang()))
        elif decision.step in (DialStep.PROCEED, DialStep.MAX_ATTEMPTS) and settings is not None:
            zones = resolve_timezones(settings, phone, contact_timezone=job.contact.timezone,
                                      config=self.config)
            local = now.astimezone(pytz.timezone(zones[0]))
            fields.update(window="open", window_reason=f"{local:%a %H:%M} in {', '.join(zones)}")
        elif decision.reason:
            fields.update(reason=decision.reason.text(self._lang()), reason_code=decision.reason.code)
        if settings is not None:
            fields.update(ring_timeout_s=settings.ring_timeout, max_call_duration_s=settings.max_call_duration,
                          attempt=f"{job.tries + 1}/{settings.max_attempts}")
        if decision.dnc_skipped:
            fields["dnc_skipped"] = decision.dnc_skipped
        event(log, "dial_decision", **fields)

    def _listed(self, job: Job | None, lease_owner: str) -> frozenset[str]:
        """The job's numbers on its account's or the global do-not-call list (one query); nothing is read for a
        message the decision will drop anyway (a vanished job, another state, another lease)."""
        if job is None or job.status != states.QUEUED or job.lease_owner != lease_owner:
            return frozenset()
        return self.dnc.listed(job.account_id, list(job.contact.phones))

    def _place_call(self, job: Job, cached: CachedBatch | None, phone_index: int, lease_owner: str, *,
                    dnc_read_at: float | None = None) -> DialStep | DialResult:
        """Claim the job (``queued -> dialing``), take its balance hold and slot, record the attempt, create the call.

        Winning the conditional transition comes first: a process that loses it (the same message
        delivered twice) has taken nothing and gives nothing back. From then on this process alone owns
        the job, the hold and the slot of the attempt, until its lease ends.
        """
        settings = self._settings_in(cached)
        job_id, account_id = job.id, job.account_id
        aid = attempt_id(job, phone_index)
        now_ms = self.clock.now_ms()
        lease_until = now_ms + self._sim_ms(self.timing.dialing_lease_s)
        won_doc = self.jobs.start_dial(
            job_id, lease_owner, inc={"dials": 1},
            set_={"attempt_id": aid, "phone_index": phone_index, "dialed_at": now_ms, "lease_until": lease_until},
            unset=("stop_requested_at", "stop_acked", "stop_attempts"))
        if won_doc is None:
            return DialStep.STALE
        won = Job.from_doc(won_doc)
        own: Lease = {"lease_owner": lease_owner, "expected": (states.DIALING,)}

        reservation = self.billing.reserve(account_id, attempt_id=aid, job_id=job_id,
                                           max_call_duration_s=settings.max_call_duration,
                                           recent=self._account(account_id))
        if not reservation.ok:
            return self._insufficient_balance(won, settings, reservation, own)

        slot = self.slots.acquire(account_id, aid, limit=self._limit(account_id), now_ms=now_ms,
                                  lease_ms=self._slot_lease_ms(settings), pool_limit=self._pool_limit())
        if slot != Acquired.YES:
            self.billing.release(aid)
            retry_at = self.clock.now() + self._sim(self.timing.no_slot_retry_s)
            why = because("no_slot" if slot == Acquired.NO else "slots_rebuilding")
            if self.jobs.release(job_id, retry_at, why, **own) is not None:
                # A slot rebuild that ran while the job was dialing counted this attempt as a call; it never will be.
                self.slots.release(account_id, aid)
            if slot == Acquired.UNKNOWN:
                self.sender.schedule(None)
            return DialResult.NO_SLOT

        refused = self._take_turn(won, settings, phone_index, aid, now_ms, lease_owner)
        if refused is not None:
            self.calls.give_back(won, aid, turn=False)  # the turn was refused: none to forget
            return refused

        assert cached is not None  # the decision to dial read the batch
        batch = cached.doc
        attempt = {
            "_id": aid, "job_id": job_id, "batch_id": job.batch_id, "account_id": account_id,
            "round": job.tries + 1, "phone_index": phone_index, "dial": won.dials,
            "to_number": job.contact.phones[phone_index], "created_at": now_ms, "due_at": job.next_try_at,
            "owner": lease_owner, "from_number": batch.get("from_number") or self.config.call_from_number,
            "agent_id": batch.get("agent_id") or self.config.retell_agent_id,
        }
        if job.contact.external_id not in (None, ""):
            attempt["external_id"] = job.contact.external_id
        if not self.attempts.insert(attempt):
            # Recovery recorded this attempt first, as not placed, while this process was stalled: it gave back
            # the hold and the slot then, and this process took them again since. A not-placed attempt has no
            # owner left, so what is held in its name is nobody's: give it back.
            if (self.attempts.get(aid) or {}).get("state") == attempt_states.NOT_PLACED:
                self.calls.give_back(won, aid)
            return DialStep.STALE
        due_ms = now_ms if job.next_try_at is None else job.next_try_at
        metrics.DIAL_LAG.observe(max(0.0, (now_ms - due_ms) / 1000))
        return self.calls.create(won, Attempt.from_doc(attempt), settings, lease_owner, lease_until,
                            reserved=int(getattr(reservation, "amount", 0) or 0), dnc_read_at=dnc_read_at)

    def _take_turn(self, job: Job, settings: CallSettings, phone_index: int, aid: str, now_ms: int,
                   lease_owner: str) -> DialStep | DialResult | None:
        """The account's contact policy and the caps of the compliance profiles that apply to this call: record
        this call against the callee's keys, or, when a cap says no, the job waits (``waiting_schedule``) for the
        first instant the caps and the window allow. None: go on."""
        account_id = job.account_id
        contact = job.contact
        phone = contact.phones[phone_index]
        limits = limits_of(self._policy(account_id), applicable_profiles(settings, phone, config=self.config))
        if limits is None:
            return None
        zone = pytz.timezone(resolve_timezones(settings, phone, contact_timezone=contact.timezone,
                                               config=self.config)[0])
        now = from_ms(now_ms)
        # The latest the call can be finalized: its deadline, the stop grace, then recovery of a dead poller.
        until = self.timing.latest_end_ms(now_ms, settings, self.clock)
        touch = Touch(at_ms=now_ms, attempt_id=aid, until_ms=until)
        keys = contact_keys(contact, phone)
        refused = self.history.reserve(account_id, keys, touch, keep_ms=now_ms - limits.history_days * DAY_MS,
                                       decide=lambda key, calls: limits_capped_until(limits.for_key(key, keys),
                                                                                     calls, now, zone))
        if refused is None:
            return None
        allowed_from, why = refused
        own: Lease = {"lease_owner": lease_owner, "expected": (states.DIALING,)}
        try:
            at = next_allowed_time(settings, allowed_from, phone, contact_timezone=contact.timezone,
                                   config=self.config)
        except NoAllowedTime as exc:
            self.jobs.fail(job.id, because("contact_policy_no_window", why=why, error=str(exc)), **own)
            return DialStep.NO_WINDOW
        self.jobs.postpone(job.id, at, why, inc={"postponed_by_policy": 1}, **own)
        metrics.POSTPONED_BY_POLICY.inc()
        event(log, "postponed_by_policy", job_id=job.id, to=mask_phone(phone), until=at.isoformat(),
              reason=why.text(self._lang()), reason_code=why.code)
        return DialResult.CAPPED

    def _insufficient_balance(self, job: Job, settings: CallSettings, reservation: Reservation,
                              own: Lease) -> DialStep | DialResult:
        """Balance held by calls in progress: dial again after ``no_slot_retry_s``, like a full slot pool. Not
        enough balance: the batch's ``on_insufficient_balance`` (fail the contact, or park it until a top-up)."""
        retry_at = self.clock.now() + self._sim(self.timing.no_slot_retry_s)
        after = insufficient_balance(self.jobs, self.billing, job, settings, reservation,
                                     lease_owner=own["lease_owner"], expected=own["expected"], retry_at=retry_at)
        if after is None:
            return DialStep.STALE
        if reservation.status == ReservationStatus.HELD_BY_CALLS:
            return DialResult.HELD_BY_CALLS
        return DialResult(str(after["status"]))
