"""Crash safety: workers killed with SIGKILL, provider faults, a Redis restart — every contact still
reaches a final state and no attempt is ever dialed twice."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime

from shared import attempts as attempt_states
from shared import embedded, states
from shared.clock import started_at
from tests.integration.test_pipeline_campaign import (
    assert_no_attempt_dialed_twice,
    numbers,
    setup_campaign,
    wait_final,
)

START = datetime(2026, 3, 3, 14, 0, tzinfo=UTC)
MIX = {"answer": 0.6, "no_answer": 0.15, "busy": 0.1, "voicemail": 0.1, "invalid": 0.05}
SCENARIO = {"seed": 11, "mix": MIX, "defaults": {"answer": {"ring_s": [1, 4], "duration_s": [10, 30]},
                                                 "voicemail": {"ring_s": [2, 4], "duration_s": [5, 10]},
                                                 "no_answer": {"ring_s": [5, 10]}}}
SETTINGS = {"max_attempts": 2, "retry_delay_hours": 0.02, "ring_timeout": 20, "max_call_duration": 120}
#: Leases of 3 real seconds (4.5 s while dialing), so that recovery comes quickly; a create request then has
#: at most 1.5 s (the simulator's slow answers take 3 s: ambiguous, sent again with the same key).
FAST_LEASES = {"pipeline_lease_s": 3.0, "retell_create_timeout_s": 1.5}


def contacts(count: int, prefix: str) -> list[dict]:
    phones = numbers(prefix, count * 2)
    return [{"name": f"c{i}", "phones": phones[2 * i: 2 * i + 1 + (i % 2)], "external_id": f"c{i}"}
            for i in range(count)]


def assert_every_call_accounted(runtime, stack):
    """Each call the provider created belongs to an attempt that ended (or was stopped as an orphan)."""
    by_id = {a["_id"]: a for a in runtime.attempts.coll.find({})}
    for rec in stack.simulator.dials():
        attempt = by_id.get(rec["body"]["metadata"]["attempt_id"])
        assert attempt is not None, rec["body"]["metadata"]
        assert attempt["state"] in (attempt_states.ENDED, attempt_states.ORPHANED), attempt


def test_workers_killed_at_random_moments(stack_factory):
    fast = started_at(START, speed=60)
    stack, runtime = stack_factory(clock=fast, scenario=SCENARIO, workers=2, config_overrides=FAST_LEASES,
                                   simulator_flags={"concurrency_limit": 100})  # the account's 20 must hold
    batch = setup_campaign(runtime, contacts(500, "81"), SETTINGS)
    rng = random.Random(5)
    for _ in range(4):
        time.sleep(rng.uniform(1.5, 4.0))
        victim = rng.randrange(len(stack.workers))
        stack.kill_worker(victim)
        stack.workers.pop(victim)
        stack.start_worker()
    wait_final(runtime, batch["_id"], timeout_s=240, stack=stack)
    assert_no_attempt_dialed_twice(stack)
    assert_every_call_accounted(runtime, stack)
    assert stack.simulator.stats()["max_active"] <= 20
    recovered = runtime.jobs.coll.count_documents({"batch_id": batch["_id"], "recoveries": {"$gte": 1}})
    assert recovered > 0  # the kills did interrupt work in progress


def test_provider_faults_and_ambiguous_creates(stack_factory):
    fast = started_at(START, speed=60)
    stack, runtime = stack_factory(
        clock=fast, scenario=SCENARIO, config_overrides=FAST_LEASES,
        simulator_flags={"concurrency_limit": 20, "rate_429": 0.05, "rate_500": 0.05, "rate_drop": 0.04,
                         "retry_after_ms": 200})
    batch = setup_campaign(runtime, contacts(300, "82"), SETTINGS)
    wait_final(runtime, batch["_id"], timeout_s=240, stack=stack)
    assert_no_attempt_dialed_twice(stack)
    assert_every_call_accounted(runtime, stack)
    faults = stack.simulator.stats()["faults"]
    assert sum(faults.values()) > 0
    # Faults never spend an attempt: nobody failed for max attempts with fewer rounds than allowed.
    for job in runtime.jobs.find({"batch_id": batch["_id"], "status": states.FAILED}):
        assert job["tries"] == 2 or job["last_error"].startswith("no valid phone number"), job


def test_redis_restart_mid_campaign(stack_factory):
    own = embedded.start_redis()
    port = int(own.url.rsplit(":", 1)[1].split("/")[0])
    try:
        fast = started_at(START, speed=60)
        stack, runtime = stack_factory(clock=fast, scenario=SCENARIO, workers=2,
                                       config_overrides={**FAST_LEASES, "redis_url": own.url},
                                       simulator_flags={"concurrency_limit": 100})
        batch = setup_campaign(runtime, contacts(150, "83"), SETTINGS, limit=10)
        time.sleep(4)
        own.stop()  # everything in Redis is lost: queues, delayed messages, slots
        time.sleep(1)
        own = embedded.start_redis(port=port)
        wait_final(runtime, batch["_id"], timeout_s=240, stack=stack)
        assert_no_attempt_dialed_twice(stack)
        assert_every_call_accounted(runtime, stack)
        assert stack.simulator.stats()["max_active"] <= 10  # slots rebuilt from MongoDB, not reset to zero
        lost = runtime.jobs.coll.count_documents({"batch_id": batch["_id"], "recoveries": {"$gte": 1}})
        assert lost > 0  # the restart did drop messages of jobs in progress
    finally:
        own.stop()
