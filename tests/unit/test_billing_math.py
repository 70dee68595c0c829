"""Billing arithmetic and plan validation: pure functions, no services."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.domain.call_settings import InvalidCallSettings, parse_call_settings
from shared.domain.decisions import insufficient_balance_action
from shared.errors import ValidationError
from shared.stores.accounts import (
    Plan,
    from_storage_units,
    parse_account_request,
    to_storage_units,
)
from shared.stores.billing import (
    billable_seconds,
    call_cost,
    hold_key,
    reservation_cost,
    settlement,
)

MINUTES_S = Plan(type="minutes")
MINUTES_M = Plan(type="minutes", granularity="minute")
UNLIMITED = Plan(type="unlimited")


def credits(price_mc: int, granularity: str = "second") -> Plan:
    return Plan(type="credits", granularity=granularity, price_millicredits_per_minute=price_mc)


@pytest.mark.parametrize(("duration_ms", "granularity", "seconds"), [
    (None, "second", 0), (0, "second", 0), (-5, "minute", 0),
    (1, "second", 1), (999, "second", 1), (1000, "second", 1), (1001, "second", 2),
    (1, "minute", 60), (60_000, "minute", 60), (60_001, "minute", 120), (3_599_999, "minute", 3600),
])
def test_billable_seconds(duration_ms, granularity, seconds):
    assert billable_seconds(duration_ms, granularity) == seconds


@pytest.mark.parametrize(("plan", "duration_ms", "cost"), [
    (MINUTES_S, 61_001, 62),
    (MINUTES_M, 61_001, 120),
    (credits(2500), 61_001, 2584),  # 62 x 2500 / 60 = 2583.33 -> rounded up
    (credits(2500, "minute"), 61_001, 5000),
    (credits(60), 30_000, 30),  # 1 mc per second: exact
    (credits(1), 1, 1),  # a started milli-credit
    (UNLIMITED, 600_000, 0),
    (credits(2500), 0, 0),
])
def test_call_cost(plan, duration_ms, cost):
    assert call_cost(plan, duration_ms) == cost


def test_reservation_cost_is_the_cost_of_the_longest_call():
    assert reservation_cost(MINUTES_S, 600) == 600
    assert reservation_cost(MINUTES_M, 61) == 120
    assert reservation_cost(credits(1500), 600) == 15_000
    assert reservation_cost(UNLIMITED, 600) == 0


def test_settlement_caps_the_charge_at_the_reservation():
    assert settlement(MINUTES_S, 600, 30_000) == (30, 570)
    assert settlement(MINUTES_S, 600, 900_000) == (600, 0)
    assert settlement(MINUTES_S, 600, None) == (0, 600)


plans = st.one_of(
    st.sampled_from([MINUTES_S, MINUTES_M]),
    st.builds(credits, st.integers(1, 10**9), st.sampled_from(["second", "minute"])),
)


@given(plans, st.integers(1, 7200), st.integers(-10, 8_000_000))
def test_a_settled_call_never_costs_more_than_its_reservation(plan, max_s, duration_ms):
    reserved = reservation_cost(plan, max_s)
    charged, released = settlement(plan, reserved, duration_ms)
    assert 0 <= charged <= reserved and charged + released == reserved
    if 0 < duration_ms <= max_s * 1000:
        assert charged == call_cost(plan, duration_ms)


@given(plans, st.integers(0, 10**8), st.integers(0, 10**8))
def test_cost_grows_with_duration(plan, a, b):
    low, high = sorted((a, b))
    assert call_cost(plan, low) <= call_cost(plan, high)


@given(st.integers(1, 10**9), st.integers(1, 10**8))
def test_per_second_credits_round_up_to_less_than_one_millicredit(price, duration_ms):
    seconds = billable_seconds(duration_ms, "second")
    cost = call_cost(credits(price), duration_ms)
    assert cost * 60 >= seconds * price > (cost - 1) * 60


@given(st.integers(1, 10**9), st.integers(1, 10**8))
def test_per_minute_billing_is_exact_whole_minutes(price, duration_ms):
    minutes = -(-duration_ms // 60_000)
    assert billable_seconds(duration_ms, "minute") == 60 * minutes
    assert call_cost(credits(price, "minute"), duration_ms) == minutes * price


@given(st.lists(st.integers(0, 7_200_000), max_size=50), st.integers(60, 7200))
def test_a_sequence_of_calls_sums_exactly(durations, max_s):
    """Integers: the balance after N settlements is the start minus the exact sum of the charges."""
    plan = credits(1234)
    start = reservation_cost(plan, max_s) * len(durations)
    balance, charges = start, []
    for d in durations:
        charged, _ = settlement(plan, reservation_cost(plan, max_s), d)
        balance -= charged
        charges.append(charged)
    assert balance == start - sum(charges) >= 0


# -- API units <-> storage units -----------------------------------------------------------------


@given(st.integers(0, 10**6), st.sampled_from([0, 0.25, 0.5, 0.75]))
def test_minutes_with_whole_seconds_convert_exactly(whole, fraction):
    amount = whole + fraction
    seconds = to_storage_units("minutes", amount, "plan.balance")
    assert seconds == int(Decimal(repr(amount)) * 60)
    assert from_storage_units("minutes", seconds) == amount


@given(st.integers(0, 10**9), st.integers(0, 999))
def test_credits_with_three_decimals_convert_exactly(whole, thousandths):
    amount = float(f"{whole}.{thousandths:03d}")
    mc = to_storage_units("credits", amount, "plan.balance")
    assert mc == whole * 1000 + thousandths
    assert from_storage_units("credits", mc) == amount


@pytest.mark.parametrize(("plan_type", "amount", "message"), [
    ("minutes", 0.01, "whole number of seconds"),
    ("credits", 0.0001, "at most 3 decimals"),
    ("minutes", -1, ">= 0"),
    ("minutes", float("inf"), "finite number"),
    ("credits", None, "finite number"),
    ("credits", 10**13, "at most"),
])
def test_amounts_that_are_not_exact_are_rejected_not_rounded(plan_type, amount, message):
    with pytest.raises(ValidationError) as info:
        to_storage_units(plan_type, amount, "plan.balance")
    assert info.value.errors[0][0] == "plan.balance" and message in info.value.errors[0][1]


def test_zero_is_refused_where_it_makes_no_sense():
    with pytest.raises(ValidationError):
        to_storage_units("credits", 0, "amount", allow_zero=False)


def test_parse_account_request_reads_every_field():
    req = parse_account_request({"plan": {"type": "credits", "balance": 7.5, "price_per_minute": 0.125,
                                          "granularity": "minute"}, "concurrency_limit": 9})
    assert req.plan == Plan(type="credits", granularity="minute", price_millicredits_per_minute=125)
    assert req.balance == 7500 and req.concurrency_limit == 9 and req.has_concurrency_limit
    assert parse_account_request({}).plan is None
    assert parse_account_request({"plan": {"type": "unlimited"}}).balance is None


def test_parse_account_request_lists_every_problem():
    with pytest.raises(ValidationError) as info:
        parse_account_request({"plan": {"type": "credits", "balance": -2, "price_per_minute": -1, "x": 1},
                               "concurrency_limit": "many", "y": 2})
    assert [f for f, _ in info.value.errors] == ["y", "plan.x", "plan.price_per_minute", "plan.balance",
                                                 "concurrency_limit"]


def test_plan_documents_round_trip_and_unknown_plans_never_read_as_unlimited():
    for plan in (MINUTES_S, MINUTES_M, credits(125, "minute"), UNLIMITED):
        assert Plan.from_document(plan.to_document()) == plan
    assert Plan.from_document(None).type == "minutes"
    assert Plan.from_document({"type": "platinum"}).type == "minutes"
    assert credits(125).to_api() == {"type": "credits", "granularity": "second", "price_per_minute": 0.125}


# -- policy and keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "action"), [
    (None, "fail"), ({}, "fail"), ({"on_insufficient_balance": "wait"}, "wait"),
    ({"on_insufficient_balance": "fail"}, "fail"),
])
def test_insufficient_balance_action_defaults_to_fail(raw, action):
    assert insufficient_balance_action(parse_call_settings(raw)) == action


def test_an_unknown_insufficient_balance_action_is_refused_on_write():
    with pytest.raises(InvalidCallSettings, match="on_insufficient_balance"):
        parse_call_settings({"on_insufficient_balance": "bogus"})


def test_hold_keys():
    assert hold_key("0123456789abcdef01234567:r1:p0:d1") == "0123456789abcdef01234567:r1:p0:d1"
    hashed = hold_key("a.b")
    assert hashed.startswith("h-") and "." not in hashed and hashed == hold_key("a.b") != hold_key("a.c")
    assert hold_key("$x").startswith("h-") and hold_key("x" * 300).startswith("h-")
    with pytest.raises(ValueError):
        hold_key("")
