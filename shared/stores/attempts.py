"""Attempts: one document per dial, never an array inside the job.

An attempt's ``_id`` is ``<job_id>:r<round>:p<phone_index>:d<dial>`` — the job, the round
(``tries`` + 1), the phone, and the job's dial sequence number. The dial step computes it from
the job it just won (the conditional ``queued -> dialing`` transition), inserts it before calling
the provider, and sends it as the create's ``idempotency_key`` and in ``metadata.attempt_id``: a
call is always traceable to its attempt, and an attempt whose create had an unknown outcome is
sent again with the same key (or looked up) before anything else happens to its job.

An attempt is inserted once, never overwritten (:meth:`AttemptStore.insert`): when recovery finds a
``dialing`` job whose attempt was never recorded, it inserts it as ``not_placed``, so the process that
stalled before recording it can never record it later and dial. ``owner`` is the lease token of the
process that may send its create; recovery takes it over (:meth:`AttemptStore.take_over`) before it
sends the create again, and a stale owner can then no longer mark it ``not_placed``.

States: ``dialing`` (written before the create) -> ``in_call`` (the provider gave a call id) ->
``ended`` (outcome, duration, charge); or ``not_placed`` (the provider never created the call:
the attempt is not spent); or ``orphaned`` (created after its job had moved on; stopped).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from shared.clock import Clock
from shared.domain.reasons import Reason, clip
from shared.domain.records import Job
from shared.domain.results import analysis_record
from shared.domain.states import AttemptState
from shared.stores.mongo import ATTEMPTS

# The attempt states (:class:`shared.domain.states.AttemptState`, its moves in
# :data:`shared.domain.states.ATTEMPT_TRANSITIONS`).
DIALING = AttemptState.DIALING
IN_CALL = AttemptState.IN_CALL
ENDED = AttemptState.ENDED
NOT_PLACED = AttemptState.NOT_PLACED
ORPHANED = AttemptState.ORPHANED
OPEN = (DIALING, IN_CALL)
#: What an attempt carries while its analysis is looked for.
ANALYSIS_WAIT_FIELDS = ("analysis_due_at", "analysis_until", "analysis_looks")


def attempt_id(job: Job | Mapping[str, Any], phone_index: int) -> str:
    """The id of the attempt the job's next dial makes (``job``: the job, or its document)."""
    job = Job.of(job)
    return f"{job.id}:r{job.tries + 1}:p{phone_index}:d{job.dials + 1}"


class AttemptStore:
    """Attempts in the ``attempts`` collection."""

    def __init__(self, db: Database[dict[str, Any]], *, clock: Clock) -> None:
        self.coll: Collection[dict[str, Any]] = db[ATTEMPTS]
        self.clock = clock

    def insert(self, doc: Mapping[str, Any]) -> bool:
        """Insert a new attempt (state ``dialing`` unless given); False when one with this ``_id`` exists
        (it is left as it is)."""
        fields = dict(doc)
        fields.setdefault("state", DIALING)
        fields.setdefault("created_at", self.clock.now_ms())
        try:
            self.coll.insert_one(fields)
        except DuplicateKeyError:
            return False
        return True

    def take_over(self, attempt_id: str, owner: str) -> bool:
        """Make ``owner`` (a lease token) the only process that may send this ``dialing`` attempt's create."""
        result = self.coll.update_one({"_id": attempt_id, "state": DIALING},
                                      {"$set": {"owner": owner, "updated_at": self.clock.now_ms()},
                                       "$inc": {"takeovers": 1}})
        return result.matched_count == 1

    def get(self, attempt_id: str) -> dict[str, Any] | None:
        return self.coll.find_one({"_id": attempt_id})

    def for_job(self, job_id: str) -> list[dict[str, Any]]:
        return sorted(self.coll.find({"job_id": job_id}), key=lambda a: (a.get("created_at", 0), a["_id"]))

    def of_batch(self, batch_id: str, fields: Sequence[str]) -> Iterator[dict[str, Any]]:
        """The batch's attempts, only ``fields`` (and ``_id``) of each."""
        return iter(self.coll.find({"batch_id": batch_id}, dict.fromkeys(fields, 1)))

    def _move(self, attempt_id: str, expected: tuple[str, ...], fields: Mapping[str, Any]) -> bool:
        result = self.coll.update_one({"_id": attempt_id, "state": {"$in": list(expected)}},
                                      {"$set": {**fields, "updated_at": self.clock.now_ms()}})
        return result.modified_count == 1

    def set_call(self, attempt_id: str, call_id: str) -> bool:
        return self._move(attempt_id, (DIALING,), {"state": IN_CALL, "call_id": call_id})

    def mark(self, attempt_id: str, fields: Mapping[str, Any]) -> None:
        """Set informational fields (e.g. ``stopped_for_timeout``) whatever the state."""
        self.coll.update_one({"_id": attempt_id}, {"$set": dict(fields)})

    def end(self, attempt_id: str, fields: Mapping[str, Any], *, owner: str | None = None) -> bool:
        """``ended`` with the outcome fields (outcome, reason, duration_ms, ...); False if already ended, or, with
        ``owner``, when another lease token owns the attempt."""
        if owner is None:
            return self._move(attempt_id, OPEN, {**fields, "state": ENDED})
        result = self.coll.update_one({"_id": attempt_id, "state": {"$in": list(OPEN)}, "owner": owner},
                                      {"$set": {**fields, "state": ENDED, "updated_at": self.clock.now_ms()}})
        return result.modified_count == 1

    def of_call(self, call_id: str) -> dict[str, Any] | None:
        """The attempt that placed the provider call ``call_id``, or None."""
        return self.coll.find_one({"call_id": call_id})

    # -- the post-call analysis (see :mod:`shared.domain.results`) ---------------------------------------------

    def record_analysis(self, attempt_id: str, call_id: str, analysis: Mapping[str, Any],
                        extras: Mapping[str, Any]) -> bool:
        """The analysis of this ended attempt's call ``call_id``, with the call's ``extras`` (recording, cost,
        transcript); only the first one is kept (False when it already has one, has not ended, or holds another
        call)."""
        now = self.clock.now_ms()
        result = self.coll.update_one(
            {"_id": attempt_id, "state": {"$eq": ENDED}, "call_id": {"$eq": call_id}, "analysis": {"$exists": False}},
            {"$set": {**extras, **analysis_record(analysis, now), "updated_at": now},
             "$unset": dict.fromkeys(ANALYSIS_WAIT_FIELDS, "")})
        return result.modified_count == 1

    def analysis_due(self, now_ms: int, limit: int) -> list[dict[str, Any]]:
        """Ended attempts whose analysis is looked for, due to be looked for now (``analysis_due_at`` passed)."""
        return list(self.coll.find({"analysis_due_at": {"$lte": int(now_ms)}},
                                   {"job_id": 1, "batch_id": 1, "call_id": 1, "analysis_due_at": 1,
                                    "analysis_until": 1, "analysis_looks": 1}).limit(limit))

    def look_for_analysis(self, attempt_id: str, seen_due_at: int, next_at: int) -> bool:
        """Take the next look for this attempt's analysis: its next look moves to ``next_at``, conditional on the
        one read (``seen_due_at``), so that of two processes only one looks."""
        result = self.coll.update_one({"_id": attempt_id, "analysis_due_at": {"$eq": int(seen_due_at)}},
                                      {"$set": {"analysis_due_at": int(next_at)}, "$inc": {"analysis_looks": 1}})
        return result.modified_count == 1

    def analysis_missing(self, attempt_id: str) -> bool:
        """The analysis never came within the wait: stop looking (``analysis_missing``)."""
        result = self.coll.update_one({"_id": attempt_id, "analysis": {"$exists": False},
                                       "analysis_due_at": {"$exists": True}},
                                      {"$set": {"analysis_missing": True, "updated_at": self.clock.now_ms()},
                                       "$unset": dict.fromkeys(ANALYSIS_WAIT_FIELDS, "")})
        return result.modified_count == 1

    def sent(self, attempt_id: str, at_ms: int) -> None:
        """The attempt's create is being sent (again) at ``at_ms``: ``last_sent_at``, from which the time after
        which nothing of it can still be on its way is counted."""
        self.coll.update_one({"_id": attempt_id}, {"$set": {"last_sent_at": int(at_ms)}})

    def not_placed(self, attempt_id: str, reason: Reason, *, owner: str | None = None) -> bool:
        """The provider never got (or never created) this call; with ``owner``, only while that lease token owns it.
        ``error`` is the reason in English; ``reason_code`` and ``reason_params`` say it
        (:mod:`shared.domain.reasons`)."""
        query: dict[str, Any] = {"_id": attempt_id, "state": DIALING}
        if owner is not None:
            query["owner"] = owner
        result = self.coll.update_one(query, {"$set": {"state": NOT_PLACED, "error": clip(reason.text()),
                                                      "reason_code": reason.code, "reason_params": dict(reason.params),
                                                      "updated_at": self.clock.now_ms()}})
        return result.modified_count == 1

    def delete_ended_before(self, created_before_ms: int, *, chunk: int = 1000, max_chunks: int = 10) -> int:
        """Delete attempts that ended (``ended``, ``not_placed``, ``orphaned``) and were created before
        ``created_before_ms``: at most ``chunk`` per delete and ``max_chunks`` deletes (the contact log's retention).
        Read by the ``state, created_at`` index, one state at a time. Returns how many were deleted."""
        deleted = 0
        for state in (ENDED, NOT_PLACED, ORPHANED):
            for _ in range(max_chunks):
                ids = [d["_id"] for d in self.coll.find({"state": {"$eq": state},
                                                         "created_at": {"$lt": int(created_before_ms)}},
                                                        {"_id": 1}).limit(chunk)]
                if not ids:
                    break
                deleted += self.coll.delete_many({"_id": {"$in": ids}}).deleted_count
                if len(ids) < chunk:
                    break
        return deleted

    def count_replay(self, attempt_id: str) -> None:
        """One more send of this attempt's create with its idempotency key after an unknown outcome."""
        self.coll.update_one({"_id": attempt_id}, {"$inc": {"replays": 1}})

    def orphaned(self, attempt_id: str, call_id: str) -> bool:
        """A create's answer came too late for its job, which had moved on: its call ``call_id`` was stopped.

        Only an attempt still ``dialing`` becomes ``orphaned``; an attempt that already has its call (recorded,
        ended, not placed) keeps its state and its record, and only learns ``orphan_call_id`` when the late call
        is another one. True when the attempt changed."""
        now = self.clock.now_ms()
        moved = self.coll.update_one({"_id": attempt_id, "state": DIALING},
                                     {"$set": {"state": ORPHANED, "orphan_call_id": call_id, "updated_at": now}})
        if moved.modified_count:
            return True
        # Another state: noted only when the late call is not the attempt's own. Read, then a write conditional on
        # what was read (the embedded server's update filters never match a ``$ne`` on a missing field).
        current = self.coll.find_one({"_id": attempt_id}, {"state": 1, "call_id": 1})
        if current is None or current.get("state") == DIALING or current.get("call_id") == call_id:
            return False
        own = current.get("call_id")
        noted = self.coll.update_one({"_id": attempt_id, "state": {"$eq": current.get("state")},
                                      "call_id": {"$eq": own} if own is not None else {"$exists": False}},
                                     {"$set": {"orphan_call_id": call_id, "updated_at": now}})
        return noted.modified_count == 1
