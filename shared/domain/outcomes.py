"""How an ended call is classified, and what each outcome does to the job.

The provider reports ``disconnection_reason`` (34 values today, more tomorrow) and, after
analysis, ``call_analysis.in_voicemail``. :func:`classify` maps them onto a handful of outcomes;
an unknown reason never crashes: a call that connected counts as answered, one that did not as
a failed dial. A call *connected* when it has a start timestamp and some duration: a person may
have spoken, so no reason ever makes such a call "retry soon".

Outcomes and their effect (connected / never connected):

- ``answered``: user_hangup, agent_hangup, call_transfer, transfer_*, inactivity, call_take_over,
  scam_detected, any other reason of a call that connected: ``completed``.
- ``voicemail``: voicemail_reached, ivr_reached, machine_detected, ``call_analysis.in_voicemail``: next phone.
- ``no_answer``: dial_no_answer, user_declined, registered_call_timeout, error_user_not_joined: next phone.
- ``busy``: dial_busy: next phone. ``failed_dial``: dial_failed, marked_as_spam, other reasons of a
  call that never connected: next phone.
- ``invalid_number``: invalid_destination: that number is never dialed again; next phone.
- ``timeout``: max_duration_reached, manual_stopped (outdial stops calls past their deadline): failed round.
- ``dropped``: a provider fault (error_*, telephony_provider_unavailable, sip_routing_error, ...) on a
  call that connected: failed round (the attempt is spent, the retry delay applies).
- ``provider_fault``: the same faults, and concurrency_limit_reached / no_concurrency_fallback, on a
  call that never connected: a free retry (backoff, not spent, budgeted).
- ``account_problem``: no_valid_payment: every active batch is held; the attempt is not spent.
- ``unsuccessful``: not a classification of the call: a conversation whose analysis misses the batch's
  ``after_call.success`` rule (``shared.domain.after_call``): failed round.

"Next phone" means: dial the contact's next number now; when the round has no number left it
is a failed round (``retry_wait`` after the ``retry_delay_by_outcome`` entry of the outcome of the call
that ended it, else ``retry_delay_hours``; ``tries`` + 1). A free retry
("not spent") backs off exponentially and counts against ``PIPELINE_MAX_FREE_RETRIES``; past it
the round fails. "Batches held": the provider account cannot place calls (payment), so every
active batch is held until an operator resumes it; the contact's attempt is not spent.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from shared.domain.reasons import Reason, because


class Outcome(StrEnum):
    ANSWERED = "answered"
    VOICEMAIL = "voicemail"
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    FAILED_DIAL = "failed_dial"
    INVALID_NUMBER = "invalid_number"
    TIMEOUT = "timeout"
    DROPPED = "dropped"
    PROVIDER_FAULT = "provider_fault"
    ACCOUNT_PROBLEM = "account_problem"
    #: a conversation the batch's ``after_call.success`` rule did not count (never a classification of the call
    #: itself: decided from its analysis, :mod:`shared.domain.after_call`)
    UNSUCCESSFUL = "unsuccessful"


class Effect(StrEnum):
    """What an outcome does to the job."""

    COMPLETE = "complete"  #: completed
    NEXT_PHONE = "next_phone"  #: the next phone (a failed round when the phones are exhausted)
    INVALID_PHONE = "invalid_phone"  #: the next phone, this one marked invalid
    FAILED_ROUND = "failed_round"  #: a failed round (``retry_wait``, or ``failed`` after the last one)
    RETRY_SOON = "retry_soon"  #: back to pending after a backoff, attempt not spent (budgeted)
    HOLD = "hold"  #: the provider account cannot call: hold the batches, attempt not spent


EFFECTS: dict[Outcome, Effect] = {
    Outcome.ANSWERED: Effect.COMPLETE,
    Outcome.VOICEMAIL: Effect.NEXT_PHONE,
    Outcome.NO_ANSWER: Effect.NEXT_PHONE,
    Outcome.BUSY: Effect.NEXT_PHONE,
    Outcome.FAILED_DIAL: Effect.NEXT_PHONE,
    Outcome.INVALID_NUMBER: Effect.INVALID_PHONE,
    Outcome.TIMEOUT: Effect.FAILED_ROUND,
    Outcome.DROPPED: Effect.FAILED_ROUND,
    Outcome.PROVIDER_FAULT: Effect.RETRY_SOON,
    Outcome.ACCOUNT_PROBLEM: Effect.HOLD,
    Outcome.UNSUCCESSFUL: Effect.FAILED_ROUND,
}

#: Outcomes that can end a round (the last phone's call): the keys ``retry_delay_by_outcome`` accepts.
#: ``answered`` ends the contact, ``provider_fault`` is a free retry (a spent budget uses ``retry_delay_hours``)
#: and ``account_problem`` holds the batches: none of them ends a round with its own delay.
ROUND_ENDING: tuple[Outcome, ...] = tuple(
    o for o, e in EFFECTS.items() if e in (Effect.NEXT_PHONE, Effect.INVALID_PHONE, Effect.FAILED_ROUND))

_BY_REASON: dict[str, Outcome] = {
    "voicemail_reached": Outcome.VOICEMAIL,
    "ivr_reached": Outcome.VOICEMAIL,
    "machine_detected": Outcome.VOICEMAIL,
    "dial_no_answer": Outcome.NO_ANSWER,
    "user_declined": Outcome.NO_ANSWER,
    "registered_call_timeout": Outcome.NO_ANSWER,
    "error_user_not_joined": Outcome.NO_ANSWER,
    "dial_busy": Outcome.BUSY,
    "dial_failed": Outcome.FAILED_DIAL,
    "marked_as_spam": Outcome.FAILED_DIAL,
    "invalid_destination": Outcome.INVALID_NUMBER,
    "max_duration_reached": Outcome.TIMEOUT,
    "manual_stopped": Outcome.TIMEOUT,
    "concurrency_limit_reached": Outcome.PROVIDER_FAULT,
    "no_concurrency_fallback": Outcome.PROVIDER_FAULT,
    "no_valid_payment": Outcome.ACCOUNT_PROBLEM,
    "telephony_provider_unavailable": Outcome.PROVIDER_FAULT,
    "telephony_provider_permission_denied": Outcome.PROVIDER_FAULT,
    "sip_routing_error": Outcome.PROVIDER_FAULT,
    "user_hangup": Outcome.ANSWERED,
    "agent_hangup": Outcome.ANSWERED,
    "call_transfer": Outcome.ANSWERED,
    "transfer_bridged": Outcome.ANSWERED,
    "transfer_cancelled": Outcome.ANSWERED,
    "inactivity": Outcome.ANSWERED,
    "call_take_over": Outcome.ANSWERED,
    "scam_detected": Outcome.ANSWERED,
}

#: Reasons the provider reports for its own trouble (``error_llm_websocket_open`` ...).
_FAULT_PREFIX = "error_"

def classify(disconnection_reason: str | None, *, connected: bool,
             call_analysis: Mapping[str, Any] | None = None) -> Outcome:
    """The outcome of an ended call.

    :param disconnection_reason: the provider's reason, any string (unknown ones are tolerated).
    :param connected: whether the call was answered (it has a start timestamp and some duration).
    :param call_analysis: the provider's analysis; ``in_voicemail: true`` means voicemail.
    """
    if call_analysis and call_analysis.get("in_voicemail") is True:
        return Outcome.VOICEMAIL
    reason = (disconnection_reason or "").strip().lower()
    found = _BY_REASON.get(reason)
    if found is None and reason.startswith(_FAULT_PREFIX):
        found = Outcome.PROVIDER_FAULT
    if found is None:
        return Outcome.ANSWERED if connected else Outcome.FAILED_DIAL
    if found == Outcome.PROVIDER_FAULT and connected:
        return Outcome.DROPPED  # a person may have talked: never "retry soon"
    return found


def call_reason(outcome: Outcome, disconnection_reason: str | None = None) -> Reason:
    """Why a round's call ended as it did: the outcome and the provider's reason (``call_outcome``; said as
    ``"busy (dial_busy)"`` by :mod:`shared.domain.reasons`)."""
    return because("call_outcome", outcome=outcome.value, provider=disconnection_reason or None)


def reason_text(outcome: Outcome, disconnection_reason: str | None = None, *, lang: str = "en") -> str:
    """``"busy (dial_busy)"``: the outcome in words plus the provider's reason."""
    return call_reason(outcome, disconnection_reason).text(lang)
