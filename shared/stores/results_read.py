"""The reads behind results leaving outdial: a batch's jobs for an export, in id order and a chunk at a time, the
keys its columns need, and a person's attempts across an account's batches for the contact log.

An export reads its jobs through one cursor sorted by ``_id``: the server hands them over ``chunk`` at a time, and
this process holds one chunk (nx-27017 0.8.1 holds the whole answer on its side until it is read). Not one query
per chunk with ``_id > last``: nx-27017 0.8.1 evaluates a range on ``_id`` in Python over every document of the
collection (measured: seconds per query at 100,000 jobs), while an equality on ``batch_id`` and a sort on ``_id``
are SQL. The contact log reads attempts by the indexes
``account_id, to_number, created_at`` and ``account_id, external_id, created_at``, newest first.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from pymongo.collection import Collection
from pymongo.cursor import Cursor
from pymongo.database import Database

from shared.domain.results import read_analysis
from shared.domain.results_export import MAX_KEYS, ExportKeys
from shared.stores.mongo import ATTEMPTS, BATCHES, JOBS, projected

#: Jobs read per chunk of an export.
EXPORT_CHUNK = 1000
#: What the contact log reads of an attempt.
LOG_FIELDS = ("job_id", "batch_id", "to_number", "external_id", "state", "outcome", "created_at", "started_at",
              "duration_ms", "call_id", "charge")


def export_filter(batch_id: str, *, status: str | None = None, updated_since: int | None = None) -> dict[str, Any]:
    """The jobs of an export: the batch's, of one ``status``, changed at or after ``updated_since`` (ms)."""
    query: dict[str, Any] = {"batch_id": {"$eq": batch_id}}
    if status is not None:
        query["status"] = {"$eq": status}
    if updated_since is not None:
        query["updated_at"] = {"$gte": int(updated_since)}
    return query


class JobChunks:
    """A batch's jobs in id order, a chunk at a time (:meth:`next_chunk` from any thread, one call at a time);
    :meth:`close` ends the read early."""

    def __init__(self, cursor: Cursor[dict[str, Any]], chunk: int) -> None:
        self._cursor = cursor
        self._chunk = chunk
        self.done = False

    def next_chunk(self) -> list[dict[str, Any]]:
        """The next jobs (at most the chunk size); empty once every job was read."""
        out: list[dict[str, Any]] = []
        if self.done:
            return out
        for doc in self._cursor:
            out.append(doc)
            if len(out) >= self._chunk:
                return out
        self.close()
        return out

    def close(self) -> None:
        self.done = True
        self._cursor.close()


class ResultsRead:
    """Reads of ``jobs``, ``attempts`` and ``batches`` for exports and the contact log."""

    def __init__(self, db: Database[dict[str, Any]]) -> None:
        self.jobs: Collection[dict[str, Any]] = db[JOBS]
        self.attempts: Collection[dict[str, Any]] = db[ATTEMPTS]
        self.batches: Collection[dict[str, Any]] = db[BATCHES]

    # -- exports ----------------------------------------------------------------------------------------------

    def export_keys(self, batch_id: str, *, status: str | None = None, updated_since: int | None = None,
                    limit: int = MAX_KEYS, chunk: int | None = None) -> ExportKeys:
        """The ``custom_analysis_data`` keys and variable names of the jobs an export holds: one pass that reads
        only the analysis (stored as JSON text) and the variables, holding nothing but the keys (at most ``limit``
        of each)."""
        keys = ExportKeys(limit=limit)
        fields = {"contact.variables": 1, "result.analysis": 1}
        cursor = self.jobs.find(export_filter(batch_id, status=status, updated_since=updated_since), fields,
                                batch_size=chunk or EXPORT_CHUNK)
        try:
            for doc in cursor:
                analysis = read_analysis(projected(doc, "result.analysis")) or {}
                keys.add(analysis.get("custom_analysis_data"), projected(doc, "contact.variables"))
        finally:
            cursor.close()
        return keys

    def export_jobs(self, batch_id: str, *, status: str | None = None, updated_since: int | None = None,
                    chunk: int | None = None) -> JobChunks:
        """The jobs an export holds, in id order, read ``chunk`` (default :data:`EXPORT_CHUNK`) at a time."""
        size = chunk or EXPORT_CHUNK
        # The whole job: what the export does not show is a few small fields, and nx-27017 0.8.1 applies a
        # projection in Python to every document (measured: the first chunk of 50,000 jobs took 3.1 s with one,
        # 1.1 s without).
        cursor = self.jobs.find(export_filter(batch_id, status=status, updated_since=updated_since),
                                batch_size=size).sort("_id", 1)
        return JobChunks(cursor, size)

    # -- the contact log --------------------------------------------------------------------------------------

    def contact_attempts(self, account_id: str, *, number: str | None = None, external_id: str | None = None,
                         before: tuple[int, str] | None = None, limit: int) -> list[dict[str, Any]]:
        """The account's attempts to one person (a ``number``, or an ``external_id``), newest first (by creation,
        then id): the first ``limit`` older than ``before`` (``(created_at ms, attempt id)`` of the last one
        shown). Two indexed queries at most: the attempts created in the same millisecond as ``before`` (few), and
        the older ones."""
        if (number is None) == (external_id is None):
            raise ValueError("give exactly one of number and external_id")
        person: dict[str, Any] = {"account_id": {"$eq": account_id}}
        if number is not None:
            person["to_number"] = {"$eq": number}
        else:
            person["external_id"] = {"$eq": external_id}
        fields = dict.fromkeys(LOG_FIELDS, 1)
        order = [("created_at", -1), ("_id", -1)]
        out: list[dict[str, Any]] = []
        if before is not None:
            at, last_id = before
            same = self.attempts.find({**person, "created_at": {"$eq": at}}, fields).sort(order)
            out = [d for d in same if str(d["_id"]) < last_id][:limit]
            query = {**person, "created_at": {"$lt": at}}
        else:
            query = person
        if len(out) < limit:
            out.extend(self.attempts.find(query, fields).sort(order).limit(limit - len(out)))
        return out

    def batch_names(self, batch_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """``name`` and ``call_settings`` of each batch, by id."""
        if not batch_ids:
            return {}
        rows = self.batches.find({"_id": {"$in": list(batch_ids)}}, {"name": 1, "call_settings": 1})
        return {str(d["_id"]): d for d in rows}

    def job_contacts(self, job_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The ``contact`` of each job, by id."""
        if not job_ids:
            return {}
        rows = self.jobs.find({"_id": {"$in": list(job_ids)}}, {"contact": 1})
        return {str(d["_id"]): d.get("contact") or {} for d in rows}


def iter_chunks(chunks: JobChunks) -> Iterator[list[dict[str, Any]]]:
    """Every chunk of ``chunks`` in turn (for callers that read in one thread)."""
    while True:
        chunk = chunks.next_chunk()
        if not chunk:
            return
        yield chunk
