"""The pipeline's decisions as plain functions: given a job, its batch, the clock and the
provider's answer, what happens next. No I/O here; :mod:`shared.pipeline` loads, decides,
writes and sends.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from shared.clock import from_ms, to_ms
from shared.config import DEFAULT_PIPELINE_SAFETY_POLL_S, Config
from shared.domain import reasons, states
from shared.domain.backoff import capped_exponential
from shared.domain.call_settings import BALANCE_POLICIES, CallSettings, retry_delay
from shared.domain.calling_window import NoAllowedTime, is_allowed_time, next_allowed_time
from shared.domain.outcomes import EFFECTS, Effect, Outcome
from shared.domain.reasons import Reason, because
from shared.domain.records import Job
from shared.domain.states import AttemptState
from shared.errors import DialAborted


class DialStep(StrEnum):
    STALE = "stale"  #: the message is a duplicate or its lease was taken over: do nothing
    EARLY = "early"  #: the message arrived before the job is due (a consumer whose clock runs ahead): send it again
    BATCH_GONE = "batch_gone"  #: the batch no longer exists: cancel the job
    PAUSED = "paused"  #: back to pending; dialed again once the batch is resumed
    CANCELLED = "cancelled"  #: the batch was cancelled: cancel the job
    SETTINGS_INVALID = "settings_invalid"  #: the stored settings no longer validate: wait, show the error
    OUTSIDE_WINDOW = "outside_window"  #: waiting_schedule until next_allowed_time
    MAX_ATTEMPTS = "max_attempts"  #: failed, terminal
    NO_PHONE = "no_phone"  #: every number is known invalid: failed, terminal
    NO_WINDOW = "no_window"  #: the number's zones never share window time (within a year): failed, terminal
    DO_NOT_CALL = "do_not_call"  #: every number not known invalid is on a do-not-call list: failed, terminal
    DNC_ROUND_END = "dnc_round_end"  #: the round's remaining numbers are on a do-not-call list: a failed round
    PROCEED = "proceed"  #: balance, slot, then dial ``phone_index``


class DialResult(StrEnum):
    """What a dial did once its decision said :attr:`DialStep.PROCEED` (the dial step returns one of these or the
    :class:`DialStep` that stopped it)."""

    DIALED = "dialed"  #: the provider made the call; the job is ``in_call``
    NO_SLOT = "no_slot"  #: the account's or the workspace's slots are taken: back to pending, dialed again soon
    HELD_BY_CALLS = "held_by_calls"  #: calls in progress hold the balance: back to pending, dialed again soon
    CAPPED = "capped"  #: the account's contact policy says not now: ``waiting_schedule``
    RECONCILE = "reconcile"  #: the create's outcome is unknown: the reconcile step settles it
    ORPHANED = "orphaned"  #: the job moved on while the create was in flight: its call was stopped
    RECORDED_ELSEWHERE = "recorded_elsewhere"  #: whoever holds the job now records this same call
    INVALID_NUMBER = "invalid_number"  #: the provider refused the destination: the next number
    HELD = "held"  #: the provider refused the workspace, the caller id or the agent: batches held
    PROVIDER_ERROR = "provider_error"  #: a provider fault: a free retry
    REFUSED = "refused"  #: any other refusal of the create: a failed round
    #: nothing was sent: the check right before the send stopped it (``aborted_<kind>``, see DialAborted)
    ABORTED_CANCELLED = "aborted_cancelled"
    ABORTED_DNC = "aborted_dnc"
    ABORTED_CLOCK = "aborted_clock"
    ABORTED_FENCE = "aborted_fence"
    ABORTED_WINDOW = "aborted_window"
    #: the reservation was refused: the job's status after the batch's ``on_insufficient_balance``
    FAILED = states.FAILED
    WAITING_BALANCE = states.WAITING_BALANCE
    PENDING = states.PENDING


@dataclass(frozen=True)
class DialDecision:
    step: DialStep
    reason: Reason | None = None
    next_try_at: datetime | None = None
    phone_index: int | None = None
    #: Numbers of the contact passed over because they are on a do-not-call list (0: the lists changed nothing).
    dnc_skipped: int = 0


def first_dialable_phone(job: Job | Mapping[str, Any], listed: Collection[str] = frozenset()) -> int | None:
    """``phone_index`` or the next phone after it neither known invalid nor in ``listed`` (the contact's
    numbers on a do-not-call list); None when none is left. ``job``: the job, or its document."""
    job = Job.of(job)
    phones, bad = job.contact.phones, job.invalid_phones
    return next((i for i in range(job.phone_index, len(phones)) if i not in bad and phones[i] not in listed), None)


def _max_attempts_reason(settings: CallSettings) -> Reason:
    return because("max_attempts", limit=settings.max_attempts)


def _no_phone_left(job: Job, listed: Collection[str], settings: CallSettings) -> DialDecision:
    """No number is left to dial from ``phone_index`` on: why, and what happens to the contact."""
    phones, bad = job.contact.phones, job.invalid_phones
    valid = [i for i in range(len(phones)) if i not in bad]
    if not valid:
        return DialDecision(DialStep.NO_PHONE, because("no_valid_phone"))
    if all(phones[i] in listed for i in valid):
        return DialDecision(DialStep.DO_NOT_CALL, because("do_not_call"),
                            dnc_skipped=len({phones[i] for i in valid}))
    remaining = [i for i in valid if i >= job.phone_index]
    if not any(phones[i] in listed for i in remaining):
        return DialDecision(DialStep.NO_PHONE, because("no_valid_phone"))  # not reached: decide_next_phone moves on
    if job.tries >= settings.max_attempts:
        return DialDecision(DialStep.MAX_ATTEMPTS, _max_attempts_reason(settings))
    return DialDecision(DialStep.DNC_ROUND_END, because("dnc_round_end"), dnc_skipped=len(remaining))


def batch_stopped(batch: Mapping[str, Any] | None) -> Reason | None:
    """Why no job of this batch is to wait for another dial: the batch was cancelled, or no longer exists (its jobs
    are cancelled, wherever they meet it: the dial, the end of a call, a create refused, the maintenance sweep). None
    while the batch goes on (active, paused, held or completed)."""
    if batch is None:
        return because("batch_not_found")
    if batch.get("status") == states.BATCH_CANCELLED:
        return because("batch_cancelled")
    return None


def _batch_refuses(batch: Mapping[str, Any] | None, settings_error: str | None) -> DialDecision | None:
    """Why the batch does not let its jobs be dialed now, or None."""
    stopped = batch_stopped(batch)
    if stopped is not None:
        return DialDecision(DialStep.BATCH_GONE if batch is None else DialStep.CANCELLED, stopped)
    assert batch is not None
    status = batch.get("status")
    if status == states.BATCH_HELD:
        held = batch.get("held_reason")
        return DialDecision(DialStep.PAUSED, because("batch_held", held=because("text", text=held)) if held
                            else because("batch_held_by_provider"))
    if status != states.BATCH_ACTIVE:
        return DialDecision(DialStep.PAUSED, because("batch_status", status=status))
    if settings_error is not None:
        return DialDecision(DialStep.SETTINGS_INVALID, because("settings_invalid", error=settings_error))
    return None


def decide_dial(job: Job | Mapping[str, Any] | None, *, lease_owner: str, batch: Mapping[str, Any] | None,
                settings: CallSettings, settings_error: str | None, now: datetime,
                lang: str = "en", guard: timedelta = timedelta(0),
                early: timedelta = timedelta(0), listed: Collection[str] = frozenset()) -> DialDecision:
    """Steps 1-3 and the phone pick of the original worker's ``process()``, in its order.

    :param job: the job as read now (or its document; None if it vanished).
    :param lease_owner: the lease token the dial message carries.
    :param batch: the batch document (None when it does not exist).
    :param settings: the batch's parsed call_settings (the defaults when it has none).
    :param settings_error: why the batch's stored call_settings do not validate, else None.
    :param now: the shared clock's time.
    :param early: how much sooner than its ``next_try_at`` a message may come and still be dialed (the
        broker's own timing); sooner than that, it is sent again for its due time (``EARLY``). The
        calling window is checked on its own, so an early message never dials outside it.
    :param guard: simulated time between this decision and the provider receiving the call; the window
        must still be open at ``now + guard``, so no call reaches the provider after the window closed.
        Inside the last ``guard`` of a window the job waits for the next opening. Default 0 (no guard).
        Only the two ends are checked: a gap shorter than ``guard`` inside that span is not seen.
    :param listed: the contact's numbers that are on the account's or the global do-not-call list, read
        just before. They are passed over like invalid numbers: the next number of the round is dialed
        (``dnc_skipped`` counts those passed over); a contact whose every valid number is listed fails
        (``DO_NOT_CALL``, terminal); when the round's remaining numbers are all listed but an earlier one
        was not, the round ends as a failed round (``DNC_ROUND_END``, bounded by ``max_attempts``).
    """
    if job is None:
        return DialDecision(DialStep.STALE)
    job = Job.of(job)
    if job.status != states.QUEUED or job.lease_owner != lease_owner:
        return DialDecision(DialStep.STALE)
    due = job.next_try_at
    if due is not None and int(due) > to_ms(now + early):
        return DialDecision(DialStep.EARLY, next_try_at=from_ms(int(due)))
    refused = _batch_refuses(batch, settings_error)
    if refused is not None:
        return refused
    phone_index = first_dialable_phone(job, listed)
    if phone_index is None:
        return _no_phone_left(job, listed, settings)
    contact = job.contact
    skipped = sum(1 for i in range(job.phone_index, phone_index) if contact.phones[i] in listed)
    phone = contact.phones[phone_index]
    allowed, closed = is_allowed_time(settings, now, phone, contact_timezone=contact.timezone, lang=lang)
    why = because("outside_window", why=closed)
    after = now
    if allowed and guard > timedelta(0):
        allowed, closing = is_allowed_time(settings, now + guard, phone, contact_timezone=contact.timezone,
                                           lang=lang)
        if not allowed:
            after = now + guard
            why = because("window_closing", seconds=guard.total_seconds(), why=because("outside_window", why=closing))
    if not allowed:
        try:
            at = next_allowed_time(settings, after, phone, contact_timezone=contact.timezone)
        except NoAllowedTime as exc:
            return DialDecision(DialStep.NO_WINDOW, because("no_window", error=str(exc)))
        return DialDecision(DialStep.OUTSIDE_WINDOW, why, next_try_at=at, dnc_skipped=skipped)
    if job.tries >= settings.max_attempts:
        return DialDecision(DialStep.MAX_ATTEMPTS, _max_attempts_reason(settings))
    return DialDecision(DialStep.PROCEED, phone_index=phone_index, dnc_skipped=skipped)


# -- dispatch: the workspace's free slots shared out between accounts ----------------------------------------


def dispatch_order(accounts: Sequence[str], turn: int) -> list[str]:
    """The accounts in the order one dispatch run serves them: as given, starting from number ``turn`` (modulo their
    count; the turn changes from one run to the next, so no account is always served first)."""
    if not accounts:
        return []
    turn %= len(accounts)
    return [*accounts[turn:], *accounts[:turn]]


def fair_share(free: int, accounts_left: int) -> int:
    """The most the next account may claim of the workspace's ``free`` slots when ``accounts_left`` accounts (it
    included) are still to be served: an even share of what is left, rounded up (an account that claims less
    leaves the rest to the next ones)."""
    return -(-free // accounts_left)


def check_before_send(*, now: datetime, lease_until_ms: int, real_seconds: float, need_real_s: float,
                      clock_trusted: bool, settings: CallSettings, phone: str, contact_timezone: str | None,
                      guard: timedelta, lang: str = "en") -> DialAborted | None:
    """The check made right before a create is sent: None to send, else why not (nothing is sent then).

    :param now: the shared time, read just now.
    :param lease_until_ms: when the sending process's lease on the job ends (shared time, ms).
    :param real_seconds: real seconds from ``now`` to ``lease_until_ms`` (the lease in real time).
    :param need_real_s: real seconds the create may still take (its timeout plus the fence's margin): the
        lease must outlast them, so that recovery, which only looks after the lease ended, never sees an
        attempt whose create may still be on its way.
    :param clock_trusted: whether this process knows the shared time closely enough.
    :param guard: simulated time between this check and the provider receiving the call; the calling
        window must be open at both ends.
    """
    if not clock_trusted:
        return DialAborted("clock", because("clock_untrusted"))
    if real_seconds < need_real_s:
        return DialAborted("fence", because("lease_too_short", left=max(real_seconds, 0), need=need_real_s))
    for at in (now, now + guard):
        allowed, why = is_allowed_time(settings, at, phone, contact_timezone=contact_timezone, lang=lang)
        if not allowed:
            try:
                nxt = next_allowed_time(settings, now + guard, phone, contact_timezone=contact_timezone)
            except NoAllowedTime:
                nxt = None
            closed = because("outside_window", why=why)
            return DialAborted("window", closed if at == now else because("window_closes_before_provider", why=closed),
                               next_try_at=nxt)
    return None


class PollStep(StrEnum):
    FINALIZE = "finalize"  #: the call ended: classify and apply
    STOP = "stop"  #: past its limits: ask the provider to end it (again, with backoff while it fails)
    FORCE_END = "force_end"  #: still going (or unreachable) a stop grace after its deadline: end it here, a timeout
    WAIT = "wait"  #: still ringing or talking: poll again later


def attempt_deadline_ms(created_ms: int, *, ring_timeout_s: float, max_call_duration_s: float,
                        grace_s: float) -> int:
    """The hard deadline of an attempt: by then its call has rung, talked its longest and ended (shared ms)."""
    return int(created_ms + (ring_timeout_s + max_call_duration_s + grace_s) * 1000)


def decide_poll(*, final: bool, start_ms: int | None, created_ms: int, now_ms: int,
                max_call_duration_s: int, ring_timeout_s: int, grace_s: float,
                stop_grace_s: float) -> PollStep:
    """What a poll does with the provider's view of a call (``final=False``, ``start_ms=None`` when the
    provider could not be reached).

    :param final: the provider says the call is over.
    :param start_ms: when it connected (None: it has not, or unknown).
    :param created_ms: when the attempt was recorded.
    :param stop_grace_s: after the attempt's deadline, how long the provider has to report the call ended
        while the stop is retried; past it the call is ended here (``FORCE_END``), whatever the provider says.

    A call is stopped when it has been connected longer than ``max_call_duration`` + grace, or is
    past the attempt's deadline (ring + max duration + grace after it was dialed): the provider should
    end both itself; this is the dialer's own guarantee, and no attempt outlives its deadline by more
    than ``stop_grace_s``.
    """
    if final:
        return PollStep.FINALIZE
    deadline = attempt_deadline_ms(created_ms, ring_timeout_s=ring_timeout_s, max_call_duration_s=max_call_duration_s,
                                   grace_s=grace_s)
    if now_ms > deadline + stop_grace_s * 1000:
        return PollStep.FORCE_END
    if now_ms > deadline:
        return PollStep.STOP
    if start_ms is not None and now_ms - start_ms > (max_call_duration_s + grace_s) * 1000:
        return PollStep.STOP
    return PollStep.WAIT


def stop_retry_delay_s(attempts: int, *, base_s: float = 1.0, cap_s: float = 30.0) -> float:
    """Real seconds before stopping a call again after ``attempts`` failed stops: 1, 2, 4, ... up to 30."""
    return capped_exponential(attempts - 1, base=base_s, cap=cap_s)


def next_poll_delay_s(n: int, *, first_s: float = 10.0, factor: float = 1.5, cap_s: float = 30.0) -> float:
    """Simulated seconds before poll number ``n`` (0-based): 10, 15, 22.5, 30, 30, ..."""
    return min(cap_s, first_s * factor**n)


#: Longest wait between two safety-net polls of a call still in progress, simulated seconds.
SAFETY_POLL_CAP_S = 1800.0
#: With webhooks, the wait after the first safety-net poll found the call still going, as a multiple of the margin:
#: a live call's end comes by webhook, so the net is checked rarely (5, 10, 20, 30 minutes at the default margin).
SAFETY_POLL_SPACING = 5


def safety_poll_at_ms(dialed_ms: int, *, ring_timeout_s: float,
                      margin_s: float = DEFAULT_PIPELINE_SAFETY_POLL_S) -> int:
    """With webhooks, when the first poll of a call comes: its earliest end without an answer (the ring timeout)
    plus a margin. An answered call's end arrives by webhook; the poll only catches a webhook that never came."""
    return int(dialed_ms + (ring_timeout_s + margin_s) * 1000)


def next_safety_poll_delay_s(n: int, *, now_ms: int, deadline_ms: int, margin_s: float = DEFAULT_PIPELINE_SAFETY_POLL_S,
                             cap_s: float = SAFETY_POLL_CAP_S) -> float:
    """With webhooks, simulated seconds from safety-net poll ``n`` (0-based) of a call still in progress to the next:
    :data:`SAFETY_POLL_SPACING` times the margin, doubling up to ``cap_s``, and never past the attempt's deadline
    (so a call past its limits is still stopped on time), at least one second."""
    wait = capped_exponential(n, base=margin_s * SAFETY_POLL_SPACING, cap=cap_s)
    if now_ms < deadline_ms:
        wait = min(wait, (deadline_ms - now_ms) / 1000 + 1)
    return max(1.0, wait)


# -- an attempt whose create had an unknown outcome ---------------------------------------------------------


class ReconcileStep(StrEnum):
    STALE = "stale"              #: not a ``dialing`` job under this lease (a duplicate, or taken over): nothing
    NOT_PLACED = "not_placed"    #: nothing reached the provider: give back what the attempt holds, the job is due
    RECORD_NOT_PLACED = "record_not_placed"  #: the attempt was never recorded: record it as not placed, first
    FINISH_GIVE_UP = "finish_give_up"  #: a give-up ended the attempt and stopped before it moved the job: finish it
    KNOWN_CALL = "known_call"    #: the attempt knows its call: record it
    TAKE_OVER = "take_over"      #: the attempt is another lease token's: take it over, then replay or look up
    OPEN = "open"                #: the attempt is this lease token's and its outcome unknown: replay or look up
    REPLAY = "replay"            #: send the create again with the attempt's idempotency key
    LOOK_UP = "look_up"          #: past the key's hour (or no settings to send with): find the call by metadata


@dataclass(frozen=True)
class ReconcileDecision:
    step: ReconcileStep
    #: why the attempt was not placed (:attr:`ReconcileStep.NOT_PLACED`)
    reason: Reason | None = None


def decide_reconcile_job(job: Job | Mapping[str, Any] | None, *, lease_owner: str) -> ReconcileDecision | None:
    """What the reconcile does with the job as read now, before its attempt is read: nothing (``STALE``) unless it
    is ``dialing`` under ``lease_owner``; not placed when the dial stopped before it named an attempt; None: read
    the attempt (:func:`decide_reconcile_attempt`)."""
    if job is None:
        return ReconcileDecision(ReconcileStep.STALE)
    job = Job.of(job)
    if job.status != states.DIALING or job.lease_owner != lease_owner:
        return ReconcileDecision(ReconcileStep.STALE)
    if not job.attempt_id:
        return ReconcileDecision(ReconcileStep.NOT_PLACED, because("dial_interrupted_before_attempt"))
    return None


def decide_reconcile_attempt(attempt: Mapping[str, Any] | None, *, lease_owner: str) -> ReconcileDecision:
    """What the reconcile does with the job's attempt as read now, in order: never recorded (record it as not
    placed: nothing was sent); not placed, or orphaned (the job is due again); ended by a give-up without a call
    (finish the give-up); its call is known (record it); another lease token's (take it over); else it is this
    token's and its outcome unknown (:func:`decide_reconcile`: send again or look up)."""
    if attempt is None:
        return ReconcileDecision(ReconcileStep.RECORD_NOT_PLACED)
    if attempt["state"] in (AttemptState.NOT_PLACED, AttemptState.ORPHANED):
        return ReconcileDecision(ReconcileStep.NOT_PLACED, reasons.of(attempt) or because("not_placed"))
    if attempt["state"] == AttemptState.ENDED and not attempt.get("call_id"):
        return ReconcileDecision(ReconcileStep.FINISH_GIVE_UP)
    if attempt.get("call_id"):
        return ReconcileDecision(ReconcileStep.KNOWN_CALL)
    if attempt.get("owner") != lease_owner:
        return ReconcileDecision(ReconcileStep.TAKE_OVER)
    return ReconcileDecision(ReconcileStep.OPEN)


#: Longest wait between two sends again of an ambiguous create, real seconds.
REPLAY_CAP_S = 60.0


def decide_reconcile(*, age_real_s: float, replay_window_s: float, can_send: bool) -> ReconcileStep:
    """Send an ambiguous create again with its key while the key still protects it (``age_real_s``, from the
    attempt's first send, under ``replay_window_s``, which ends well inside the provider's hour), however many
    sends that takes; look it up only past that window, or when it cannot be sent (its batch's settings are
    gone or invalid)."""
    if can_send and age_real_s < replay_window_s:
        return ReconcileStep.REPLAY
    return ReconcileStep.LOOK_UP


def replay_delay_s(replays: int, *, base_s: float, cap_s: float = REPLAY_CAP_S) -> float:
    """Real seconds before the next send of an ambiguous create after ``replays`` sends again: ``base_s``,
    doubling up to ``cap_s``, so that a provider in trouble for minutes is not hammered (and the key's hour is
    not spent in a few tries)."""
    return capped_exponential(replays, base=base_s, cap=cap_s)


def not_placed_settled(*, now_ms: int, last_sent_ms: int, settle_ms: int) -> bool:
    """A lookup that missed means "not placed" only once nothing can still be on its way: ``settle_ms`` (the
    create's longest life and a grace for the provider to list it) after the attempt's LAST send, not its first.
    Before that, a send that timed out here may still be being processed and would call the person."""
    return now_ms >= last_sent_ms + settle_ms


class LookUpStep(StrEnum):
    FOUND = "found"              #: the provider lists the attempt's call: record it
    RETRY = "retry"              #: the lookup failed before the attempt's deadline: look again after a backoff
    GIVE_UP = "give_up"          #: the lookup failed past the deadline: the attempt ends with an unknown outcome
    WAIT = "wait"                #: not listed, but a send may still be on its way: look again after the grace
    NOT_PLACED = "not_placed"    #: not listed, and nothing can still be on its way: not placed


def decide_look_up(*, found: bool, now_ms: int, last_sent_ms: int, settle_ms: int,
                   give_up_at_ms: int | None = None) -> LookUpStep:
    """What the reconcile does with the answer of looking an attempt's call up by its metadata.

    :param found: the provider listed a call of the attempt.
    :param give_up_at_ms: set when the lookup failed (the provider's fault, or too many calls to read): past it
        (the attempt's deadline plus a dialing lease) the reconcile gives up, before it looks again.
    :param last_sent_ms: the attempt's last send; ``settle_ms``: see :func:`not_placed_settled`.
    """
    if give_up_at_ms is not None:
        return LookUpStep.GIVE_UP if now_ms > give_up_at_ms else LookUpStep.RETRY
    if found:
        return LookUpStep.FOUND
    if not not_placed_settled(now_ms=now_ms, last_sent_ms=last_sent_ms, settle_ms=settle_ms):
        return LookUpStep.WAIT
    return LookUpStep.NOT_PLACED


#: First wait of a free retry, real seconds; it doubles each time up to :data:`FREE_RETRY_CAP_S`.
FREE_RETRY_BASE_S = 5.0
FREE_RETRY_CAP_S = 600.0
#: Share of a free retry's wait drawn at random (either way), so that refused calls do not come back together.
FREE_RETRY_JITTER = 0.2


def decide_free_retry(used: int, *, limit: int, retry_after_s: float | None = None,
                      base_s: float = FREE_RETRY_BASE_S, rng: random.Random | None = None) -> float | None:
    """Real seconds to wait before free retry number ``used + 1``, or None when the budget is spent.

    A free retry follows a provider fault that does not spend an attempt (concurrency refused, 429,
    a 5xx or a refused connection before anything was dialed, ``telephony_provider_unavailable``):
    5 s, doubling up to 10 min, with 20% jitter, and never sooner than the provider's ``retry-after``.
    After ``limit`` of them in a row the round fails, with a reason that says so.
    """
    if used >= limit:
        return None
    wait = capped_exponential(used, base=base_s, cap=FREE_RETRY_CAP_S,
                              jitter=lambda: 1 + FREE_RETRY_JITTER * (2 * (rng or random).random() - 1))
    return max(wait, retry_after_s or 0.0)


# -- after a round's call or a refused create: the job's next state ----------------------------------------


@dataclass(frozen=True)
class JobWrite:
    """A job's next state as a decision gives it: the status, the fields to set and to drop, and the fields
    that must still hold what was read (``where``), so that a write made meanwhile refuses this one."""

    status: str
    set_: Mapping[str, Any]
    unset: tuple[str, ...] = ()
    where: Mapping[str, Any] = field(default_factory=dict)
    inc: Mapping[str, int] = field(default_factory=dict)

    def plus(self, also: Also | None) -> JobWrite:
        """This write with further fields to set and counters to add (a call's result), or itself."""
        if also is None:
            return self
        return replace(self, set_={**self.set_, **also.set_}, inc={**self.inc, **also.inc})


@dataclass(frozen=True)
class Also:
    """Fields a step writes with a job's next state, whatever that state is: ``set_`` and ``inc`` (``$inc``)."""

    set_: Mapping[str, Any] = field(default_factory=dict)
    inc: Mapping[str, int] = field(default_factory=dict)


def decide_failed_round(job: Job | Mapping[str, Any], reason: Reason, settings: CallSettings, *, now_ms: int,
                        config: Config, outcome: str | None = None,
                        changes: Mapping[str, Any] | None = None) -> JobWrite:
    """A round ended without reaching the contact: ``tries`` + 1, and ``retry_wait`` for the retry delay (of
    ``outcome``, the outcome of the call that ended the round, when a call did), the next round starting from
    the first phone. When that round was the last one ``max_attempts`` allows, the job fails now
    (``max_attempts_after``: "max attempts reached (N): reason") instead of waiting a delay only to fail then.

    :param settings: the batch's call_settings.
    :param changes: further fields to write with it (those of :func:`decide_next_phone`).
    The reason is written in ``config.lang`` (``last_error``) and as its code (see :mod:`shared.domain.reasons`).
    """
    job = Job.of(job)
    tries = job.tries + 1
    limit = settings.max_attempts
    where = {"tries": job.tries}
    if tries >= limit:
        return JobWrite(states.FAILED, where=where,
                        set_={**(changes or {}), "tries": tries,
                              **because("max_attempts_after", limit=limit, last=reason).fields(config.lang)})
    delay = retry_delay(settings, outcome)
    return JobWrite(states.RETRY_WAIT, where=where,
                    set_={**(changes or {}), "tries": tries, "phone_index": 0, "free_retries": 0,
                          **reason.fields(config.lang),
                          "next_try_at": now_ms + int(delay.total_seconds() * 1000)})


def decide_next_phone(job: Job | Mapping[str, Any], reason: Reason, settings: CallSettings, *, now_ms: int,
                      config: Config, invalid: bool = False, outcome: str | None = None) -> JobWrite:
    """The current phone did not reach the contact: the next one, now.

    ``invalid=True`` marks the current number as never to be dialed again. The next phone is the next index
    not marked invalid; the job goes back to ``pending``, due now. When the round has no phone left it is a
    failed round (:func:`decide_failed_round`, with the delay of ``outcome``); when every number is invalid the
    job fails for good (``no_valid_phone_after``: "no valid phone number: reason").
    """
    job = Job.of(job)
    phones = job.contact.phones
    index = job.phone_index
    bad = set(job.invalid_phones)
    if invalid:
        bad.add(index)
    where = {"phone_index": index, "tries": job.tries}
    changes: dict[str, Any] = {"invalid_phones": sorted(bad), "free_retries": 0}
    if len(bad) >= len(phones):
        return JobWrite(states.FAILED, where=where,
                        set_={**changes, **because("no_valid_phone_after", last=reason).fields(config.lang)})
    following = next((i for i in range(index + 1, len(phones)) if i not in bad), None)
    if following is None:
        failed = decide_failed_round(job, reason, settings, now_ms=now_ms, config=config, outcome=outcome,
                                     changes=changes)
        return JobWrite(failed.status, failed.set_, failed.unset, {**failed.where, **where})
    return JobWrite(states.PENDING, where=where,
                    set_={**changes, "phone_index": following, "next_try_at": now_ms,
                          **reason.fields(config.lang)})


def decide_after_call(job: Job | Mapping[str, Any], outcome: Outcome, reason: Reason, settings: CallSettings, *,
                      now_ms: int, config: Config, stopped: Reason | None = None) -> JobWrite | None:
    """The job's next state after its call ended with ``outcome`` (``reason``: the outcome and the provider's
    word): completed, the next phone, or a failed round, by the outcome's :class:`~shared.domain.outcomes.Effect`. None
    for the effects that are no transition of the job alone (``HOLD``, ``RETRY_SOON``: the provider's trouble,
    decided by the caller).

    :param stopped: why the job's batch lets none of its jobs wait any more (:func:`batch_stopped`: cancelled
        while the call went on, or gone). Then a job that would wait (the next phone, the next round, a free retry,
        a held workspace) is ``cancelled`` with that reason instead; a conversation still completes it, and a call
        that ends the contact for good (its last round, its last valid number) still fails it: a final state says
        what happened to the contact, and those happened.
    """
    job = Job.of(job)
    effect = EFFECTS[outcome]
    # Every write holds the call that ended: the job may have gone on to another call since it was read (in
    # the same round and on the same number, after a free retry).
    this_call = {"call_id": job.call_id}
    if effect == Effect.COMPLETE:
        return JobWrite(states.COMPLETED, {"outcome": outcome.value}, where=this_call)
    change: JobWrite | None = None
    if effect in (Effect.NEXT_PHONE, Effect.INVALID_PHONE):
        change = decide_next_phone(job, reason, settings, now_ms=now_ms, config=config,
                                   invalid=effect == Effect.INVALID_PHONE, outcome=outcome.value)
    elif effect == Effect.FAILED_ROUND:
        change = decide_failed_round(job, reason, settings, now_ms=now_ms, config=config, outcome=outcome.value)
    if stopped is not None and (change is None or change.status not in states.FINAL):
        return JobWrite(states.CANCELLED, stopped.fields(config.lang), where=this_call)
    if change is None:
        return None
    return replace(change, where={**change.where, **this_call})


# -- a reservation refused: the batch's on_insufficient_balance ------------------------------------------


class BalanceStep(StrEnum):
    """The ``on_insufficient_balance`` values of :data:`shared.domain.call_settings.BALANCE_POLICIES`, and ``retry``."""

    FAIL = BALANCE_POLICIES[0]  #: the contact fails, terminal
    WAIT = BALANCE_POLICIES[1]  #: ``waiting_balance`` until a top-up (or the account's creation) releases it
    #: the balance covers the call, calls in progress hold the rest: back to ``pending`` in a moment, as when no
    #: provider slot is free (whatever ``on_insufficient_balance`` says: nothing is missing, only busy)
    RETRY = "retry"


@dataclass(frozen=True)
class BalanceDecision:
    step: BalanceStep
    reason: Reason


def insufficient_balance_action(settings: CallSettings) -> str:
    """``"fail"`` or ``"wait"``: what a batch does with a contact its account cannot pay for (the parser gives
    the default ``"fail"``, the original worker's: the contact fails terminally)."""
    return settings.on_insufficient_balance


def decide_insufficient_balance(settings: CallSettings, *, unknown_account: bool,
                                held_by_calls: bool = False) -> BalanceDecision:
    """A dial's reservation was refused, and the reason to show.

    ``held_by_calls``: the balance covers the call but calls in progress hold so much of it that the available
    amount does not; what they hold comes back as they end, so the dial is tried again in a moment (``retry``),
    never failed or parked. Otherwise (the balance itself cannot cover one call, or no such account): fail the
    contact or park it, as the batch's ``on_insufficient_balance`` says."""
    if held_by_calls and not unknown_account:
        return BalanceDecision(BalanceStep.RETRY, because("held_by_calls"))
    reason = because("unknown_account" if unknown_account else "insufficient_balance")
    return BalanceDecision(BalanceStep(insufficient_balance_action(settings)), reason)


def balance_now_covers(*, metered: bool, available: int, needed: int, unknown_account: bool) -> bool:
    """Whether a job just parked in ``waiting_balance`` goes back to ``pending`` at once: a top-up (or a change
    of plan, or the account's creation) landed between the refused reservation and the park, so the release
    that top-up made missed it. ``available``/``needed``: the account as read again, the reservation's need."""
    return not metered or unknown_account or available >= needed > 0
