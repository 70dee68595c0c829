"""The reconcile's whole tree and the dispatch's fair shares are plain functions (:mod:`shared.domain.decisions`)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.domain import states
from shared.domain.decisions import (
    LookUpStep,
    ReconcileStep,
    decide_look_up,
    decide_reconcile_attempt,
    decide_reconcile_job,
    dispatch_order,
    fair_share,
)
from shared.domain.reasons import because
from shared.stores import attempts as attempt_states

OWNER = "lease-1"


def _job(**fields):
    return {"_id": "j1", "status": states.DIALING, "lease_owner": OWNER, "attempt_id": "j1:r1:p0:d1", **fields}


def _attempt(**fields):
    return {"_id": "j1:r1:p0:d1", "state": attempt_states.DIALING, "owner": OWNER, **fields}


# -- reconcile ---------------------------------------------------------------------------------------------------


def test_a_job_that_is_not_dialing_under_this_lease_is_stale():
    assert decide_reconcile_job(None, lease_owner=OWNER).step == ReconcileStep.STALE
    assert decide_reconcile_job(_job(status=states.IN_CALL), lease_owner=OWNER).step == ReconcileStep.STALE
    assert decide_reconcile_job(_job(lease_owner="other"), lease_owner=OWNER).step == ReconcileStep.STALE


def test_a_dial_stopped_before_it_named_its_attempt_placed_nothing():
    decision = decide_reconcile_job(_job(attempt_id=None), lease_owner=OWNER)
    assert decision.step == ReconcileStep.NOT_PLACED
    assert decision.reason == because("dial_interrupted_before_attempt")


def test_a_job_with_its_attempt_named_reads_the_attempt():
    assert decide_reconcile_job(_job(), lease_owner=OWNER) is None


def test_the_attempt_decides_in_order():
    assert decide_reconcile_attempt(None, lease_owner=OWNER).step == ReconcileStep.RECORD_NOT_PLACED
    for state in (attempt_states.NOT_PLACED, attempt_states.ORPHANED):
        decision = decide_reconcile_attempt(_attempt(state=state, call_id="c1"), lease_owner=OWNER)
        assert decision.step == ReconcileStep.NOT_PLACED and decision.reason == because("not_placed")
    stored = because("provider_did_not_create").fields()
    decision = decide_reconcile_attempt(_attempt(state=attempt_states.NOT_PLACED, **stored), lease_owner=OWNER)
    assert decision.reason == because("provider_did_not_create")
    ended = decide_reconcile_attempt(_attempt(state=attempt_states.ENDED), lease_owner=OWNER)
    assert ended.step == ReconcileStep.FINISH_GIVE_UP
    known = decide_reconcile_attempt(_attempt(call_id="c1", owner="other"), lease_owner=OWNER)
    assert known.step == ReconcileStep.KNOWN_CALL
    assert decide_reconcile_attempt(_attempt(owner="other"), lease_owner=OWNER).step == ReconcileStep.TAKE_OVER
    assert decide_reconcile_attempt(_attempt(), lease_owner=OWNER).step == ReconcileStep.OPEN


@given(found=st.booleans(), now=st.integers(min_value=0, max_value=10**12),
       last_sent=st.integers(min_value=0, max_value=10**12), settle=st.integers(min_value=0, max_value=10**7),
       give_up_at=st.one_of(st.none(), st.integers(min_value=0, max_value=10**12)))
def test_a_look_up_gives_up_only_on_a_failure_past_the_deadline_and_says_not_placed_only_once_settled(
        found, now, last_sent, settle, give_up_at):
    step = decide_look_up(found=found, now_ms=now, last_sent_ms=last_sent, settle_ms=settle, give_up_at_ms=give_up_at)
    if give_up_at is not None:   # the lookup failed: nothing it found counts
        assert step == (LookUpStep.GIVE_UP if now > give_up_at else LookUpStep.RETRY)
    elif found:
        assert step == LookUpStep.FOUND
    else:
        assert step == (LookUpStep.NOT_PLACED if now >= last_sent + settle else LookUpStep.WAIT)


# -- dispatch ------------------------------------------------------------------------------------------------------


def _share_out(free: int, demands: list[int]) -> list[int]:
    """What the dispatch loop claims, account by account, when each account has ``demands[i]`` due jobs."""
    claimed = []
    for i, demand in enumerate(demands):
        if free <= 0:
            claimed.append(0)
            continue
        got = min(demand, fair_share(free, len(demands) - i))
        claimed.append(got)
        free -= got
    return claimed


@given(free=st.integers(min_value=0, max_value=500), demands=st.lists(st.integers(min_value=0, max_value=300),
                                                                        min_size=1, max_size=40))
def test_fair_shares_never_exceed_the_free_slots_and_give_every_account_with_work_one(free, demands):
    claimed = _share_out(free, demands)
    assert sum(claimed) <= free
    assert all(0 <= got <= demand for got, demand in zip(claimed, demands, strict=True))
    if free >= len(demands):
        assert all(got >= 1 for got, demand in zip(claimed, demands, strict=True) if demand > 0)
    # the first account served gets at least its even share, when it has the work
    assert claimed[0] == min(demands[0], fair_share(free, len(demands))) or free <= 0


@given(free=st.integers(min_value=0, max_value=10_000), left=st.integers(min_value=1, max_value=200))
def test_a_fair_share_is_the_even_share_rounded_up(free, left):
    share = fair_share(free, left)
    assert share * left >= free and (share - 1) * left < free


@given(accounts=st.lists(st.text(min_size=1, max_size=4), min_size=1, max_size=20, unique=True),
       turn=st.integers(min_value=0, max_value=10**6))
def test_the_dispatch_order_is_a_rotation_starting_at_the_turn(accounts, turn):
    order = dispatch_order(accounts, turn)
    assert sorted(order) == sorted(accounts)
    assert order[0] == accounts[turn % len(accounts)]
    assert order == accounts[turn % len(accounts):] + accounts[:turn % len(accounts)]


def test_the_first_account_changes_from_one_run_to_the_next():
    assert [dispatch_order(["a", "b", "c"], turn)[0] for turn in range(4)] == ["a", "b", "c", "a"]
    assert dispatch_order([], 3) == []
