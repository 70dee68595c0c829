"""The job store: one document per contact, every state change one conditional update.

Instants are stored as integer milliseconds since the epoch on the shared clock
(``next_try_at``, ``lease_until``, ``created_at``...). A transition names the states it expects
the job to be in (and, for a leased job, the lease owner); when the document is not in one of
them nothing changes and ``None`` comes back, so two processes can never both win the same
transition. Each transition is a named method (``claim_due``, ``start_dial``, ``record_call``, ``complete``,
``fail``, ``cancel``, ``postpone``, ``release``, ``park_for_balance``, ``unpark``, ``apply_decision``...), and a move
that :data:`shared.domain.states.JOB_TRANSITIONS` does not list raises :class:`IllegalTransition` before anything is
written. Field names follow the original worker (``tries``, ``next_try_at``, ``last_error``). Entering a final
state (``completed``, ``failed``, ``cancelled``) follows one rule, written once in :func:`job_update`:
``finished_at`` is set, and the due time, the lease and the safety-net poll are dropped, whatever the caller asked
to write with it. A reason is written as its code and parameters (``reason_code``, ``reason_params``) and as
``last_error``, its text in the configured language (:mod:`shared.domain.reasons`).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypedDict

from pymongo import ReturnDocument, UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError

from shared.clock import Clock, to_ms
from shared.config import Config
from shared.domain import states
from shared.domain.contacts import Contact, InvalidContact, parse_contact
from shared.domain.reasons import Reason, because
from shared.stores.mongo import JOBS, new_id, parse_id

#: Jobs inserted per ``insert_many`` during an import.
IMPORT_CHUNK = 1000
#: Batches up to which :meth:`JobStore.counts_by_batch` asks once per batch rather than once per state.
PER_BATCH_COUNT_LIMIT = 3
#: The reason of the jobs a batch's cancellation finishes.
CANCELLED = because("batch_cancelled")
#: What a job in a final state never carries: it is due never again (``next_try_at``) and held by no process (the
#: lease, and the safety-net poll of a call in progress).
NOT_FINAL_FIELDS = ("next_try_at", "lease_owner", "lease_until", "poll_at")
#: Set on a job with the write that makes it final, until the result events' sweep has read it
#: (:mod:`shared.pipeline.result_events`): a final contact's ``contact.final`` is never missed.
NOTIFY_FINAL = "notify_final"
#: What a job leaving the leased states drops.
LEASE_FIELDS = ("lease_owner", "lease_until", "poll_at")


#: The states a decision of :mod:`shared.domain.decisions` moves a job to (:meth:`JobStore.apply_decision`).
DECIDED = (states.COMPLETED, states.FAILED, states.CANCELLED, states.RETRY_WAIT, states.PENDING, states.ANALYZING,
           states.WAITING_SCHEDULE)


class IllegalTransition(ValueError):
    """A job move that :data:`shared.domain.states.JOB_TRANSITIONS` does not allow: a mistake in the caller, never a
    race (a job that moved on meanwhile only makes a transition refused)."""


def check_moves(expected: Iterable[str], to: str) -> None:
    """Raise :class:`IllegalTransition` unless a job may move to ``to`` from each of the ``expected`` states."""
    for frm in expected:
        if not states.can_move(frm, to):
            raise IllegalTransition(f"a job cannot move from {frm} to {to}")


def job_update(now_ms: int, *, to: str | None = None, set_: Mapping[str, Any] | None = None,
               unset: Iterable[str] = (), inc: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The MongoDB update of a job's change: ``set_``, ``unset`` and ``inc`` as asked, ``updated_at``, and the rules
    of the state entered. Leaving the leased states drops the lease; entering a final state sets ``finished_at``
    (now) and :data:`NOTIFY_FINAL`, and drops :data:`NOT_FINAL_FIELDS`, whatever ``set_`` and ``inc`` say of them.
    The one place these rules are written: every transition and every batch-wide write of a state goes through
    here."""
    ruled: set[str] = set()
    if to is not None and to not in states.LEASED:
        ruled |= set(LEASE_FIELDS)
    if to in states.FINAL:
        ruled |= set(NOT_FINAL_FIELDS)
    fields: dict[str, Any] = {k: v for k, v in (set_ or {}).items() if k not in ruled}
    fields["updated_at"] = now_ms
    if to is not None:
        fields["status"] = to
    if to in states.FINAL:
        fields["finished_at"] = now_ms
        fields[NOTIFY_FINAL] = True
    counters = {k: v for k, v in (inc or {}).items() if k not in ruled}
    drop = (set(unset) | ruled) - set(fields) - set(counters)
    update: dict[str, Any] = {"$set": fields}
    if drop:
        update["$unset"] = dict.fromkeys(sorted(drop), "")
    if counters:
        update["$inc"] = counters
    return update


@dataclass
class ImportResult:
    """Outcome of :meth:`JobStore.create_jobs`.

    :param errors: ``(index, "field: message")`` per contact not imported, invalid or duplicate, by index.
    :param duplicates: contacts already in the batch (see :func:`duplicate_problem`), not inserted again.
    :param duplicate_at: their indexes.
    """

    imported: int = 0
    duplicates: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)
    job_ids: list[str] = field(default_factory=list)
    duplicate_at: list[int] = field(default_factory=list)


class ImportWriteFailed(Exception):
    """An insert of :meth:`JobStore.create_jobs` failed for another reason than duplicates (the database went away).

    :param result: what was written before and by the failed insert, as far as it could be read back: its
        ``imported`` and ``job_ids`` are jobs that exist.
    :param unconfirmed: contacts of the failed insert whose write could not be read back (0 when it could): each
        may or may not exist, and a new upload of them reports the written ones as duplicates.
    """

    def __init__(self, result: ImportResult, *, unconfirmed: int) -> None:
        super().__init__(f"an insert of jobs failed after {result.imported} were written"
                         + (f" ({unconfirmed} not confirmed)" if unconfirmed else ""))
        self.result = result
        self.unconfirmed = unconfirmed


def phones_key(batch_id: str, contact: Contact) -> str:
    """The job's ``phones_key``: the batch, the contact's E.164 numbers as a set (sorted) and its ``external_id``
    (or none), hashed. A unique index on it keeps one job per such contact in a batch."""
    digest = hashlib.sha256(json.dumps([sorted(contact.phones), contact.external_id]).encode()).hexdigest()
    return f"{batch_id}:{digest}"


def duplicate_problem(contact: Contact) -> tuple[str, str]:
    """``(field, message)`` for a contact refused as already in its batch.

    With an ``external_id`` the collision is on it (``dedupe_key``: a ``phones_key`` collision implies the same
    ``external_id`` too); without one, another contact without ``external_id`` has the same numbers.
    """
    if contact.external_id is not None:
        return "external_id", (f"duplicate: a contact with external_id {contact.external_id[:60]!r} is already "
                               "in this batch; not imported again")
    return "phones", ("duplicate: a contact with the same phone numbers and no external_id is already in this "
                      "batch; not imported again (give each debt its own external_id to import both)")


class Lease(TypedDict):
    """What a named transition requires of a job this process holds (each key is the transition's keyword
    argument): the states it may be in and the lease token it must carry."""

    expected: Sequence[str]
    lease_owner: str


class JobStore:
    """Jobs of every batch in the ``jobs`` collection.

    :param db: the MongoDB database.
    :param clock: time source.
    :param config: defaults for retries.
    """

    def __init__(self, db: Database[dict[str, Any]], *, clock: Clock, config: Config) -> None:
        self.db = db
        self.coll: Collection[dict[str, Any]] = db[JOBS]
        self.clock = clock
        self.config = config

    # -- reads ---------------------------------------------------------------------------------

    def get(self, job_id: str) -> dict[str, Any] | None:
        return self.coll.find_one({"_id": parse_id(job_id, "job id")})

    def find(self, query: Mapping[str, Any], *, limit: int = 0, skip: int = 0,
             sort: Sequence[tuple[str, int]] | None = None) -> list[dict[str, Any]]:
        cursor = self.coll.find(dict(query), skip=skip, limit=limit)
        if sort:
            cursor = cursor.sort(list(sort))
        return list(cursor)

    def counts(self, batch_id: str | None = None) -> dict[str, int]:
        """Jobs per state (every state present, zeros included), for one batch or all."""
        pipeline: list[dict[str, Any]] = []
        if batch_id is not None:
            pipeline.append({"$match": {"batch_id": batch_id}})
        pipeline.append({"$group": {"_id": "$status", "n": {"$sum": 1}}})
        out = dict.fromkeys(map(str, states.JOB_STATES), 0)
        for row in self.coll.aggregate(pipeline):
            out[row["_id"]] = int(row["n"])
        return out

    def oldest_in_progress(self, batch_id: str) -> dict[str, Any] | None:
        """The batch's job held longest by a process (``queued``, ``dialing`` or ``in_call``), with ``since``:
        when it was dialed (``dialed_at``), or queued (``updated_at``); None when none is."""
        found: list[dict[str, Any]] = []
        for status, since in ((states.QUEUED, "updated_at"), (states.DIALING, "dialed_at"),
                              (states.IN_CALL, "dialed_at")):
            doc = self.coll.find_one({"batch_id": batch_id, "status": status},
                                     {"_id": 1, "status": 1, since: 1}, sort=[(since, 1)])
            if doc is not None and doc.get(since) is not None:
                found.append({"job_id": doc["_id"], "status": status, "since": int(doc[since])})
        return min(found, key=lambda d: d["since"]) if found else None

    def counts_by_batch(self, batch_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """Jobs per state for each batch (every state present): one aggregate per batch, or per state for many."""
        out = {batch_id: dict.fromkeys(map(str, states.JOB_STATES), 0) for batch_id in batch_ids}
        if not batch_ids:
            return out
        if len(batch_ids) <= PER_BATCH_COUNT_LIMIT:
            for batch_id in batch_ids:
                out[batch_id] = self.counts(batch_id)
            return out
        for state in states.JOB_STATES:
            rows = self.coll.aggregate([{"$match": {"status": state, "batch_id": {"$in": list(batch_ids)}}},
                                        {"$group": {"_id": "$batch_id", "n": {"$sum": 1}}}])
            for row in rows:
                if row["_id"] in out:
                    out[row["_id"]][state] = int(row["n"])
        return out

    def count_queued(self, account_id: str | None) -> int:
        """Jobs queued to dial, of one account or (None) of every account."""
        match: dict[str, Any] = {"status": {"$eq": states.QUEUED}}
        if account_id is not None:
            match["account_id"] = {"$eq": account_id}
        # Not count_documents: its {"$group": {"_id": 1}} makes the embedded server count in Python (measured).
        rows = self.coll.aggregate([{"$match": match}, {"$group": {"_id": "$status", "n": {"$sum": 1}}}])
        return sum(int(r["n"]) for r in rows)

    def failure_reasons(self, batch_id: str) -> Iterator[dict[str, Any]]:
        """The reasons of the batch's failed jobs: ``reason_code``, ``reason_params`` and ``last_error`` of each."""
        return iter(self.coll.find({"batch_id": batch_id, "status": states.FAILED},
                                   {"reason_code": 1, "reason_params": 1, "last_error": 1}))

    def count_failed_with_outcome(self, batch_id: str, outcome: str) -> int:
        """The batch's failed jobs whose ``outcome`` is ``outcome``."""
        return int(self.coll.count_documents({"batch_id": batch_id, "status": states.FAILED, "outcome": outcome}))

    def page(self, batch_id: str, *, status: str | None = None, after: str | None = None,
             limit: int) -> list[dict[str, Any]]:
        """The batch's jobs (of one ``status``, if given) in id order, the first ``limit`` after the id ``after``."""
        query: dict[str, Any] = {"batch_id": batch_id}
        if status:
            query["status"] = status
        if after:
            query["_id"] = {"$gt": after}
        return self.find(query, limit=limit, sort=[("_id", 1)])

    def of_batch(self, batch_id: str, fields: Sequence[str]) -> Iterator[dict[str, Any]]:
        """The batch's jobs, only ``fields`` (and ``_id``) of each."""
        return iter(self.coll.find({"batch_id": batch_id}, dict.fromkeys(fields, 1)))

    def record_analysis(self, job_id: str, attempt_id: str, set_: Mapping[str, Any]) -> bool:
        """The analysis of the job's last conversation (``attempt_id``) came, or will not come (see
        :func:`shared.domain.results.analysis_result_update`): written only while that conversation is still the
        job's last one, whatever the job's state (a final job is not reopened); it waits for it no more."""
        result = self.coll.update_one(
            {"_id": parse_id(job_id, "job id"), "result.analysis_attempt_id": {"$eq": attempt_id}},
            {"$set": {**set_, "updated_at": self.clock.now_ms()}, "$unset": {"result.analysis_pending": ""}})
        return result.modified_count == 1

    def record_analyses(self, kept: Sequence[tuple[str, str, Mapping[str, Any]]]) -> int:
        """:meth:`record_analysis` of many jobs in one bulk request: ``(job_id, attempt_id, set_)`` each. How many
        jobs took theirs."""
        if not kept:
            return 0
        now = self.clock.now_ms()
        done = self.coll.bulk_write([
            UpdateOne({"_id": parse_id(job_id, "job id"), "result.analysis_attempt_id": {"$eq": aid}},
                      {"$set": {**set_, "updated_at": now}, "$unset": {"result.analysis_pending": ""}})
            for job_id, aid, set_ in kept], ordered=False)
        return int(done.modified_count)

    def analyzing_due(self, now_ms: int, limit: int) -> list[dict[str, Any]]:
        """Jobs waiting for their conversation's analysis (``analyzing``) whose check is due, the oldest first."""
        return list(self.coll.find({"status": {"$eq": states.ANALYZING}, "next_try_at": {"$lte": now_ms}})
                    .sort("next_try_at", 1).limit(limit))

    def check_analysis_later(self, job_id: str, seen_due_ms: int, next_ms: int) -> bool:
        """Move the check of a job still waiting for its analysis to ``next_ms``; False when another process moved
        it, or the job moved on."""
        result = self.coll.update_one(
            {"_id": parse_id(job_id, "job id"), "status": {"$eq": states.ANALYZING},
             "next_try_at": {"$eq": seen_due_ms}},
            {"$set": {"next_try_at": next_ms, "updated_at": self.clock.now_ms()}})
        return result.modified_count == 1

    def of_call(self, call_id: str) -> dict[str, Any] | None:
        """The job holding the provider call ``call_id``, or None."""
        return self.coll.find_one({"call_id": call_id})

    def calling(self) -> Iterator[dict[str, Any]]:
        """Jobs whose call is being placed or is in progress (``dialing``, ``in_call``): state, account, batch,
        attempt and lease end of each."""
        for status in (states.DIALING, states.IN_CALL):
            yield from self.coll.find({"status": {"$eq": status}}, {"status": 1, "account_id": 1, "batch_id": 1,
                                                                      "attempt_id": 1, "lease_until": 1})

    def batches_with_open_jobs(self, batch_ids: Sequence[str]) -> set[str]:
        """Those of ``batch_ids`` that have a job not final yet."""
        return {batch_id for batch_id in batch_ids if self.has_open_jobs(batch_id)}

    def has_jobs(self, batch_id: str) -> bool:
        """Whether the batch has any job."""
        return self.coll.find_one({"batch_id": batch_id}, {"_id": 1}) is not None

    def has_open_jobs(self, batch_id: str) -> bool:
        """Whether the batch has a job not final yet, in one query. Not one look per open state: a job moving
        between two open states (``retry_wait -> queued``) while the looks run can be missed by all of them,
        and its batch would be completed with the job stranded."""
        return self.coll.find_one({"batch_id": {"$eq": batch_id}, "status": {"$nin": list(states.FINAL)}},
                                  {"_id": 1}) is not None

    # -- creation ------------------------------------------------------------------------------

    def create_jobs(self, batch_id: str, account_id: str, contacts: Iterable[Any], *,
                    region: str | None = None, start_index: int = 0,
                    next_try_at: datetime | None = None) -> ImportResult:
        """Validate ``contacts`` and insert one ``pending`` job per valid one.

        Invalid contacts are reported by index (``start_index`` + position) and skipped; the
        valid ones are kept. A contact already in the batch is a duplicate: counted, reported by index
        (:func:`duplicate_problem`) and not inserted again. Already in the batch means the same
        ``external_id``, or the same set of phone numbers with the same ``external_id`` or none (so two
        contacts with the same numbers and different external ids are two debts, both imported). Unique
        indexes decide (``dedupe_key``, ``phones_key``), so repeated and concurrent imports agree.

        :raises ImportWriteFailed: an insert failed for another reason (nothing more is inserted); it carries
            exactly the jobs written, those of the failed insert read back by id.

        :param region: region for numbers without ``+country``; default ``PHONE_DEFAULT_REGION``.
        :param next_try_at: when the jobs become due; default now.
        """
        due = to_ms(next_try_at) if next_try_at is not None else self.clock.now_ms()
        rows = ((start_index + offset, raw, {"next_try_at": due}) for offset, raw in enumerate(contacts))
        return self.import_jobs(batch_id, account_id, rows, region=region)

    def import_jobs(self, batch_id: str, account_id: str, rows: Iterable[tuple[int, Any, Mapping[str, Any]]], *,
                    region: str | None = None) -> ImportResult:
        """Insert jobs in a given state (:meth:`create_jobs` inserts new ``pending`` ones through here), as an import
        from another system left them: ``(index, contact row, fields)`` each, where ``fields`` sets ``status``
        (``pending``, the default, ``completed`` or ``failed``), ``tries``, ``next_try_at`` (a pending job; default
        now) and ``legacy_id``, and a failed job's ``reason`` (a :class:`Reason`).

        Contacts are validated as :meth:`create_jobs` validates them (errors by index); one already in the batch
        (its ``external_id``, or its numbers) is a duplicate, so a second import of the same rows inserts nothing.
        A final job is written final (``finished_at`` now, no due time), without ``notify_final``: its contact's
        end was the other system's, not a result to announce.
        """
        region = region or self.config.phone_default_region
        result = ImportResult()
        chunk: list[tuple[int, Contact, dict[str, Any]]] = []
        now = self.clock.now_ms()
        for index, raw, fields in rows:
            try:
                contact = raw if isinstance(raw, Contact) else parse_contact(raw, region=region)
            except InvalidContact as exc:
                result.errors.append((index, str(exc)))
                continue
            status = fields.get("status", states.PENDING)
            if status not in (states.PENDING, states.COMPLETED, states.FAILED):
                raise IllegalTransition(f"an import writes pending, completed or failed jobs, not {status}")
            doc = self._new_job(batch_id, account_id, contact, int(fields.get("next_try_at") or now))
            doc.update(status=status, tries=int(fields.get("tries", 0)))
            if fields.get("legacy_id"):
                doc["legacy_id"] = str(fields["legacy_id"])
            if status in states.FINAL:
                doc.pop("next_try_at", None)
                doc["finished_at"] = now
            reason = fields.get("reason")
            if isinstance(reason, Reason):
                doc.update(reason.fields(self.config.lang))
            chunk.append((index, contact, doc))
            if len(chunk) >= IMPORT_CHUNK:
                self._insert(chunk, result)
                chunk = []
        if chunk:
            self._insert(chunk, result)
        result.errors.sort(key=lambda e: e[0])
        return result

    def _new_job(self, batch_id: str, account_id: str, contact: Contact, due: int) -> dict[str, Any]:
        now = self.clock.now_ms()
        doc: dict[str, Any] = {
            "_id": new_id(),
            "batch_id": batch_id,
            "account_id": account_id,
            "contact": contact.to_document(),
            "status": states.PENDING,
            "tries": 0,
            "phone_index": 0,
            "invalid_phones": [],
            "dials": 0,
            "next_try_at": due,
            "created_at": now,
            "updated_at": now,
        }
        if contact.external_id is not None:
            doc["dedupe_key"] = f"{batch_id}:{contact.external_id}"
        doc["phones_key"] = phones_key(batch_id, contact)
        return doc

    def _insert(self, chunk: list[tuple[int, Contact, dict[str, Any]]], result: ImportResult) -> None:
        """Insert the chunk's jobs; those refused by a unique index are the duplicates.

        :raises ImportWriteFailed: any other failure, with the jobs of the chunk that were written all the same.
        """
        failed: set[int] = set()
        try:
            self.coll.insert_many([doc for _, _, doc in chunk], ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != 11000 for e in errors):
                self._failed_insert(chunk, result, exc)
            failed = {e["index"] for e in errors}
        except Exception as exc:  # noqa: BLE001 - whatever failed, count what was written, then raise
            self._failed_insert(chunk, result, exc)
        for i, (index, contact, doc) in enumerate(chunk):
            if i in failed:
                field_name, message = duplicate_problem(contact)
                result.duplicates += 1
                result.duplicate_at.append(index)
                result.errors.append((index, f"{field_name}: {message}"))
            else:
                result.imported += 1
                result.job_ids.append(doc["_id"])

    def _failed_insert(self, chunk: list[tuple[int, Contact, dict[str, Any]]], result: ImportResult,
                       cause: Exception) -> None:
        """Count the jobs of ``chunk`` that exist despite ``cause`` (an unordered insert may have written some), then
        raise :class:`ImportWriteFailed`."""
        ids = [doc["_id"] for _, _, doc in chunk]
        try:
            written = {d["_id"] for d in self.coll.find({"_id": {"$in": ids}}, {"_id": 1})}
        except Exception:  # noqa: BLE001 - the database is gone: say which writes are unknown
            raise ImportWriteFailed(result, unconfirmed=len(chunk)) from cause
        for doc_id in ids:
            if doc_id in written:
                result.imported += 1
                result.job_ids.append(doc_id)
        raise ImportWriteFailed(result, unconfirmed=0) from cause

    # -- claiming ------------------------------------------------------------------------------

    def claim_due(self, *, limit: int, lease: timedelta, horizon: timedelta = timedelta(0),
                  batch_ids: Sequence[str] | None = None, account_id: str | None = None,
                  now: datetime | None = None) -> list[dict[str, Any]]:
        """Claim up to ``limit`` jobs due by ``now + horizon``, oldest ``next_try_at`` first.

        Claimed jobs become ``queued`` under a fresh lease owned by this call (``lease_owner``,
        ``lease_until = now + lease``) and are returned. Across concurrent callers every job is
        returned at most once: the claim is a conditional update on each document, and each
        caller reads back only the documents carrying its own lease token. The candidates are read
        one claimable state at a time (:meth:`_oldest`), so jobs in calls are never read.

        :param batch_ids: only jobs of these batches (e.g. the active ones); None = any batch.
        :param account_id: only jobs of this account.
        """
        now_ms = to_ms(now) if now is not None else self.clock.now_ms()
        match: dict[str, Any] = {"next_try_at": {"$lte": now_ms + _ms(horizon)}}
        if batch_ids is not None:
            if not batch_ids:
                return []
            match["batch_id"] = {"$eq": batch_ids[0]} if len(batch_ids) == 1 else {"$in": list(batch_ids)}
        if account_id is not None:
            match["account_id"] = {"$eq": account_id}
        check_moves(states.CLAIMABLE, states.QUEUED)
        ids = self._oldest(states.CLAIMABLE, "next_try_at", match, limit)
        if not ids:
            return []
        token = uuid.uuid4().hex
        query = {**match, "_id": {"$in": ids}, "status": {"$in": list(states.CLAIMABLE)}}
        update = {"$set": {"status": states.QUEUED, "lease_owner": token, "lease_until": now_ms + _ms(lease),
                           "updated_at": now_ms}}
        if self.coll.update_many(query, update).modified_count == 0:
            return []
        claimed = list(self.coll.find({"lease_owner": token}))
        claimed.sort(key=lambda d: d["next_try_at"])
        return claimed

    def claim_next(self, *, lease: timedelta, horizon: timedelta = timedelta(0), batch_ids: Sequence[str],
                   account_id: str, now: datetime | None = None, among: Sequence[str] = states.CLAIMABLE,
                   empty: set[str] | None = None) -> dict[str, Any] | None:
        """Claim one due job of ``account_id`` (by ``now + horizon``) under a fresh lease token, in one conditional
        update that returns it; None when none is due.

        The refill of a freed slot claims this way: one round trip, where a claim of many takes several. The
        claimable states are tried one at a time (``pending`` first: a campaign's contacts not yet called), each
        on its ``(status, next_try_at)`` index, oldest due first; a job due in a later state waits at most for
        the next periodic dispatch, which claims across states in due order.

        :param among: the claimable states to try, in this order.
        :param empty: filled with the states tried that had no due job.
        """
        if not batch_ids:
            return None
        check_moves(among, states.QUEUED)
        now_ms = to_ms(now) if now is not None else self.clock.now_ms()
        match: dict[str, Any] = {"next_try_at": {"$lte": now_ms + _ms(horizon)}, "account_id": {"$eq": account_id},
                                 "batch_id": {"$eq": batch_ids[0]} if len(batch_ids) == 1 else {"$in": list(batch_ids)}}
        update = {"$set": {"status": states.QUEUED, "lease_owner": uuid.uuid4().hex,
                           "lease_until": now_ms + _ms(lease), "updated_at": now_ms}}
        for state in among:
            found = self.coll.find_one_and_update({"status": {"$eq": state}, **match}, update,
                                                  sort=[("next_try_at", 1)], return_document=ReturnDocument.AFTER)
            if found is not None:
                return found
            if empty is not None:
                empty.add(state)
        return None

    def due_safety_polls(self, *, limit: int, now_ms: int | None = None) -> list[dict[str, Any]]:
        """Calls in progress whose safety-net poll is due (``poll_at`` passed: no webhook ended them yet): id,
        lease owner and call id of each."""
        now_ms = now_ms if now_ms is not None else self.clock.now_ms()
        return list(self.coll.find({"poll_at": {"$lte": now_ms}}, {"lease_owner": 1, "call_id": 1, "status": 1},
                                   limit=limit))

    def take_safety_poll(self, job_id: str, lease_owner: str, *, now_ms: int | None = None) -> bool:
        """Clear the due ``poll_at`` of the owner's call in progress; True for the one caller that did (it starts
        the call's polls)."""
        now_ms = now_ms if now_ms is not None else self.clock.now_ms()
        result = self.coll.update_one({"_id": job_id, "status": states.IN_CALL, "lease_owner": lease_owner,
                                       "poll_at": {"$lte": now_ms}}, {"$unset": {"poll_at": ""}})
        return result.modified_count == 1

    def claim_expired(self, *, limit: int, lease: timedelta, now: datetime | None = None) -> list[dict[str, Any]]:
        """Take over up to ``limit`` leased jobs whose lease ended before ``now``, the longest expired first.

        The state is kept; the lease passes to a new owner (returned in each document) so the
        caller alone recovers the job: re-dispatch ``queued``, re-poll ``in_call``, reconcile
        ``dialing`` with the provider.
        """
        now_ms = to_ms(now) if now is not None else self.clock.now_ms()
        match: dict[str, Any] = {"lease_until": {"$lt": now_ms}}
        ids = self._oldest(states.LEASED, "lease_until", match, limit)
        if not ids:
            return []
        token = uuid.uuid4().hex
        query = {**match, "_id": {"$in": ids}, "status": {"$in": list(states.LEASED)}}
        update = {"$set": {"lease_owner": token, "lease_until": now_ms + _ms(lease), "updated_at": now_ms},
                  "$inc": {"recoveries": 1}}
        if self.coll.update_many(query, update).modified_count == 0:
            return []
        return list(self.coll.find({"lease_owner": token}))

    def _oldest(self, statuses: Sequence[str], field: str, match: Mapping[str, Any], limit: int) -> list[str]:
        """Ids of up to ``limit`` jobs in one of ``statuses`` that match ``match``, smallest ``field`` first.

        One query per state, an equality on ``status`` sorted by ``field``, so that the ``(status, field)``
        index serves both the filter and the order and the cost follows the jobs returned, not the jobs in
        other states; the per-state lists are merged here. (A ``$in`` on ``status`` would let the embedded
        server read, filter and sort every job of the collection, calls in progress included: measured.)
        """
        found: list[dict[str, Any]] = []
        for status in statuses:
            query = {"status": {"$eq": status}, **match}
            found.extend(self.coll.find(query, {"_id": 1, field: 1}).sort(field, 1).limit(limit))
        found.sort(key=lambda d: (d.get(field, 0), d["_id"]))
        return [d["_id"] for d in found[:limit]]

    # -- transitions ---------------------------------------------------------------------------

    def _transition(self, job_id: str, *, expected: Sequence[str], to: str,
                    lease_owner: str | None = None, set_: Mapping[str, Any] | None = None,
                    unset: Iterable[str] = (), inc: Mapping[str, int] | None = None,
                    where: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """One conditional update; returns the document after it, or None when refused. The named transitions
        below are its only callers.

        :param expected: states the job must be in; each must be allowed to move to ``to``
            (:data:`shared.domain.states.JOB_TRANSITIONS`), else :class:`IllegalTransition` and nothing is written.
        :param to: new state; leaving the leased states drops the lease fields, and entering a final state sets
            ``finished_at`` and drops the due time and the lease (:func:`job_update`).
        :param lease_owner: the lease token the job must carry (None: not checked).
        :param where: further conditions on the document (e.g. ``{"call_id": ...}``).
        """
        check_moves(expected, to)
        query: dict[str, Any] = {"_id": parse_id(job_id, "job id"), "status": {"$in": list(expected)}}
        if lease_owner is not None:
            query["lease_owner"] = lease_owner
        if where:
            query.update(where)
        update = job_update(self.clock.now_ms(), to=to, set_=set_, unset=unset, inc=inc)
        return self.coll.find_one_and_update(query, update, return_document=ReturnDocument.AFTER)

    def start_dial(self, job_id: str, lease_owner: str, *, set_: Mapping[str, Any], unset: Iterable[str] = (),
                   inc: Mapping[str, int] | None = None) -> dict[str, Any] | None:
        """``queued -> dialing`` under the owner's lease: the one dial that wins it places the call."""
        return self._transition(job_id, expected=(states.QUEUED,), to=states.DIALING, lease_owner=lease_owner,
                                set_=set_, unset=unset, inc=inc)

    def record_call(self, job_id: str, lease_owner: str, attempt_id: str, *,
                    set_: Mapping[str, Any]) -> dict[str, Any] | None:
        """``dialing -> in_call``: the owner's attempt ``attempt_id`` (still the job's) has its call."""
        return self._transition(job_id, expected=(states.DIALING,), to=states.IN_CALL, lease_owner=lease_owner,
                                where={"attempt_id": attempt_id}, set_=set_)

    def apply_decision(self, job_id: str, to: str, *, expected: Sequence[str], lease_owner: str | None = None,
                       set_: Mapping[str, Any] | None = None, unset: Iterable[str] = (),
                       where: Mapping[str, Any] | None = None,
                       inc: Mapping[str, int] | None = None) -> dict[str, Any] | None:
        """The job's next state as a decision of :mod:`shared.domain.decisions` gave it (a ``JobWrite``: after a
        round, a phone or a call), its reason and due time already among ``set_``: ``completed``, ``failed``,
        ``cancelled``, ``retry_wait`` or ``pending``."""
        if to not in DECIDED:
            raise IllegalTransition(f"a decision cannot move a job to {to}")
        return self._transition(job_id, expected=expected, to=to, lease_owner=lease_owner, set_=set_, unset=unset,
                                where=where, inc=inc)

    def complete(self, job_id: str, *, expected: Sequence[str] = (states.IN_CALL,), lease_owner: str | None = None,
                 set_: Mapping[str, Any] | None = None,
                 where: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """``completed`` (final): the contact was reached."""
        return self._transition(job_id, expected=expected, to=states.COMPLETED, lease_owner=lease_owner, set_=set_,
                                where=where)

    def fail(self, job_id: str, reason: Reason, *, expected: Sequence[str] = states.LEASED,
             lease_owner: str | None = None, set_: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """A final failure: ``failed`` with ``reason`` (a failed round is :func:`shared.pipeline.rounds.fail_round`).

        :param set_: further fields to write with it (e.g. the ``outcome``).
        """
        return self._transition(job_id, expected=expected, to=states.FAILED, lease_owner=lease_owner,
                                set_={**(set_ or {}), **reason.fields(self.config.lang)})

    def cancel(self, job_id: str, reason: Reason, *, expected: Sequence[str], lease_owner: str | None = None,
               where: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """``cancelled`` (final) with ``reason``: its batch lets it wait no more (a whole batch's jobs not yet
        dialed: :meth:`cancel_batch`)."""
        return self._transition(job_id, expected=expected, to=states.CANCELLED, lease_owner=lease_owner,
                                where=where, set_=reason.fields(self.config.lang))

    def postpone(self, job_id: str, next_try_at: datetime, reason: Reason, *,
                 to: str = states.WAITING_SCHEDULE, expected: Sequence[str] | None = None,
                 lease_owner: str | None = None, inc: Mapping[str, int] | None = None,
                 where: Mapping[str, Any] | None = None,
                 set_: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """Postpone without spending an attempt: back to a claimable state, ``waiting_schedule`` (or ``to``), until
        ``next_try_at``.

        :param expected: default the leased states that may enter ``to``.
        :param set_: further fields to write with it (a call's result).
        """
        if to not in states.CLAIMABLE:
            raise IllegalTransition(f"a job is postponed to a claimable state, not {to}")
        return self._transition(job_id, expected=_leased_into(to) if expected is None else expected, to=to,
                                lease_owner=lease_owner, inc=inc, where=where,
                                set_={**(set_ or {}), "next_try_at": to_ms(next_try_at),
                                      **reason.fields(self.config.lang)})

    def release(self, job_id: str, next_try_at: datetime, reason: Reason, *,
                expected: Sequence[str] = states.LEASED, lease_owner: str | None = None,
                inc: Mapping[str, int] | None = None,
                where: Mapping[str, Any] | None = None,
                set_: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """Back to ``pending`` at ``next_try_at`` without spending an attempt (provider fault, no slot, a paused
        or held batch)."""
        return self.postpone(job_id, next_try_at, reason, to=states.PENDING, expected=expected,
                             lease_owner=lease_owner, inc=inc, where=where, set_=set_)

    def park_for_balance(self, job_id: str, reason: Reason, *, expected: Sequence[str] | None = None,
                         lease_owner: str | None = None) -> dict[str, Any] | None:
        """``waiting_balance`` with ``reason``: the account cannot pay for one call; a top-up releases it
        (:meth:`release_waiting_balance`, :meth:`unpark`).

        :param expected: default the leased states that may enter it (``queued``, ``dialing``).
        """
        to = states.WAITING_BALANCE
        return self._transition(job_id, expected=_leased_into(to) if expected is None else expected, to=to,
                                lease_owner=lease_owner,
                                set_={"next_try_at": self.clock.now_ms(), **reason.fields(self.config.lang)})

    def unpark(self, job_id: str) -> dict[str, Any] | None:
        """``waiting_balance -> pending``, due now: the balance covers its call again."""
        return self._transition(job_id, expected=(states.WAITING_BALANCE,), to=states.PENDING,
                                set_={"next_try_at": self.clock.now_ms()})

    def extend_dialing_lease(self, job_id: str, lease_owner: str, until_ms: int) -> bool:
        """Move the end of the owner's ``dialing`` lease to ``until_ms``; False when the job is no longer its own."""
        result = self.coll.update_one({"_id": job_id, "status": states.DIALING, "lease_owner": lease_owner},
                                      {"$set": {"lease_until": until_ms}})
        return result.modified_count == 1

    def record_stop_request(self, job_id: str, lease_owner: str, fields: Mapping[str, Any]) -> None:
        """Note a request to end the owner's ``in_call`` job's call (``fields``) and count it in ``stop_attempts``."""
        self.coll.update_one({"_id": job_id, "status": states.IN_CALL, "lease_owner": lease_owner},
                             {"$set": dict(fields), "$inc": {"stop_attempts": 1}})

    # -- batch-wide ----------------------------------------------------------------------------

    def cancel_batch(self, batch_id: str, reason: Reason = CANCELLED) -> int:
        """Cancel every job of the batch not yet handed to the provider (:data:`states.NOT_DIALED`); calls in
        progress go on (their finalize cancels their job). One update per state, each an equality on the batch and
        on the state that the ``batch_id, status`` index serves: a cancelled batch's sweep repeats it every
        maintenance run while a job of the batch is open. Returns how many jobs it cancelled."""
        check_moves(states.NOT_DIALED, states.CANCELLED)
        update = job_update(self.clock.now_ms(), to=states.CANCELLED, set_=reason.fields(self.config.lang))
        cancelled = 0
        for state in states.NOT_DIALED:
            result = self.coll.update_many({"batch_id": {"$eq": batch_id}, "status": {"$eq": state}}, update)
            cancelled += int(result.modified_count)
        return cancelled

    def release_waiting_balance(self, account_id: str) -> int:
        """Every ``waiting_balance`` job of the account back to ``pending``, due now (after a top-up)."""
        check_moves((states.WAITING_BALANCE,), states.PENDING)
        now = self.clock.now_ms()
        result = self.coll.update_many({"account_id": account_id, "status": states.WAITING_BALANCE},
                                       job_update(now, to=states.PENDING, set_={"next_try_at": now}))
        return int(result.modified_count)


def _leased_into(to: str) -> tuple[str, ...]:
    """The leased states from which a job may enter ``to``."""
    return tuple(state for state in states.LEASED if states.can_move(state, to))


def _ms(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1000)
