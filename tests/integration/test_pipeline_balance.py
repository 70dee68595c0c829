"""Balance held by calls in progress, end to end through real processes: a contact whose account's balance
covers its call, but whose available amount calls in progress hold, is dialed again when they end; it never
fails or waits for balance. Only a balance below one call fails it (or parks it, per the batch)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from shared.clock import started_at
from shared.domain import states
from tests.helpers import wait_until
from tests.integration.test_pipeline_campaign import assert_no_attempt_dialed_twice, numbers, wait_final

pytestmark = pytest.mark.slow   # a running stack (simulator, workers, clock) or the simulator process

START = datetime(2026, 3, 3, 14, 0, tzinfo=UTC)
ANSWER_30S = {"outcome": "answer", "duration_s": 30}


def campaign(runtime, name, phones, call_settings):
    batch = runtime.batches.create({"name": name, "account_id": "acme", "agent_id": "agent_test",
                                    "from_number": "+12125550100", "call_settings": call_settings})
    result = runtime.jobs.create_jobs(batch["_id"], "acme", [{"name": f"{name}{i}", "phones": [p]}
                                                             for i, p in enumerate(phones)])
    assert result.imported == len(phones), result.errors
    return batch


def statuses(runtime, batch) -> list[str]:
    return [j["status"] for j in runtime.jobs.find({"batch_id": batch["_id"]})]


def test_twenty_minutes_of_balance_complete_three_ten_minute_contacts_with_either_policy(stack_factory):
    """The reported case: 20 minutes of balance, calls of at most 600 s, 3 contacts. Two calls hold the whole
    balance; the third contact is dialed when one of them ends (1,140 s left), with "fail" and with "wait"."""
    fast = started_at(START, speed=60)
    phones = numbers("95", 6)
    stack, runtime = stack_factory(clock=fast, scenario={"numbers": {p: ANSWER_30S for p in phones}})
    runtime.account_changes.apply("acme", {"plan": {"type": "minutes", "balance": 20}, "concurrency_limit": 10})
    for policy, chunk in (("fail", phones[:3]), ("wait", phones[3:])):
        batch = campaign(runtime, policy, chunk, {"max_call_duration": 600, "on_insufficient_balance": policy})
        wait_final(runtime, batch["_id"], timeout_s=60, stack=stack)
        assert statuses(runtime, batch) == [states.COMPLETED] * 3, runtime.jobs.find({"batch_id": batch["_id"]})
    view = runtime.billing.balance("acme")
    assert view["units"] == {"unit": "second", "balance": 1200 - 6 * 30, "reserved": 0, "available": 1200 - 6 * 30}
    assert runtime.billing.check("acme").ok
    assert len(stack.simulator.dials()) == 6


def test_balance_policies_fail_and_wait_when_the_balance_is_below_one_call_then_top_up(stack_factory):
    """A contact fails (or waits for a top-up) only when the balance itself cannot cover one call."""
    fast = started_at(START, speed=60)
    phones = numbers("94", 8)
    stack, runtime = stack_factory(clock=fast, scenario={"numbers": {p: ANSWER_30S for p in phones}})
    # 4 minutes of balance, calls of at most 2 minutes, 30 s each: the balance covers a call while at least
    # 120 s are left, so 5 calls are placed (240 -> 90 s) and the rest find less than one call.
    runtime.account_changes.apply("acme", {"plan": {"type": "minutes", "balance": 4}, "concurrency_limit": 10})
    settings = {"max_call_duration": 120}
    fail = campaign(runtime, "f", phones[:6], {**settings, "on_insufficient_balance": "fail"})
    wait_final(runtime, fail["_id"], timeout_s=60, stack=stack)
    jobs = runtime.jobs.find({"batch_id": fail["_id"]})
    assert sorted(j["status"] for j in jobs) == [states.COMPLETED] * 5 + [states.FAILED]
    assert [j["last_error"] for j in jobs if j["status"] == states.FAILED] == ["insufficient balance"]
    assert runtime.billing.balance("acme")["units"]["balance"] == 90
    assert runtime.billing.check("acme").ok

    wait = campaign(runtime, "w", phones[6:], {**settings, "on_insufficient_balance": "wait"})
    wait_until(lambda: statuses(runtime, wait) == [states.WAITING_BALANCE] * 2, timeout_s=60)
    assert all(j["last_error"] == "insufficient balance" for j in runtime.jobs.find({"batch_id": wait["_id"]}))
    runtime.billing.top_up("acme", 1)  # 150 s: one call, then 120 s, another
    wait_final(runtime, wait["_id"], timeout_s=60, stack=stack)
    assert statuses(runtime, wait) == [states.COMPLETED] * 2
    view = runtime.billing.balance("acme")
    assert view["units"] == {"unit": "second", "balance": 90, "reserved": 0, "available": 90}
    assert runtime.billing.check("acme").ok


def test_sixty_calls_through_a_balance_that_holds_nine_maximum_length_calls_at_once(stack_factory):
    """95 minutes of balance and calls of at most 10 minutes: 9 reservations fit at once, 10 do not (5,700 <
    6,000 s), yet the 60 answered 30 s calls cost 1,800 s. The account's concurrency limit (20) is above 9, so
    the balance is what binds: every contact is dialed once and completes, none fails or waits for balance, and
    the ledger balances."""
    fast = started_at(START, speed=60)
    phones = numbers("96", 60)
    stack, runtime = stack_factory(clock=fast, scenario={"numbers": {p: ANSWER_30S for p in phones}})
    runtime.account_changes.apply("acme", {"plan": {"type": "minutes", "balance": 95}, "concurrency_limit": 20})
    batch = campaign(runtime, "c", phones, {"max_call_duration": 600})
    most_held, deadline = 0, time.monotonic() + 180
    while True:
        account = runtime.db.accounts.find_one({"_id": "acme"}, {"holds_n": 1})
        most_held = max(most_held, int(account.get("holds_n", 0) or 0))
        counts = runtime.jobs.counts(batch["_id"])
        assert counts[states.FAILED] == counts[states.WAITING_BALANCE] == 0, counts
        if counts[states.COMPLETED] == 60 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    wait_final(runtime, batch["_id"], timeout_s=5, stack=stack)
    assert statuses(runtime, batch) == [states.COMPLETED] * 60
    assert most_held <= 9  # never more reserved than the balance
    assert len(stack.simulator.dials()) == 60
    assert_no_attempt_dialed_twice(stack)
    view = runtime.billing.balance("acme")
    assert view["units"] == {"unit": "second", "balance": 5700 - 60 * 30, "reserved": 0,
                             "available": 5700 - 60 * 30}
    check = runtime.billing.check("acme")
    assert check.ok, check.problems
    assert check.balance == 5700 - 60 * 30
