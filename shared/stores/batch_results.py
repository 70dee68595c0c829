"""What a batch's calls and contacts came to, for its results page: one read of the batch's attempts and jobs,
summed in Python.

Reads (each a projection, on the ``batch_id`` indexes, written ``{"$eq": ...}``):

- the batch's ended attempts (``outcome``, ``started_at``, ``created_at``, ``to_number``, ``job_id``,
  ``call_id``), the most recent first, at most ``max_calls`` of them: calls by outcome and by the callee's local
  hour (the call's start, else the attempt's creation, in the contact's zone, else the batch's, else for
  ``"auto"`` the zone of the number dialed: :func:`shared.domain.calling_window.resolve_timezones`);
- the batch's jobs (``status``, ``result`` counters, ``contact.timezone``), at most ``max_jobs``: contacts by
  the calls they received, calls placed, talk time, charge, how many conversations were successful, and what the
  batch's after-call rules did (callbacks scheduled, opt-outs, wrong numbers, unsuccessful conversations);
- the ``latest`` most recently finished jobs, whole: their :func:`shared.domain.results.contact_result`.

Only attempts that ended with a call (a ``call_id``) count as calls. When a cap is reached the result says so
(``calls_capped``, ``jobs_capped``): the page shows the figures as covering the most recent calls only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import pytz
from pymongo.collection import Collection
from pymongo.database import Database

from shared.config import Config
from shared.domain.after_call import AfterCallAction
from shared.domain.call_settings import CallSettings
from shared.domain.calling_window import resolve_timezones
from shared.domain.results import contact_result, read_analysis
from shared.domain.states import AttemptState
from shared.stores.mongo import ATTEMPTS, JOBS, projected

#: Most ended attempts read per batch (the most recent ones).
MAX_CALLS = 20_000
#: Most jobs read per batch for the per-contact figures.
MAX_JOBS = 100_000
#: Finished contacts listed.
LATEST = 50
#: The after-call actions the results page counts (``result.after_call``).
OPTED_OUT = AfterCallAction.OPTED_OUT.value
UNSUCCESSFUL = AfterCallAction.UNSUCCESSFUL.value


@dataclass(frozen=True, kw_only=True)
class BatchResults:
    """A batch's results as read (shared by every viewer: do not mutate).

    :param outcomes: calls by outcome (the stored outcome; None for a call without one).
    :param hours: 24 counts: calls by the callee's local hour.
    :param calls_read: calls counted in ``outcomes`` and ``hours``.
    :param calls_capped: more calls exist than were read (:data:`MAX_CALLS`).
    :param calls_per_contact: number of calls received -> contacts.
    :param contacts_read: jobs read; ``jobs_capped``: more exist.
    :param calls_placed: ``result.calls`` summed; ``talk_ms``, ``charge`` likewise (charge in the account's
        storage unit).
    :param conversations: contacts whose last conversation has an analysis that says whether it succeeded;
        ``successful``: those where it did.
    :param callbacks: ``result.callbacks`` summed: callbacks scheduled; ``wrong_numbers``: ``result.wrong_numbers``
        summed: numbers that reached the wrong person.
    :param opt_outs: contacts whose last after-call action is ``opted_out``; ``unsuccessful``: whose last one is
        ``unsuccessful`` (the success rule was missed).
    :param latest: the most recently finished contacts: ``{"job_id", "name", "external_id", "result"}``, the
        result being :func:`contact_result`.
    """

    outcomes: Mapping[str | None, int]
    hours: tuple[int, ...]
    calls_read: int
    calls_capped: bool
    calls_per_contact: Mapping[int, int]
    contacts_read: int
    jobs_capped: bool
    calls_placed: int
    talk_ms: int
    charge: int
    conversations: int
    successful: int
    callbacks: int = 0
    opt_outs: int = 0
    wrong_numbers: int = 0
    unsuccessful: int = 0
    latest: Sequence[Mapping[str, Any]] = field(default_factory=list)


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


@lru_cache(maxsize=1024)
def _tz(name: str) -> Any:
    try:
        return pytz.timezone(name)
    except pytz.UnknownTimeZoneError:
        return UTC


def local_hour(at_ms: int, zone: str) -> int:
    """The hour (0-23) on the wall clock of ``zone`` at the instant ``at_ms`` (an unknown zone reads as UTC)."""
    return datetime.fromtimestamp(at_ms / 1000, UTC).astimezone(_tz(zone)).hour


class BatchResultsStore:
    """Reads a batch's results from the ``attempts`` and ``jobs`` collections."""

    def __init__(self, db: Database[dict[str, Any]], *, config: Config) -> None:
        self.attempts: Collection[dict[str, Any]] = db[ATTEMPTS]
        self.jobs: Collection[dict[str, Any]] = db[JOBS]
        self.config = config

    def read(self, batch_id: str, settings: CallSettings, *, max_calls: int = MAX_CALLS, max_jobs: int = MAX_JOBS,
             latest: int = LATEST) -> BatchResults:
        """The batch's results; ``settings`` (its parsed call_settings) decide the zone of a call's hour."""
        job_fields = ("status", "result.calls", "result.talk_ms", "result.charge",
                      "result.analysis", "result.after_call", "result.callbacks", "result.wrong_numbers",
                      "contact.timezone")
        jobs = list(self.jobs.find({"batch_id": {"$eq": batch_id}}, dict.fromkeys(job_fields, 1),
                                   limit=max_jobs + 1))
        jobs_capped = len(jobs) > max_jobs
        jobs = jobs[:max_jobs]
        zones: dict[str, str] = {}
        per_contact: Counter[int] = Counter()
        placed = talk = charge = conversations = successful = 0
        callbacks = wrong_numbers = 0
        actions: Counter[str] = Counter()
        for job in jobs:
            calls = _int(projected(job, "result.calls"))
            per_contact[calls] += 1
            placed += calls
            talk += _int(projected(job, "result.talk_ms"))
            charge += _int(projected(job, "result.charge"))
            verdict = (read_analysis(projected(job, "result.analysis")) or {}).get("call_successful")
            if isinstance(verdict, bool):
                conversations += 1
                successful += verdict
            callbacks += _int(projected(job, "result.callbacks"))
            wrong_numbers += _int(projected(job, "result.wrong_numbers"))
            action = projected(job, "result.after_call")
            if isinstance(action, str):
                actions[action] += 1
            zone = projected(job, "contact.timezone")
            if isinstance(zone, str) and zone:
                zones[job["_id"]] = zone

        attempt_fields = ("outcome", "started_at", "created_at", "to_number", "job_id", "call_id")
        ended = list(self.attempts.find({"batch_id": {"$eq": batch_id}, "state": {"$eq": AttemptState.ENDED.value}},
                                        dict.fromkeys(attempt_fields, 1),
                                        sort=[("created_at", -1), ("_id", -1)], limit=max_calls + 1))
        calls_capped = len(ended) > max_calls
        outcomes: Counter[str | None] = Counter()
        hours = [0] * 24
        read = 0
        for attempt in ended[:max_calls]:
            if not attempt.get("call_id"):
                continue   # ended without a call (never placed, given up): not a call
            read += 1
            outcome = attempt.get("outcome")
            outcomes[outcome if isinstance(outcome, str) else None] += 1
            at = attempt.get("started_at") or attempt.get("created_at")
            if not isinstance(at, int | float) or isinstance(at, bool):
                continue
            number = attempt.get("to_number")
            zone = resolve_timezones(settings, number if isinstance(number, str) else None,
                                     contact_timezone=zones.get(str(attempt.get("job_id"))), config=self.config)[0]
            hours[local_hour(int(at), zone)] += 1

        return BatchResults(
            outcomes=dict(outcomes), hours=tuple(hours), calls_read=read, calls_capped=calls_capped,
            calls_per_contact=dict(per_contact), contacts_read=len(jobs), jobs_capped=jobs_capped,
            calls_placed=placed, talk_ms=talk, charge=charge, conversations=conversations, successful=successful,
            callbacks=callbacks, opt_outs=actions[OPTED_OUT], wrong_numbers=wrong_numbers,
            unsuccessful=actions[UNSUCCESSFUL], latest=self.latest(batch_id, limit=latest))

    def latest(self, batch_id: str, *, limit: int = LATEST) -> list[dict[str, Any]]:
        """The ``limit`` most recently finished contacts of the batch, newest first."""
        docs = self.jobs.find({"batch_id": {"$eq": batch_id}, "finished_at": {"$gt": 0}},
                              {"status": 1, "reason_code": 1, "last_error": 1, "finished_at": 1, "result": 1,
                               "contact.name": 1, "contact.external_id": 1},
                              sort=[("finished_at", -1), ("_id", -1)], limit=limit)
        return [{"job_id": doc["_id"], "name": projected(doc, "contact.name"),
                 "external_id": projected(doc, "contact.external_id"), "result": contact_result(doc)} for doc in docs]
