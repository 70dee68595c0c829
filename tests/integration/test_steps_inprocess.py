"""The pipeline's steps one branch at a time, in this process: real MongoDB and Redis, the broker replaced by a
:class:`~tests.fixtures.doubles.RecordingSender` and the provider by a
:class:`~tests.fixtures.doubles.ScriptedProvider`, on a clock the test moves by hand. No process is started: each
test takes a fraction of a second.

- dial: an answered create puts the job in its call and schedules its first poll; a create whose outcome is unknown
  (a 5xx the client could not resolve) is reconciled after its delay by sending the same key again; a rate-limited
  create is a free retry; no free slot puts the job back to ``pending`` without asking the provider.
- poll: an ended call is finalized; a provider that does not answer is asked again later.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.clock import Clock
from shared.domain import states
from shared.domain.records import Job
from shared.errors import CreateOutcomeUnknown, ProviderUnavailable, RateLimited
from shared.provider.retell import Call
from shared.redis_keys import EPOCH_KEY
from shared.stores import attempts as attempt_states
from shared.stores.slots import Acquired
from tests.fixtures.doubles import MovableTime, RecordingSender, ScriptedProvider
from workers.runtime import build_runtime

#: A Tuesday, 11:00 in New York (the number's zone): inside the default calling window.
START = datetime(2026, 3, 3, 16, 0, tzinfo=UTC)
PHONE = "+12125550101"


@dataclasses.dataclass
class Rig:
    runtime: Any
    pipeline: Any
    sender: RecordingSender
    provider: ScriptedProvider
    time: MovableTime


@pytest.fixture
def rig(config, db) -> Iterator[Rig]:
    """One process's pipeline on this test's MongoDB and Redis, at ``START`` on real speed plus a movable offset."""
    moved = MovableTime()
    provider = ScriptedProvider()
    # The runtime's own clock reads Redis's time; this one reads the movable time (trusted: not a server time).
    rt = dataclasses.replace(build_runtime(config), clock=Clock(start=START, speed=1.0, anchor=time.time(),
                                                                 source=moved))
    rt.__dict__["provider"] = provider
    rt.slots.rebuild({})
    rt.account_changes.apply("acc", {"plan": {"type": "unlimited"}, "concurrency_limit": 1})
    sender = RecordingSender()
    yield Rig(rt, rt.pipeline(sender), sender, provider, moved)
    rt.close()


def one_job(rt: Any) -> str:
    batch = rt.batches.create({"name": "steps", "account_id": "acc", "agent_id": "agent_test"})
    return rt.jobs.create_jobs(batch["_id"], "acc", [{"name": "c", "phones": [PHONE]}]).job_ids[0]


def dispatched(rig: Rig, job_id: str) -> str:
    """Dispatch the job; the lease token of its dial message."""
    assert rig.pipeline.schedule_due() == 1
    (message,) = [m for m in rig.sender.of("dial") if m[1] == job_id]
    return message[2]


def registered(**request: Any) -> Call:
    """The provider's answer to a create: the call it registered."""
    return Call(call_id="call_1", call_status="registered", to_number=request["to_number"],
                metadata=dict(request["metadata"]))


def in_call(rig: Rig) -> tuple[str, tuple]:
    """A job whose create was answered: ``(job_id, its first poll message)``."""
    job_id = one_job(rig.runtime)
    rig.provider.script("create_phone_call", registered)
    assert rig.pipeline.dial(job_id, dispatched(rig, job_id)) == "dialed"
    (poll,) = rig.sender.of("poll")
    return job_id, poll


def test_an_answered_create_puts_the_job_in_its_call_and_schedules_the_first_poll(rig):
    job_id, (_, polled_job, token, delay_ms, call_id, n) = in_call(rig)
    job = rig.runtime.jobs.get(job_id)
    assert job["status"] == states.IN_CALL and job["call_id"] == "call_1"
    (create,) = rig.provider.calls_to("create_phone_call")
    assert create["idempotency_key"] == job["attempt_id"] and create["to_number"] == PHONE
    assert create["metadata"]["attempt_id"] == job["attempt_id"]
    assert (polled_job, token, call_id, n) == (job_id, job["lease_owner"], "call_1", 0)
    assert delay_ms == 10_000                       # the first poll: 10 s (simulated, here real speed)
    assert list(rig.runtime.slots.holders("acc")) == [job["attempt_id"]]   # the call holds the account's slot


def unknown_create(rig: Rig) -> tuple[str, str]:
    """A job whose create a 500 left unknown (it may have made the call): ``(job_id, its lease token)``."""
    job_id = one_job(rig.runtime)
    owner = dispatched(rig, job_id)
    rig.provider.script("create_phone_call",
                        CreateOutcomeUnknown("HTTP 500: internal error", status=500, to_number=PHONE))
    assert rig.pipeline.dial(job_id, owner) == "reconcile"
    return job_id, owner


def test_a_create_left_unknown_by_a_5xx_is_reconciled_after_its_delay_with_the_same_key(rig):
    job_id, owner = unknown_create(rig)
    wait_ms = int(rig.pipeline.timing.reconcile_retry_s * 1000)
    assert rig.sender.of("reconcile") == [("reconcile", job_id, owner, wait_ms)]
    job = rig.runtime.jobs.get(job_id)
    assert job["status"] == states.DIALING
    assert rig.runtime.attempts.get(job["attempt_id"])["state"] == attempt_states.DIALING

    rig.time.shift_s += wait_ms / 1000              # the reconcile message arrives: the create is sent again
    rig.provider.script("create_phone_call", registered)
    assert rig.pipeline.reconcile(job_id, owner) == "dialed"
    first, again = rig.provider.calls_to("create_phone_call")
    assert again["idempotency_key"] == first["idempotency_key"] == job["attempt_id"]
    assert rig.runtime.jobs.get(job_id)["status"] == states.IN_CALL
    assert rig.runtime.attempts.get(job["attempt_id"])["replays"] == 1


def test_a_rate_limited_create_is_a_free_retry_after_the_wait_the_provider_asked(rig):
    job_id = one_job(rig.runtime)
    owner = dispatched(rig, job_id)
    rig.provider.script("create_phone_call", RateLimited("slow down", endpoint="create_phone_call", retry_after_s=30))
    before_ms = rig.runtime.clock.now_ms()
    assert rig.pipeline.dial(job_id, owner) == "provider_error"
    job = rig.runtime.jobs.get(job_id)
    assert job["status"] == states.PENDING and job["free_retries"] == 1 and job.get("tries", 0) == 0
    assert job["next_try_at"] >= before_ms + 30_000
    assert rig.runtime.attempts.get(job["attempt_id"])["state"] == attempt_states.NOT_PLACED
    assert rig.runtime.slots.holders("acc") == {} and rig.sender.of("reconcile") == []


def test_a_dial_with_no_free_slot_goes_back_to_pending_without_asking_the_provider(rig):
    job_id = one_job(rig.runtime)
    owner = dispatched(rig, job_id)
    now_ms = rig.runtime.clock.now_ms()
    rig.runtime.slots.acquire("acc", "another-call", limit=1, now_ms=now_ms, lease_ms=600_000)   # the only slot
    assert rig.pipeline.dial(job_id, owner) == "no_slot"
    job = rig.runtime.jobs.get(job_id)
    retry_ms = int(rig.pipeline.timing.no_slot_retry_s * 1000)
    assert job["status"] == states.PENDING
    assert now_ms + retry_ms <= job["next_try_at"] <= rig.runtime.clock.now_ms() + retry_ms
    assert rig.provider.calls == [] and rig.runtime.attempts.get(job["attempt_id"]) is None

    rig.runtime.slots.release("acc", "another-call")   # the slot is free again: the job is dispatched for its time
    assert rig.pipeline.schedule_due() == 1
    (_, again, _, delay_ms) = rig.sender.of("dial")[-1]
    assert again == job_id and 0 < delay_ms <= retry_ms


def test_a_slot_rebuild_during_a_dial_that_found_the_slots_unknown_leaves_no_slot_behind(rig, monkeypatch):
    # The slot sets are unknown (Redis lost them); the dial's acquire says so, and a rebuild that runs right then
    # sees the job dialing and counts its attempt as a call. The attempt is never placed: its slot goes back.
    job_id = one_job(rig.runtime)
    owner = dispatched(rig, job_id)
    rig.runtime.redis.delete(EPOCH_KEY)
    acquire = rig.runtime.slots.acquire

    def acquire_then_rebuild(*args: Any, **kwargs: Any) -> Acquired:
        answer = acquire(*args, **kwargs)
        rig.pipeline.rebuild_slots()
        return answer

    monkeypatch.setattr(rig.runtime.slots, "acquire", acquire_then_rebuild)
    assert rig.pipeline.dial(job_id, owner) == "no_slot"
    job = rig.runtime.jobs.get(job_id)
    assert job["status"] == states.PENDING and job["reason_code"] == "slots_rebuilding"
    assert rig.runtime.slots.holders("acc") == {} and rig.provider.calls == []


def test_a_slot_outlasts_a_create_sent_at_the_dialing_leases_end_and_a_rebuild_keeps_that_span(rig):
    # A create whose answer is unknown may still reach the provider as late as its dialing lease's end; its call then
    # lives its longest life. The slot covers all of it, so no other dial takes it while that call may run; the same
    # after Redis lost the slot sets and maintenance rebuilt them from the jobs MongoDB shows dialing.
    job_id, _ = unknown_create(rig)
    job = Job.from_doc(rig.runtime.jobs.get(job_id))
    settings = rig.pipeline._settings_of(job)
    latest_end = job.lease_until + int(rig.pipeline.timing.call_life_s(settings) * 1000)
    assert rig.runtime.slots.holders("acc")[job.attempt_id] >= latest_end

    rig.runtime.redis.delete(EPOCH_KEY)
    rig.pipeline.rebuild_slots()
    assert rig.runtime.slots.holders("acc")[job.attempt_id] >= latest_end


def test_a_poll_of_an_ended_call_finalizes_it(rig):
    job_id, (_, _, token, _, call_id, n) = in_call(rig)
    started = rig.runtime.clock.now_ms()
    rig.time.shift_s += 20
    ended = Call(call_id="call_1", call_status="ended", disconnection_reason="user_hangup",
                 start_timestamp_ms=started, end_timestamp_ms=started + 18_000, duration_ms=18_000, to_number=PHONE)
    rig.provider.script("get_call", ended)
    assert rig.pipeline.poll(job_id, token, call_id, n) == "answered"
    job = rig.runtime.jobs.get(job_id)
    assert job["status"] == states.COMPLETED
    attempt = rig.runtime.attempts.get(job["attempt_id"])
    assert attempt["state"] == attempt_states.ENDED and attempt["outcome"] == "answered"
    assert attempt["duration_ms"] == 18_000 and attempt["finalized_by"] == "poll"
    assert rig.provider.calls_to("get_call") == [{"call_id": "call_1"}]
    assert rig.runtime.slots.holders("acc") == {}


def test_a_poll_the_provider_does_not_answer_looks_again_later(rig):
    job_id, (_, _, token, _, call_id, n) = in_call(rig)
    rig.provider.script("get_call", ProviderUnavailable("bad gateway", status=502, endpoint="get_call"))
    assert rig.pipeline.poll(job_id, token, call_id, n) == "polling"
    (_, again) = rig.sender.of("poll")
    assert again[1:3] == (job_id, token) and again[4:] == (call_id, n + 1)
    assert again[3] >= 5_000                         # an unknown state is looked at again, never before 5 s
    assert rig.runtime.jobs.get(job_id)["status"] == states.IN_CALL
