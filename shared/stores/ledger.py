"""The ledger: one immutable entry for every movement of an account's balance.

Every entry names its ``account_id``, its ``kind`` (``reserve``, ``charge``, ``release``,
``topup``, ``adjustment``), the storage ``unit`` it counts in (``second`` or ``millicredit``) and
two integer deltas: ``balance_delta`` (what the account owns) and ``reserved_delta`` (what calls
in progress hold). ``available`` is ``balance - reserved``. The invariant, per account and unit:

    balance  == sum(balance_delta)    reserved == sum(reserved_delta)

over the entries of the account's current unit (entries of an earlier plan's unit sum to 0: a
plan change closes the old unit with an adjustment).

Entries are written *after* the account update that makes them true, and that update carries the
entry inside the account document until the entry is in this collection (the account's
``journal``; for a reservation, the hold itself). So at every instant
``balance == sum(ledger + journal + unposted holds)`` (each entry once), and ``balance == sum(ledger)`` once
:meth:`shared.stores.billing.Billing.repair` has posted what a dead process left behind
(docs/billing.md, "Ledger and invariant"). :func:`check_account` verifies both.

Ids are deterministic where the entry belongs to a call (``reserve:<attempt>:<hold token>``,
``release:<attempt>:<hold token>``, and ``charge:<attempt>``, of which an attempt has at most
one), so writing one twice is a duplicate-key no-op.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError

from shared.errors import NotFound
from shared.stores.mongo import ACCOUNTS, LEDGER

KIND_RESERVE = "reserve"
KIND_CHARGE = "charge"
KIND_RELEASE = "release"
KIND_TOPUP = "topup"
KIND_ADJUSTMENT = "adjustment"
KINDS = (KIND_RESERVE, KIND_CHARGE, KIND_RELEASE, KIND_TOPUP, KIND_ADJUSTMENT)
#: Duplicate-key error code.
DUPLICATE_KEY = 11000


def reserve_entry_id(key: str, token: str) -> str:
    """Id of the reservation entry of one hold (``key`` = the attempt's hold key, ``token`` = the hold's)."""
    return f"reserve:{key}:{token}"


def charge_entry_id(key: str) -> str:
    """Id of the attempt's charge: one per attempt, ever, so a call can never be charged twice."""
    return f"charge:{key}"


def release_entry_id(key: str, token: str) -> str:
    """Id of the entry that gave back one hold of the attempt without charging it."""
    return f"release:{key}:{token}"


def reserve_entry(account_id: str, key: str, hold: Mapping[str, Any]) -> dict[str, Any]:
    """The ``reserve`` entry a hold stands for (a hold carries every field of its entry)."""
    return {**hold, "_id": reserve_entry_id(key, hold["token"]), "account_id": account_id, "kind": KIND_RESERVE,
            "balance_delta": 0, "reserved_delta": int(hold["amount"])}


def journal_entry(entry_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """A journal value (stored under ``journal.<id>`` of the account) as a ledger entry."""
    return {**body, "_id": entry_id}


def post(db: Database[dict[str, Any]], entries: Iterable[Mapping[str, Any]]) -> int:
    """Insert ``entries``; those already present (same ``_id``) are left alone. Returns how many were new."""
    docs = [dict(e) for e in entries]
    if not docs:
        return 0
    if len(docs) == 1:
        try:
            db[LEDGER].insert_one(docs[0])
        except DuplicateKeyError:
            return 0
        return 1
    try:
        db[LEDGER].insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise
        return len(docs) - len(errors)
    return len(docs)


def get_entry(db: Database[dict[str, Any]], entry_id: str) -> dict[str, Any] | None:
    return db[LEDGER].find_one({"_id": entry_id})


def for_attempt(db: Database[dict[str, Any]], attempt_id: str) -> list[dict[str, Any]]:
    """Every entry of one attempt (its reservations, its charge, its releases)."""
    return list(db[LEDGER].find({"attempt_id": attempt_id}))


def entries(db: Database[dict[str, Any]], account_id: str, *, limit: int = 100) -> list[dict[str, Any]]:
    """The account's newest ``limit`` entries, newest first (for the admin API)."""
    found = list(db[LEDGER].find({"account_id": account_id}).sort("at", -1).limit(limit))
    return found


def sums(db: Database[dict[str, Any]], account_id: str) -> dict[str | None, tuple[int, int]]:
    """``{unit: (sum of balance_delta, sum of reserved_delta)}`` over the account's posted entries."""
    rows = db[LEDGER].aggregate([
        {"$match": {"account_id": account_id}},
        {"$group": {"_id": "$unit", "balance": {"$sum": "$balance_delta"}, "reserved": {"$sum": "$reserved_delta"}}},
    ])
    return {row["_id"]: (int(row["balance"]), int(row["reserved"])) for row in rows}


@dataclass
class LedgerCheck:
    """What :func:`check_account` found.

    :param balance: the account's ``balance`` (storage units), likewise ``reserved``, ``available``.
    :param ledger_balance: sum of the posted entries' ``balance_delta`` in the account's unit.
    :param ledger_reserved: sum of the posted entries' ``reserved_delta`` in the account's unit.
    :param unposted: entries still only in the account document (journal, holds) — a process
        died between its two writes, or is between them right now; ``Billing.repair`` posts them.
    :param problems: every broken rule, in words; empty when the invariant holds.
    """

    account_id: str
    unit: str | None
    balance: int
    reserved: int
    available: int
    ledger_balance: int
    ledger_reserved: int
    unposted: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The invariant holds counting the entries not yet posted (true at every instant)."""
        return not self.problems

    @property
    def posted(self) -> bool:
        """The invariant holds on the ledger alone: ``balance == sum(entries)`` with nothing left to post."""
        return self.ok and self.unposted == 0


def _unposted(db: Database[dict[str, Any]], account: Mapping[str, Any]) -> tuple[dict[str | None, list[int]], int]:
    """Deltas per unit of the journal entries and holds whose entry is not in the ledger."""
    journal: Mapping[str, Any] = account.get("journal") or {}
    holds: Mapping[str, Any] = account.get("holds") or {}
    ids = list(journal) + [reserve_entry_id(k, h.get("token", "")) for k, h in holds.items()]
    posted = {d["_id"] for d in db[LEDGER].find({"_id": {"$in": ids}}, {"_id": 1})} if ids else set()
    extra: dict[str | None, list[int]] = {}
    count = 0
    for entry_id, body in journal.items():
        if entry_id not in posted:
            row = extra.setdefault(body.get("unit"), [0, 0])
            row[0] += int(body.get("balance_delta", 0))
            row[1] += int(body.get("reserved_delta", 0))
            count += 1
    for key, hold in holds.items():
        if reserve_entry_id(key, hold.get("token", "")) not in posted:
            extra.setdefault(hold.get("unit"), [0, 0])[1] += int(hold.get("amount", 0))
            count += 1
    return extra, count


def check_account(db: Database[dict[str, Any]], account_id: str) -> LedgerCheck:
    """Verify the account against its ledger (for tests and operators).

    Reads the account, then the ledger: run it on an account with no operation in flight, or
    expect a transient mismatch. A clean result means: per unit, the balance and the reserved
    amount equal the sums of the entries (counting those not yet posted), ``available ==
    balance - reserved``, the holds add up to ``reserved``, and nothing is negative.

    :raises NotFound: no such account.
    """
    account = db[ACCOUNTS].find_one({"_id": account_id})
    if account is None:
        raise NotFound(f"account {account_id!r} not found")
    unit: str | None = account.get("unit")
    balance, reserved, available = (int(account.get(k, 0) or 0) for k in ("balance", "reserved", "available"))
    posted = sums(db, account_id)
    extra, count = _unposted(db, account)
    check = LedgerCheck(account_id=account_id, unit=unit, balance=balance, reserved=reserved, available=available,
                        ledger_balance=posted.get(unit, (0, 0))[0], ledger_reserved=posted.get(unit, (0, 0))[1],
                        unposted=count)
    for u in sorted(set(posted) | set(extra) | {unit}, key=str):
        want = (balance, reserved) if u == unit else (0, 0)
        got = [a + b for a, b in zip(posted.get(u, (0, 0)), extra.get(u, [0, 0]), strict=True)]
        if got[0] != want[0]:
            check.problems.append(f"unit {u}: balance {want[0]} != sum of balance_delta {got[0]}")
        if got[1] != want[1]:
            check.problems.append(f"unit {u}: reserved {want[1]} != sum of reserved_delta {got[1]}")
    if available != balance - reserved:
        check.problems.append(f"available {available} != balance {balance} - reserved {reserved}")
    held = sum(int(h.get("amount", 0)) for h in (account.get("holds") or {}).values())
    if held != reserved:
        check.problems.append(f"holds add up to {held}, reserved is {reserved}")
    if int(account.get("holds_n", 0) or 0) != len(account.get("holds") or {}):
        check.problems.append(f"holds_n {account.get('holds_n')} != {len(account.get('holds') or {})} holds")
    if balance < 0 or available < 0:
        check.problems.append(f"overdrawn: balance {balance}, available {available}")
    return check
