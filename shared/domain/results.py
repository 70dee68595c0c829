"""What each call and each contact came to: the post-call analysis kept on an attempt, and the contact's result kept
on its job. Plain functions, no I/O.

An attempt keeps, once the provider has it, ``analysis`` (:data:`ANALYSIS_FIELDS`), ``recording_url``, ``call_cost``
(the provider's own cost of the call, in its cents) and, when its batch keeps transcripts, ``transcript`` (at most
:data:`TRANSCRIPT_MAX_CHARS`). A job keeps ``result`` (:func:`call_result_update` writes it with the finalize's own
write of the job; :func:`analysis_result_update` when the analysis comes later):

- ``calls``, ``talk_ms``, ``charge``: calls placed, milliseconds talked and what they were charged, summed;
- ``last_call_at`` (the last call's end, else its start or its creation, ms), ``last_outcome``, ``last_attempt_id``;
- ``analysis`` (stored as JSON text), ``analysis_attempt_id``, ``recording_url``: of the last conversation (a
  connected call that was not a voicemail), kept when a later call did not connect;
- ``analysis_pending``: the attempt whose analysis is awaited (the last conversation's), until it comes or the
  wait ends.
- ``after_call``, ``callbacks``, ``callback_at``, ``wrong_numbers``: what the batch's after-call rules did
  (written by :mod:`shared.pipeline.after_call`).

:func:`contact_result` is the one view of it that every reader shows (the API, the exports, the result webhooks).

An analysis is stored as compact JSON text (:func:`stored_analysis`), on the attempt and in the job's result, and
read back with :func:`read_analysis`: the embedded MongoDB server stores a boolean written by ``$set`` as an integer,
which would turn ``call_successful: true`` and every boolean the operator's agent extracts into ``1``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from shared.domain import states

#: The fields of Retell's ``call_analysis`` kept on an attempt.
ANALYSIS_FIELDS = ("call_successful", "call_summary", "user_sentiment", "in_voicemail", "custom_analysis_data")
#: Longest transcript kept, characters (the rest is cut; ``transcript_truncated`` says so).
TRANSCRIPT_MAX_CHARS = 20_000
#: Longest summary kept, characters.
SUMMARY_MAX_CHARS = 4_000
#: Largest ``custom_analysis_data`` kept, as JSON characters; a larger one is kept as ``{"_truncated": true}``.
CUSTOM_DATA_MAX_CHARS = 16_000


def analysis_of(call_analysis: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The kept part of a call's ``call_analysis``, with its types checked (a wrong type is dropped, never
    guessed); None when the provider has no analysis yet."""
    if not call_analysis:
        return None
    out: dict[str, Any] = {}
    for name in ("call_successful", "in_voicemail"):
        value = call_analysis.get(name)
        if isinstance(value, bool):
            out[name] = value
    summary = call_analysis.get("call_summary")
    if isinstance(summary, str):
        out["call_summary"] = summary[:SUMMARY_MAX_CHARS]
    sentiment = call_analysis.get("user_sentiment")
    if isinstance(sentiment, str):
        out["user_sentiment"] = sentiment[:40]
    custom = call_analysis.get("custom_analysis_data")
    if isinstance(custom, Mapping):
        data = {str(k): v for k, v in custom.items()}
        out["custom_analysis_data"] = data if len(repr(data)) <= CUSTOM_DATA_MAX_CHARS else {"_truncated": True}
    else:
        out["custom_analysis_data"] = {}
    return out


def stored_analysis(analysis: Mapping[str, Any] | None) -> str | None:
    """The stored form of an analysis: compact JSON text (see the module's docstring), or None."""
    if analysis is None:
        return None
    return json.dumps(dict(analysis), separators=(",", ":"), ensure_ascii=False, default=str)


def analysis_record(analysis: Mapping[str, Any], now_ms: int) -> dict[str, Any]:
    """The fields an attempt takes with its analysis: the analysis (stored), when it was kept, and the flag the
    results sweep reads (``notify_analyzed``)."""
    return {"analysis": stored_analysis(analysis), "analysis_at": int(now_ms), "notify_analyzed": True}


def read_analysis(stored: Any) -> dict[str, Any] | None:
    """An analysis as stored (JSON text, or a document written by hand) back as a dict; None when there is none
    or it cannot be read."""
    if isinstance(stored, Mapping):
        return dict(stored)
    if not isinstance(stored, str) or not stored:
        return None
    try:
        value = json.loads(stored)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def call_extras(raw: Mapping[str, Any], *, keep_transcript: bool) -> dict[str, Any]:
    """What an ended call's object adds to its attempt besides the analysis: ``recording_url``, ``call_cost``
    (``call_cost.combined_cost``) and, with ``keep_transcript``, the capped ``transcript``."""
    out: dict[str, Any] = {}
    url = raw.get("recording_url")
    if isinstance(url, str) and url:
        out["recording_url"] = url[:2000]
    cost = raw.get("call_cost")
    combined = cost.get("combined_cost") if isinstance(cost, Mapping) else None
    if isinstance(combined, (int, float)) and not isinstance(combined, bool):
        out["call_cost"] = float(combined)
    if keep_transcript:
        transcript = raw.get("transcript")
        if isinstance(transcript, str) and transcript:
            out["transcript"] = transcript[:TRANSCRIPT_MAX_CHARS]
            if len(transcript) > TRANSCRIPT_MAX_CHARS:
                out["transcript_truncated"] = True
    return out


def call_result_update(*, attempt_id: str, outcome: str, duration_ms: int, charge: int, at_ms: int,
                       conversation: bool, analysis: Mapping[str, Any] | None,
                       recording_url: str | None) -> tuple[dict[str, Any], dict[str, int]]:
    """``($set, $inc)`` of a job's ``result`` for one finalized call (written with the job's own write).

    :param conversation: the call connected and was not a voicemail: its analysis becomes the contact's, or is
        awaited (``analysis_pending``) while ``analysis`` is None.
    """
    set_: dict[str, Any] = {"result.last_call_at": int(at_ms), "result.last_outcome": outcome,
                            "result.last_attempt_id": attempt_id}
    if conversation:
        set_["result.analysis_attempt_id"] = attempt_id
        set_["result.analysis"] = stored_analysis(analysis)
        set_["result.recording_url"] = recording_url
        if analysis is None:
            set_["result.analysis_pending"] = attempt_id
    inc = {"result.calls": 1, "result.talk_ms": max(0, int(duration_ms)), "result.charge": max(0, int(charge))}
    return set_, inc


def is_conversation(attempt: Mapping[str, Any]) -> bool:
    """The attempt's call connected and was not a voicemail: its analysis is the contact's."""
    return (attempt.get("started_at") is not None and int(attempt.get("duration_ms") or 0) > 0
            and attempt.get("outcome") != "voicemail")


def analysis_result_update(analysis: Mapping[str, Any] | None, recording_url: str | None) -> dict[str, Any]:
    """``$set`` of a job's ``result`` when the analysis of its last conversation comes after the finalize (or
    never comes: ``analysis`` None ends the wait). Written only while ``result.analysis_attempt_id`` is that call's
    attempt, so a later conversation's analysis is never replaced by an older one."""
    set_: dict[str, Any] = {"result.analysis": stored_analysis(analysis)}
    if recording_url:
        set_["result.recording_url"] = recording_url
    return set_


def contact_result(job: Mapping[str, Any]) -> dict[str, Any]:
    """The contact's result as every reader shows it; instants are integer ms (or None).

    ``status`` and ``reason_code`` are the job's; ``final`` says whether they will change again. What the batch's
    ``call_settings.after_call`` did (:mod:`shared.domain.after_call`): ``after_call``, the last action taken on a
    conversation's analysis (``completed``, ``unsuccessful``, ``callback``, ``opted_out``, ``wrong_number``,
    ``no_analysis``; None when no rule ever ran), ``callbacks`` scheduled, ``callback_at`` (when the last one
    scheduled was due) and ``wrong_numbers`` (numbers that reached the wrong person).
    """
    result = job.get("result") or {}
    analysis = read_analysis(result.get("analysis"))
    status = job.get("status")
    return {
        "status": status,
        "final": status in states.FINAL,
        "reason_code": job.get("reason_code"),
        "reason": job.get("last_error"),
        "calls": int(result.get("calls", 0) or 0),
        "talk_s": round(int(result.get("talk_ms", 0) or 0) / 1000, 1),
        "charge": int(result.get("charge", 0) or 0),
        "last_call_at": result.get("last_call_at"),
        "last_outcome": result.get("last_outcome"),
        "last_attempt_id": result.get("last_attempt_id"),
        "analysis": analysis,
        "analysis_pending": bool(result.get("analysis_pending")),
        "recording_url": result.get("recording_url"),
        "after_call": result.get("after_call"),
        "callbacks": _count(result.get("callbacks")),
        "callback_at": _instant(result.get("callback_at")),
        "wrong_numbers": _count(result.get("wrong_numbers")),
        "finished_at": job.get("finished_at"),
    }


def _count(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _instant(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
