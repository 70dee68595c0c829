"""Never twice, never outside the window, under the interleavings that used to break both.

Each test runs real processes (simulator, dramatiq workers, clock) and puts a fault at one exact
point of the dial path with ``tests/faults/sitecustomize.py`` (a frozen worker, a stall, a skewed or
stepped clock), then checks the simulator's own record of the creates it received.
"""

from __future__ import annotations

import collections
import os
import signal
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared.clock import from_ms, started_at
from shared.domain import states
from shared.stores import attempts as attempt_states
from shared.stores.slots import EPOCH_KEY
from tests.helpers import wait_until
from tests.integration.test_pipeline_campaign import (
    assert_no_attempt_dialed_twice,
    numbers,
    setup_campaign,
    wait_final,
)

FAULTS = str(Path(__file__).resolve().parent.parent / "faults")
START = datetime(2026, 3, 3, 14, 0, tzinfo=UTC)   # a Tuesday, 11:00 in Santiago
#: Short leases so that recovery comes within seconds: dialing leases of 4.5 real seconds, creates of 1.5.
FAST = {"pipeline_lease_s": 3.0, "retell_create_timeout_s": 1.5}


def with_faults(**variables: str) -> dict[str, str]:
    """Environment that loads the fault hooks in a child process."""
    path = os.pathsep.join(p for p in (FAULTS, os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, **variables}


def answer(phones, duration_s=20):
    return {"numbers": {p: {"outcome": "answer", "duration_s": duration_s, "ring_s": 1} for p in phones}}


def creates_by_attempt(stack) -> collections.Counter:
    """Creates the simulator received that made a call (replays of an idempotency key excluded), per attempt."""
    return collections.Counter(r["body"]["metadata"]["attempt_id"] for r in stack.simulator.dials())


@pytest.mark.slow
def test_a_worker_frozen_before_its_create_never_causes_a_second_call(stack_factory):
    phones = numbers("51", 3)
    stack, runtime = stack_factory(clock=started_at(START, speed=60), scenario=answer(phones), workers=2,
                                   config_overrides=FAST, env=with_faults(OUTDIAL_TEST_FREEZE_AFTER_ATTEMPT="1"))
    batch = setup_campaign(runtime, [{"name": f"c{i}", "phones": [p]} for i, p in enumerate(phones)], {})
    frozen = int(wait_until(lambda: runtime.redis.get("outdial:test:frozen"), timeout_s=60))
    try:
        # The frozen worker recorded an attempt and stopped before sending it. Its lease ends; the other
        # worker takes the job over and sends that attempt's create itself, once.
        wait_final(runtime, batch["_id"], timeout_s=90, stack=stack)
    finally:
        os.kill(frozen, signal.SIGCONT)   # it wakes up past its lease: the fence stops its create
    logs = wait_until(lambda: '"kind": "fence"' in (text := stack.logs()) and text, timeout_s=30)
    assert '"event": "dial_aborted"' in logs     # the woken worker checked its fence and sent nothing
    assert_no_attempt_dialed_twice(stack)
    assert len(stack.simulator.dials()) == 3
    # every dial the frozen process had in flight (it stopped as a whole) was taken over and placed once
    taken = list(runtime.attempts.coll.find({"batch_id": batch["_id"], "takeovers": {"$gte": 1}}))
    assert taken and all(a["state"] == attempt_states.ENDED for a in taken)
    assert {j["status"] for j in runtime.jobs.find({"batch_id": batch["_id"]})} == {states.COMPLETED}
    assert runtime.slots.holders("acme") == {}


@pytest.mark.slow
def test_a_create_slower_than_the_lease_is_replayed_with_its_key_and_dials_once(stack_factory):
    phones = numbers("52", 4)
    stack, runtime = stack_factory(clock=started_at(START, speed=60), scenario=answer(phones),
                                   config_overrides=FAST)
    # The first two creates are answered 6 s late (after the call was made): longer than the whole dialing lease.
    stack.simulator.set_faults(slow_ms=6000, script={"create_phone_call": ["slow", "slow"]})
    batch = setup_campaign(runtime, [{"name": f"c{i}", "phones": [p]} for i, p in enumerate(phones)], {})
    wait_final(runtime, batch["_id"], timeout_s=90, stack=stack)
    assert_no_attempt_dialed_twice(stack)
    assert sorted(creates_by_attempt(stack).values()) == [1, 1, 1, 1]
    assert stack.simulator.stats()["idempotent_replays"] >= 1
    assert {j["status"] for j in runtime.jobs.find({"batch_id": batch["_id"]})} == {states.COMPLETED}
    assert not runtime.attempts.coll.find_one({"state": attempt_states.ORPHANED})


@pytest.mark.slow
def test_a_stall_between_the_decision_and_the_create_never_calls_after_the_window(stack_factory):
    # The window is 09:00-09:04 in Santiago (12:00-12:04 UTC); the clock starts at 08:56 at 60x, so the job
    # is decided inside the window whenever the stack is up (there are 3.5 real seconds of slack). Then the
    # slot request stalls 5 real seconds (5 simulated minutes): the create would leave after 09:04.
    opens = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)
    (phone,) = numbers("53", 1)
    stack, runtime = stack_factory(clock=started_at(opens - timedelta(minutes=4), speed=60),
                                   scenario=answer([phone]), env=with_faults(OUTDIAL_TEST_STALL="Slots.acquire:5:1"))
    settings = {"allowed_hours": {"start": "09:00", "end": "09:04"}, "timezone": "America/Santiago"}
    batch = setup_campaign(runtime, [{"name": "c", "phones": [phone]}], settings)
    try:
        job = wait_until(lambda: (j := runtime.jobs.find({"batch_id": batch["_id"]})[0])["status"]
                         == states.WAITING_SCHEDULE and j.get("dials") and j, timeout_s=60)
    except TimeoutError:
        raise AssertionError(f"{runtime.jobs.find({'batch_id': batch['_id']})}\n{stack.logs()}") from None
    assert stack.simulator.calls() == []                          # nothing reached the provider
    assert from_ms(job["next_try_at"]) == opens + timedelta(days=1)
    (attempt,) = runtime.attempts.for_job(job["_id"])
    assert attempt["state"] == attempt_states.NOT_PLACED and attempt["error"].startswith("not sent")
    assert runtime.slots.holders("acme") == {} and runtime.billing.check("acme").ok


@pytest.mark.slow
def test_a_worker_whose_clock_runs_ahead_does_not_call_before_the_window(stack_factory):
    # At 60x a clock 6 s ahead reads 6 minutes ahead: without one time source it dialed at 08:54.
    opens = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)   # 09:00 in Santiago
    phones = numbers("54", 6)
    stack, runtime = stack_factory(clock=started_at(opens - timedelta(minutes=3), speed=60), scenario=answer(phones),
                                   workers=0)
    stack.start_worker(env=with_faults(OUTDIAL_TEST_CLOCK_SHIFT_S="6"))
    settings = {"allowed_hours": {"start": "09:00", "end": "18:00"}, "timezone": "America/Santiago"}
    batch = setup_campaign(runtime, [{"name": f"c{i}", "phones": [p]} for i, p in enumerate(phones)], settings)
    wait_final(runtime, batch["_id"], timeout_s=90, stack=stack)
    received = [from_ms(r["received_at"]) for r in stack.simulator.calls()]
    assert len(received) == 6 and min(received) >= opens, min(received)


@pytest.mark.slow
def test_a_wall_clock_stepped_back_in_a_worker_never_calls_after_the_window(stack_factory):
    # The window is 09:00-09:04 in Santiago (12:00-12:04 UTC); the shared clock reads 09:06 and runs at real speed,
    # and the jobs are due since 09:00. The worker's wall clock is set back five minutes as it starts its first dial,
    # a moment after it measured the shared time: following it, the worker read 09:01 until its next measurement and
    # called after the window (three minutes of slack either way for the stack to start).
    opens = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)
    phones = numbers("56", 3)
    stack, runtime = stack_factory(clock=started_at(opens + timedelta(minutes=6), speed=1), scenario=answer(phones),
                                   workers=0)
    stack.start_worker(env=with_faults(OUTDIAL_TEST_CLOCK_STEP="Dial.dial:-300"))
    settings = {"allowed_hours": {"start": "09:00", "end": "09:04"}, "timezone": "America/Santiago"}
    runtime.account_changes.apply("acme", {"plan": {"type": "unlimited"}, "concurrency_limit": 20})
    batch = runtime.batches.create({"name": "campaign", "account_id": "acme", "agent_id": "agent_test",
                                    "from_number": "+12125550100", "call_settings": settings})
    runtime.jobs.create_jobs(batch["_id"], "acme", [{"name": f"c{i}", "phones": [p]} for i, p in enumerate(phones)],
                             next_try_at=opens)

    def postponed():
        jobs = runtime.jobs.find({"batch_id": batch["_id"]})
        return all(j["status"] == states.WAITING_SCHEDULE and j.get("postponed_by_schedule") for j in jobs) and jobs
    try:
        jobs = wait_until(postponed, timeout_s=60)
    except TimeoutError:
        raise AssertionError(f"{runtime.jobs.find({'batch_id': batch['_id']})}\n{stack.logs()}") from None
    assert stack.simulator.calls() == []                          # nothing reached the provider
    assert {from_ms(j["next_try_at"]) for j in jobs} == {opens + timedelta(days=1)}
    assert not runtime.attempts.coll.find_one({"batch_id": batch["_id"]})


@pytest.mark.slow
def test_a_wall_clock_stepped_right_before_a_send_stops_it_until_the_shared_time_is_measured_again(stack_factory):
    # The worker's wall clock is set back five minutes between the dial's decision and its create. Its shared time
    # does not follow, and the check before the send sees its wall clock disagree with it: that create is not sent
    # (kind ``clock``). The next reading measures the shared time again, accepts the step, and the job is dialed.
    (phone,) = numbers("57", 1)
    stack, runtime = stack_factory(clock=started_at(START, speed=60), scenario=answer([phone]), workers=0)
    stack.start_worker(env=with_faults(OUTDIAL_TEST_CLOCK_STEP="AttemptStore.insert:-300"))
    batch = setup_campaign(runtime, [{"name": "c", "phones": [phone]}], {})
    wait_final(runtime, batch["_id"], timeout_s=90, stack=stack)
    logs = stack.logs()
    assert '"event": "dial_aborted"' in logs and '"kind": "clock"' in logs, logs
    (job,) = runtime.jobs.find({"batch_id": batch["_id"]})
    assert job["status"] == states.COMPLETED
    first, *rest = sorted(runtime.attempts.for_job(job["_id"]), key=lambda a: a["created_at"])
    assert first["state"] == attempt_states.NOT_PLACED and first["error"].startswith("not sent")
    assert [a["state"] for a in rest] == [attempt_states.ENDED]
    assert creates_by_attempt(stack) == {rest[0]["_id"]: 1}   # only the attempt sent after the new measurement


@pytest.mark.slow
def test_the_loser_of_a_duplicated_dial_takes_and_gives_back_nothing(stack_factory):
    phones = numbers("55", 12)
    stack, runtime = stack_factory(clock=started_at(START, speed=60), scenario=answer(phones), workers=2,
                                   clock_interval_s=None)
    runtime.account_changes.apply("acme", {"plan": {"type": "minutes", "balance": 60}, "concurrency_limit": 20})
    batch = runtime.batches.create({"name": "dup", "account_id": "acme", "agent_id": "agent_test",
                                    "call_settings": {"max_call_duration": 120}})
    runtime.jobs.create_jobs(batch["_id"], "acme", [{"name": f"c{i}", "phones": [p]} for i, p in enumerate(phones)])
    runtime.pipeline(None).ensure_slots()
    from workers.actors import DramatiqSender
    sender = DramatiqSender(runtime.redis)
    for job in runtime.jobs.claim_due(limit=100, lease=timedelta(hours=1)):
        for _ in range(3):   # the same message delivered three times, to two worker processes
            sender.dial(job["_id"], job["lease_owner"])
    wait_until(lambda: runtime.jobs.counts(batch["_id"])[states.IN_CALL] + runtime.jobs.counts(batch["_id"])[
        states.COMPLETED] == 12, timeout_s=60)
    # Calls end while this reads (a call lasts a third of a second here): what was in call both before and
    # after the reads of the slots and the balance was in call throughout them.
    def calling() -> dict[str, str]:
        return {j["_id"]: j["attempt_id"] for j in runtime.jobs.find({"batch_id": batch["_id"],
                                                                      "status": states.IN_CALL})}
    before = calling()
    holders = set(runtime.slots.holders("acme"))
    holds = runtime.billing.balance("acme")
    after = calling()
    throughout = {aid for job_id, aid in before.items() if after.get(job_id) == aid}
    ended = {j["attempt_id"] for j in runtime.jobs.find({"batch_id": batch["_id"], "status": states.COMPLETED})}
    assert throughout <= holders <= set(before.values()) | ended                      # every call holds its slot
    assert holds["units"]["reserved"] >= len(throughout) * 120                          # and its balance hold
    stack.start_clock()
    wait_final(runtime, batch["_id"], timeout_s=90, stack=stack)
    assert_no_attempt_dialed_twice(stack)
    attempts = list(runtime.attempts.coll.find({"batch_id": batch["_id"]}))
    assert len(attempts) == 12 and sum(a["charge"] for a in attempts) == 12 * 20     # every call charged once
    assert runtime.billing.balance("acme")["reserved"] == 0 and runtime.billing.check("acme").ok


@pytest.fixture
def runtime_pair(config, db, clock):
    """Two processes' pipelines on the same MongoDB and Redis (in this process)."""
    from workers.runtime import build_runtime

    runtimes = [build_runtime(config, clock) for _ in range(2)]
    yield [rt.pipeline(None) for rt in runtimes]
    for rt in runtimes:
        rt.redis.close()


def test_two_concurrent_slot_rebuilds_never_drop_a_slot_taken_in_between(runtime_pair):
    first, second = runtime_pair
    first.slots.redis.delete(EPOCH_KEY)
    started, release = threading.Event(), threading.Event()
    original = first.rebuild_slots

    def slow_rebuild() -> None:   # the first rebuild reads MongoDB, then stalls before writing
        started.set()
        release.wait(10)
        original()

    first.rebuild_slots = slow_rebuild  # type: ignore[method-assign]
    rebuilding = threading.Thread(target=first.ensure_slots)
    rebuilding.start()
    started.wait(10)
    assert second.ensure_slots() is False          # the lock: the second run does not rebuild at the same time
    release.set()
    rebuilding.join(10)
    assert first.slots.known()
    now = first.clock.now_ms()
    assert first.slots.acquire("acc", "taken-after", limit=1, now_ms=now, lease_ms=60_000).name == "YES"
    assert second.ensure_slots() is True           # known now: nothing is rebuilt, nothing deleted
    assert first.slots.holders("acc") == {"taken-after": now + 60_000}
    assert second.slots.acquire("acc", "over", limit=1, now_ms=now, lease_ms=60_000).name == "NO"
