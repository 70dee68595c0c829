"""How batches, jobs, attempts and accounts look in the admin API and on the dashboard.

Plain functions from stored documents to JSON-able dicts: ids as strings, instants (stored as
integer milliseconds) as ISO-8601 UTC strings, counts with every job state present. The reads
they need (:func:`failure_reasons`, :func:`do_not_call_failures`) go through the stores, blocking
pymongo calls: the web dyno runs them in a thread executor.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.config import Config
from shared.domain import reasons, states
from shared.domain.call_settings import AUTO_TIMEZONE, CallSettings, InvalidCallSettings, default_call_settings
from shared.domain.calling_window import (
    NoAllowedTime,
    describe_window,
    is_allowed_time,
    next_allowed_time,
    validate_call_settings,
)
from shared.domain.results import contact_result, read_analysis
from shared.stores.dnc import DNC_OUTCOME
from shared.stores.jobs import JobStore
from workers.web.http import iso

#: Failure reasons listed per batch.
DEFAULT_REASONS = 5

#: Job states that hold a call at the provider (or are about to).
CALLING = (states.DIALING, states.IN_CALL)
#: Job states waiting in MongoDB for their time (or for a top-up).
WAITING = (states.PENDING, states.WAITING_SCHEDULE, states.RETRY_WAIT, states.WAITING_BALANCE)


def progress(counts: Mapping[str, int]) -> dict[str, Any]:
    """Totals of a batch: ``total``, ``done`` (final jobs), ``percent`` done, calls in progress, conversations
    whose analysis is awaited (``analyzing``: open, the after-call rules decide them next), waiting jobs."""
    total = sum(counts.values())
    done = sum(counts.get(s, 0) for s in states.FINAL)
    return {
        "total": total,
        "done": done,
        "percent": round(100.0 * done / total, 1) if total else 0.0,
        "completed": counts.get(states.COMPLETED, 0),
        "failed": counts.get(states.FAILED, 0),
        "cancelled": counts.get(states.CANCELLED, 0),
        "calls_in_progress": sum(counts.get(s, 0) for s in CALLING),
        "analyzing": counts.get(states.ANALYZING, 0),
        "queued": counts.get(states.QUEUED, 0),
        "waiting": sum(counts.get(s, 0) for s in WAITING),
    }


def failure_reasons(jobs: JobStore, batch_id: str, *, limit: int = DEFAULT_REASONS,
                    lang: str = "en") -> list[dict[str, Any]]:
    """The most frequent reasons of the batch's failed jobs, by code and parameters, said in ``lang``:
    ``[{"reason", "reason_code", "count"}]``, most frequent first."""
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    codes: dict[tuple[str, str], str | None] = {}
    for doc in jobs.failure_reasons(batch_id):
        reason = reasons.of(doc)
        key = (reason.text(lang), reason.code) if reason is not None else ("unknown", "")
        counts[key] += 1
        codes[key] = doc.get("reason_code")  # None for a job written before reason codes
    found = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [{"reason": key[0], "reason_code": codes[key], "count": n} for key, n in found[:limit]]


@dataclass(frozen=True, slots=True)
class BatchJobs:
    """What ``GET /batches/{id}`` shows from the batch's jobs, read together (the web dyno keeps it a moment:
    :attr:`workers.web.context.WebContext.batch_jobs`). Shared by every reader: do not mutate.

    :param counts: jobs per state, every state present.
    :param failures: :func:`failure_reasons` (empty when no job failed).
    :param oldest: :meth:`JobStore.oldest_in_progress <shared.stores.jobs.JobStore.oldest_in_progress>` (None when no
        job is held).
    """

    counts: Mapping[str, int]
    failures: list[dict[str, Any]]
    oldest: Mapping[str, Any] | None


def batch_jobs(jobs: JobStore, batch_id: str, *, lang: str = "en") -> BatchJobs:
    """Count the batch's jobs per state; its failure reasons and oldest job in progress when it has any."""
    counts = jobs.counts(batch_id)
    failures = failure_reasons(jobs, batch_id, lang=lang) if counts[states.FAILED] else []
    busy = sum(counts[s] for s in states.LEASED)
    return BatchJobs(counts=counts, failures=failures, oldest=jobs.oldest_in_progress(batch_id) if busy else None)


def do_not_call_failures(jobs: JobStore, batch_id: str) -> int:
    """The batch's contacts failed because every number of theirs is on a do-not-call list."""
    return jobs.count_failed_with_outcome(batch_id, DNC_OUTCOME)


def _stored_settings(call_settings: Mapping[str, Any] | None, config: Config) -> CallSettings:
    """A batch's stored call_settings parsed (the defaults when it has none); :class:`InvalidCallSettings` when
    they no longer validate."""
    if call_settings is None:
        return default_call_settings(config)
    return validate_call_settings(call_settings, config=config)


def window_zone(call_settings: Mapping[str, Any] | None, config: Config) -> str:
    """The zone the batch's window is read in (``auto``: its fallback, else ``DEFAULT_TIMEZONE``)."""
    zone = (call_settings or {}).get("timezone") or config.default_timezone
    if zone == AUTO_TIMEZONE:
        zone = (call_settings or {}).get("fallback_timezone") or config.default_timezone
    return str(zone)


def window_view(call_settings: Mapping[str, Any] | None, now: datetime, config: Config, *,
                lang: str | None = None, parsed: CallSettings | None = None) -> dict[str, Any]:
    """The batch's calling window now: description, whether it is open, when it opens next.

    For ``timezone: "auto"`` (and for contacts with their own zone) each contact has its own
    window; this is the batch's, read in :func:`window_zone`.

    :param call_settings: the batch's stored call_settings (None: it has none).
    :param parsed: the same already parsed, when the caller has them; else they are parsed here.
    """
    view: dict[str, Any] = {"description": None, "timezone": window_zone(call_settings, config),
                            "open_now": None, "next_open_at": None, "closed_reason": None, "error": None}
    try:
        settings = parsed or _stored_settings(call_settings, config)
        view["description"] = describe_window(settings, lang=lang, config=config)
        allowed, reason = is_allowed_time(settings, now, config=config, lang=lang)
        view["open_now"] = allowed
        view["closed_reason"] = reason
        view["next_open_at"] = iso(now if allowed else next_allowed_time(settings, now, config=config))
    except InvalidCallSettings as exc:
        view["error"] = f"the stored call_settings no longer validate: {exc}"
    except NoAllowedTime as exc:
        view["error"] = str(exc)
    return view


def batch_view(doc: Mapping[str, Any], *, counts: Mapping[str, int] | None = None,
               window: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A batch as the API shows it; ``counts``/``progress``/``window`` when given."""
    view: dict[str, Any] = {
        "id": doc["_id"],
        "name": doc.get("name"),
        "account_id": doc.get("account_id"),
        "agent_id": doc.get("agent_id"),
        "from_number": doc.get("from_number"),
        "status": doc.get("status"),
        "call_settings": doc.get("call_settings"),
        "settings_error": doc.get("settings_error"),
        "held_reason": doc.get("held_reason"),
        "held_at": iso(doc.get("held_at")),
        "cancelled_at": iso(doc.get("cancelled_at")),
        "created_at": iso(doc.get("created_at")),
        "updated_at": iso(doc.get("updated_at")),
    }
    if counts is not None:
        view["counts"] = dict(counts)
        view["progress"] = progress(counts)
    if window is not None:
        view["window"] = dict(window)
    return view


def attempt_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    """One dial of a job."""
    return {
        "id": doc["_id"],
        "state": doc.get("state"),
        "round": doc.get("round"),
        "phone_index": doc.get("phone_index"),
        "dial": doc.get("dial"),
        "to_number": doc.get("to_number"),
        "call_id": doc.get("call_id"),
        "outcome": doc.get("outcome"),
        "disconnection_reason": doc.get("disconnection_reason"),
        "duration_ms": doc.get("duration_ms"),
        "charge": doc.get("charge"),
        "finalized_by": doc.get("finalized_by"),
        "error": doc.get("error"),
        "reason_code": doc.get("reason_code"),
        "reason_params": doc.get("reason_params"),
        "created_at": iso(doc.get("created_at")),
        "started_at": iso(doc.get("started_at")),
        "ended_at": iso(doc.get("ended_at")),
        "analysis": read_analysis(doc.get("analysis")),
        "analysis_at": iso(doc.get("analysis_at")),
        "analysis_missing": bool(doc.get("analysis_missing")),
        "recording_url": doc.get("recording_url"),
        "call_cost": doc.get("call_cost"),
        "transcript": doc.get("transcript"),
    }


def result_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The contact's result (:func:`shared.domain.results.contact_result`) with its instants as ISO-8601."""
    view = contact_result(doc)
    for name in ("last_call_at", "callback_at", "finished_at"):
        view[name] = iso(view[name])
    return view


def job_summary(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A job in a list."""
    contact = doc.get("contact") or {}
    return {
        "id": doc["_id"],
        "batch_id": doc.get("batch_id"),
        "status": doc.get("status"),
        "tries": int(doc.get("tries", 0) or 0),
        "name": contact.get("name"),
        "external_id": contact.get("external_id"),
        "phones": list(contact.get("phones") or []),
        "next_try_at": iso(doc.get("next_try_at")),
        "last_error": doc.get("last_error"),
        "reason_code": doc.get("reason_code"),
        "reason_params": doc.get("reason_params"),
        "outcome": doc.get("outcome"),
        "updated_at": iso(doc.get("updated_at")),
        "result": result_view(doc),
    }


def job_view(doc: Mapping[str, Any], attempts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """A job with its contact and its attempt history (oldest first)."""
    view = job_summary(doc)
    view.update({
        "account_id": doc.get("account_id"),
        "contact": dict(doc.get("contact") or {}),
        "dials": int(doc.get("dials", 0) or 0),
        "phone_index": int(doc.get("phone_index", 0) or 0),
        "invalid_phones": list(doc.get("invalid_phones") or []),
        "postponed_by_schedule": int(doc.get("postponed_by_schedule", 0) or 0),
        "call_id": doc.get("call_id"),
        "attempt_id": doc.get("attempt_id"),
        "lease_until": iso(doc.get("lease_until")) if doc.get("status") in states.LEASED else None,
        "created_at": iso(doc.get("created_at")),
        "finished_at": iso(doc.get("finished_at")),
        "attempts": [attempt_view(a) for a in attempts],
    })
    return view


def account_view(view: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`shared.stores.billing.account_view` with its instants as ISO-8601."""
    out = dict(view)
    for name in ("created_at", "updated_at"):
        out[name] = iso(out.get(name))
    return out


def in_progress_view(oldest: Mapping[str, Any] | None, call_settings: Any, now_ms: int, config: Any,
                     clock: Any, *, parsed: CallSettings | None = None) -> dict[str, Any] | None:
    """The job a process has held longest, its age and whether it is past its deadline: ring +
    max_call_duration + the grace after it was dialed, plus the lease (a queued job: the dispatch horizon
    plus the lease). A job past it is stuck, which the pipeline's deadlines should never let happen.

    :param parsed: ``call_settings`` already parsed, when the caller has them; else they are parsed here."""
    if oldest is None:
        return None
    from shared.pipeline.timing import DEFAULT_HORIZON_S, Timing

    lease_ms = int(clock.simulated_seconds(config.pipeline_lease_s * 1.5) * 1000)
    if oldest["status"] == states.QUEUED:
        deadline = oldest["since"] + int(clock.simulated_seconds(DEFAULT_HORIZON_S) * 1000) + lease_ms
    else:
        try:
            settings = parsed or _stored_settings(call_settings, config)
        except InvalidCallSettings:
            settings = default_call_settings(config)
        deadline = Timing().attempt_deadline_ms(oldest["since"], settings) + lease_ms
    return {"job_id": oldest["job_id"], "status": oldest["status"], "since": iso(oldest["since"]),
            "age_s": max(0, now_ms - oldest["since"]) // 1000, "deadline": iso(deadline),
            "past_deadline": now_ms > deadline}
