"""The account store: who pays, under which plan, with how many provider slots.

An account is ``{_id, plan: {type, granularity, price_millicredits_per_minute}, concurrency_limit,
created_at, updated_at}`` plus the billing fields written by :mod:`shared.billing` (``unit``,
``balance``, ``reserved``, ``available``, ``holds``, ``journal``...). This module holds the plan
itself: its validation, and the conversion between the units of the admin API (minutes, credits)
and the integer units stored (seconds, milli-credits). Money and time are integers in storage, so
the ledger sums exactly to the balance.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from pymongo.collection import Collection
from pymongo.database import Database

from shared.clock import Clock
from shared.config import Config
from shared.contact_policy import ContactPolicy, parse_contact_policy
from shared.errors import NotFound, ValidationError
from shared.mongo import ACCOUNTS

#: Longest account id, characters.
MAX_ACCOUNT_ID = 100

PLAN_UNLIMITED = "unlimited"
PLAN_MINUTES = "minutes"
PLAN_CREDITS = "credits"
PLAN_TYPES = (PLAN_UNLIMITED, PLAN_MINUTES, PLAN_CREDITS)

#: Bill every started second of a connected call.
GRANULARITY_SECOND = "second"
#: Bill every started minute of a connected call (61 s cost 2 minutes).
GRANULARITY_MINUTE = "minute"
GRANULARITIES = (GRANULARITY_SECOND, GRANULARITY_MINUTE)
#: Granularity of a plan that names none (the provider itself bills per second).
DEFAULT_GRANULARITY = GRANULARITY_SECOND

#: Storage unit of a ``minutes`` balance: whole seconds.
UNIT_SECOND = "second"
#: Storage unit of a ``credits`` balance: thousandths of a credit.
UNIT_MILLICREDIT = "millicredit"
#: Storage units per API unit: 60 seconds per minute, 1000 milli-credits per credit.
UNITS_PER_API_UNIT = {PLAN_MINUTES: 60, PLAN_CREDITS: 1000}
#: Largest balance, top-up or adjustment accepted, in API units (minutes or credits).
MAX_AMOUNT = {PLAN_MINUTES: 10**9, PLAN_CREDITS: 10**12}
#: Largest ``price_per_minute`` of a credits plan, credits.
MAX_PRICE_PER_MINUTE = 10**6
#: Allowed ``concurrency_limit`` (provider slots).
CONCURRENCY_LIMIT_RANGE = (1, 100_000)
#: Fields of a ``PUT /accounts/{id}`` body and of its ``plan``.
ACCOUNT_FIELDS = ("plan", "concurrency_limit", "contact_policy")
PLAN_FIELDS = ("type", "balance", "price_per_minute", "granularity")


@dataclass(frozen=True, kw_only=True)
class Plan:
    """An account's plan as stored.

    :param type: ``unlimited``, ``minutes`` or ``credits``.
    :param granularity: ``second`` (default) or ``minute``: how a call's duration is rounded up.
    :param price_millicredits_per_minute: credits plans only: the price of one minute, in milli-credits.
    """

    type: str
    granularity: str = DEFAULT_GRANULARITY
    price_millicredits_per_minute: int = 0

    @property
    def metered(self) -> bool:
        """True for ``minutes`` and ``credits`` (a balance is kept and reserved)."""
        return self.type in UNITS_PER_API_UNIT

    @property
    def unit(self) -> str | None:
        """Storage unit of the balance: ``second``, ``millicredit``, or None for unlimited."""
        return {PLAN_MINUTES: UNIT_SECOND, PLAN_CREDITS: UNIT_MILLICREDIT}.get(self.type)

    def to_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"type": self.type}
        if self.metered:
            doc["granularity"] = self.granularity
        if self.type == PLAN_CREDITS:
            doc["price_millicredits_per_minute"] = self.price_millicredits_per_minute
        return doc

    def to_api(self) -> dict[str, Any]:
        """The plan in admin-API units (``price_per_minute`` in credits)."""
        doc: dict[str, Any] = {"type": self.type}
        if self.metered:
            doc["granularity"] = self.granularity
        if self.type == PLAN_CREDITS:
            doc["price_per_minute"] = from_storage_units(PLAN_CREDITS, self.price_millicredits_per_minute)
        return doc

    @classmethod
    def from_document(cls, doc: Mapping[str, Any] | None) -> Plan:
        """The stored plan; a missing or unknown plan reads as ``unlimited`` only when it says so.

        An account without a plan document is treated as ``minutes`` with no balance (it cannot
        dial until a plan is set), never as unlimited.
        """
        doc = doc or {}
        kind = doc.get("type")
        if kind not in PLAN_TYPES:
            kind = PLAN_MINUTES
        granularity = doc.get("granularity")
        if granularity not in GRANULARITIES:
            granularity = DEFAULT_GRANULARITY
        price = doc.get("price_millicredits_per_minute")
        return cls(type=kind, granularity=granularity,
                   price_millicredits_per_minute=int(price) if isinstance(price, int) and price > 0 else 0)


@dataclass(frozen=True, kw_only=True)
class AccountRequest:
    """A validated ``PUT /accounts/{account_id}`` body.

    :param plan: the plan to set; None when the body has no ``plan`` (unchanged).
    :param balance: the balance to set, in storage units (seconds or milli-credits); None = unchanged
        (or 0 for a new metered plan).
    :param concurrency_limit: provider slots; None = the global default.
    :param has_concurrency_limit: whether the body named ``concurrency_limit`` at all.
    :param contact_policy: the stored form of the account's contact policy (None: no policy).
    :param has_contact_policy: whether the body named ``contact_policy`` at all.
    """

    plan: Plan | None = None
    balance: int | None = None
    concurrency_limit: int | None = None
    has_concurrency_limit: bool = False
    contact_policy: dict[str, Any] | None = None
    has_contact_policy: bool = False


def _decimal(value: object) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    try:
        return Decimal(value) if isinstance(value, int) else Decimal(repr(value))
    except InvalidOperation:  # pragma: no cover - repr of a finite float always parses
        return None


def to_storage_units(plan_type: str, amount: object, field: str, *, allow_zero: bool = True,
                     maximum: int | None = None) -> int:
    """``amount`` in API units (minutes or credits) as exact storage units (seconds or milli-credits).

    Fractions are allowed as long as the result is whole: 1.5 minutes = 90 s, 2.125 credits =
    2125 milli-credits; 0.01 minutes (0.6 s) and 0.0001 credits are rejected, never rounded.

    :param plan_type: ``minutes`` or ``credits``.
    :param field: the field named in the error.
    :param allow_zero: whether 0 is accepted (a balance) or not (a top-up, a price).
    :param maximum: largest accepted amount in API units; default :data:`MAX_AMOUNT` of the plan type.
    :raises ValidationError: naming ``field``.
    """
    per = UNITS_PER_API_UNIT[plan_type]
    what = "minutes" if plan_type == PLAN_MINUTES else "credits"
    number = _decimal(amount)
    if number is None:
        raise ValidationError([(field, f"must be a finite number of {what}, got {type(amount).__name__}")])
    if number < 0 or (number == 0 and not allow_zero):
        raise ValidationError([(field, f"must be {'>= 0' if allow_zero else '> 0'} {what}, got {amount}")])
    limit = MAX_AMOUNT[plan_type] if maximum is None else maximum
    if number > limit:
        raise ValidationError([(field, f"must be at most {limit} {what}, got {amount}")])
    units = number * per
    if units != units.to_integral_value():
        hint = "a whole number of seconds (minutes x 60)" if plan_type == PLAN_MINUTES else "at most 3 decimals"
        raise ValidationError([(field, f"must be {hint}, got {amount}")])
    return int(units)


def from_storage_units(plan_type: str, units: int) -> float:
    """Storage units as API units: seconds / 60 (minutes, rounded to 6 decimals), milli-credits / 1000."""
    per = UNITS_PER_API_UNIT[plan_type]
    value = Decimal(int(units)) / per
    return float(round(value, 6))


def _parse_price(kind: str, raw: object, errors: list[tuple[str, str]]) -> int:
    if kind != PLAN_CREDITS:
        if raw is not None:
            errors.append(("plan.price_per_minute", "only credits plans have a price per minute"))
        return 0
    if raw is None:
        errors.append(("plan.price_per_minute", "is required for credits plans (credits per minute)"))
        return 0
    try:
        return to_storage_units(PLAN_CREDITS, raw, "plan.price_per_minute", allow_zero=False,
                                maximum=MAX_PRICE_PER_MINUTE)
    except ValidationError as exc:
        errors.extend(exc.errors)
        return 0


def _parse_plan(raw: object, errors: list[tuple[str, str]]) -> tuple[Plan | None, int | None]:
    if not isinstance(raw, Mapping):
        errors.append(("plan", f"must be an object, got {type(raw).__name__}"))
        return None, None
    for name in sorted(str(k) for k in raw if k not in PLAN_FIELDS):
        errors.append((f"plan.{name}", f"unknown field (known fields: {', '.join(PLAN_FIELDS)})"))
    kind = raw.get("type")
    if kind not in PLAN_TYPES:
        errors.append(("plan.type", f"must be one of {', '.join(PLAN_TYPES)}, got {kind!r}"))
        return None, None
    granularity = raw.get("granularity", DEFAULT_GRANULARITY)
    if kind == PLAN_UNLIMITED:
        for name in ("balance", "price_per_minute", "granularity"):
            if raw.get(name) is not None:
                errors.append((f"plan.{name}", "not used by unlimited plans"))
        return Plan(type=kind), None
    if granularity not in GRANULARITIES:
        errors.append(("plan.granularity", f"must be one of {', '.join(GRANULARITIES)}, got {granularity!r}"))
    price = _parse_price(kind, raw.get("price_per_minute"), errors)
    balance = None
    if raw.get("balance") is not None:
        try:
            balance = to_storage_units(kind, raw["balance"], "plan.balance")
        except ValidationError as exc:
            errors.extend(exc.errors)
    plan = Plan(type=kind, granularity=granularity if granularity in GRANULARITIES else DEFAULT_GRANULARITY,
                price_millicredits_per_minute=price)
    return plan, balance


def parse_account_request(body: object) -> AccountRequest:
    """Validate a ``PUT /accounts/{account_id}`` body (every problem at once).

    ``{"plan": {"type": "unlimited" | "minutes" | "credits", "balance": <minutes or credits>,
    "price_per_minute": <credits, credits plans only>, "granularity": "second" | "minute"},
    "concurrency_limit": <int or null>, "contact_policy": <object or null>}``
    (:func:`shared.contact_policy.parse_contact_policy`); every top-level field is optional here (the
    caller requires ``plan`` when the account is new).

    :raises ValidationError: listing ``(field, message)`` for each problem.
    """
    if not isinstance(body, Mapping):
        raise ValidationError([("body", f"must be a JSON object, got {type(body).__name__}")])
    errors: list[tuple[str, str]] = []
    for name in sorted(str(k) for k in body if k not in ACCOUNT_FIELDS):
        errors.append((name, f"unknown field (known fields: {', '.join(ACCOUNT_FIELDS)})"))
    plan, balance = (None, None)
    if body.get("plan") is not None:
        plan, balance = _parse_plan(body["plan"], errors)
    limit = body.get("concurrency_limit")
    low, high = CONCURRENCY_LIMIT_RANGE
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or not low <= limit <= high):
        errors.append(("concurrency_limit", f"must be a whole number between {low} and {high} (or null), "
                                            f"got {limit!r}"))
    policy = None
    try:
        policy = parse_contact_policy(body.get("contact_policy"))
    except ValidationError as exc:
        errors.extend(exc.errors)
    if errors:
        raise ValidationError(errors)
    return AccountRequest(plan=plan, balance=balance, concurrency_limit=limit,
                          has_concurrency_limit="concurrency_limit" in body,
                          contact_policy=policy.to_document() if policy else None,
                          has_contact_policy="contact_policy" in body)


#: What an account id may be: it travels in URLs, headers, Redis keys and log lines.
_ACCOUNT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+-]*")


def validate_account_id(account_id: object) -> str:
    """``account_id`` stripped, or :class:`ValidationError`: 1-100 letters, digits and ``. _ : @ + -``."""
    if not isinstance(account_id, str) or not account_id.strip() or len(account_id.strip()) > MAX_ACCOUNT_ID:
        raise ValidationError([("account_id", f"must be a non-empty string of at most {MAX_ACCOUNT_ID} characters")])
    if not _ACCOUNT_ID.fullmatch(account_id.strip()):
        raise ValidationError([("account_id", "may hold only letters, digits and . _ : @ + - (starting with a letter "
                                              "or digit)")])
    return account_id.strip()


class AccountStore:
    """Accounts in the ``accounts`` collection."""

    def __init__(self, db: Database, *, clock: Clock, config: Config) -> None:
        self.coll: Collection = db[ACCOUNTS]
        self.clock = clock
        self.config = config

    def get(self, account_id: str) -> dict[str, Any] | None:
        return self.coll.find_one({"_id": account_id})

    def require(self, account_id: str) -> dict[str, Any]:
        found = self.get(account_id)
        if found is None:
            raise NotFound(f"account {account_id!r} not found")
        return found

    def upsert(self, account_id: str, fields: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create or update the account's plain fields; returns ``(document, created)``."""
        account_id = validate_account_id(account_id)
        now = self.clock.now_ms()
        result = self.coll.update_one(
            {"_id": account_id},
            {"$set": {**fields, "updated_at": now}, "$setOnInsert": {"created_at": now}},
            upsert=True,
        )
        return self.require(account_id), result.upserted_id is not None

    @staticmethod
    def contact_policy(account: Mapping[str, Any] | None) -> ContactPolicy | None:
        """The account's contact policy (validated on write), or None."""
        return ContactPolicy.from_document((account or {}).get("contact_policy"))

    def concurrency_limit(self, account: Mapping[str, Any] | None) -> int:
        """Provider slots of the account; ``DEFAULT_CONCURRENCY_LIMIT`` when unset or unknown."""
        value = (account or {}).get("concurrency_limit")
        return int(value) if value else self.config.default_concurrency_limit

    def concurrency_limits(self, account_ids: Sequence[str]) -> dict[str, int]:
        """Provider slots of each account (one read for all); the default for an unknown one."""
        docs = {d["_id"]: d for d in self.coll.find({"_id": {"$in": list(account_ids)}}, {"concurrency_limit": 1})}
        return {account_id: self.concurrency_limit(docs.get(account_id)) for account_id in account_ids}
