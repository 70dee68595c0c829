"""The scheduler's decisions against real MongoDB and Redis, with the broker replaced by a recorder
(the messages it would send are what is asserted)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.clock import to_ms
from shared.domain import states
from shared.domain.reasons import because
from tests.fixtures.doubles import RecordingSender
from tests.helpers import frozen_clock
from workers.runtime import build_runtime

T0 = datetime(2026, 3, 3, 14, 0, tzinfo=UTC)


@pytest.fixture
def rt(config, db):
    runtime = build_runtime(config, frozen_clock(T0))
    runtime.slots.rebuild({})
    return runtime


@pytest.fixture
def sender():
    return RecordingSender()


@pytest.fixture
def pipeline(rt, sender):
    return rt.pipeline(sender)


def batch_with(rt, n, *, limit=3, due=None):
    rt.account_changes.apply("acc", {"plan": {"type": "unlimited"}, "concurrency_limit": limit})
    batch = rt.batches.create({"name": "b", "account_id": "acc"})
    contacts = [{"name": f"c{i}", "phones": [f"+1212555{i:04d}"]} for i in range(n)]
    rt.jobs.create_jobs(batch["_id"], "acc", contacts, next_try_at=due)
    return batch


def test_dispatch_never_exceeds_free_slots(rt, pipeline, sender):
    batch_with(rt, 10, limit=3)
    assert pipeline.schedule_due() == 3
    assert len(sender.of("dial")) == 3
    assert pipeline.schedule_due() == 0  # three jobs queued for three slots
    rt.slots.acquire("acc", "someone", limit=3, now_ms=to_ms(T0), lease_ms=60_000)
    queued = rt.jobs.find({"status": states.QUEUED})
    rt.jobs.release(queued[0]["_id"], T0 + timedelta(hours=1),
                    because("text", text="test"))  # one queued job went away...
    assert pipeline.schedule_due() == 0  # ...but its slot is held by a call in progress


def test_only_active_batches_with_valid_settings_are_dispatched(rt, pipeline, sender):
    batch = batch_with(rt, 2, limit=5)
    rt.batches.set_status(batch["_id"], states.BATCH_PAUSED)
    assert pipeline.schedule_due() == 0
    rt.batches.set_status(batch["_id"], states.BATCH_ACTIVE)
    rt.batches.record_settings_error(batch["_id"], "ring_timeout: must be between 5 and 300")
    assert pipeline.schedule_due() == 0
    rt.batches.update(batch["_id"], {"call_settings": {"ring_timeout": 30}})
    pipeline._recent.clear()
    assert pipeline.schedule_due() == 2


def test_future_jobs_wait_in_mongodb_beyond_the_horizon(rt, pipeline, sender):
    batch_with(rt, 2, limit=5, due=T0 + timedelta(days=2))
    assert pipeline.schedule_due() == 0
    assert sender.sent == []


def test_jobs_due_within_the_horizon_are_sent_with_their_delay(rt, sender):
    from shared.clock import started_at

    fast = build_runtime(rt.config, started_at(T0, speed=3600))
    fast.slots.rebuild({})
    batch_with(fast, 1, limit=5, due=T0 + timedelta(hours=2))  # 2 real seconds away at 3600x
    assert fast.pipeline(sender).schedule_due() == 1
    (_, _, _, delay_ms) = sender.of("dial")[0]
    assert 1500 <= delay_ms <= 2000


def test_periodic_run_recovers_expired_leases_without_dialing_blindly(rt, pipeline, sender):
    batch = batch_with(rt, 3, limit=5)
    jobs = rt.jobs.claim_due(limit=3, lease=timedelta(minutes=-1))  # leases already expired
    rt.jobs.start_dial(jobs[1]["_id"], jobs[1]["lease_owner"], set_={"attempt_id": "x"})
    rt.jobs.record_call(jobs[1]["_id"], jobs[1]["lease_owner"], "x", set_={"call_id": "call_x"})
    rt.jobs.start_dial(jobs[2]["_id"], jobs[2]["lease_owner"], set_={"attempt_id": "a"})
    pipeline.maintain()
    pipeline.schedule_due()
    assert {m[1] for m in sender.of("dial")} == {jobs[0]["_id"]}
    assert [m[1] for m in sender.of("poll")] == [jobs[1]["_id"]]
    assert [m[1] for m in sender.of("reconcile")] == [jobs[2]["_id"]]
    assert rt.batches.get(batch["_id"])["status"] == states.BATCH_ACTIVE


def test_finished_batches_complete_and_empty_ones_do_not(rt, pipeline):
    done = batch_with(rt, 2)
    empty = rt.batches.create({"name": "empty", "account_id": "acc"})
    rt.jobs.coll.update_many({"batch_id": done["_id"]}, {"$set": {"status": states.COMPLETED}})
    assert pipeline.complete_finished_batches() == 1
    assert rt.batches.get(done["_id"])["status"] == states.BATCH_COMPLETED
    assert rt.batches.get(empty["_id"])["status"] == states.BATCH_ACTIVE


def test_a_null_name_is_refused_by_the_store(rt):
    from shared.errors import ValidationError

    batch = rt.batches.create({"name": "b", "account_id": "acc"})
    with pytest.raises(ValidationError, match="name"):
        rt.batches.update(batch["_id"], {"name": None})


def test_a_job_whose_batch_was_deleted_is_cancelled_not_dialed(rt, pipeline, sender):
    batch = batch_with(rt, 1, limit=5)
    pipeline.schedule_due()
    (_, job_id, lease, _) = sender.of("dial")[0]
    rt.batches.coll.delete_one({"_id": batch["_id"]})
    assert pipeline.dial(job_id, lease) == "batch_gone"
    job = rt.jobs.get(job_id)
    assert job["status"] == states.CANCELLED and job["last_error"] == "batch not found"
    assert pipeline.dial(job_id, lease) == "stale"  # a redelivered message changes nothing


def test_dispatch_lock_is_released_only_by_its_owner(rt, pipeline):
    batch_with(rt, 1, limit=5)
    rt.redis.set("outdial:lock:schedule:acc", "someone-else", px=60_000)
    assert pipeline._dispatch_account("acc", [b["_id"] for b in rt.batches.list()], cap=100) == -1
    assert rt.redis.get("outdial:lock:schedule:acc") == b"someone-else"
