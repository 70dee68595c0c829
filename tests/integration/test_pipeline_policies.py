"""Defaults of batches without call_settings, settings that stop validating and batch controls, end to end
through real processes (the balance policies: test_pipeline_balance.py)."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime

import pytest

from shared.clock import started_at
from shared.domain import states
from shared.stores.batch_controls import cancel_batch, pause_batch, resume_batch
from tests.helpers import jitter_s, wait_until
from tests.integration.test_pipeline_campaign import numbers, setup_campaign, wait_final

pytestmark = pytest.mark.slow   # a running stack (simulator, workers, clock) or the simulator process

START = datetime(2026, 3, 3, 14, 0, tzinfo=UTC)


def test_batch_without_call_settings_behaves_like_the_original_worker(stack_factory):
    fast = started_at(START, speed=1200)
    (busy,) = numbers("91", 1)
    stack, runtime = stack_factory(clock=fast, scenario={"numbers": {busy: "busy"}})
    runtime.account_changes.apply("acme", {"plan": {"type": "unlimited"}})
    batch = runtime.batches.create({"name": "old", "account_id": "acme", "agent_id": "agent_test",
                                    "from_number": "+12125550100"})
    assert "call_settings" not in runtime.batches.get(batch["_id"])
    runtime.jobs.create_jobs(batch["_id"], "acme", [{"name": "a", "phones": [busy]}])
    wait_final(runtime, batch["_id"], timeout_s=60, stack=stack)
    (job,) = runtime.jobs.find({"batch_id": batch["_id"]})
    assert job["status"] == states.FAILED and job["tries"] == 3  # MAX_TRIES
    assert job["last_error"].startswith("max attempts reached (3)")
    dials = stack.simulator.dials()
    assert len(dials) == 3
    for rec in dials:
        agent = rec["body"]["agent_override"]["agent"]
        assert (agent["ring_duration_ms"], agent["max_call_duration_ms"]) == (30_000, 600_000)
    # RETRY_DELAY_MINUTES after each round: the next round is due 30 minutes after the failed one was
    # applied (the write after the outcome, allowing the jitter budget), and dialed no earlier.
    attempts = runtime.attempts.for_job(job["_id"])
    for failed, retry in itertools.pairwise(attempts):
        gap_min = (retry["due_at"] - failed["finalized_at"]) / 60_000
        assert 30 <= gap_min <= 30 + jitter_s(fast) / 60, gap_min
    for rec, attempt in zip(dials, attempts, strict=True):
        assert rec["body"]["metadata"]["attempt_id"] == attempt["_id"] and rec["received_at"] >= attempt["due_at"]


def test_settings_that_stop_validating_hold_the_batch_until_fixed(stack_factory):
    fast = started_at(START, speed=60)
    phones = numbers("92", 3)
    stack, runtime = stack_factory(clock=fast, scenario={"numbers": {p: {"outcome": "answer", "duration_s": 10}
                                                                       for p in phones}})
    batch = setup_campaign(runtime, [{"name": f"c{i}", "phones": [p]} for i, p in enumerate(phones)],
                           {"max_attempts": 2})
    runtime.batches.coll.update_one({"_id": batch["_id"]}, {"$set": {"call_settings": {"ring_timeout": 1}}})
    runtime.publish_invalidation(batch["_id"])  # e.g. an edit made directly in MongoDB
    # jobs created before the edit may already be dialing; the rest must wait
    shown = wait_until(lambda: runtime.batches.get(batch["_id"]).get("settings_error"), timeout_s=30)
    assert "ring_timeout" in shown

    def held_back() -> list[dict] | None:
        waiting = runtime.jobs.find({"batch_id": batch["_id"], "status": states.PENDING})
        return waiting if waiting and all("call_settings invalid" in j["last_error"] for j in waiting) else None

    wait_until(held_back, timeout_s=30)
    dialed_before = len(stack.simulator.dials())
    time.sleep(2)
    assert len(stack.simulator.dials()) == dialed_before  # nothing dialed while invalid
    runtime.batches.update(batch["_id"], {"call_settings": {"ring_timeout": 30}})
    assert "settings_error" not in runtime.batches.get(batch["_id"])
    wait_final(runtime, batch["_id"], timeout_s=60, stack=stack)
    assert {j["status"] for j in runtime.jobs.find({"batch_id": batch["_id"]})} == {states.COMPLETED}


def leased(runtime, batch) -> int:
    """Jobs of the batch that a process holds: queued, dialing or in a call."""
    counts = runtime.jobs.counts(batch["_id"])
    return sum(counts[s] for s in states.LEASED)


def test_pause_resume_and_cancel(stack_factory):
    fast = started_at(START, speed=60)
    phones = numbers("93", 60)
    stack, runtime = stack_factory(clock=fast, scenario={"numbers": {p: {"outcome": "answer", "duration_s": 30}
                                                                       for p in phones}})
    batch = setup_campaign(runtime, [{"name": f"c{i}", "phones": [p]} for i, p in enumerate(phones)], {}, limit=3)
    wait_until(lambda: len(stack.simulator.dials()) >= 3, timeout_s=30)
    pause_batch(runtime.batches, batch["_id"])
    wait_until(lambda: leased(runtime, batch) == 0, timeout_s=30)  # calls end normally, queued jobs go back
    paused_at = len(stack.simulator.dials())
    time.sleep(2)
    assert len(stack.simulator.dials()) == paused_at
    resume_batch(runtime.batches, batch["_id"])
    wait_until(lambda: len(stack.simulator.dials()) >= paused_at + 3, timeout_s=30)
    result = cancel_batch(runtime.batches, runtime.jobs, batch["_id"])
    assert result.cancelled_jobs > 0
    wait_until(lambda: leased(runtime, batch) == 0, timeout_s=30)
    counts = runtime.jobs.counts(batch["_id"])
    assert counts[states.CANCELLED] == result.cancelled_jobs
    assert counts[states.COMPLETED] + counts[states.CANCELLED] == 60
    dialed = len(stack.simulator.dials())
    time.sleep(2)
    assert len(stack.simulator.dials()) == dialed == counts[states.COMPLETED]

