"""The result events' outbox (``result_events``) and the flags the pipeline leaves for it.

An event document: ``_id`` (the event id, :func:`shared.domain.result_hooks.event_id`), ``account_id``, ``type``,
``subject_id`` (the job or attempt), ``created_at``, ``body`` (the exact JSON text signed and sent on every try),
``state`` (``pending|delivered|dead``), ``attempts``, ``next_at`` (when it is due), ``expires_at`` (the end of its
24 hours of tries), ``lease_until`` and ``lease_token`` (the delivery that holds it), ``last_error``,
``last_status``, ``last_attempt_at``, ``delivered_at``.

A due event is claimed with one conditional update on the ``next_at`` just read: the claim moves ``next_at`` to
the lease's end, so a claimed event is not due again until its lease ends, and only one of two sweeps that read it
wins. A delivery records its outcome only while it still holds the lease (``lease_token``). A worker that dies
mid-delivery leaves the event due once its lease ends: at least once, every retry under the same id and body.

The flags (``notify_final`` on jobs, ``notify_ended`` / ``notify_analyzed`` on attempts) are read in bounded
chunks on their sparse indexes and unset a chunk at a time, in one bulk request of updates conditional on the flag.

:func:`resolve_addresses` is the DNS look-up a webhook's host is checked with, on ``PUT /accounts`` and before every
delivery.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from typing import Any

from pymongo import DESCENDING, UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from shared.clock import Clock
from shared.domain.result_hooks import DEAD, DELIVERED, DELIVERY_WINDOW_MS, PENDING
from shared.stores.jobs import NOTIFY_FINAL
from shared.stores.mongo import ACCOUNTS, ATTEMPTS, JOBS, RESULT_EVENTS

#: The flags of attempts the result events' sweep reads (a job's is :data:`shared.stores.jobs.NOTIFY_FINAL`).
NOTIFY_ENDED = "notify_ended"
NOTIFY_ANALYZED = "notify_analyzed"
ATTEMPT_FLAGS = (NOTIFY_ENDED, NOTIFY_ANALYZED)

#: What the sweep reads of a flagged job (everything ``contact.final`` shows).
_JOB_FIELDS = {"batch_id": 1, "account_id": 1, "contact.name": 1, "contact.external_id": 1, "status": 1,
               "reason_code": 1, "last_error": 1, "result": 1, "finished_at": 1, NOTIFY_FINAL: 1}
#: What a delivery list shows of an event.
_LIST_FIELDS = {"body": 0, "lease_token": 0}


def _clear(coll: Collection[dict[str, Any]], flag: str, ids: Sequence[str]) -> int:
    if not ids:
        return 0
    done = coll.bulk_write([UpdateOne({"_id": i, flag: {"$eq": True}}, {"$unset": {flag: ""}}) for i in ids],
                           ordered=False)
    return int(done.modified_count)


def resolve_addresses(host: str, port: int) -> list[str]:
    """Every IP address ``host`` resolves to (TCP), in the resolver's order (raises :class:`OSError` when it does not
    resolve)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class ResultEventStore:
    """The outbox of result events, the flags that feed it and the accounts' webhook settings (thread-safe).

    :param db: the MongoDB database.
    :param clock: the shared clock (``created_at``, due times, leases).
    """

    def __init__(self, db: Database[dict[str, Any]], *, clock: Clock) -> None:
        self.coll: Collection[dict[str, Any]] = db[RESULT_EVENTS]
        self.jobs: Collection[dict[str, Any]] = db[JOBS]
        self.attempts: Collection[dict[str, Any]] = db[ATTEMPTS]
        self.accounts: Collection[dict[str, Any]] = db[ACCOUNTS]
        self.clock = clock

    # -- the flags --------------------------------------------------------------------------------------------

    def flagged_jobs(self, *, after: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Up to ``limit`` jobs carrying ``notify_final``, by id, those after ``after``."""
        query: dict[str, Any] = {NOTIFY_FINAL: {"$eq": True}}
        if after is not None:
            query["_id"] = {"$gt": after}
        return list(self.jobs.find(query, _JOB_FIELDS).sort("_id", 1).limit(limit))

    def flagged_attempts(self, flag: str, *, after: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Up to ``limit`` attempts carrying ``flag`` (``notify_ended`` or ``notify_analyzed``), by id, those after
        ``after``."""
        if flag not in ATTEMPT_FLAGS:
            raise ValueError(f"unknown attempt flag {flag!r}")
        query: dict[str, Any] = {flag: {"$eq": True}}
        if after is not None:
            query["_id"] = {"$gt": after}
        return list(self.attempts.find(query, {"transcript": 0, "owner": 0}).sort("_id", 1).limit(limit))

    def clear_job_flags(self, job_ids: Sequence[str]) -> int:
        """Unset the jobs' ``notify_final`` (each only while it is set), in one request; how many this unset."""
        return _clear(self.jobs, NOTIFY_FINAL, job_ids)

    def clear_attempt_flags(self, attempt_ids: Sequence[str], flag: str) -> int:
        """Unset the attempts' ``flag`` (each only while it is set), in one request; how many this unset."""
        if flag not in ATTEMPT_FLAGS:
            raise ValueError(f"unknown attempt flag {flag!r}")
        return _clear(self.attempts, flag, attempt_ids)

    # -- the accounts' settings -------------------------------------------------------------------------------

    def webhook_of(self, account_id: str) -> dict[str, Any] | None:
        """The account's stored ``result_webhook`` (with its secret), or None."""
        doc = self.accounts.find_one({"_id": account_id}, {"result_webhook": 1})
        found = (doc or {}).get("result_webhook")
        return dict(found) if isinstance(found, Mapping) else None

    # -- the outbox -------------------------------------------------------------------------------------------

    def insert(self, *, evt_id: str, account_id: str, kind: str, subject_id: str, created_at: int,
               body: str) -> bool:
        """Write a new pending event, due now; False when an event with this id exists (it is left alone)."""
        doc = {"_id": evt_id, "account_id": account_id, "type": kind, "subject_id": subject_id,
               "created_at": created_at, "body": body, "state": PENDING, "attempts": 0, "next_at": created_at,
               "expires_at": created_at + DELIVERY_WINDOW_MS, "lease_until": 0, "last_error": None,
               "last_status": None, "delivered_at": None}
        try:
            self.coll.insert_one(doc)
        except DuplicateKeyError:
            return False
        return True

    def get(self, evt_id: str) -> dict[str, Any] | None:
        return self.coll.find_one({"_id": evt_id})

    def due(self, now_ms: int, *, limit: int = 100) -> list[dict[str, Any]]:
        """Up to ``limit`` pending events due at ``now_ms``, the longest due first."""
        query = {"state": {"$eq": PENDING}, "next_at": {"$lte": now_ms}}
        return list(self.coll.find(query, {"_id": 1, "next_at": 1}).sort("next_at", 1).limit(limit))

    def claim(self, event: Mapping[str, Any], *, token: str, lease_until: int) -> bool:
        """Take a due event (as :meth:`due` read it) for one delivery until ``lease_until``: one conditional update
        on the ``next_at`` read, which moves to the lease's end. Whether this call took it."""
        done = self.coll.update_one(
            {"_id": event["_id"], "state": {"$eq": PENDING}, "next_at": {"$eq": event["next_at"]}},
            {"$set": {"lease_token": token, "lease_until": lease_until, "next_at": lease_until}})
        return done.modified_count == 1

    def _held(self, evt_id: str, token: str) -> dict[str, Any]:
        return {"_id": evt_id, "state": {"$eq": PENDING}, "lease_token": {"$eq": token}}

    def delivered(self, evt_id: str, *, token: str, status: int, now_ms: int) -> bool:
        """Record a delivery the receiver accepted (while ``token`` holds the lease)."""
        done = self.coll.update_one(self._held(evt_id, token), {
            "$set": {"state": DELIVERED, "delivered_at": now_ms, "last_status": status, "last_error": None,
                     "last_attempt_at": now_ms, "lease_until": 0},
            "$inc": {"attempts": 1}, "$unset": {"lease_token": ""}})
        return done.modified_count == 1

    def failed(self, evt_id: str, *, token: str, status: int | None, error: str, now_ms: int,
               next_at: int | None) -> bool:
        """Record a failed delivery (while ``token`` holds the lease): due again at ``next_at``, or ``dead`` when
        None."""
        sets: dict[str, Any] = {"last_status": status, "last_error": error[:500], "last_attempt_at": now_ms,
                                "lease_until": 0}
        if next_at is None:
            sets["state"] = DEAD
        else:
            sets["next_at"] = next_at
        done = self.coll.update_one(self._held(evt_id, token), {"$set": sets, "$inc": {"attempts": 1},
                                                                 "$unset": {"lease_token": ""}})
        return done.modified_count == 1

    def redeliver(self, account_id: str, evt_id: str, *, now_ms: int) -> dict[str, Any] | None:
        """Make an event of the account pending again, due now, its tries counted from 0 and a fresh 24 hours;
        None when the account has no such event."""
        found = self.coll.find_one({"_id": evt_id, "account_id": account_id}, {"_id": 1})
        if found is None:
            return None
        self.coll.update_one({"_id": evt_id, "account_id": account_id}, {
            "$set": {"state": PENDING, "next_at": now_ms, "attempts": 0, "expires_at": now_ms + DELIVERY_WINDOW_MS,
                     "lease_until": 0, "redelivered_at": now_ms},
            "$unset": {"lease_token": ""}})
        return self.coll.find_one({"_id": evt_id}, _LIST_FIELDS)

    def page(self, account_id: str, *, state: str | None = None, before: Mapping[str, Any] | None = None,
             limit: int = 50) -> list[dict[str, Any]]:
        """The account's events, newest first (by ``created_at``, then id); ``before``: the last event of the
        previous page."""
        query: dict[str, Any] = {"account_id": {"$eq": account_id}}
        if state is not None:
            query["state"] = {"$eq": state}
        if before is not None:
            at = before["created_at"]
            query["$or"] = [{"created_at": {"$lt": at}}, {"created_at": {"$eq": at}, "_id": {"$lt": before["_id"]}}]
        cursor = self.coll.find(query, _LIST_FIELDS).sort([("created_at", DESCENDING), ("_id", DESCENDING)])
        return list(cursor.limit(limit))

    def of_account(self, account_id: str, evt_id: str) -> dict[str, Any] | None:
        """One event of the account (without its body), or None."""
        return self.coll.find_one({"_id": evt_id, "account_id": account_id}, _LIST_FIELDS)
