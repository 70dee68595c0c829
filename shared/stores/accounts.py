"""The account store: who pays, under which plan, with how many provider slots.

An account is ``{_id, plan: {type, granularity, price_millicredits_per_minute}, concurrency_limit,
created_at, updated_at}`` plus the billing fields written by :mod:`shared.stores.billing` (``unit``,
``balance``, ``reserved``, ``available``, ``holds``, ``journal``...). This module holds the plan
itself: its validation, and the conversion between the units of the admin API (minutes, credits)
and the integer units stored (seconds, milli-credits). Money and time are integers in storage, so
the ledger sums exactly to the balance.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pymongo.collection import Collection
from pymongo.database import Database

from shared.clock import Clock
from shared.config import Config
from shared.domain.contact_policy import ContactPolicy, policy_of
from shared.domain.shapes import (
    CONCURRENCY_LIMIT_RANGE,
    DEFAULT_GRANULARITY,
    GRANULARITIES,
    GRANULARITY_MINUTE,
    GRANULARITY_SECOND,
    MAX_ACCOUNT_ID,
    MAX_AMOUNT,
    MAX_PRICE_PER_MINUTE,
    PLAN_CREDITS,
    PLAN_MINUTES,
    PLAN_TYPES,
    PLAN_UNLIMITED,
    UNITS_PER_API_UNIT,
    AccountShape,
    PlanShape,
    to_storage_units,
    validate_shape,
)
from shared.errors import NotFound, ValidationError
from shared.stores.mongo import ACCOUNTS

__all__ = [  # the plan's constants and amounts are the shape's (shared.domain.shapes), named here too
    "ACCOUNT_FIELDS", "CONCURRENCY_LIMIT_RANGE", "DEFAULT_GRANULARITY", "GRANULARITIES", "GRANULARITY_MINUTE",
    "GRANULARITY_SECOND", "MAX_ACCOUNT_ID", "MAX_AMOUNT", "MAX_PRICE_PER_MINUTE", "PLAN_CREDITS", "PLAN_FIELDS",
    "PLAN_MINUTES", "PLAN_TYPES", "PLAN_UNLIMITED", "UNITS_PER_API_UNIT", "UNIT_MILLICREDIT", "UNIT_SECOND",
    "AccountRequest", "AccountStore", "Plan", "from_storage_units", "parse_account_request", "to_storage_units",
    "validate_account_id",
]

#: Storage unit of a ``minutes`` balance: whole seconds.
UNIT_SECOND = "second"
#: Storage unit of a ``credits`` balance: thousandths of a credit.
UNIT_MILLICREDIT = "millicredit"
#: Fields of a ``PUT /accounts/{id}`` body and of its ``plan`` (declared by :class:`shared.domain.shapes.AccountShape`).
ACCOUNT_FIELDS = tuple(AccountShape.model_fields)
PLAN_FIELDS = tuple(PlanShape.model_fields)


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
    :param result_webhook: the body's ``result_webhook`` as validated (``url``, ``secret`` or None, ``events``);
        None: none, or removed.
    :param has_result_webhook: whether the body named ``result_webhook`` at all.
    """

    plan: Plan | None = None
    balance: int | None = None
    concurrency_limit: int | None = None
    has_concurrency_limit: bool = False
    contact_policy: dict[str, Any] | None = None
    has_contact_policy: bool = False
    result_webhook: dict[str, Any] | None = None
    has_result_webhook: bool = False


def from_storage_units(plan_type: str, units: int) -> float:
    """Storage units as API units: seconds / 60 (minutes, rounded to 6 decimals), milli-credits / 1000."""
    per = UNITS_PER_API_UNIT[plan_type]
    value = Decimal(int(units)) / per
    return float(round(value, 6))


def parse_account_request(body: object) -> AccountRequest:
    """Validate a ``PUT /accounts/{account_id}`` body with :class:`shared.domain.shapes.AccountShape` (every problem at
    once).

    ``{"plan": {"type": "unlimited" | "minutes" | "credits", "balance": <minutes or credits>,
    "price_per_minute": <credits, credits plans only>, "granularity": "second" | "minute"},
    "concurrency_limit": <int or null>, "contact_policy": <object or null>}``
    (:func:`shared.domain.contact_policy.parse_contact_policy`); every top-level field is optional here (the
    caller requires ``plan`` when the account is new).

    :raises ValidationError: listing ``(field, message)`` for each problem.
    """
    shape = validate_shape(AccountShape, body)
    if isinstance(shape, list):
        raise ValidationError(shape)
    plan, balance = None, None
    if shape.plan is not None:
        kind, raw = shape.plan.type, shape.plan
        plan = Plan(type=kind) if kind == PLAN_UNLIMITED else Plan(
            type=kind, granularity=raw.granularity or DEFAULT_GRANULARITY,
            price_millicredits_per_minute=to_storage_units(PLAN_CREDITS, raw.price_per_minute, "plan.price_per_minute",
                                                           allow_zero=False, maximum=MAX_PRICE_PER_MINUTE)
            if kind == PLAN_CREDITS else 0)
        if kind != PLAN_UNLIMITED and raw.balance is not None:
            balance = to_storage_units(kind, raw.balance, "plan.balance")
    policy = policy_of(shape.contact_policy)
    return AccountRequest(plan=plan, balance=balance, concurrency_limit=shape.concurrency_limit,
                          has_concurrency_limit="concurrency_limit" in shape.model_fields_set,
                          contact_policy=policy.to_document() if policy else None,
                          has_contact_policy="contact_policy" in shape.model_fields_set,
                          result_webhook=shape.result_webhook.model_dump() if shape.result_webhook else None,
                          has_result_webhook="result_webhook" in shape.model_fields_set)


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

    def __init__(self, db: Database[dict[str, Any]], *, clock: Clock, config: Config) -> None:
        self.coll: Collection[dict[str, Any]] = db[ACCOUNTS]
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
