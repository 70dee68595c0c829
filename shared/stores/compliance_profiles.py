"""The operator's own compliance profiles (``PUT /compliance-profiles/{profile_id}``).

One document per profile in the ``compliance_profiles`` collection: the profile as validated
(:class:`shared.domain.shapes.ComplianceProfileShape`'s document, the JSON form of docs/compliance.md), under
``_id`` = its id, plus ``updated_at`` (ms, on the shared clock)::

    {_id: "cl-cobranza", id: "cl-cobranza", version: 2, name: ..., windows: [...], caps: [...], ..., updated_at}

An operator's profile with the id of a built-in one replaces it; any other id adds a profile.
:meth:`shared.domain.compliance.ProfileRegistry.install` takes :meth:`ComplianceProfileStore.all` as it is.
The collection is small and read whole: it needs no index besides ``_id``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pymongo.collection import Collection
from pymongo.database import Database

from shared.clock import Clock
from shared.stores.mongo import COMPLIANCE_PROFILES

#: Most operator profiles listed at once (far above any real number: the list is read whole).
MAX_PROFILES = 10_000


class ComplianceProfileStore:
    """The ``compliance_profiles`` collection.

    :param db: the MongoDB database.
    :param clock: time source (``updated_at`` on the shared clock).
    """

    def __init__(self, db: Database[dict[str, Any]], *, clock: Clock) -> None:
        self.coll: Collection[dict[str, Any]] = db[COMPLIANCE_PROFILES]
        self.clock = clock

    def put(self, doc: Mapping[str, Any]) -> bool:
        """Store the validated profile ``doc`` under its ``id`` (replacing one stored before); True when it is new."""
        profile_id = str(doc["id"])
        stored = {**{k: v for k, v in doc.items() if k not in ("_id", "updated_at")}, "_id": profile_id,
                  "updated_at": self.clock.now_ms()}
        result = self.coll.replace_one({"_id": profile_id}, stored, upsert=True)
        return result.upserted_id is not None

    def get(self, profile_id: str) -> dict[str, Any] | None:
        """The stored profile with this id, or None."""
        return self.coll.find_one({"_id": profile_id})

    def all(self) -> list[dict[str, Any]]:
        """Every stored profile, by id."""
        return list(self.coll.find({}).sort("_id", 1).limit(MAX_PROFILES))
