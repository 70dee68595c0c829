"""The original worker's MongoDB database, read only: its ``batches`` and ``jobs`` collections.

Nothing here writes to the source. Jobs are read with one cursor over the whole collection, in ``_id`` order, a
chunk at a time: the original worker wrote ``batch_id`` as an ObjectId, and the embedded server (nx-27017) matches no
ObjectId value in an equality filter outside ``_id``, so a filter on it would find nothing there; the importer keeps
the jobs of the batches it imports as they come.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, MongoClient

#: Jobs read per round trip.
SOURCE_CHUNK = 1000


class LegacySource:
    """The original worker's ``batches`` and ``jobs`` at ``uri`` / ``db_name`` (read only).

    :param uri: its MongoDB connection string.
    :param db_name: its database.
    """

    def __init__(self, uri: str, db_name: str) -> None:
        self.client: MongoClient[dict[str, Any]] = MongoClient(uri, serverSelectionTimeoutMS=10_000)
        self.db = self.client[db_name]

    def batches(self, ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The legacy batches (those of ``ids`` when given: ObjectId hex strings or plain string ids)."""
        if not ids:
            return list(self.db["batches"].find({}).sort("_id", ASCENDING))
        wanted: list[Any] = []
        for ident in ids:
            wanted.append(ident)
            if ObjectId.is_valid(ident):
                wanted.append(ObjectId(ident))
        return list(self.db["batches"].find({"_id": {"$in": wanted}}).sort("_id", ASCENDING))

    def count_jobs(self) -> int:
        """How many jobs the source holds (for the progress line)."""
        return int(self.db["jobs"].estimated_document_count())

    def jobs(self, *, chunk: int = SOURCE_CHUNK) -> Iterator[dict[str, Any]]:
        """Every legacy job, in ``_id`` order, read ``chunk`` at a time (one cursor; memory holds one chunk)."""
        cursor = self.db["jobs"].find({}, batch_size=chunk).sort("_id", ASCENDING)
        try:
            yield from cursor
        finally:
            cursor.close()

    def close(self) -> None:
        self.client.close()
