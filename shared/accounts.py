"""The account store: who pays, under which plan, with how many provider slots.

An account is ``{_id, plan: {type, ...}, concurrency_limit, created_at, updated_at}``. Balances,
reservations and the ledger live in :mod:`shared.billing`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pymongo.collection import Collection
from pymongo.database import Database

from shared.clock import Clock, get_clock
from shared.config import Config, get_config
from shared.errors import NotFound, ValidationError
from shared.mongo import ACCOUNTS

#: Longest account id, characters.
MAX_ACCOUNT_ID = 100
PLAN_TYPES = ("unlimited", "minutes", "credits")


def validate_account_id(account_id: object) -> str:
    if not isinstance(account_id, str) or not account_id.strip() or len(account_id) > MAX_ACCOUNT_ID:
        raise ValidationError([("account_id", f"must be a non-empty string of at most {MAX_ACCOUNT_ID} characters")])
    if account_id.startswith("$") or "\x00" in account_id:
        raise ValidationError([("account_id", "cannot start with '$' or contain NUL")])
    return account_id.strip()


class AccountStore:
    """Accounts in the ``accounts`` collection."""

    def __init__(self, db: Database, *, clock: Clock | None = None, config: Config | None = None) -> None:
        self.coll: Collection = db[ACCOUNTS]
        self.clock = clock or get_clock()
        self.config = config or get_config()

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

    def concurrency_limit(self, account: Mapping[str, Any] | None) -> int:
        """Provider slots of the account; ``DEFAULT_CONCURRENCY_LIMIT`` when unset or unknown."""
        value = (account or {}).get("concurrency_limit")
        return int(value) if value else self.config.default_concurrency_limit
