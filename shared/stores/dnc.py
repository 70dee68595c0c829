"""Do-not-call lists: numbers that are never dialed, for one account or for every account.

One document per (list, number) in the ``dnc`` collection::

    {_id: "<scope>|<E.164 number>", scope, number, reason, added_at, updated_at}

``scope`` is the account id (account ids cannot hold ``|`` or ``*``: see
:func:`shared.stores.accounts.validate_account_id`) or :data:`GLOBAL_SCOPE` (``*``) for the list every account
respects. Writes are upserts (adding a number twice keeps its first ``added_at`` and takes the newest
reason), so repeating a request is harmless. :meth:`DncStore.listed` answers, for an account and a
list of numbers, which are on its list or on the global one, in one query by ``_id``.

Numbers are normalised exactly like contacts' phones (:func:`shared.domain.phones.normalize_phone`,
``PHONE_DEFAULT_REGION`` for national formats), so a listed number matches the number a contact was
imported with. :func:`parse_numbers` and :func:`parse_csv` check a whole request before anything is
written: one bad row and nothing is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymongo import UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database

from shared.clock import Clock
from shared.config import Config
from shared.domain.phones import InvalidPhone, normalize_phone
from shared.domain.shapes import MAX_DNC_NUMBERS, MAX_DNC_REASON, DncShape, dnc_reason_problem, validate_shape
from shared.stores.accounts import validate_account_id
from shared.stores.contacts_import import csv_lines
from shared.stores.mongo import DNC

#: The scope of the list every account respects.
GLOBAL_SCOPE = "*"
#: How the global list is named in the API and in metrics.
GLOBAL_NAME = "global"
#: Numbers one request may add (JSON or CSV) (declared with :class:`shared.domain.shapes.DncShape`).
MAX_NUMBERS = MAX_DNC_NUMBERS
#: Longest reason kept, characters.
MAX_REASON = MAX_DNC_REASON
#: Upserts per ``bulk_write``.
WRITE_CHUNK = 1000
#: ``outcome`` of a job failed because every number of its contact is on a do-not-call list.
DNC_OUTCOME = "do_not_call"
#: Errors listed in a refused request (``errors_total`` counts them all).
MAX_ERRORS = 1000


def scope_of(account_id: str | None) -> str:
    """The list's scope: the validated account id, or :data:`GLOBAL_SCOPE` for None."""
    return GLOBAL_SCOPE if account_id is None else validate_account_id(account_id)


def list_name(scope: str) -> str:
    """How a scope is shown: the account id, or ``global``."""
    return GLOBAL_NAME if scope == GLOBAL_SCOPE else scope


def entry_id(scope: str, number: str) -> str:
    return f"{scope}|{number}"


@dataclass
class ParsedNumbers:
    """A request's numbers, normalised: ``entries`` ``(number, reason)`` in order without repeats, or
    ``errors`` (``{"index" | "line", "field", "message"}``) when any row is bad (then nothing is written)."""

    entries: list[tuple[str, str | None]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    errors_total: int = 0
    rows: int = 0

    def error(self, where: str, at: int, field_name: str, message: str) -> None:
        self.errors_total += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append({where: at, "field": field_name, "message": message})

    def add(self, raw: object, reason: object, *, where: str, at: int, field_name: str, region: str,
            seen: dict[str, int]) -> None:
        self.rows += 1
        if self.rows > MAX_NUMBERS:
            if self.rows == MAX_NUMBERS + 1:
                self.error(where, at, field_name, f"at most {MAX_NUMBERS} numbers per request")
            return
        problem = dnc_reason_problem(reason)
        if problem:
            self.error(where, at, "reason", problem)
            return
        try:
            number = normalize_phone(raw, region)
        except InvalidPhone as exc:
            self.error(where, at, field_name, exc.reason)
            return
        text = reason.strip() or None if isinstance(reason, str) else None
        if number in seen:
            self.entries[seen[number]] = (number, text or self.entries[seen[number]][1])
            return
        seen[number] = len(self.entries)
        self.entries.append((number, text))


def parse_numbers(numbers: object, reason: object = None, *, region: str) -> ParsedNumbers:
    """``{"numbers": [...], "reason": "..."}`` (:class:`shared.domain.shapes.DncShape`: its first problem is named, at
    ``index`` 0): each number normalised; bad ones named by ``index``."""
    parsed = ParsedNumbers()
    shape = validate_shape(DncShape, {"numbers": numbers, "reason": reason})
    if isinstance(shape, list):
        parsed.error("index", 0, *shape[0])
        return parsed
    seen: dict[str, int] = {}
    for index, raw in enumerate(shape.numbers):
        parsed.add(raw, reason, where="index", at=index, field_name=f"numbers[{index}]", region=region, seen=seen)
    return parsed


def parse_csv(lines: Iterable[bytes], *, region: str, reason: object = None) -> ParsedNumbers:
    """A CSV with a ``number`` column (``phone`` also accepted) and an optional ``reason`` column, read like
    the contacts CSV (UTF-8, a header, ``,``/``;``/tab detected); bad rows named by ``line`` (1 = header).

    ``reason`` is used for rows whose ``reason`` cell is empty.
    """
    parsed = ParsedNumbers()
    header, rows = csv_lines(lines)
    if header is None:
        parsed.error("line", 1, "header", "the CSV is empty: a header with a 'number' column is expected")
        return parsed
    names = [h.strip().lower() for h in header]
    number_col = next((names.index(n) for n in ("number", "phone") if n in names), None)
    if number_col is None:
        parsed.error("line", 1, "header", "no 'number' column")
        return parsed
    reason_col = names.index("reason") if "reason" in names else None
    seen: dict[str, int] = {}
    for line, row in rows:
        if isinstance(row, str):  # a line that could not be read
            parsed.rows += 1
            parsed.error("line", line, "row", row)
            continue
        if len(row) > len(names):
            parsed.rows += 1
            parsed.error("line", line, "row", f"has {len(row)} cells, the header has {len(names)}")
            continue
        cell = row[number_col].strip() if number_col < len(row) else ""
        why = row[reason_col].strip() if reason_col is not None and reason_col < len(row) else ""
        parsed.add(cell, why or reason, where="line", at=line, field_name="number", region=region, seen=seen)
    if not parsed.rows:
        parsed.error("line", 1, "body", "no numbers: one number per row after the header is expected")
    return parsed


class DncStore:
    """The ``dnc`` collection.

    :param db: the MongoDB database.
    :param clock: time source (``added_at`` on the shared clock).
    """

    def __init__(self, db: Database[dict[str, Any]], *, clock: Clock, config: Config) -> None:
        self.coll: Collection[dict[str, Any]] = db[DNC]
        self.clock = clock
        self.config = config

    def add(self, scope: str, entries: Sequence[tuple[str, str | None]], *,
            call_id: str | None = None) -> dict[str, int]:
        """Upsert ``(number, reason)`` pairs (numbers already normalised) into the list ``scope``.

        Returns ``{"added": new numbers, "updated": numbers already listed}``. A number added again keeps its
        first ``added_at``; a reason given replaces the stored one. ``call_id``: the call in which the person asked
        not to be called (an opt-out), kept with each entry.
        """
        now = self.clock.now_ms()
        added = updated = 0
        for start in range(0, len(entries), WRITE_CHUNK):
            ops = []
            for number, reason in entries[start:start + WRITE_CHUNK]:
                fields: dict[str, Any] = {"updated_at": now}
                if call_id:
                    fields["call_id"] = call_id
                if reason:
                    fields["reason"] = reason[:MAX_REASON]
                ops.append(UpdateOne({"_id": entry_id(scope, number)},
                                     {"$set": fields, "$setOnInsert": {"scope": scope, "number": number,
                                                                       "added_at": now}}, upsert=True))
            if ops:
                result = self.coll.bulk_write(ops, ordered=True)
                added += result.upserted_count
                updated += len(ops) - result.upserted_count
        return {"added": added, "updated": updated}

    def remove(self, scope: str, number: str) -> bool:
        """Take ``number`` off the list ``scope``; False when it was not on it."""
        return self.coll.delete_one({"_id": entry_id(scope, number)}).deleted_count == 1

    def entries(self, account_id: str | None, numbers: Iterable[str]) -> list[dict[str, Any]]:
        """The entries of ``numbers`` on the account's list and on the global one (one query)."""
        wanted = sorted(set(numbers))
        if not wanted:
            return []
        scopes = [GLOBAL_SCOPE] if account_id is None else [account_id, GLOBAL_SCOPE]
        ids = [entry_id(s, n) for s in scopes for n in wanted]
        return list(self.coll.find({"_id": {"$in": ids}}))

    def listed(self, account_id: str | None, numbers: Iterable[str]) -> frozenset[str]:
        """Which of ``numbers`` the account may not call (its list or the global one), in one query."""
        return frozenset(str(d["number"]) for d in self.entries(account_id, numbers))

    def page(self, scope: str, *, after: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The list ``scope`` by number, ``limit`` entries after ``after``."""
        query: dict[str, Any] = {"scope": scope}
        if after:
            query["number"] = {"$gt": after}
        return list(self.coll.find(query).sort("number", 1).limit(limit))

    def sizes(self) -> dict[str, int]:
        """Numbers per list (scope -> count)."""
        rows = self.coll.aggregate([{"$group": {"_id": "$scope", "n": {"$sum": 1}}}])
        return {str(r["_id"]): int(r["n"]) for r in rows}


def entry_view(doc: Mapping[str, Any], iso: Any) -> dict[str, Any]:
    """An entry as the API shows it (``iso`` formats the instants)."""
    view = {"list": list_name(str(doc.get("scope"))), "number": doc.get("number"), "reason": doc.get("reason"),
            "added_at": iso(doc.get("added_at")), "updated_at": iso(doc.get("updated_at"))}
    if doc.get("call_id"):
        view["call_id"] = doc["call_id"]
    return view
