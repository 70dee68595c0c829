"""The batch store: campaigns, their call_settings and their status.

Every write validates what it stores (call_settings parsed once, through
:func:`~shared.domain.calling_window.validate_call_settings`) and,
after MongoDB accepted it, calls ``on_change(batch_id)``: the process wires that to
:func:`shared.cache.invalidation.publish_invalidation` so every process's batch cache drops the entry.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pymongo import ReturnDocument
from pymongo.collection import Collection
from pymongo.database import Database

from shared.clock import Clock
from shared.config import Config
from shared.domain import states
from shared.domain.call_settings import CallSettings
from shared.domain.shapes import BATCH_EDITABLE, MAX_BATCH_TEXT, BatchShape, validate_shape
from shared.errors import NotFound, ValidationError
from shared.stores.mongo import BATCHES, new_id, parse_id

#: Longest batch name, characters (declared by :class:`shared.domain.shapes.BatchShape`).
MAX_NAME = MAX_BATCH_TEXT
#: Fields an operator may set on create or update.
EDITABLE = BATCH_EDITABLE

OnChange = Callable[[str], None]


class BatchStore:
    """Batches in the ``batches`` collection.

    :param on_change: called with the batch id after every successful write (cache invalidation).
    """

    def __init__(self, db: Database[dict[str, Any]], *, clock: Clock, config: Config,
                 on_change: OnChange | None = None) -> None:
        self.coll: Collection[dict[str, Any]] = db[BATCHES]
        self.clock = clock
        self.config = config
        self.on_change = on_change

    def _changed(self, batch_id: str) -> None:
        if self.on_change is not None:
            self.on_change(batch_id)

    def validate(self, data: Mapping[str, Any], *, partial: bool = False) -> list[tuple[str, str]]:
        """``(field, message)`` for every problem in a create (or, ``partial``, an update) body."""
        return self.check(data, partial=partial)[0]

    def check(self, data: Mapping[str, Any], *, partial: bool = False,
              call_settings: CallSettings | None = None) -> tuple[list[tuple[str, str]], CallSettings | None]:
        """Every problem in a create (or, ``partial``, an update) body, and its call_settings parsed (None when
        absent, null or invalid).

        Validated by :class:`shared.domain.shapes.BatchShape` (its fields only: the routes name unknown fields).

        :param call_settings: the body's call_settings already parsed at the door; then they are not parsed again.
        """
        known = {name: data[name] for name in BatchShape.model_fields if name in data}
        shape = validate_shape(BatchShape, known, context={"config": self.config, "partial": partial,
                                                           "present": frozenset(data), "call_settings": call_settings})
        if isinstance(shape, list):
            return shape, None
        settings: CallSettings | None = shape.call_settings
        return [], settings

    def create(self, data: Mapping[str, Any], *, call_settings: CallSettings | None = None,
               legacy_id: str | None = None) -> dict[str, Any]:
        """Insert an ``active`` batch; :class:`ValidationError` lists every bad field.

        :param call_settings: ``data``'s call_settings already parsed at the door (see :meth:`check`).
        :param legacy_id: the id of the batch this one was imported from (unique: a second import of the same
            batch raises ``DuplicateKeyError``; :meth:`by_legacy_id` finds it).
        """
        errors, settings = self.check(data, call_settings=call_settings)
        if errors:
            raise ValidationError(errors)
        now = self.clock.now_ms()
        doc: dict[str, Any] = {
            "_id": new_id(),
            "account_id": data["account_id"].strip(),
            "name": data["name"].strip(),
            "agent_id": data.get("agent_id") or self.config.retell_agent_id,
            "from_number": data.get("from_number") or self.config.call_from_number,
            "status": states.BATCH_ACTIVE,
            "created_at": now,
            "updated_at": now,
        }
        if doc["from_number"]:
            from shared.domain.phones import normalize_phone

            doc["from_number"] = normalize_phone(doc["from_number"], self.config.phone_default_region)
        if settings is not None:
            doc["call_settings"] = settings.to_document()
        if legacy_id is not None:
            doc["legacy_id"] = legacy_id
        self.coll.insert_one(doc)
        return doc

    def by_legacy_id(self, legacy_id: str) -> dict[str, Any] | None:
        """The batch imported from the original worker's batch ``legacy_id``, or None."""
        return self.coll.find_one({"legacy_id": {"$eq": legacy_id}})

    def get(self, batch_id: str) -> dict[str, Any] | None:
        return self.coll.find_one({"_id": parse_id(batch_id, "batch id")})

    def get_with_active(self, batch_id: str, limit: int) -> list[dict[str, Any]]:
        """In ONE query, the batch ``batch_id`` (whatever its status) and other ``active`` batches, at most
        ``limit`` documents in all, newest first (what a process's batch cache loads on a cold miss).

        The batch itself is missing from the answer when it does not exist, or when ``limit`` documents
        came back without it (more than ``limit`` active batches): then read it with :meth:`get`.
        """
        if limit < 1:
            raise ValueError("limit must be >= 1")
        query = {"$or": [{"_id": parse_id(batch_id, "batch id")}, {"status": states.BATCH_ACTIVE}]}
        return list(self.coll.find(query).sort("_id", -1).limit(limit))

    def require(self, batch_id: str) -> dict[str, Any]:
        found = self.get(batch_id)
        if found is None:
            raise NotFound(f"batch {batch_id} not found")
        return found

    def list(self, *, status: str | None = None, account_id: str | None = None, limit: int = 100,
             skip: int = 0) -> list[dict[str, Any]]:
        query: dict[str, Any] = {}
        if status:
            query["status"] = status
        if account_id:
            query["account_id"] = account_id
        return list(self.coll.find(query).sort("created_at", -1).skip(skip).limit(limit))

    def active_ids(self) -> builtins.list[str]:
        return [d["_id"] for d in self.coll.find({"status": states.BATCH_ACTIVE}, {"_id": 1})]

    def active_by_account(self) -> dict[str, builtins.list[str]]:
        """Ids of the active batches whose settings are valid, per account."""
        by_account: dict[str, list[str]] = {}
        for doc in self.coll.find({"status": states.BATCH_ACTIVE, "settings_error": {"$exists": False}},
                                  {"_id": 1, "account_id": 1}):
            by_account.setdefault(doc["account_id"], []).append(doc["_id"])
        return by_account

    def counts_by_status(self) -> dict[str, int]:
        """Batches per status (every status present, zeros included)."""
        out = dict.fromkeys(states.BATCH_STATES, 0)
        for row in self.coll.aggregate([{"$group": {"_id": "$status", "n": {"$sum": 1}}}]):
            out[str(row["_id"])] = int(row["n"])
        return out

    def with_status(self, statuses: Iterable[str]) -> builtins.list[dict[str, Any]]:
        """The batches in one of ``statuses``: ``_id`` and ``account_id`` of each."""
        return list(self.coll.find({"status": {"$in": list(statuses)}}, {"_id": 1, "account_id": 1}))

    def update(self, batch_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Change name, agent, caller id or call_settings (validated, whole-value replacement)."""
        unknown = [k for k in changes if k not in EDITABLE]
        errors = [(k, f"cannot be changed (editable: {', '.join(EDITABLE)})") for k in unknown]
        problems, settings = self.check(changes, partial=True)
        errors += problems
        errors += [("name", "cannot be null")] if "name" in changes and changes["name"] is None else []
        if errors:
            raise ValidationError(errors)
        fields: dict[str, Any] = {k: v for k, v in changes.items() if k != "call_settings"}
        unset: dict[str, str] = {}
        if "call_settings" in changes:
            if settings is None:
                unset["call_settings"] = ""
            else:
                fields["call_settings"] = settings.to_document()
            unset["settings_error"] = ""
        fields["updated_at"] = self.clock.now_ms()
        update: dict[str, Any] = {"$set": fields}
        if unset:
            update["$unset"] = unset
        doc = self.coll.find_one_and_update({"_id": parse_id(batch_id, "batch id")}, update,
                                            return_document=ReturnDocument.AFTER)
        if doc is None:
            raise NotFound(f"batch {batch_id} not found")
        self._changed(doc["_id"])
        return doc

    def set_status(self, batch_id: str, status: str, *,
                   expected: tuple[str, ...] | None = None) -> dict[str, Any] | None:
        """Move the batch to ``status`` when it is in one of ``expected`` (None: whichever of ``active``, ``paused``
        and ``held`` may move there).

        Every move must be one of :data:`shared.domain.states.BATCH_TRANSITIONS`: an ``expected`` status that may not
        move to ``status`` raises :class:`ValueError` before anything is written.
        Leaving ``held`` drops ``held_reason`` and ``held_at``. Cancelling writes ``cancelled_at`` and the mark
        ``cancel_sweep`` (the same instant), which keeps the batch in maintenance's sweep (:meth:`cancelled_to_sweep`)
        until none of its jobs is open.
        """
        if status not in states.BATCH_STATES:
            raise ValueError(f"unknown batch status {status!r}")
        if expected is None:
            allowed: tuple[str, ...] = tuple(s for s in (states.BATCH_ACTIVE, states.BATCH_PAUSED, states.BATCH_HELD)
                                             if states.can_move_batch(s, status))
        else:
            refused = [s for s in expected if not states.can_move_batch(s, status)]
            if refused:
                raise ValueError(f"a batch cannot move from {' or '.join(refused)} to {status}")
            allowed = expected
        now = self.clock.now_ms()
        update: dict[str, Any] = {"$set": {"status": status, "updated_at": now}}
        if status == states.BATCH_ACTIVE:
            update["$set"]["resumed_at"] = now
        if status == states.BATCH_CANCELLED:
            update["$set"].update(cancelled_at=now, cancel_sweep=now)
        if status != states.BATCH_HELD:
            update["$unset"] = {"held_reason": "", "held_at": ""}
        doc = self.coll.find_one_and_update(
            {"_id": parse_id(batch_id, "batch id"), "status": {"$in": list(allowed)}}, update,
            return_document=ReturnDocument.AFTER,
        )
        if doc is not None:
            self._changed(doc["_id"])
        return doc

    def cancelled_to_sweep(self, *, limit: int = 1000) -> builtins.list[str]:
        """Ids of the cancelled batches that may still have a job open (``cancel_sweep`` set: a sparse field, found
        by range), oldest cancel first."""
        return [d["_id"] for d in self.coll.find({"cancel_sweep": {"$gt": 0}}, {"_id": 1, "cancel_sweep": 1})
                .sort("cancel_sweep", 1).limit(limit)]

    def swept(self, batch_id: str) -> None:
        """The cancelled batch has no job open any more: it leaves the sweep (a job of a cancelled batch is never
        reopened, and contacts are never imported into one)."""
        self.coll.update_one({"_id": batch_id, "status": states.BATCH_CANCELLED}, {"$unset": {"cancel_sweep": ""}})

    def hold(self, reason: str, *, batch_id: str | None = None, seen_at: int | None = None) -> builtins.list[str]:
        """``active -> held`` with ``held_reason``: one batch, or (``batch_id`` None) every active batch.

        :param seen_at: when the refusal's request was sent (shared ms): a batch resumed since then is left
            active, so that a late answer to a request sent before an operator fixed the cause does not
            hold the batch again.
        Returns the ids of the batches held by this call (each is announced to every process's cache).
        """
        base: dict[str, Any] = {"status": states.BATCH_ACTIVE}
        if batch_id is not None:
            base["_id"] = parse_id(batch_id, "batch id")

        def matching(extra: dict[str, Any]) -> dict[str, Any]:
            query = {**base, **extra}
            if seen_at is None:
                return query
            # Inside $and: the embedded server ignores a top-level $or in an update's filter.
            return {"$and": [query, {"$or": [{"resumed_at": {"$exists": False}},
                                             {"resumed_at": {"$lte": seen_at}}]}]}

        ids = [d["_id"] for d in self.coll.find(matching({}), {"_id": 1})]
        held = []
        now = self.clock.now_ms()
        for one in ids:
            result = self.coll.update_one(matching({"_id": one}),
                                          {"$set": {"status": states.BATCH_HELD, "held_reason": reason[:500],
                                                    "held_at": now, "updated_at": now}})
            if result.modified_count:
                held.append(one)
                self._changed(one)
        return held

    def record_settings_error(self, batch_id: str, message: str | None) -> None:
        """Show (or clear) why a stored batch's settings no longer validate."""
        update = {"$set": {"settings_error": message}} if message else {"$unset": {"settings_error": ""}}
        if self.coll.update_one({"_id": batch_id}, update).modified_count:
            self._changed(batch_id)
