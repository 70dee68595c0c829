"""``PUT /accounts/{account_id}``: create an account, or change its plan, balance, concurrency limit, contact
policy and result webhook.

The body is validated by :func:`shared.stores.accounts.parse_account_request`
(:class:`shared.domain.shapes.AccountShape`).
Each change is one conditional write of the account that journals the ledger entries it implies
(:meth:`shared.stores.billing.Billing.write_change`, the same journaled write a top-up makes): setting the balance
writes an ``adjustment`` for the difference, changing the plan type closes the old balance and opens the new
one. The view answered is :meth:`shared.stores.billing.Billing.balance`'s. See docs/billing.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from shared.domain.result_hooks import Resolver, TargetRefused, resolve_target
from shared.errors import StoreError, ValidationError
from shared.logs import event, get_logger, register_secret
from shared.stores import ledger
from shared.stores.accounts import AccountRequest, Plan, from_storage_units, parse_account_request, validate_account_id
from shared.stores.billing import DEFAULT_WRITE_ATTEMPTS, WAITING_MARKER, Billing, Change
from shared.stores.contact_history import ContactHistory
from shared.stores.mongo import new_id
from shared.stores.result_events import resolve_addresses

if TYPE_CHECKING:
    from shared.stores.jobs import JobStore

log = get_logger(__name__)


class AccountChanges:
    """``PUT /accounts/{account_id}`` on the accounts ``billing`` keeps (thread-safe, like it).

    :param billing: the billing service: its accounts, journaled writes, job store (to release
        ``waiting_balance`` jobs) and account view.
    :param resolve: the DNS look-up a ``result_webhook.url``'s host is checked with (default the system's).
    """

    def __init__(self, billing: Billing, *, resolve: Resolver | None = None) -> None:
        self.billing = billing
        self.resolve = resolve or resolve_addresses
        self.db = billing.db
        self.accounts: Collection[dict[str, Any]] = billing.accounts
        self.clock = billing.clock

    @property
    def jobs(self) -> JobStore:
        return self.billing.jobs

    def apply(self, account_id: str, body: object) -> tuple[dict[str, Any], bool]:
        """Validate and apply ``PUT /accounts/{account_id}``; returns ``(account_view, created)``.

        Body: ``{"plan": {"type", "balance", "price_per_minute", "granularity"}, "concurrency_limit",
        "contact_policy", "result_webhook": {"url", "secret", "events"}}``
        (:func:`shared.stores.accounts.parse_account_request`). ``plan`` is required to create an account.
        ``plan.balance`` sets the absolute balance (minutes or credits); the difference is written
        as an ``adjustment`` entry. Changing the plan type closes the old balance with an
        adjustment and opens the new one; it is refused while calls hold reservations. A balance
        below what calls in progress hold is refused. When the write makes balance available (or
        the plan unlimited), the account's ``waiting_balance`` jobs go back to pending
        (``released_jobs`` in the view).

        ``result_webhook`` (null removes it) is checked for its target (``result_webhook.url``: https, a public
        address, see :func:`shared.domain.result_hooks.resolve_target`); left without ``secret``, it keeps the stored
        one.

        :raises ValidationError: naming each bad field (``plan.type``, ``plan.balance``, ...).
        """
        account_id = validate_account_id(account_id)
        request = parse_account_request(body)
        self._check_webhook(request)
        for _ in range(DEFAULT_WRITE_ATTEMPTS):
            account = self.accounts.find_one({"_id": account_id}, {"holds": 0})
            if account is None:
                created = self._create_account(account_id, request)
                if created is not None:
                    return created, True
                continue
            change = self._account_change(account, request)
            if change is None or self.billing.write_change(account_id, change):
                if request.has_contact_policy and request.contact_policy is None and account.get("contact_policy"):
                    # a later policy seeds its counts from the attempts again, not from a history left unkept
                    ContactHistory(self.db, clock=self.clock).drop_account(account_id)
                released = self.jobs.release_waiting_balance(account_id) if change and change.frees_balance else 0
                view = self.billing.balance(account_id)
                view["released_jobs"] = released
                return view, False
        raise StoreError(f"account {account_id!r} kept changing while it was being updated; try again")

    def _create_account(self, account_id: str, request: AccountRequest) -> dict[str, Any] | None:
        if request.plan is None:
            raise ValidationError([("plan", "is required to create an account")])
        plan, now = request.plan, self.clock.now_ms()
        balance = int(request.balance or 0) if plan.metered else 0
        doc: dict[str, Any] = {"_id": account_id, "plan": plan.to_document(), "unit": plan.unit, "balance": balance,
                               "reserved": 0, "available": balance, "holds": {}, "holds_n": 0, "journal": {},
                               "journal_seq": 0, "plan_rev": 1, "created_at": now, "updated_at": now}
        if request.concurrency_limit is not None:
            doc["concurrency_limit"] = request.concurrency_limit
        if request.contact_policy is not None:
            doc["contact_policy"] = request.contact_policy
        if request.result_webhook is not None:
            doc["result_webhook"] = self._webhook_document(None, request.result_webhook, now)
        entries: dict[str, dict[str, Any]] = {}
        if balance:
            entries[f"adjust:{new_id()}"] = self._adjustment(account_id, plan.unit, balance, "account created", now)
            doc.update(journal=dict(entries), journal_seq=1, journal_at=now)
        try:
            self.accounts.insert_one(doc)
        except DuplicateKeyError:
            return None
        self.billing.post_and_drop(account_id, entries)
        released = self.jobs.release_waiting_balance(account_id)
        event(log, "account_created", account_id=account_id, plan=plan.type, balance=balance, unit=plan.unit)
        view = self.billing.balance(account_id)
        view["released_jobs"] = released
        return view

    def _check_webhook(self, request: AccountRequest) -> None:
        """Refuse a ``result_webhook.url`` that deliveries may not go to: not https (unless private targets are
        allowed), or a host that is, or resolves to, an address that is not public (every address is checked)."""
        if request.result_webhook is None:
            return
        try:
            resolve_target(request.result_webhook["url"], resolve=self.resolve,
                           allow_private=self.billing.config.result_webhooks_allow_private)
        except TargetRefused as exc:
            raise ValidationError([("result_webhook.url", str(exc))]) from None

    @staticmethod
    def _webhook_document(stored: Mapping[str, Any] | None, given: Mapping[str, Any], now: int) -> dict[str, Any]:
        """The stored ``result_webhook`` a PUT writes: its URL and events, and its secret, or the stored one when
        the PUT leaves it out (a webhook set for the first time needs one)."""
        secret = given.get("secret") or (stored or {}).get("secret")
        if not secret:
            raise ValidationError([("result_webhook.secret", "is required to set a result webhook (at least 16 "
                                                             "characters; it signs every delivery)")])
        register_secret(secret)
        return {"url": given["url"], "secret": secret, "events": list(given["events"]), "updated_at": now}

    @staticmethod
    def _adjustment(account_id: str, unit: str | None, delta: int, reason: str, now: int) -> dict[str, Any]:
        return {"account_id": account_id, "kind": ledger.KIND_ADJUSTMENT, "unit": unit, "balance_delta": delta,
                "reserved_delta": 0, "amount": delta, "reason": reason, "at": now}

    def _account_change(self, account: Mapping[str, Any], request: AccountRequest) -> Change | None:
        """The conditional write a PUT makes on an existing account (None: nothing to change)."""
        account_id, now = account["_id"], self.clock.now_ms()
        old = Plan.from_document(account.get("plan")) if account.get("plan") else None
        new = request.plan or old
        sets: dict[str, Any] = {"updated_at": now}
        change = Change(query={"_id": account_id, "plan_rev": account.get("plan_rev")},
                        update={"$set": sets, "$inc": {"plan_rev": 1}})
        webhook = request.result_webhook
        if webhook is not None:
            webhook = self._webhook_document(account.get("result_webhook"), webhook, now)
        for name, named, value in (("concurrency_limit", request.has_concurrency_limit, request.concurrency_limit),
                                   ("contact_policy", request.has_contact_policy, request.contact_policy),
                                   ("result_webhook", request.has_result_webhook, webhook)):
            if not named:
                continue
            if value is None:
                change.update.setdefault("$unset", {})[name] = ""
            else:
                sets[name] = value
        if request.plan is None or new is None:
            named = request.has_concurrency_limit or request.has_contact_policy or request.has_result_webhook
            return change if named else None
        sets["plan"] = new.to_document()
        if old is not None and old.type == new.type and account.get("unit") == new.unit:
            self._same_type(account, new, request, change, now)
        else:
            self._type_change(account, old, new, request, change, now)
        return change

    def _same_type(self, account: Mapping[str, Any], plan: Plan, request: AccountRequest, change: Change,
                   now: int) -> None:
        if not plan.metered or request.balance is None:
            return
        balance, reserved = int(account.get("balance", 0) or 0), int(account.get("reserved", 0) or 0)
        if request.balance < reserved:
            raise ValidationError([("plan.balance", f"must be at least {from_storage_units(plan.type, reserved)} "
                                                    f"(held by {account.get('holds_n', 0)} calls in progress)")])
        delta = request.balance - balance
        change.query["balance"] = account.get("balance")
        change.query["reserved"] = {"$lte": request.balance} if "reserved" in account else None
        if delta:
            change.update["$inc"].update(balance=delta, available=delta)
            if delta > 0:
                change.update.setdefault("$unset", {})[WAITING_MARKER] = ""
            change.entries[f"adjust:{new_id()}"] = self._adjustment(account["_id"], plan.unit, delta, "balance set",
                                                                    now)
            change.frees_balance = delta > 0

    def _type_change(self, account: Mapping[str, Any], old: Plan | None, new: Plan, request: AccountRequest,
                     change: Change, now: int) -> None:
        holds = int(account.get("holds_n", 0) or 0)
        if holds:
            raise ValidationError([("plan.type", f"cannot change from {old.type if old else 'none'} to {new.type} "
                                                 f"while {holds} calls hold a reservation; try again when they end")])
        change.query["holds_n"] = {"$in": [0, None]}
        change.query["balance"] = account.get("balance")
        old_balance = int(account.get("balance", 0) or 0)
        old_unit = account.get("unit") or (old.unit if old else None)
        if old_balance and old_unit:
            change.entries[f"adjust:{new_id()}"] = self._adjustment(account["_id"], old_unit, -old_balance,
                                                                    "plan changed: old balance closed", now)
        balance = int(request.balance or 0) if new.metered else 0
        if balance:
            change.entries[f"adjust:{new_id()}"] = self._adjustment(account["_id"], new.unit, balance,
                                                                    "plan changed: new balance", now)
        change.update["$set"].update(unit=new.unit, balance=balance, reserved=0, available=balance, holds_n=0)
        change.frees_balance = balance > 0 or not new.metered
        if change.frees_balance:
            change.update.setdefault("$unset", {})[WAITING_MARKER] = ""
