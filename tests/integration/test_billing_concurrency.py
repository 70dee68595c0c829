"""16 threads across 2 processes reserve and settle against one account: never more than the balance."""

from __future__ import annotations

from shared.stores import ledger
from shared.stores.account_changes import AccountChanges
from shared.stores.billing import Billing
from tests.fixtures.billing import BARRIER_TIMEOUT_S, concurrency_child

PROCESSES = 2
THREADS = 8
MAX_S = 600
#: Exactly ten calls of the maximum length.
CALLS = 10
ITERATIONS = 25


def test_sixteen_threads_in_two_processes_never_overdraw(db, config, billing: Billing, spawn_context):
    ctx = spawn_context
    account = "shared-acc"
    AccountChanges(billing).apply(account, {"plan": {"type": "minutes", "balance": CALLS * MAX_S / 60}})
    parties = PROCESSES * THREADS + 1  # every thread, and this test
    start, reserved_all, checked = (ctx.Barrier(parties) for _ in range(3))
    in_flight = ctx.Value("i", 0)
    results = ctx.Queue()
    children = [
        ctx.Process(target=concurrency_child, args=(config.mongodb_uri, db.name, account), kwargs={
            "threads": THREADS, "max_call_duration_s": MAX_S, "iterations": ITERATIONS, "seed": seed,
            "start": start, "reserved_all": reserved_all, "checked": checked, "in_flight": in_flight,
            "results": results})
        for seed in range(PROCESSES)
    ]
    for child in children:
        child.start()
    try:
        start.wait(BARRIER_TIMEOUT_S)
        reserved_all.wait(BARRIER_TIMEOUT_S)
        # Phase 1 is over: all 16 threads asked at once for a 10-minute call.
        during = db.accounts.find_one({"_id": account})
        checked.wait(BARRIER_TIMEOUT_S)
        outs = [results.get(timeout=BARRIER_TIMEOUT_S) for _ in range(PROCESSES * THREADS)]
    finally:
        for child in children:
            child.join(timeout=BARRIER_TIMEOUT_S)
            if child.is_alive():
                child.kill()
    assert [c.exitcode for c in children] == [0, 0]
    assert [o["errors"] for o in outs] == [[]] * len(outs)

    firsts = [o["first"] for o in outs]
    # the balance covers an eleventh call; the ten in progress hold all of it
    assert firsts.count("ok") == CALLS and firsts.count("held_by_calls") == PROCESSES * THREADS - CALLS
    assert (during["holds_n"], during["reserved"], during["available"]) == (CALLS, CALLS * MAX_S, 0)

    assert max(o["max_in_flight"] for o in outs) <= CALLS
    assert max(o["max_holds"] for o in outs) <= CALLS
    assert max(o["max_reserved"] for o in outs) <= CALLS * MAX_S
    assert sum(o["insufficient"] for o in outs) > 0  # the available amount ran out during phase 2

    final = db.accounts.find_one({"_id": account})
    charged = sum(sum(o["charges"]) for o in outs)
    assert final["balance"] == CALLS * MAX_S - charged >= 0
    assert (final["reserved"], final["holds_n"], final["available"]) == (0, 0, final["balance"])
    check = ledger.check_account(db, account)
    assert check.posted, check.problems
    assert check.ledger_balance == final["balance"]
    calls = sum(len(o["charges"]) for o in outs)
    assert db.ledger.count_documents({"account_id": account, "kind": "reserve"}) == calls
    assert db.ledger.count_documents({"account_id": account, "kind": {"$in": ["charge", "release"]}}) == calls
