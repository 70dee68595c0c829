"""Billing against the real MongoDB wire server: reservations, settlement, recovery, policies, the account API."""

from __future__ import annotations

import pytest

from shared.domain import states
from shared.domain.call_settings import parse_call_settings
from shared.errors import NotFound, ValidationError
from shared.pipeline.dial import insufficient_balance
from shared.stores import ledger, mongo
from shared.stores.account_changes import AccountChanges
from shared.stores.billing import ReservationStatus, hold_key
from tests.fixtures.billing import Crash

MAX_S = 600

WAIT = parse_call_settings({"on_insufficient_balance": "wait"})
FAIL = parse_call_settings({})


def aid(n: int | str = 1) -> str:
    return f"{'a' * 24}:r1:p0:d{n}"


def reserve(billing, account_id, attempt=1, max_s=MAX_S):
    return billing.reserve(account_id, attempt_id=aid(attempt), job_id="a" * 24, max_call_duration_s=max_s)


def units(billing, account_id):
    return billing.balance(account_id)["units"]


# -- settlement by duration, per plan and granularity ---------------------------------------------


@pytest.mark.parametrize(("plan", "granularity", "price", "duration_ms", "reserved", "charged"), [
    ("minutes", "second", None, 61_001, 600, 62),  # every started second
    ("minutes", "minute", None, 61_001, 600, 120),  # every started minute
    ("minutes", "minute", None, 60_000, 600, 60),
    ("credits", "second", 2.5, 61_001, 25_000, 2_584),  # 62 s x 2,500 mc/min / 60 = 2,583.3 -> 2,584
    ("credits", "minute", 2.5, 61_001, 25_000, 5_000),  # 2 minutes x 2.5 credits
    ("credits", "second", 0.001, 1, 10, 1),  # the smallest price still charges a started milli-credit
])
def test_settlement_charges_the_billable_duration_and_releases_the_rest(
        billing, new_account, plan, granularity, price, duration_ms, reserved, charged):
    account = new_account(plan, 1000, price_per_minute=price, granularity=granularity)
    start = units(billing, account)["balance"]
    res = reserve(billing, account)
    assert res.ok and res.amount == reserved and res.needed == reserved
    assert units(billing, account) == {"unit": res.unit, "balance": start, "reserved": reserved,
                                       "available": start - reserved}
    assert billing.settle(aid(), duration_ms=duration_ms) == charged
    assert units(billing, account) == {"unit": res.unit, "balance": start - charged, "reserved": 0,
                                       "available": start - charged}
    entry = ledger.get_entry(billing.db, ledger.charge_entry_id(hold_key(aid())))
    assert (entry["kind"], entry["charged"], entry["released"]) == ("charge", charged, reserved - charged)
    check = billing.check(account)
    assert check.posted, check.problems
    assert check.ledger_balance == start - charged


@pytest.mark.parametrize("duration_ms", [0, None])
def test_a_call_that_never_connected_costs_nothing(billing, new_account, duration_ms):
    account = new_account("credits", 50, price_per_minute=1)
    assert reserve(billing, account).ok
    assert billing.settle(aid(), duration_ms=duration_ms) == 0
    assert units(billing, account) == {"unit": "millicredit", "balance": 50_000, "reserved": 0, "available": 50_000}
    assert billing.check(account).posted


def test_release_gives_everything_back(billing, new_account):
    account = new_account("minutes", 20)
    assert reserve(billing, account).amount == MAX_S
    assert billing.release(aid()) == MAX_S
    assert units(billing, account)["available"] == 1200
    [entry] = billing.db.ledger.find({"kind": "release"})
    assert (entry["attempt_id"], entry["balance_delta"], entry["reserved_delta"]) == (aid(), 0, -MAX_S)
    assert billing.check(account).posted


def test_a_call_longer_than_its_reservation_is_charged_the_reservation(billing, new_account):
    account = new_account("minutes", 11)  # 660 s
    reserve(billing, account)
    assert billing.settle(aid(), duration_ms=900_000) == MAX_S
    assert units(billing, account)["balance"] == 60
    assert billing.check(account).posted


# -- idempotency ----------------------------------------------------------------------------------


def test_reserve_is_idempotent_per_attempt(billing, new_account):
    account = new_account("minutes", 30)
    first = reserve(billing, account)
    again = reserve(billing, account)
    assert first.ok and again.ok and again.duplicate and again.amount == first.amount
    assert units(billing, account)["reserved"] == MAX_S
    assert billing.db.ledger.count_documents({"kind": "reserve"}) == 1


def test_settle_and_release_are_idempotent_and_never_charge_twice(billing, new_account):
    account = new_account("minutes", 30)
    reserve(billing, account)
    assert billing.settle(aid(), duration_ms=30_000) == 30
    assert billing.settle(aid(), duration_ms=90_000) == 30  # the first settlement stands
    assert billing.release(aid()) == MAX_S - 30  # what that settlement released; nothing moves
    assert units(billing, account) == {"unit": "second", "balance": 1770, "reserved": 0, "available": 1770}
    assert billing.db.ledger.count_documents({"kind": {"$in": ["charge", "release"]}}) == 1
    assert billing.check(account).posted


def test_an_attempt_released_for_lack_of_a_slot_can_be_reserved_again(billing, new_account):
    """The pipeline releases when no provider slot is free and re-dials the same attempt id later."""
    account = new_account("minutes", 30)
    first = reserve(billing, account)
    assert billing.release(aid()) == MAX_S
    again = reserve(billing, account)
    assert again.ok and not again.duplicate and again.amount == MAX_S
    assert billing.settle(aid(), duration_ms=10_000) == 10
    assert units(billing, account) == {"unit": "second", "balance": 1790, "reserved": 0, "available": 1790}
    assert billing.db.ledger.count_documents({"kind": "reserve"}) == 2 and first.ok
    assert billing.check(account).posted


def test_an_attempt_is_never_charged_twice_even_if_reserved_again_after_its_charge(billing, new_account, clock):
    account = new_account("minutes", 30)
    reserve(billing, account)
    assert billing.settle(aid(), duration_ms=10_000) == 10
    assert reserve(billing, account).ok  # a very late redelivery holds again...
    [lost] = billing.open_reservations(older_than_ms=clock.now_ms(), limit=10)
    assert lost.attempt_id == aid()
    assert billing.settle(aid(), duration_ms=10_000) == 10  # ...recovery settles it from the ended attempt
    assert units(billing, account) == {"unit": "second", "balance": 1790, "reserved": 0, "available": 1790}
    assert billing.db.ledger.count_documents({"kind": "charge"}) == 1
    assert billing.db.ledger.count_documents({"kind": "release"}) == 1
    assert billing.check(account).posted


def test_settle_of_an_attempt_that_reserved_nothing_is_zero(billing, new_account):
    assert billing.settle("nothing:r1:p0:d1", duration_ms=10_000) == 0
    assert billing.release("nothing:r1:p0:d1") == 0


# -- plans without balance, unknown accounts, insufficient balance ---------------------------------


def test_unlimited_costs_one_read_and_no_write(billing, new_account):
    account = new_account("unlimited")
    mongo.COMMANDS.reset()
    res = reserve(billing, account)
    assert res.ok and res.unlimited and res.amount == 0
    assert mongo.COMMANDS.counts == {"find": 1}
    assert billing.settle(aid(), duration_ms=60_000) == 0
    assert billing.db.ledger.count_documents({}) == 0
    assert billing.balance(account)["balance"] is None


def test_unknown_account(billing):
    res = reserve(billing, "nobody")
    assert res.status == ReservationStatus.UNKNOWN_ACCOUNT and not res.ok and res.reason == "account not found"


def test_insufficient_balance_writes_nothing(billing, new_account):
    account = new_account("minutes", 9.5)  # 570 s < 600 s
    mongo.COMMANDS.reset()
    res = reserve(billing, account)
    assert res.status == ReservationStatus.INSUFFICIENT_BALANCE and res.needed == 600 and res.available == 570
    assert res.reason == "insufficient balance"
    assert mongo.COMMANDS.counts == {"find": 1}
    assert reserve(billing, account, max_s=570).ok  # a shorter call fits exactly


def test_reservations_stop_at_the_balance(billing, new_account):
    account = new_account("minutes", 30)  # three 10-minute calls
    results = [reserve(billing, account, n).status for n in range(5)]
    # the balance covers a fourth call, but the three in progress hold all of it
    assert results == [ReservationStatus.OK] * 3 + [ReservationStatus.HELD_BY_CALLS] * 2
    assert units(billing, account) == {"unit": "second", "balance": 1800, "reserved": 1800, "available": 0}


def test_plan_price_change_mid_call_settles_at_the_reserved_price(billing, new_account):
    account = new_account("credits", 100, price_per_minute=1)
    reserve(billing, account)
    AccountChanges(billing).apply(account, {"plan": {"type": "credits", "price_per_minute": 3}})
    assert billing.settle(aid(), duration_ms=60_000) == 1000
    assert reserve(billing, account, 2).amount == 30_000
    assert billing.check(account).posted


# -- crashes between the two writes, and recovery ---------------------------------------------------


def test_lost_reservation_is_listed_oldest_first_and_settled_by_recovery(billing, new_account, clock):
    account = new_account("minutes", 60)
    for n in (1, 2, 3):
        reserve(billing, account, n)
    cutoff = clock.now_ms()
    reserve(billing, account, 4)  # too young for a cutoff before it
    young = billing.db.accounts.find_one({"_id": account})["holds"][hold_key(aid(4))]["at"]
    found = billing.open_reservations(older_than_ms=min(cutoff, young - 1), limit=2)
    assert [r.attempt_id for r in found] == [aid(1), aid(2)]
    assert found[0].account_id == account and found[0].amount == MAX_S and found[0].job_id == "a" * 24
    billing.settle(found[0].attempt_id, duration_ms=5_000)
    billing.release(found[1].attempt_id)
    rest = billing.open_reservations(older_than_ms=young, limit=10)
    assert [r.attempt_id for r in rest] == [aid(3), aid(4)]
    assert billing.check(account).posted


def test_crash_after_reserving_is_posted_by_the_redelivered_reserve(billing, new_account, crash_on_post):
    account = new_account("minutes", 30)
    crash_on_post(1)
    with pytest.raises(Crash):
        reserve(billing, account)
    check = billing.check(account)
    assert check.ok and not check.posted and check.unposted == 1  # the hold stands for its entry
    again = reserve(billing, account)
    assert again.ok and again.duplicate and units(billing, account)["reserved"] == MAX_S
    assert billing.check(account).posted


def test_crash_after_reserving_is_recovered_through_open_reservations(billing, new_account, crash_on_post, clock):
    account = new_account("minutes", 30)
    crash_on_post(1)
    with pytest.raises(Crash):
        reserve(billing, account)
    assert billing.release(aid()) == 0  # the pipeline cannot see a reservation whose entry is missing
    found = billing.open_reservations(older_than_ms=clock.now_ms(), limit=10)
    assert [r.attempt_id for r in found] == [aid()]
    assert billing.check(account).posted
    assert billing.release(aid()) == MAX_S
    assert units(billing, account) == {"unit": "second", "balance": 1800, "reserved": 0, "available": 1800}
    assert billing.check(account).posted


def test_crash_after_settling_keeps_the_invariant_and_repair_posts(billing, new_account, crash_on_post):
    account = new_account("credits", 10, price_per_minute=1)
    reserve(billing, account)
    crash_on_post(1)
    with pytest.raises(Crash):
        billing.settle(aid(), duration_ms=30_000)
    check = billing.check(account)
    assert check.ok and check.unposted == 1 and check.balance == 9_500 and check.ledger_balance == 10_000
    assert billing.settle(aid(), duration_ms=30_000) == 500  # a redelivery: same charge, posted from the journal
    assert billing.check(account).posted
    assert billing.settle(aid(), duration_ms=90_000) == 500


def test_repair_posts_a_dead_settlement_and_cleans_journals(billing, new_account, crash_on_post):
    account = new_account("minutes", 30)
    reserve(billing, account)
    crash_on_post(1)
    with pytest.raises(Crash):
        billing.settle(aid(), duration_ms=42_000)
    assert billing.repair(min_age_ms=60_000).journal_entries_posted == 0  # too young: maybe still in flight
    report = billing.repair(min_age_ms=0)
    assert report.journal_entries_posted == 1
    check = billing.check(account)
    assert check.posted and check.balance == 1758
    doc = billing.db.accounts.find_one({"_id": account})
    assert doc["journal"] == {} and "journal_at" not in doc


def test_repair_after_a_dead_top_up_releases_waiting_jobs(billing, new_account, crash_on_post, queued_job,
                                                         job_store):
    account = new_account("minutes", 1)
    job = queued_job(account)
    res = reserve(billing, account)
    insufficient_balance(job_store, billing, job, WAIT, res,
                         lease_owner=job["lease_owner"])
    crash_on_post(1)
    with pytest.raises(Crash):
        billing.top_up(account, 60)
    assert job_store.get(job["_id"])["status"] == states.WAITING_BALANCE
    assert billing.check(account).ok
    report = billing.repair(min_age_ms=0)
    assert report.journal_entries_posted == 1 and report.accounts_released == 1
    assert job_store.get(job["_id"])["status"] == states.PENDING
    assert billing.check(account).posted


def test_a_hold_made_while_the_charge_is_only_journaled_is_given_back(billing, new_account, crash_on_post):
    account = new_account("minutes", 30)
    reserve(billing, account)
    crash_on_post(1)
    with pytest.raises(Crash):
        billing.settle(aid(), duration_ms=20_000)  # charged 20 s; the entry is only in the journal
    assert reserve(billing, account).ok
    assert billing.settle(aid(), duration_ms=50_000) == 20
    assert units(billing, account) == {"unit": "second", "balance": 1780, "reserved": 0, "available": 1780}
    check = billing.check(account)
    assert check.posted, check.problems


def test_the_invariant_holds_at_every_crash_point_of_a_call(billing, new_account, crash_on_post, clock):
    """Die at the ledger insert of reserve, settle, top-up, PUT and release in turn: the account always
    checks out counting what is not posted yet; redeliveries and repair() post everything."""
    account = new_account("minutes", 100)
    steps = [  # (step, whether the message is redelivered afterwards)
        (lambda: reserve(billing, account, 1), True),
        (lambda: billing.settle(aid(1), duration_ms=61_000), True),
        (lambda: billing.top_up(account, 5), False),  # not idempotent: left to repair()
        (lambda: AccountChanges(billing).apply(account, {"plan": {"type": "minutes", "balance": 50}}), True),
        (lambda: reserve(billing, account, 2), False),  # left to open_reservations()
    ]
    for step, redelivered in steps:
        crash_on_post(1)
        with pytest.raises(Crash):
            step()
        check = billing.check(account)
        assert check.ok and not check.posted, check.problems
        if redelivered:
            step()
            assert billing.check(account).ok
    assert [r.attempt_id for r in billing.open_reservations(older_than_ms=clock.now_ms(), limit=10)] == [aid(2)]
    crash_on_post(1)
    with pytest.raises(Crash):
        billing.release(aid(2))
    assert billing.check(account).ok
    billing.repair(min_age_ms=0)
    check = billing.check(account)
    assert check.posted, check.problems
    assert (check.balance, check.reserved) == (3000, 0)


# -- insufficient-balance policies -----------------------------------------------------------------


def test_policy_fail_fails_the_contact_terminally(billing, new_account, queued_job, job_store):
    account = new_account("minutes", 0)
    job = queued_job(account)
    res = reserve(billing, account)
    after = insufficient_balance(job_store, billing, job, FAIL, res, lease_owner=job["lease_owner"])
    assert after["status"] == states.FAILED and after["last_error"] == "insufficient balance"
    assert billing.top_up(account, 30)["released_jobs"] == 0
    assert job_store.get(job["_id"])["status"] == states.FAILED


def test_policy_wait_parks_the_contact_until_a_top_up(billing, new_account, queued_job, job_store):
    account = new_account("credits", 1, price_per_minute=1)
    jobs = [queued_job(account) for _ in range(3)]
    for job in jobs:
        res = reserve(billing, account, job["_id"])
        assert res.status == ReservationStatus.INSUFFICIENT_BALANCE
        after = insufficient_balance(job_store, billing, job, WAIT, res,
                                                lease_owner=job["lease_owner"])
        assert after["status"] == states.WAITING_BALANCE and after["last_error"] == "insufficient balance"
        assert "lease_owner" not in after
    view = billing.top_up(account, 9)
    assert view["released_jobs"] == 3 and view["balance"] == 10.0
    for job in jobs:
        assert job_store.get(job["_id"])["status"] == states.PENDING


def test_policy_wait_releases_at_once_when_a_top_up_raced_the_park(billing, new_account, queued_job, job_store):
    account = new_account("minutes", 1)
    job = queued_job(account)
    res = reserve(billing, account)
    billing.top_up(account, 20)  # lands after the refusal, before the job is parked
    after = insufficient_balance(job_store, billing, job, WAIT, res,
                                            lease_owner=job["lease_owner"])
    assert after["status"] == states.PENDING


def test_policy_wait_for_an_unknown_account_ends_when_it_is_created(billing, queued_job, job_store):
    job = queued_job("later")
    res = reserve(billing, "later")
    after = insufficient_balance(job_store, billing, job, WAIT, res,
                                            lease_owner=job["lease_owner"])
    assert after["status"] == states.WAITING_BALANCE and after["last_error"] == "account not found"
    view, created = AccountChanges(billing).apply("later", {"plan": {"type": "minutes", "balance": 10}})
    assert created and view["released_jobs"] == 1
    assert job_store.get(job["_id"])["status"] == states.PENDING


def test_a_stale_job_is_left_alone(billing, new_account, queued_job, job_store):
    account = new_account("minutes", 0)
    job = queued_job(account)
    res = reserve(billing, account)
    assert insufficient_balance(job_store, billing, job, FAIL, res, lease_owner="someone-else") is None


# -- the account API -------------------------------------------------------------------------------


def test_put_creates_then_updates_with_an_adjustment_for_the_difference(billing):
    view, created = AccountChanges(billing).apply("acme", {"plan": {"type": "minutes", "balance": 1.5},
                                                           "concurrency_limit": 5})
    assert created and view["balance"] == 1.5 and view["units"]["balance"] == 90 and view["concurrency_limit"] == 5
    view, created = AccountChanges(billing).apply("acme", {"plan": {"type": "minutes", "balance": 1}})
    assert not created and view["units"]["balance"] == 60 and view["concurrency_limit"] == 5
    adjustments = sorted(e["balance_delta"] for e in billing.db.ledger.find({"kind": "adjustment"}))
    assert adjustments == [-30, 90]
    view, _ = AccountChanges(billing).apply("acme", {"concurrency_limit": None})
    assert view["concurrency_limit"] is None and view["units"]["balance"] == 60
    assert billing.check("acme").posted


def test_put_changing_the_plan_closes_the_old_unit_and_opens_the_new(billing, new_account):
    account = new_account("minutes", 10)
    view, _ = AccountChanges(billing).apply(account, {"plan": {"type": "credits", "balance": 2.125,
                                                               "price_per_minute": 0.5, "granularity": "minute"}})
    assert view["plan"] == {"type": "credits", "granularity": "minute", "price_per_minute": 0.5}
    assert view["units"] == {"unit": "millicredit", "balance": 2125, "reserved": 0, "available": 2125}
    assert ledger.sums(billing.db, account) == {"second": (0, 0), "millicredit": (2125, 0)}
    view, _ = AccountChanges(billing).apply(account, {"plan": {"type": "unlimited"}})
    assert view["balance"] is None
    check = billing.check(account)
    assert check.posted, check.problems


def test_put_refuses_a_plan_change_or_a_balance_below_what_calls_hold(billing, new_account):
    account = new_account("minutes", 30)
    reserve(billing, account)
    with pytest.raises(ValidationError) as info:
        AccountChanges(billing).apply(account, {"plan": {"type": "unlimited"}})
    assert info.value.errors[0][0] == "plan.type" and "1 calls hold a reservation" in info.value.errors[0][1]
    with pytest.raises(ValidationError) as info:
        AccountChanges(billing).apply(account, {"plan": {"type": "minutes", "balance": 5}})
    assert info.value.errors[0][0] == "plan.balance" and "at least 10.0" in info.value.errors[0][1]
    view, _ = AccountChanges(billing).apply(account, {"plan": {"type": "minutes", "balance": 10}})
    assert view["units"] == {"unit": "second", "balance": 600, "reserved": 600, "available": 0}
    assert billing.check(account).posted


@pytest.mark.parametrize(("body", "fields"), [
    ({"plan": {"type": "gold"}}, ["plan.type"]),
    ({"plan": {"type": "minutes", "balance": -1}}, ["plan.balance"]),
    ({"plan": {"type": "minutes", "balance": "ten"}}, ["plan.balance"]),
    ({"plan": {"type": "minutes", "balance": 0.01}}, ["plan.balance"]),  # 0.6 s is not a whole second
    ({"plan": {"type": "minutes", "balance": True}}, ["plan.balance"]),
    ({"plan": {"type": "credits", "balance": 1.0001, "price_per_minute": 1}}, ["plan.balance"]),
    ({"plan": {"type": "credits", "balance": 5}}, ["plan.price_per_minute"]),
    ({"plan": {"type": "credits", "price_per_minute": 0}}, ["plan.price_per_minute"]),
    ({"plan": {"type": "minutes", "price_per_minute": 1}}, ["plan.price_per_minute"]),
    ({"plan": {"type": "unlimited", "balance": 5}}, ["plan.balance"]),
    ({"plan": {"type": "minutes", "granularity": "hour"}}, ["plan.granularity"]),
    ({"plan": {"type": "minutes", "colour": "red"}}, ["plan.colour"]),
    ({"plan": "minutes"}, ["plan"]),
    ({"plan": {"type": "unlimited"}, "concurrency_limit": 0}, ["concurrency_limit"]),
    ({"plan": {"type": "unlimited"}, "concurrency_limit": 2.5}, ["concurrency_limit"]),
    ({"plan": {"type": "unlimited"}, "owner": "x"}, ["owner"]),
    ({"plan": {"type": "minutes", "balance": float("nan")}}, ["plan.balance"]),
    ({"plan": {"type": "credits", "balance": -1, "price_per_minute": "x"}}, ["plan.price_per_minute", "plan.balance"]),
    ({"concurrency_limit": 3}, ["plan"]),  # a new account needs a plan
    ([], ["body"]),
])
def test_put_validation_names_the_field_and_writes_nothing(billing, body, fields):
    with pytest.raises(ValidationError) as info:
        AccountChanges(billing).apply("newco", body)
    assert [f for f, _ in info.value.errors] == fields
    assert billing.db.accounts.count_documents({}) == 0 and billing.db.ledger.count_documents({}) == 0


def test_put_rejects_a_bad_account_id(billing):
    with pytest.raises(ValidationError) as info:
        AccountChanges(billing).apply("$x", {"plan": {"type": "unlimited"}})
    assert info.value.errors[0][0] == "account_id"


def test_top_up_validation(billing, new_account):
    minutes = new_account("minutes", 1)
    unlimited = new_account("unlimited")
    for amount in (0, -5, "5", 0.001):
        with pytest.raises(ValidationError) as info:
            billing.top_up(minutes, amount)
        assert info.value.errors[0][0] == "amount"
    with pytest.raises(ValidationError):
        billing.top_up(unlimited, 5)
    with pytest.raises(NotFound):
        billing.top_up("nobody", 5)
    with pytest.raises(NotFound):
        billing.balance("nobody")
    assert units(billing, minutes)["balance"] == 60
    assert billing.db.ledger.count_documents({"kind": "topup"}) == 0


def test_balance_view_in_api_units(billing, new_account):
    account = new_account("credits", 12.5, price_per_minute=0.25)
    reserve(billing, account)  # 10 minutes x 0.25 = 2.5 credits
    view = billing.balance(account)
    assert (view["balance"], view["reserved"], view["available"]) == (12.5, 2.5, 10.0)
    assert view["plan"] == {"type": "credits", "granularity": "second", "price_per_minute": 0.25}
    assert view["open_reservations"] == 1


def test_account_store_keeps_working_with_billing_fields(db, config, clock, billing, new_account):
    from shared.stores.accounts import AccountStore

    store = AccountStore(db, clock=clock, config=config)
    account = new_account("minutes", 10)
    doc, created = store.upsert(account, {"concurrency_limit": 7})
    assert not created and store.concurrency_limit(doc) == 7 and doc["balance"] == 600
    assert billing.check(account).posted


def test_attempt_ids_that_cannot_be_field_names_are_hashed(billing, new_account, clock):
    account = new_account("minutes", 30)
    weird = "job.1:$r1"
    assert billing.reserve(account, attempt_id=weird, job_id="j", max_call_duration_s=60).ok
    assert [r.attempt_id for r in billing.open_reservations(older_than_ms=clock.now_ms(), limit=5)] == [weird]
    assert billing.settle(weird, duration_ms=1) == 1
    assert billing.check(account).posted


# -- balance held by calls in progress -----------------------------------------------------------------


def test_balance_held_by_calls_in_progress_is_not_an_insufficient_balance(billing, new_account):
    account = new_account("minutes", 20)  # two 10-minute calls at once
    assert reserve(billing, account, 1).ok and reserve(billing, account, 2).ok
    mongo.COMMANDS.reset()
    res = reserve(billing, account, 3)
    assert res.status.value == "held_by_calls" and not res.ok
    assert (res.needed, res.available, res.balance) == (600, 0, 1200)
    assert res.reason == "the balance left is held by calls in progress; dialing again in a moment"
    assert mongo.COMMANDS.counts == {"find": 1}  # still one read, no write
    billing.settle(aid(1), duration_ms=30_000)  # 1,170 s, 600 of them still held by the second call
    assert reserve(billing, account, 3).status == ReservationStatus.HELD_BY_CALLS
    billing.settle(aid(2), duration_ms=30_000)
    assert reserve(billing, account, 3).ok


@pytest.mark.parametrize("settings", [FAIL, WAIT], ids=["fail", "wait"])
def test_a_contact_whose_balance_calls_in_progress_hold_is_dialed_again_not_failed_or_parked(
        billing, new_account, queued_job, job_store, clock, settings):
    """The reported case: 20 minutes of balance, calls of at most 600 s, 3 contacts answered 30 s each."""
    account = new_account("minutes", 20)
    jobs = [queued_job(account) for _ in range(3)]
    assert reserve(billing, account, 1).ok and reserve(billing, account, 2).ok
    refused = reserve(billing, account, 3)
    after = insufficient_balance(job_store, billing, jobs[2], settings, refused, lease_owner=jobs[2]["lease_owner"])
    assert after["status"] == states.PENDING and after["reason_code"] == "held_by_calls"
    assert after["next_try_at"] >= clock.now_ms() - 1000 and "lease_owner" not in after
    for n in (1, 2):
        assert billing.settle(aid(n), duration_ms=30_000) == 30
    assert reserve(billing, account, 3).ok
    assert billing.settle(aid(3), duration_ms=30_000) == 30
    assert units(billing, account) == {"unit": "second", "balance": 1110, "reserved": 0, "available": 1110}
    assert billing.check(account).ok


@pytest.mark.parametrize("settings", [FAIL, WAIT], ids=["fail", "wait"])
def test_a_balance_below_one_call_still_fails_or_waits(billing, new_account, queued_job, job_store, settings):
    account = new_account("minutes", 20)
    job = queued_job(account)
    assert reserve(billing, account, 1).ok
    billing.settle(aid(1), duration_ms=601_000)  # charged the whole reservation: 600 s left
    assert reserve(billing, account, 2).ok
    billing.settle(aid(2), duration_ms=1_000)  # 599 s left: not one 600 s call
    refused = reserve(billing, account, 3)
    assert refused.status == ReservationStatus.INSUFFICIENT_BALANCE and refused.balance == 599
    after = insufficient_balance(job_store, billing, job, settings, refused, lease_owner=job["lease_owner"])
    assert after["status"] == (states.FAILED if settings is FAIL else states.WAITING_BALANCE)
    assert after["last_error"] == "insufficient balance"


@pytest.mark.parametrize("finish", ["settle", "release"])
def test_a_settle_or_release_that_makes_available_cover_a_waiting_contact_releases_it(
        billing, new_account, queued_job, job_store, finish):
    account = new_account("minutes", 5)  # 300 s: not one 600 s call
    job = queued_job(account)
    refused = reserve(billing, account, "w")
    assert refused.status == ReservationStatus.INSUFFICIENT_BALANCE
    assert billing.top_up(account, 10)["released_jobs"] == 0  # lands before the park: nobody waits yet
    assert reserve(billing, account, 1).ok  # and a call takes 600 of the 900 s before the park
    parked = insufficient_balance(job_store, billing, job, WAIT, refused, lease_owner=job["lease_owner"])
    assert parked["status"] == states.WAITING_BALANCE  # 300 s available: the park's read-back does not cover it
    if finish == "settle":
        billing.settle(aid(1), duration_ms=30_000)
    else:
        billing.release(aid(1))
    assert job_store.get(job["_id"])["status"] == states.PENDING
    assert "waiting_balance" not in billing.db.accounts.find_one({"_id": account})
    assert billing.check(account).ok


def test_a_settle_reads_no_job_unless_a_contact_waits_and_the_available_amount_covers_it(
        billing, new_account, queued_job, job_store):
    account = new_account("minutes", 30)
    reserve(billing, account, 1)
    mongo.COMMANDS.reset()
    billing.settle(aid(1), duration_ms=30_000)
    assert mongo.COMMANDS.counts == {"find": 1, "findAndModify": 1, "insert": 1}  # nothing about jobs
    job = queued_job(account)
    for n in (2, 3):
        assert reserve(billing, account, n).ok  # 1,770 - 1,200 = 570 s available
    billing.db.accounts.update_one({"_id": account}, {"$set": {"waiting_balance": 1200}})  # a 20-minute call waits
    job_store.coll.update_one({"_id": job["_id"]}, {"$set": {"status": states.WAITING_BALANCE}})
    mongo.COMMANDS.reset()
    billing.settle(aid(2), duration_ms=30_000)  # 1,140 s available: still short of 1,200
    assert mongo.COMMANDS.counts == {"find": 1, "findAndModify": 1, "insert": 1}
    assert job_store.get(job["_id"])["status"] == states.WAITING_BALANCE
    billing.release(aid(3))  # 1,740 s available
    assert job_store.get(job["_id"])["status"] == states.PENDING
