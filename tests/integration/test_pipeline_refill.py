"""A freed slot is refilled by the process that freed it: the next due job is claimed with one round trip and
dialed in the same thread, with no message through the broker. Real MongoDB, Redis and simulator; the broker is
replaced by a recorder, so every message the pipeline would send is seen."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.clock import started_at
from shared.domain import states
from shared.stores import mongo
from tests.fixtures.doubles import RecordingSender
from tests.helpers import wait_until
from workers.runtime import build_runtime

pytestmark = pytest.mark.slow   # the simulator process

#: A Tuesday 10:00 in Santiago, 60 times faster than real time (a 20 s call lasts a third of a second).
FAST = started_at(datetime(2026, 3, 3, 13, 0, tzinfo=UTC), speed=60)
PHONES = [f"+5696123470{i}" for i in range(3)]
BUSY, OTHER = "+56961234799", "+56961234798"
SCENARIO = {"numbers": {**{p: {"outcome": "answer", "ring_s": 1, "duration_s": 20} for p in PHONES}, BUSY: "busy"}}


def recording_rig(config, simulator_factory, clock, scenario, *, suspend_cache=False):
    """``(runtime, pipeline, sender, simulator)``: one process's pipeline with webhooks, on this test's MongoDB and
    Redis and a simulator, its messages kept by a :class:`RecordingSender`; a generator, for a fixture to yield from.

    :param suspend_cache: every batch read goes to MongoDB (no invalidation listener runs in a test process)."""
    simulator = simulator_factory(clock=clock, config=config, scenario=scenario)
    cfg = config.with_overrides(retell_base_url=simulator.base_url, retell_api_key=simulator.api_key,
                                retell_webhooks=True)
    runtime = build_runtime(cfg, clock)
    mongo.ensure_indexes(runtime.db)
    runtime.slots.rebuild({})
    if suspend_cache:
        runtime.cache.suspend()
    sender = RecordingSender()
    yield runtime, runtime.pipeline(sender), sender, simulator
    runtime.close()


@pytest.fixture
def rig(config, db, simulator_factory):
    yield from recording_rig(config, simulator_factory, FAST, SCENARIO)


def test_a_finalize_dials_the_next_due_job_itself(rig):
    runtime, pipeline, sender, simulator = rig
    runtime.account_changes.apply("acc", {"plan": {"type": "unlimited"}, "concurrency_limit": 1})
    batch = runtime.batches.create({"name": "refill", "account_id": "acc", "agent_id": "agent_test",
                                    "from_number": "+12125550100", "call_settings": {"max_attempts": 1}})
    ids = runtime.jobs.create_jobs(batch["_id"], "acc", [{"name": f"c{i}", "phones": [p]}
                                                         for i, p in enumerate(PHONES)]).job_ids
    assert pipeline.schedule_due() == 1   # one slot: one job claimed and sent
    (_, first_id, owner, _), = sender.of("dial")
    assert pipeline.dial(first_id, owner) == "dialed"
    first = runtime.jobs.get(first_id)
    assert first["status"] == states.IN_CALL and first["poll_at"] > first["dialed_at"]
    assert sender.of("poll") == []   # with webhooks the call is not polled on a schedule

    for n, job_id in enumerate(ids):
        job = runtime.jobs.get(job_id)
        call = wait_until(lambda j=job: (c := pipeline.provider.get_call(j["call_id"])).is_final and c,
                          timeout_s=30, interval_s=0.05)
        assert pipeline.finalize(job_id, call, source="webhook") == "answered"
        if n + 1 < len(ids):   # the finalize placed the next call itself: no dial message, the job is in a call
            following = runtime.jobs.get(ids[n + 1])
            assert following["status"] == states.IN_CALL and following["dials"] == 1
    assert len(sender.of("dial")) == 1 and sender.of("schedule") == []
    assert all(runtime.jobs.get(i)["status"] == states.COMPLETED for i in ids)
    assert simulator.stats()["requests"]["create_phone_call"] == 3


def test_a_refill_takes_nothing_when_the_slot_is_taken_again(rig):
    runtime, pipeline, sender, _ = rig
    runtime.account_changes.apply("acc", {"plan": {"type": "unlimited"}, "concurrency_limit": 1})
    batch = runtime.batches.create({"name": "full", "account_id": "acc", "agent_id": "agent_test",
                                    "from_number": "+12125550100"})
    runtime.jobs.create_jobs(batch["_id"], "acc", [{"name": "c", "phones": [PHONES[0]]}])
    runtime.slots.acquire("acc", "someone-else", limit=1, now_ms=runtime.clock.now_ms(), lease_ms=60_000)
    assert pipeline.refill("acc") == 0
    assert runtime.jobs.count_queued("acc") == 0 and sender.sent == []


def test_a_finalize_from_a_stale_read_never_touches_the_jobs_next_call(rig):
    # A poll read the job, then asked the provider; meanwhile the webhook finalized that call and the job was
    # dialed again (same round, same number: a free retry). The poll's finalize must not apply the old call.
    runtime, pipeline, sender, _ = rig
    runtime.account_changes.apply("acc", {"plan": {"type": "unlimited"}, "concurrency_limit": 2})
    batch = runtime.batches.create({"name": "stale", "account_id": "acc", "agent_id": "agent_test",
                                    "from_number": "+12125550100", "call_settings": {"max_attempts": 3}})
    job_id, = runtime.jobs.create_jobs(batch["_id"], "acc", [{"name": "c", "phones": [BUSY, OTHER]}]).job_ids
    assert pipeline.schedule_due() == 1
    (_, _, owner, _), = sender.of("dial")
    assert pipeline.dial(job_id, owner) == "dialed"
    stale = runtime.jobs.get(job_id)
    call = wait_until(lambda: (c := pipeline.provider.get_call(stale["call_id"])).is_final and c, timeout_s=30,
                      interval_s=0.05)
    runtime.jobs.coll.update_one({"_id": job_id}, {"$set": {"call_id": "call_of_the_next_dial"}})
    assert pipeline.finalize(job_id, call, job=stale, lease_owner=owner) != "busy"
    after = runtime.jobs.get(job_id)
    assert after["status"] == states.IN_CALL and after["call_id"] == "call_of_the_next_dial"
    assert after["phone_index"] == 0 and after["tries"] == 0
