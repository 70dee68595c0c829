"""The pipeline's promises at its edges, against real MongoDB, Redis and the simulator over HTTP, one step at a
time: the broker is replaced by a recorder (the messages a step would send are what is asserted) and the test
process's clock is moved by hand, so that ten minutes of provider trouble take a few real seconds.

- An ambiguous create is sent again with its key for as long as the key protects it, and declared not placed
  only once nothing sent can still be on its way: at most one call per job and round.
- A give-up interrupted between its writes is finished by the next reconcile, never spun with no delay.
- A late create answer never overwrites an attempt that already ended.
- A get-call 404 for a call in progress is "unknown": the call is looked at again, the person is not redialed.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime

import pytest

from shared.clock import Clock
from shared.domain import states
from shared.errors import StoreError
from shared.provider.retell import RetellClient
from shared.stores import attempts as attempt_states
from tests.fixtures.doubles import MovableTime, RecordingSender
from workers.runtime import build_runtime

pytestmark = pytest.mark.slow   # the simulator process or a running stack

START = datetime(2026, 3, 3, 14, 0, tzinfo=UTC)   # a Tuesday, 11:00 in Santiago: inside the default window


@pytest.fixture
def movable():
    return MovableTime()


@pytest.fixture
def edge(config, db, simulator_factory, movable):
    """``(runtime, pipeline, sender, simulator)`` on a clock at ``START`` running at real speed plus ``movable``."""
    anchor = time.time()
    sim = simulator_factory(clock=Clock(start=START, speed=1.0, anchor=anchor),
                            scenario={"defaults": {"answer": {"ring_s": [5, 5], "duration_s": [600, 600]}}})
    cfg = config.with_overrides(retell_base_url=sim.base_url, retell_api_key=sim.api_key,
                                retell_create_timeout_s=1.0)
    # The runtime's own clock reads Redis's time; this one reads the movable time (trusted: not a server time).
    rt = dataclasses.replace(build_runtime(cfg), clock=Clock(start=START, speed=1.0, anchor=anchor, source=movable))
    rt.__dict__["provider"] = RetellClient(cfg, backoff_base_s=0.01, backoff_max_s=0.02)   # the client's own resends
    rt.slots.rebuild({})
    rt.account_changes.apply("acc", {"plan": {"type": "unlimited"}, "concurrency_limit": 5})
    sender = RecordingSender()
    return rt, rt.pipeline(sender), sender, sim


def one_job(rt, phone="+12125550101"):
    batch = rt.batches.create({"name": "edges", "account_id": "acc", "agent_id": "agent_test"})
    return rt.jobs.create_jobs(batch["_id"], "acc", [{"name": "c", "phones": [phone]}]).job_ids[0]


def dispatched(pipeline, sender, job_id):
    """Dispatch the job; the lease token of its dial message."""
    assert pipeline.schedule_due() == 1
    (message,) = [m for m in sender.of("dial") if m[1] == job_id]
    return message[2]


def test_a_create_ambiguous_for_ten_minutes_is_sent_again_with_its_key_and_calls_once(edge, movable):
    """Every create send fails ambiguously for ten minutes; the last one before the provider recovers is still
    being processed when the client gives up. The person is called once, under the attempt's first key."""
    rt, pipeline, sender, sim = edge
    job_id = one_job(rt)
    owner = dispatched(pipeline, sender, job_id)
    sim.set_faults(slow_ms=2500, script={"create_phone_call": ["500"] * 200})
    assert pipeline.dial(job_id, owner) == "reconcile"
    started = rt.clock.now_ms()
    while rt.clock.now_ms() - started < 10 * 60_000:     # ten minutes of 500s, reconciled as the pipeline asks
        (_, _, token, delay_ms) = sender.of("reconcile")[-1]
        assert delay_ms > 0
        movable.shift_s += delay_ms / 1000
        assert pipeline.reconcile(job_id, token) in ("reconcile", "retry")
    # The provider recovers slowly: the next sends are processed only after the client gave up on them.
    sim.set_faults(slow_ms=2500, script={"create_phone_call": ["late"] * 3})
    for _ in range(5):       # whatever comes next, nothing dials the person a second time
        (_, _, token, delay_ms) = sender.of("reconcile")[-1]
        movable.shift_s += delay_ms / 1000
        result = pipeline.reconcile(job_id, token)
        assert result in ("reconcile", "dialed")
        if result == "dialed":
            break
        time.sleep(0.5)
    assert result == "dialed"
    job = rt.jobs.get(job_id)
    assert job["status"] == states.IN_CALL and job["attempt_id"].endswith(":d1")
    calls = sim.dials()
    assert len(calls) == 1 and calls[0]["body"]["metadata"]["attempt_id"] == job["attempt_id"]
    attempt = rt.attempts.get(job["attempt_id"])
    assert attempt["replays"] >= 6 and attempt["last_sent_at"] > attempt["created_at"]
    waits = [m[3] for m in sender.of("reconcile")]
    assert waits[:4] == sorted(waits[:4]) and max(waits) <= 60_000   # sends again back off, up to a minute


def test_a_lookup_that_misses_declares_not_placed_only_after_the_last_send_has_settled(edge, movable):
    """Past the key's window the attempt is looked up; a miss counts only once its last send can no longer be
    on its way (its dialing lease and a grace after it), however old the attempt is."""
    rt, pipeline, sender, sim = edge
    job_id, owner, aid = ambiguous_dial(rt, pipeline, sender, sim)
    movable.shift_s += rt.config.dialing_lease_s + 20        # the attempt's first send is long settled...
    rt.attempts.coll.update_one({"_id": aid}, {"$set": {"last_sent_at": rt.clock.now_ms() - 2_000}})  # ...but
    # it was sent again two seconds ago
    pipeline.timing.replay_window_s = 0                       # past the key's window: looked up
    assert pipeline.reconcile(job_id, owner) == "retry"
    assert rt.attempts.get(aid)["state"] == attempt_states.DIALING
    movable.shift_s += rt.config.dialing_lease_s + pipeline.timing.reconcile_grace_s
    assert pipeline.reconcile(job_id, owner) == "not_placed"
    assert rt.jobs.get(job_id)["status"] == states.PENDING and sim.dials() == []


def ambiguous_dial(rt, pipeline, sender, sim):
    """A job whose create was never processed, though the client cannot tell: ``(job_id, owner, attempt_id)``."""
    job_id = one_job(rt)
    owner = dispatched(pipeline, sender, job_id)
    sim.set_faults(script={"create_phone_call": ["drop_before"] * 3})
    assert pipeline.dial(job_id, owner) == "reconcile"
    return job_id, owner, rt.jobs.get(job_id)["attempt_id"]


def test_a_create_sent_again_needs_its_slot_like_any_dial(edge, movable):
    """A send again may make the call: when the attempt's slot lease has ended and the account's slots are all
    taken meanwhile, nothing is sent until one is free (the call would run above the account's limit)."""
    rt, pipeline, sender, sim = edge
    job_id, owner, aid = ambiguous_dial(rt, pipeline, sender, sim)
    settings = pipeline._settings_of(rt.jobs.get(job_id))
    movable.shift_s += pipeline._slot_lease_ms(settings) / 1000 + 1      # the attempt's slot lease ended
    others = [f"other:{i}" for i in range(5)]
    for holder in others:                                               # and five other calls took the slots
        assert rt.slots.acquire("acc", holder, limit=5, now_ms=rt.clock.now_ms(), lease_ms=600_000) == 1
    sent = len(sim.calls())
    assert pipeline.reconcile(job_id, owner) == "no_slot"
    assert len(sim.calls()) == sent                                     # nothing was sent
    assert sender.of("reconcile")[-1][3] > 0
    rt.slots.release("acc", others[0])
    assert pipeline.reconcile(job_id, owner) == "dialed"
    assert set(rt.slots.holders("acc")) == {*others[1:], aid} and len(sim.dials()) == 1


def _attempt_given_up(rt, sim, pipeline, sender, movable):
    """A dialing job whose attempt can be neither sent again nor looked up, past its deadline."""
    job_id = one_job(rt)
    owner = dispatched(pipeline, sender, job_id)
    sim.set_faults(script={"create_phone_call": ["drop_before"] * 3, "list_calls": ["500"] * 60})
    assert pipeline.dial(job_id, owner) == "reconcile"
    movable.shift_s += 2 * 3600          # past the key's hour and the attempt's deadline
    return job_id, owner


def test_a_give_up_interrupted_between_its_writes_is_finished_by_the_next_reconcile(edge, movable, monkeypatch):
    rt, pipeline, sender, sim = edge
    job_id, owner = _attempt_given_up(rt, sim, pipeline, sender, movable)
    aid = rt.jobs.get(job_id)["attempt_id"]
    transition = type(rt.jobs)._transition

    def failing(self, *args, **kwargs):
        raise StoreError("MongoDB went away between the two writes of the give-up")

    monkeypatch.setattr(type(rt.jobs), "_transition", failing)
    with pytest.raises(StoreError):
        pipeline.reconcile(job_id, owner)
    monkeypatch.setattr(type(rt.jobs), "_transition", transition)
    assert rt.attempts.get(aid)["state"] == attempt_states.ENDED
    assert rt.jobs.get(job_id)["status"] == states.DIALING
    # Recovery takes the job over once its lease ends (a new owner); the same owner's redelivery would do too.
    movable.shift_s += rt.config.dialing_lease_s + 1
    assert pipeline.recover_expired() == 1
    (_, _, new_owner, _) = sender.of("reconcile")[-1]
    assert new_owner != owner
    before = len(sender.sent)
    assert pipeline.reconcile(job_id, new_owner) == "given_up"
    job = rt.jobs.get(job_id)
    assert job["status"] == states.RETRY_WAIT and job["tries"] == 1 and "past the deadline" in job["last_error"]
    assert all(m[3] > 0 for m in sender.sent[before:] if m[0] == "reconcile")
    assert sim.dials() == [] and rt.slots.holders("acc") == {}


def test_no_reconcile_is_sent_again_without_a_delay(edge, movable):
    """A reconcile whose attempt changed under it looks again a moment later, never at once."""
    rt, pipeline, sender, sim = edge
    job_id, _, aid = ambiguous_dial(rt, pipeline, sender, sim)
    rt.attempts.coll.update_one({"_id": aid}, {"$set": {"owner": "someone-else", "state": "recording"}})
    rt.jobs.coll.update_one({"_id": job_id}, {"$set": {"lease_owner": "new-owner"}})
    assert pipeline.reconcile(job_id, "new-owner") == "retry"
    (_, _, _, delay_ms) = sender.of("reconcile")[-1]
    assert delay_ms > 0


def test_a_late_create_answer_never_overwrites_an_ended_attempt(edge):
    rt, _, _, _ = edge
    rt.attempts.insert({"_id": "j:r1:p0:d1", "job_id": "j", "to_number": "+12125550101"})
    rt.attempts.set_call("j:r1:p0:d1", "call-a")
    rt.attempts.end("j:r1:p0:d1", {"outcome": "answered", "duration_ms": 30_000})
    late_same = rt.attempts.orphaned("j:r1:p0:d1", "call-a")     # its own call, answered late
    assert rt.attempts.get("j:r1:p0:d1")["state"] == attempt_states.ENDED
    late_other = rt.attempts.orphaned("j:r1:p0:d1", "call-b")    # another call
    ended = rt.attempts.get("j:r1:p0:d1")
    assert ended["state"] == attempt_states.ENDED and ended["outcome"] == "answered"
    assert ended["call_id"] == "call-a" and ended["orphan_call_id"] == "call-b"
    assert (late_same, late_other) == (False, True)
    rt.attempts.insert({"_id": "j:r1:p0:d2", "job_id": "j", "to_number": "+12125550101"})
    assert rt.attempts.orphaned("j:r1:p0:d2", "call-c")          # still dialing: orphaned
    assert rt.attempts.get("j:r1:p0:d2")["state"] == attempt_states.ORPHANED


def test_a_get_call_404_for_a_call_in_progress_is_unknown_and_never_redials(edge, movable):
    rt, pipeline, sender, sim = edge
    job_id = one_job(rt)
    owner = dispatched(pipeline, sender, job_id)
    assert pipeline.dial(job_id, owner) == "dialed"
    job = rt.jobs.get(job_id)
    sim.set_faults(script={"get_call": ["404"] * 3})
    assert pipeline.poll(job_id, owner, job["call_id"], 0) == "polling"
    after = rt.jobs.get(job_id)
    assert after["status"] == states.IN_CALL and after["call_id"] == job["call_id"]
    assert after.get("free_retries", 0) == 0
    assert sender.of("poll")[-1][3] > 0   # looked at again after a delay
    assert len(sim.dials()) == 1


# -- end to end: a running stack (simulator, workers, clock) --------------------------------------------------------


def test_a_provider_that_answers_every_create_ambiguously_for_ten_minutes_calls_each_person_once(stack_factory):
    """For ten simulated minutes every create is answered ambiguously (a 500, or processed and then dropped),
    then normally: every contact is called, and at most one call reaches the simulator per job and round."""
    from shared.clock import started_at
    from tests.helpers import wait_until
    from tests.integration.test_pipeline_campaign import assert_no_attempt_dialed_twice, numbers, setup_campaign
    from tests.integration.test_pipeline_fences import FAST, answer

    phones = numbers("71", 6)
    clock = started_at(START, speed=60)
    stack, runtime = stack_factory(clock=clock, scenario=answer(phones), config_overrides=FAST)
    stack.simulator.set_faults(rate_500=0.5, rate_drop=0.5, endpoints=["create_phone_call"])
    batch = setup_campaign(runtime, [{"name": f"c{i}", "phones": [p]} for i, p in enumerate(phones)], {})
    troubled_until = clock.now_ms() + 10 * 60_000
    wait_until(lambda: clock.now_ms() >= troubled_until, timeout_s=60, interval_s=0.2)
    stack.simulator.set_faults()
    wait_until(lambda: {j["status"] for j in runtime.jobs.find({"batch_id": batch["_id"]})} == {states.COMPLETED},
               timeout_s=120, interval_s=0.2)
    assert_no_attempt_dialed_twice(stack)
    per_round: dict[tuple, int] = {}
    for record in stack.simulator.dials():
        key = (record["body"]["metadata"]["job_id"], record["body"]["metadata"]["round"])
        per_round[key] = per_round.get(key, 0) + 1
    assert len(per_round) == 6 and set(per_round.values()) == {1}
    assert stack.simulator.stats()["faults"].get("500", 0) + stack.simulator.stats()["faults"].get("drop", 0) > 0
