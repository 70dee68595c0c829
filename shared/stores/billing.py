"""Plans and balance: reserve before dialing, settle by the real duration, never overdraw.

Three plans (:mod:`shared.stores.accounts`): ``unlimited`` (no balance), ``minutes`` (a balance of
seconds) and ``credits`` (a balance of milli-credits and a price per minute). Before a dial the
pipeline calls :meth:`Billing.reserve`: the most the call can cost (its ``max_call_duration``
at the plan's price and granularity) moves from ``available`` to ``reserved`` in one conditional
update of the account (``available >= cost`` in the filter), so concurrent dials on any number
of processes can never hold more than the balance. When the balance covers the call but the
available amount does not, the rest is *held by calls in progress* (``HELD_BY_CALLS``): capacity
that comes back as they end, not an insufficient balance. After the call :meth:`Billing.settle`
charges the billable duration and releases the rest; :meth:`Billing.release` gives everything
back when the call was never placed. Each is idempotent per attempt, and each returns the
account after its write, so a settle or release that makes the available amount cover a contact
parked in ``waiting_balance`` (the account's ``waiting_balance`` marker) puts it back to pending
without any query when no contact waits.

Each open reservation is a *hold* in the account document (``holds.<attempt>``: amount, token,
price and granularity used), so the account alone says what is reserved and by whom. Every
account update that moves money also writes the ledger entry it implies into the account
(``journal.<entry id>``, or the hold for a reservation) in the same atomic write; the entry is
then inserted in the ``ledger`` collection and dropped from the journal. A process that dies
between the two writes leaves the entry in the account, where :meth:`Billing.repair` finds and
posts it. See docs/billing.md.
"""

from __future__ import annotations

import hashlib
import re
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypedDict

from pymongo import ReturnDocument
from pymongo.collection import Collection
from pymongo.database import Database

from shared import metrics
from shared.clock import Clock
from shared.config import Config
from shared.domain.reasons import text
from shared.errors import NotFound, StoreError, ValidationError
from shared.logs import event, get_logger
from shared.stores import ledger
from shared.stores.accounts import (
    GRANULARITY_MINUTE,
    PLAN_CREDITS,
    PLAN_MINUTES,
    PLAN_UNLIMITED,
    Plan,
    from_storage_units,
    to_storage_units,
)
from shared.stores.mongo import ACCOUNTS, LEDGER, new_id

if TYPE_CHECKING:
    from shared.stores.jobs import JobStore

log = get_logger(__name__)

#: Journal entries removed by piggy-backing on one account write.
DEFAULT_CLEANUP_BATCH = 32
#: Posted journal entries a process keeps to remove later, per account, before it removes them at once.
DEFAULT_CLEANUP_BACKLOG = 128
#: Reads + conditional writes tried before a reservation or an admin write gives up on a busy account.
DEFAULT_WRITE_ATTEMPTS = 5
#: Default age (simulated ms) after which :meth:`Billing.repair` posts what a process left unposted.
DEFAULT_REPAIR_AFTER_MS = 60_000

#: The account field that says contacts wait in ``waiting_balance``: the smallest amount one of them needs.
WAITING_MARKER = "waiting_balance"

_SAFE_KEY = re.compile(r"^[A-Za-z0-9_:\-]{1,200}$")


# -- arithmetic (pure) --------------------------------------------------------------------------


def billable_seconds(duration_ms: int | None, granularity: str) -> int:
    """Seconds billed for a call that was connected ``duration_ms`` milliseconds.

    Every started second counts (1 ms = 1 s, 1,001 ms = 2 s); with ``minute`` granularity every
    started minute counts (61 s = 120 s). None, 0 or a negative duration (never connected) is 0.

    :param duration_ms: connected time from the provider, milliseconds.
    :param granularity: ``second`` or ``minute``.
    """
    if not duration_ms or duration_ms <= 0:
        return 0
    seconds = -(-int(duration_ms) // 1000)
    if granularity == GRANULARITY_MINUTE:
        return -(-seconds // 60) * 60
    return seconds


def call_cost(plan: Plan, duration_ms: int | None) -> int:
    """What a call of ``duration_ms`` costs on ``plan``, in the plan's storage unit.

    ``minutes``: billable seconds. ``credits``: billable seconds x price per minute / 60, rounded
    up to the next milli-credit (exact with ``minute`` granularity). ``unlimited``: 0.

    :param duration_ms: connected time, milliseconds (None or <= 0 costs nothing).
    """
    if plan.type == PLAN_UNLIMITED:
        return 0
    seconds = billable_seconds(duration_ms, plan.granularity)
    if plan.type == PLAN_MINUTES:
        return seconds
    return -(-seconds * plan.price_millicredits_per_minute // 60)


def reservation_cost(plan: Plan, max_call_duration_s: int) -> int:
    """The most a call limited to ``max_call_duration_s`` seconds can cost: what :meth:`Billing.reserve` holds."""
    return call_cost(plan, int(max_call_duration_s) * 1000)


def settlement(plan: Plan, reserved: int, duration_ms: int | None) -> tuple[int, int]:
    """``(charged, released)`` for a reservation of ``reserved`` units and a call of ``duration_ms``.

    The charge never exceeds the reservation: a call that ran past ``max_call_duration`` (the
    pipeline stops it there) is charged the reservation, so no account is ever overdrawn.
    """
    charged = min(call_cost(plan, duration_ms), int(reserved))
    return charged, int(reserved) - charged


def hold_key(attempt_id: str) -> str:
    """The field name of an attempt's hold (and the tail of its ledger ids).

    Attempt ids made of letters, digits, ``_``, ``:`` and ``-`` (``<job>:r1:p0:d1``) are used as
    they are; anything else (dots, ``$``, long ids) is hashed, since it cannot be a field name.
    """
    if not isinstance(attempt_id, str) or not attempt_id:
        raise ValueError("attempt_id must be a non-empty string")
    if _SAFE_KEY.match(attempt_id):
        return attempt_id
    return "h-" + hashlib.sha256(attempt_id.encode()).hexdigest()[:40]


# -- results ------------------------------------------------------------------------------------


class _Whose(TypedDict):
    """The account and attempt a reservation is for (every :class:`Reservation` carries them)."""

    account_id: str
    attempt_id: str


class ReservationStatus(StrEnum):
    OK = "ok"  #: dial: the amount is held (0 for unlimited plans)
    INSUFFICIENT_BALANCE = "insufficient_balance"  #: the balance itself cannot cover the longest call
    #: the balance covers the longest call, but calls in progress hold so much of it that the available amount
    #: does not: the dial waits a moment (like a full slot pool), the contact neither fails nor waits for balance
    HELD_BY_CALLS = "held_by_calls"
    UNKNOWN_ACCOUNT = "unknown_account"  #: no such account


@dataclass(frozen=True, kw_only=True)
class Reservation:
    """What :meth:`Billing.reserve` decided.

    :param amount: held for this call, storage units (seconds or milli-credits); 0 when unlimited.
    :param needed: the most the call can cost, storage units (what had to be available).
    :param available: the account's available amount as read, storage units (None if unknown/unlimited).
    :param balance: the account's balance as read, storage units (None if unknown/unlimited or not read).
    :param duplicate: the attempt already held this reservation (a redelivered message).
    """

    status: ReservationStatus
    account_id: str
    attempt_id: str
    plan: str | None = None
    unit: str | None = None
    amount: int = 0
    needed: int = 0
    available: int | None = None
    balance: int | None = None
    duplicate: bool = False

    @property
    def ok(self) -> bool:
        return self.status == ReservationStatus.OK

    @property
    def unlimited(self) -> bool:
        return self.plan == PLAN_UNLIMITED

    @property
    def reason(self) -> str | None:
        """The job's ``last_error`` when the call cannot be placed (English); None when ok."""
        if self.status in (ReservationStatus.UNKNOWN_ACCOUNT, ReservationStatus.INSUFFICIENT_BALANCE,
                           ReservationStatus.HELD_BY_CALLS):
            return text(self.status.value)
        return None


@dataclass(frozen=True, kw_only=True)
class OpenReservation:
    """A reservation still holding balance (:meth:`Billing.open_reservations`).

    :param amount: held, storage units. :param reserved_at_ms: when it was made (shared clock, ms).
    """

    attempt_id: str
    account_id: str
    job_id: str | None
    amount: int
    unit: str | None
    reserved_at_ms: int


@dataclass
class RepairReport:
    """What :meth:`Billing.repair` did: entries posted from journals, reservations posted from holds,
    accounts whose waiting contacts went back to pending, accounts whose journal was swept."""

    journal_entries_posted: int = 0
    reservations_posted: int = 0
    accounts_released: int = 0
    accounts_swept: int = 0


@dataclass
class Change:
    """An admin write: filter, update and the ledger entries it journals (:meth:`Billing.write_change`)."""

    query: dict[str, Any]
    update: dict[str, Any]
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    frees_balance: bool = False


def _hold_of(account: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    """The hold ``key`` of an account read with a ``holds.<key>`` projection.

    MongoDB returns ``{"holds": {key: ...}}``; nx-27017 0.8.1 returns ``{"holds.<key>": ...}``
    (a measured gap, pinned in test_mongo_compat.py). Both are read.
    """
    holds = account.get("holds")
    if isinstance(holds, Mapping) and key in holds:
        return dict(holds[key])
    flat = account.get(f"holds.{key}")
    return dict(flat) if isinstance(flat, Mapping) else None


def webhook_view(webhook: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """An account's ``result_webhook`` as shown: its URL and events, and ``secret_set``; never the secret."""
    if not webhook:
        return None
    return {"url": webhook.get("url"), "events": list(webhook.get("events") or ()),
            "secret_set": bool(webhook.get("secret"))}


def account_view(account: Mapping[str, Any]) -> dict[str, Any]:
    """An account as the admin API shows it: plan and amounts in API units, plus the exact stored integers.

    ``balance``/``reserved``/``available`` are minutes (seconds / 60) or credits (milli-credits /
    1000), None for unlimited plans; ``units`` holds the stored integers and their unit.
    """
    plan = Plan.from_document(account.get("plan"))
    view: dict[str, Any] = {"account_id": account["_id"], "plan": plan.to_api(),
                            "concurrency_limit": account.get("concurrency_limit"),
                            "contact_policy": account.get("contact_policy"),
                            "result_webhook": webhook_view(account.get("result_webhook")),
                            "open_reservations": int(account.get("holds_n", 0) or 0),
                            "created_at": account.get("created_at"), "updated_at": account.get("updated_at")}
    if not plan.metered:
        view.update(balance=None, reserved=None, available=None, units=None)
        return view
    amounts = {k: int(account.get(k, 0) or 0) for k in ("balance", "reserved", "available")}
    view.update({k: from_storage_units(plan.type, v) for k, v in amounts.items()})
    view["units"] = {"unit": plan.unit, **amounts}
    return view


# -- the service ---------------------------------------------------------------------------------


class Billing:
    """Reservations, settlements, top-ups and plans of accounts; one per process (thread-safe).

    :param db: the MongoDB database (``accounts`` and ``ledger``).
    :param clock: time source for ``at`` fields and recovery ages.
    :param config: the configuration (language of reasons).
    :param jobs: the job store used to release ``waiting_balance`` jobs; default one on ``db``.
    """

    def __init__(self, db: Database[dict[str, Any]], *, clock: Clock, config: Config,
                 jobs: JobStore | None = None) -> None:
        self.db = db
        self.accounts: Collection[dict[str, Any]] = db[ACCOUNTS]
        self.clock = clock
        self.config = config
        self._jobs = jobs
        self._lock = threading.Lock()
        self._posted: dict[str, list[str]] = {}

    @property
    def jobs(self) -> JobStore:
        if self._jobs is None:
            from shared.stores.jobs import JobStore

            self._jobs = JobStore(self.db, clock=self.clock, config=self.config)
        return self._jobs

    # -- reservation ----------------------------------------------------------------------------

    def reserve(self, account_id: str, *, attempt_id: str, job_id: str, max_call_duration_s: int,
                recent: Mapping[str, Any] | None = None) -> Reservation:
        """Hold the most the call can cost before dialing it.

        One read of the account; for a metered plan with enough available, one conditional update
        (``available >= cost`` and no hold for this attempt in the filter) and one ledger insert.
        Unlimited plans cost the read only. Not enough available: ``HELD_BY_CALLS`` when the balance
        itself covers the call (the rest is held by calls in progress and comes back as they end),
        ``INSUFFICIENT_BALANCE`` when it does not; neither writes anything. Idempotent per
        ``attempt_id``: while the attempt holds a reservation, another call returns it
        (``duplicate=True``) and holds nothing more. After :meth:`release` the attempt may be
        reserved again (the pipeline re-dials an attempt that found no free slot); after a charge a
        new hold can never be charged (:meth:`settle` gives it back), so a call is never charged twice.

        :param attempt_id: the attempt's id (``shared.stores.attempts.attempt_id``).
        :param job_id: the job, recorded on the hold and its ledger entry.
        :param max_call_duration_s: the batch's ``max_call_duration``, seconds (> 0).
        :param recent: the account document as read within the last second (the pipeline's remembered copy):
            when its plan is unlimited nothing is read, so an unlimited call costs no round trip of billing. A
            metered plan is always read afresh: its balance decides.
        """
        if isinstance(max_call_duration_s, bool) or not isinstance(max_call_duration_s, int) \
                or max_call_duration_s <= 0:
            raise ValueError(f"max_call_duration_s must be a positive whole number, got {max_call_duration_s!r}")
        key = hold_key(attempt_id)
        base: _Whose = {"account_id": account_id, "attempt_id": attempt_id}
        if recent is not None:
            plan = Plan.from_document(recent.get("plan"))
            if not plan.metered:
                return self._counted(Reservation(status=ReservationStatus.OK, plan=plan.type, **base), "unlimited")
        last: Reservation | None = None
        for _ in range(DEFAULT_WRITE_ATTEMPTS):
            account = self.accounts.find_one({"_id": account_id},
                                             {"plan": 1, "balance": 1, "available": 1, f"holds.{key}": 1})
            if account is None:
                return self._counted(Reservation(status=ReservationStatus.UNKNOWN_ACCOUNT, **base), "unknown_account")
            plan = Plan.from_document(account.get("plan"))
            if not plan.metered:
                return self._counted(Reservation(status=ReservationStatus.OK, plan=plan.type, **base), "unlimited")
            held = _hold_of(account, key)
            if held is not None:
                return self._existing_hold(account_id, key, held, plan, base)
            cost = reservation_cost(plan, max_call_duration_s)
            available = int(account.get("available", 0) or 0)
            balance = int(account.get("balance", 0) or 0)
            refused = ReservationStatus.HELD_BY_CALLS if balance >= cost else ReservationStatus.INSUFFICIENT_BALANCE
            last = Reservation(status=refused, plan=plan.type, unit=plan.unit, needed=cost, available=available,
                               balance=balance, **base)
            if available < cost:
                break
            hold = {"attempt_id": attempt_id, "job_id": job_id, "token": uuid.uuid4().hex[:16], "amount": cost,
                    "unit": plan.unit, "granularity": plan.granularity,
                    "price_millicredits_per_minute": plan.price_millicredits_per_minute,
                    "max_call_duration_s": max_call_duration_s, "at": self.clock.now_ms()}
            if self._write_hold(account_id, key, plan, hold):
                return self._posted_hold(account_id, key, hold, plan, base, available)
        assert last is not None
        event(log, "balance_held_by_calls" if last.status == ReservationStatus.HELD_BY_CALLS
              else "balance_insufficient", account_id=account_id, attempt_id=attempt_id, needed=last.needed,
              available=last.available, balance=last.balance, unit=last.unit)
        return self._counted(last, last.status.value)

    def _write_hold(self, account_id: str, key: str, plan: Plan, hold: Mapping[str, Any]) -> bool:
        cost = int(hold["amount"])
        cleanup = self._take_cleanup(account_id)
        update: dict[str, Any] = {
            "$inc": {"available": -cost, "reserved": cost, "holds_n": 1},
            "$set": {f"holds.{key}": dict(hold), "updated_at": hold["at"]},
        }
        if cleanup:
            update["$unset"] = {f"journal.{i}": "" for i in cleanup}
        query = {"_id": account_id, "plan.type": plan.type, "available": {"$gte": cost},
                 f"holds.{key}": {"$exists": False}}
        result = self.accounts.update_one(query, update)
        if result.matched_count == 0:
            self._give_back(account_id, cleanup)
            return False
        return True

    def _posted_hold(self, account_id: str, key: str, hold: Mapping[str, Any], plan: Plan,
                     base: _Whose, available: int) -> Reservation:
        ledger.post(self.db, [ledger.reserve_entry(account_id, key, hold)])
        amount = int(hold["amount"])
        event(log, "balance_reserved", account_id=account_id, attempt_id=hold["attempt_id"], amount=amount,
              unit=plan.unit)
        return self._counted(Reservation(status=ReservationStatus.OK, plan=plan.type, unit=plan.unit, amount=amount,
                                         needed=amount, available=available - amount, **base), "ok")

    def _existing_hold(self, account_id: str, key: str, hold: Mapping[str, Any], plan: Plan,
                       base: _Whose) -> Reservation:
        """The attempt already holds a reservation (redelivery): make sure its entry is posted, return it."""
        ledger.post(self.db, [ledger.reserve_entry(account_id, key, hold)])
        amount = int(hold["amount"])
        return self._counted(Reservation(status=ReservationStatus.OK, plan=plan.type, unit=hold.get("unit"),
                                         amount=amount, needed=amount, duplicate=True, **base), "duplicate")

    @staticmethod
    def _counted(reservation: Reservation, result: str) -> Reservation:
        metrics.RESERVATIONS.labels(result).inc()
        return reservation

    # -- settlement -----------------------------------------------------------------------------

    def settle(self, attempt_id: str, *, duration_ms: int | None) -> int:
        """Charge the call's billable duration, release the rest; returns the charge (storage units).

        A call that never connected (``duration_ms`` None or 0) costs nothing. Idempotent: a
        second settle (or a settle after :meth:`release`) changes nothing and returns what the
        first one charged. An attempt is charged at most once, ever: a hold made for it after its
        charge is given back whole, and the first charge is returned. An attempt that reserved
        nothing (unlimited plan) returns 0 after one read.

        :param duration_ms: connected time reported by the provider, milliseconds.
        """
        return self._finish(attempt_id, duration_ms=duration_ms, kind=ledger.KIND_CHARGE)[0]

    def release(self, attempt_id: str) -> int:
        """The call was never placed: give the whole reservation back; returns the amount released.

        Idempotent; after a :meth:`settle` it changes nothing (and returns what that one released).
        """
        return self._finish(attempt_id, duration_ms=0, kind=ledger.KIND_RELEASE)[1]

    def _finish(self, attempt_id: str, *, duration_ms: int | None, kind: str, again: bool = True) -> tuple[int, int]:
        """Settle (``charge``) or ``release`` the attempt's open hold; ``(charged, released)``."""
        key = hold_key(attempt_id)
        entries = ledger.for_attempt(self.db, attempt_id)
        reserves = [e for e in entries if e.get("kind") == ledger.KIND_RESERVE]
        if not reserves:
            return 0, 0
        finished = {e.get("token"): e for e in entries if e.get("kind") in (ledger.KIND_CHARGE, ledger.KIND_RELEASE)}
        charge = next((e for e in entries if e.get("kind") == ledger.KIND_CHARGE), None)
        still_open = [r for r in reserves if r.get("token") not in finished]
        if not still_open:
            last = charge or max(finished.values(), key=lambda e: (int(e.get("at", 0)), e["_id"]))
            return int(last.get("charged", 0)), int(last.get("released", 0))
        current = max(still_open, key=lambda r: (int(r.get("at", 0)), r["_id"]))
        requested = kind
        if charge is not None:
            kind = ledger.KIND_RELEASE  # a hold made after the charge: give it back whole
        done = self._apply_settlement(key, current, duration_ms=duration_ms, kind=kind)
        if done is None:
            # The hold is gone: finished by another process, or by one that died before posting.
            posted = self._post_journaled_settlement(current["account_id"], key, current["token"])
            return self._finish(attempt_id, duration_ms=duration_ms, kind=requested, again=False) \
                if again and posted else self._outcome_of(attempt_id, current["token"])
        if charge is not None and requested == ledger.KIND_CHARGE:
            return int(charge.get("charged", 0)), int(charge.get("released", 0))
        return done

    def _apply_settlement(self, key: str, reserved: Mapping[str, Any], *, duration_ms: int | None,
                          kind: str) -> tuple[int, int] | None:
        """The conditional account write, then the entry; None when the hold was not there."""
        account_id, token, amount = reserved["account_id"], reserved["token"], int(reserved["amount"])
        plan = Plan(type=PLAN_MINUTES if reserved["unit"] == "second" else PLAN_CREDITS,
                    granularity=reserved.get("granularity", "second"),
                    price_millicredits_per_minute=int(reserved.get("price_millicredits_per_minute", 0)))
        charged, released = (0, amount) if kind == ledger.KIND_RELEASE else settlement(plan, amount, duration_ms)
        now = self.clock.now_ms()
        entry_id = ledger.charge_entry_id(key) if kind == ledger.KIND_CHARGE else ledger.release_entry_id(key, token)
        body = {"account_id": account_id, "kind": kind, "unit": reserved["unit"], "balance_delta": -charged,
                "reserved_delta": -amount, "attempt_id": reserved.get("attempt_id"), "job_id": reserved.get("job_id"),
                "token": token, "amount": amount, "charged": charged, "released": released,
                "duration_ms": int(duration_ms or 0) if kind == ledger.KIND_CHARGE else 0,
                "billable_s": billable_seconds(duration_ms, plan.granularity) if kind == ledger.KIND_CHARGE else 0,
                "at": now}
        cleanup = [i for i in self._take_cleanup(account_id) if i != entry_id]
        update: dict[str, Any] = {
            "$unset": {f"holds.{key}": "", **{f"journal.{i}": "" for i in cleanup}},
            "$inc": {"balance": -charged, "reserved": -amount, "available": released, "holds_n": -1,
                     "journal_seq": 1},
            "$set": {f"journal.{entry_id}": body, "updated_at": now},
            "$min": {"journal_at": now},
        }
        query: dict[str, Any] = {"_id": account_id, f"holds.{key}.token": token}
        if kind == ledger.KIND_CHARGE:
            query[f"journal.{entry_id}"] = {"$exists": False}  # a charge of this attempt not posted yet
        # The account comes back with the write (same round trip as an update): its waiting marker and available.
        after = self.accounts.find_one_and_update(query, update, projection={WAITING_MARKER: 1, "available": 1},
                                                  return_document=ReturnDocument.AFTER)
        if after is None:
            self._give_back(account_id, cleanup)
            return None
        ledger.post(self.db, [ledger.journal_entry(entry_id, body)])
        self._note_posted(account_id, entry_id)
        if released and after.get(WAITING_MARKER) is not None:
            self._wake_waiting(account_id, int(after[WAITING_MARKER] or 0), int(after.get("available", 0) or 0))
        metrics.SETTLEMENTS.labels(kind).inc()
        if charged:
            metrics.BILLED.labels(reserved["unit"]).inc(charged)
        event(log, "balance_settled", account_id=account_id, attempt_id=reserved.get("attempt_id"), kind=kind,
              charged=charged, released=released, unit=reserved["unit"])
        return charged, released

    def _post_journaled_settlement(self, account_id: str, key: str, token: str) -> int:
        """Post this attempt's charge or this hold's release if they are still only in the account's journal."""
        ids = (ledger.charge_entry_id(key), ledger.release_entry_id(key, token))
        account = self.accounts.find_one({"_id": account_id}, {f"journal.{i}": 1 for i in ids}) or {}
        journal = account.get("journal") if isinstance(account.get("journal"), Mapping) else {}
        found = []
        for entry_id in ids:
            body = (journal or {}).get(entry_id) or account.get(f"journal.{entry_id}")
            if isinstance(body, Mapping):
                found.append(ledger.journal_entry(entry_id, body))
        posted = ledger.post(self.db, found)
        if posted:
            metrics.LEDGER_REPAIRS.labels("journal_entry").inc(posted)
        return posted

    def _outcome_of(self, attempt_id: str, token: str) -> tuple[int, int]:
        for entry in ledger.for_attempt(self.db, attempt_id):
            if entry.get("token") == token and entry.get("kind") in (ledger.KIND_CHARGE, ledger.KIND_RELEASE):
                return int(entry.get("charged", 0)), int(entry.get("released", 0))
        return 0, 0

    # -- journal cleanup (piggy-backed) -----------------------------------------------------------

    def _take_cleanup(self, account_id: str) -> list[str]:
        with self._lock:
            pending = self._posted.get(account_id)
            if not pending:
                return []
            taken, self._posted[account_id] = pending[:DEFAULT_CLEANUP_BATCH], pending[DEFAULT_CLEANUP_BATCH:]
            return taken

    def _give_back(self, account_id: str, ids: list[str]) -> None:
        if ids:
            with self._lock:
                self._posted.setdefault(account_id, []).extend(ids)

    def _note_posted(self, account_id: str, entry_id: str) -> None:
        with self._lock:
            pending = self._posted.setdefault(account_id, [])
            pending.append(entry_id)
            overflow = len(pending) > DEFAULT_CLEANUP_BACKLOG
        if overflow:
            self.flush(account_id)

    def flush(self, account_id: str | None = None) -> int:
        """Drop from the account documents the journal entries this process has posted; returns how many.

        Normally each is dropped by the next write on its account (no extra round trip); call this
        when a process stops, or let :meth:`repair` do it.
        """
        with self._lock:
            if account_id is None:
                work, self._posted = self._posted, {}
            else:
                work = {account_id: self._posted.pop(account_id, [])}
        done = 0
        for acc, ids in work.items():
            if ids:
                self.accounts.update_one({"_id": acc}, {"$unset": {f"journal.{i}": "" for i in ids}})
                done += len(ids)
        return done

    # -- recovery -------------------------------------------------------------------------------

    def open_reservations(self, *, older_than_ms: int, limit: int = 100) -> list[OpenReservation]:
        """Reservations still holding balance, made at or before ``older_than_ms``, oldest first.

        For the scheduler's recovery: settle or release each from its attempt record. Holds whose
        ledger entry was never written (the process died between its two writes) are posted here
        first, so every item returned can be passed to :meth:`settle` or :meth:`release`.

        :param older_than_ms: an instant on the shared clock (ms since the epoch): only reservations
            made at or before it are returned (e.g. ``now_ms - dialing lease``).
        :param limit: most items returned.
        """
        found, _ = self._scan_holds(int(older_than_ms), limit)
        return found

    def _scan_holds(self, cutoff_ms: int, limit: int) -> tuple[list[OpenReservation], int]:
        candidates: list[tuple[int, str, str, dict[str, Any]]] = []
        for account in self.accounts.find({"holds_n": {"$gt": 0}}, {"holds": 1}):
            for key, hold in (account.get("holds") or {}).items():
                if int(hold.get("at", 0)) <= cutoff_ms:
                    candidates.append((int(hold.get("at", 0)), account["_id"], key, hold))
        candidates.sort(key=lambda c: (c[0], c[2]))
        candidates = candidates[:limit]
        ids = [ledger.reserve_entry_id(c[2], c[3].get("token", "")) for c in candidates]
        posted = {d["_id"] for d in self.db[LEDGER].find({"_id": {"$in": ids}}, {"_id": 1})} if ids else set()
        missing = [ledger.reserve_entry(account_id, key, hold) for _, account_id, key, hold in candidates
                   if ledger.reserve_entry_id(key, hold.get("token", "")) not in posted]
        written = ledger.post(self.db, missing)
        if written:
            metrics.LEDGER_REPAIRS.labels("reservation").inc(written)
        out = [OpenReservation(attempt_id=hold.get("attempt_id", key), account_id=account_id,
                               job_id=hold.get("job_id"), amount=int(hold.get("amount", 0)), unit=hold.get("unit"),
                               reserved_at_ms=at) for at, account_id, key, hold in candidates]
        return out, written

    def repair(self, *, min_age_ms: int = DEFAULT_REPAIR_AFTER_MS, limit: int = 100) -> RepairReport:
        """Post what dead processes left only in account documents; for the scheduler, every minute or so.

        Journal entries older than ``min_age_ms`` are inserted in the ledger (duplicates are
        no-ops) and dropped from their account; holds older than that get their reservation entry.
        An account whose top-up or adjustment is posted here
        gets its ``waiting_balance`` jobs back to pending (the top-up's own process may have died
        before doing it). Afterwards ``balance == sum(ledger)`` for every account with nothing in
        flight.

        :param min_age_ms: age (simulated ms on the shared clock) from which an unposted entry counts
            as left behind by a dead process; default :data:`DEFAULT_REPAIR_AFTER_MS`.
        :param limit: most accounts swept (journals) and holds looked at per call.
        """
        report = RepairReport()
        cutoff = self.clock.now_ms() - int(min_age_ms)
        self.flush()
        for account in self.accounts.find({"journal_at": {"$lte": cutoff}},
                                          {"journal": 1, "journal_seq": 1}).limit(limit):
            report.accounts_swept += 1
            self._sweep_journal(account, cutoff, report)
        _, report.reservations_posted = self._scan_holds(cutoff, limit)
        if report.journal_entries_posted or report.reservations_posted:
            event(log, "ledger_repaired", **vars(report))
        return report

    def _sweep_journal(self, account: Mapping[str, Any], cutoff: int, report: RepairReport) -> None:
        journal: Mapping[str, Any] = account.get("journal") or {}
        old = {eid: body for eid, body in journal.items() if int(body.get("at", 0)) <= cutoff}
        young = [int(body.get("at", 0)) for eid, body in journal.items() if eid not in old]
        inserted = ledger.post(self.db, [ledger.journal_entry(eid, body) for eid, body in old.items()])
        report.journal_entries_posted += inserted
        if inserted:
            metrics.LEDGER_REPAIRS.labels("journal_entry").inc(inserted)
        unset: dict[str, str] = {f"journal.{eid}": "" for eid in old}
        update: dict[str, Any] = {}
        if young:
            update["$set"] = {"journal_at": min(young)}
        else:
            unset["journal_at"] = ""
        update["$unset"] = unset
        result = self.accounts.update_one({"_id": account["_id"], "journal_seq": account.get("journal_seq")}, update)
        if result.matched_count == 0 and old:
            self.accounts.update_one({"_id": account["_id"]}, {"$unset": {f"journal.{eid}": "" for eid in old}})
        credited = any(b.get("kind") in (ledger.KIND_TOPUP, ledger.KIND_ADJUSTMENT)
                       and int(b.get("balance_delta", 0)) > 0 for b in old.values())
        if inserted and credited:
            report.accounts_released += 1
            self.jobs.release_waiting_balance(account["_id"])

    # -- admin: balance, top-up, plan --------------------------------------------------------------

    def balance(self, account_id: str) -> dict[str, Any]:
        """Plan, balance, reserved and available (API units and stored integers): :func:`account_view`.

        :raises NotFound: no such account.
        """
        account = self.accounts.find_one({"_id": account_id}, {"journal": 0, "holds": 0})
        if account is None:
            raise NotFound(f"account {account_id!r} not found")
        return account_view(account)

    def check(self, account_id: str) -> ledger.LedgerCheck:
        """:func:`shared.stores.ledger.check_account` for this database."""
        return ledger.check_account(self.db, account_id)

    def top_up(self, account_id: str, amount: object) -> dict[str, Any]:
        """Add ``amount`` (minutes or credits, per the plan) to the balance; release waiting contacts.

        Writes a ``topup`` ledger entry and puts the account's ``waiting_balance`` jobs back to
        ``pending``. Not idempotent (each call adds): an admin client that must retry safely sets
        the absolute balance with :meth:`shared.stores.account_changes.AccountChanges.apply` instead. Returns
        :func:`account_view` with ``released_jobs`` (jobs put back to pending).

        :raises NotFound: no such account.
        :raises ValidationError: ``amount`` not a positive number of whole storage units, or an unlimited plan.
        """
        for _ in range(DEFAULT_WRITE_ATTEMPTS):
            account = self.accounts.find_one({"_id": account_id}, {"plan": 1})
            if account is None:
                raise NotFound(f"account {account_id!r} not found")
            plan = Plan.from_document(account.get("plan"))
            if not plan.metered:
                raise ValidationError([("amount", "unlimited plans have no balance to top up")])
            units = to_storage_units(plan.type, amount, "amount", allow_zero=False)
            now = self.clock.now_ms()
            entry_id = f"topup:{new_id()}"
            body = {"account_id": account_id, "kind": ledger.KIND_TOPUP, "unit": plan.unit, "balance_delta": units,
                    "reserved_delta": 0, "amount": units, "at": now}
            change = Change(query={"_id": account_id, "plan.type": plan.type},
                            update={"$inc": {"balance": units, "available": units},
                                    "$set": {"unit": plan.unit, "updated_at": now},
                                    "$unset": {WAITING_MARKER: ""}},
                            entries={entry_id: body})
            if self.write_change(account_id, change):
                metrics.TOP_UPS.inc()
                released = self.jobs.release_waiting_balance(account_id)
                event(log, "balance_topped_up", account_id=account_id, amount=units, unit=plan.unit,
                      released_jobs=released)
                view = self.balance(account_id)
                view["released_jobs"] = released
                return view
        raise StoreError(f"account {account_id!r} changed plan while topping up; try again")

    # -- journaled admin writes (top-up here, PUT /accounts in shared.stores.account_changes) ------------

    def write_change(self, account_id: str, change: Change) -> bool:
        """One conditional write journaling ``change.entries``; then post them and drop them from the journal."""
        update = {op: dict(fields) for op, fields in change.update.items()}
        if change.entries:
            now = self.clock.now_ms()
            update.setdefault("$set", {}).update({f"journal.{eid}": body for eid, body in change.entries.items()})
            update.setdefault("$inc", {})["journal_seq"] = 1
            update["$min"] = {"journal_at": now}
        if self.accounts.update_one(change.query, update).matched_count == 0:
            return False
        self.post_and_drop(account_id, change.entries)
        return True

    def post_and_drop(self, account_id: str, entries: Mapping[str, Mapping[str, Any]]) -> None:
        """Insert journal ``entries`` of the account in the ledger, then drop them from its journal."""
        if entries:
            ledger.post(self.db, [ledger.journal_entry(eid, body) for eid, body in entries.items()])
            self.accounts.update_one({"_id": account_id}, {"$unset": {f"journal.{eid}": "" for eid in entries}})

    # -- insufficient balance -------------------------------------------------------------------

    def note_waiting(self, account_id: str, needed: int) -> tuple[Plan, int] | None:
        """A contact of the account was just parked in ``waiting_balance`` for a call costing ``needed``: mark the
        account and return its plan and available units as they are after the mark (None: no such account).

        The marker (``waiting_balance``: the smallest need of the contacts parked since it was last cleared) tells
        every settle and release, which read the account back with their own write, that contacts wait; the first
        that leaves enough available clears it and releases them (:meth:`_wake_waiting`). Top-ups and PUTs that add
        balance clear it in their own write and release every waiting contact. The mark and the read are one
        atomic write, so a settle, release or top-up that came before it is seen in the ``available`` returned
        (the caller releases the contact itself when that covers it), and one that comes after sees the marker.
        """
        account = self.accounts.find_one_and_update({"_id": account_id},
                                                    {"$min": {WAITING_MARKER: max(1, int(needed))}},
                                                    projection={"plan": 1, "available": 1},
                                                    return_document=ReturnDocument.AFTER)
        if account is None:
            return None
        return Plan.from_document(account.get("plan")), int(account.get("available", 0) or 0)

    def _wake_waiting(self, account_id: str, needed: int, available: int) -> int:
        """A settle or release left ``available`` on an account whose marker says contacts wait for ``needed``:
        when it covers them, clear the marker, then put the account's ``waiting_balance`` contacts back to pending.

        The marker is cleared first, conditionally, so of several settles seeing it only one releases; a contact
        parked after the clear marks the account again and reads ``available`` itself (:meth:`note_waiting`), one
        parked before it is released here. Returns the contacts released.
        """
        if available < needed:
            return 0
        cleared = self.accounts.update_one({"_id": account_id, WAITING_MARKER: {"$exists": True}},
                                           {"$unset": {WAITING_MARKER: ""}})
        if cleared.matched_count == 0:
            return 0
        released = int(self.jobs.release_waiting_balance(account_id))
        event(log, "waiting_balance_released", account_id=account_id, released_jobs=released, available=available)
        return released
