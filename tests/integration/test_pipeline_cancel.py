"""Cancelling a batch leaves no job behind: a call that ends after the cancel, a create that fails after it, a
job put back to wait by a write racing with it and a contact imported during it all end ``cancelled`` (or
``completed``, for a conversation that happened), and nothing of the batch is dialed after the cancel.

The first tests run one process's pipeline against the real MongoDB, Redis and simulator, with the broker replaced
by a recorder; the last runs a whole stack."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.clock import started_at
from shared.domain import states
from shared.stores import attempts as attempt_states
from shared.stores.batch_controls import cancel_batch
from tests.helpers import wait_until
from tests.integration.test_pipeline_campaign import numbers, wait_final
from tests.integration.test_pipeline_refill import recording_rig

pytestmark = pytest.mark.slow   # a running stack (simulator, workers, clock) or the simulator process

#: A Tuesday 10:00 in Santiago, 60 times faster than real time.
FAST = started_at(datetime(2026, 3, 3, 13, 0, tzinfo=UTC), speed=60)
NO_ANSWER, TALKER, OTHER = "+56961234801", "+56961234802", "+56961234803"
SCENARIO = {"numbers": {NO_ANSWER: {"outcome": "no_answer", "ring_s": 2},
                        TALKER: {"outcome": "answer", "ring_s": 1, "duration_s": 20},
                        OTHER: {"outcome": "answer", "ring_s": 1, "duration_s": 20}}}
#: What a final job never carries: it is due never again and held by no process.
NOT_FINAL_FIELDS = ("next_try_at", "lease_owner", "lease_until", "poll_at")


@pytest.fixture
def rig(config, db, simulator_factory):
    # No invalidation listener runs in this process: every batch read goes to MongoDB, as in a process whose
    # listener is not subscribed (a worker's cache learns of the cancel by pub/sub: the last test runs those).
    yield from recording_rig(config, simulator_factory, FAST, SCENARIO, suspend_cache=True)


def _batch(runtime, phones, *, max_attempts=3):
    runtime.account_changes.apply("acc", {"plan": {"type": "minutes", "balance": 60}, "concurrency_limit": 5})
    batch = runtime.batches.create({"name": "cancel", "account_id": "acc", "agent_id": "agent_test",
                                    "from_number": "+12125550100", "call_settings": {"max_attempts": max_attempts}})
    ids = runtime.jobs.create_jobs(batch["_id"], "acc", [{"name": f"c{i}", "phones": list(p)}
                                                         for i, p in enumerate(phones)]).job_ids
    return batch, ids


def _dial_all(pipeline, sender):
    pipeline.schedule_due()
    return [pipeline.dial(job_id, owner) for _, job_id, owner, _ in sender.of("dial")]


def _ended_call(pipeline, job):
    return wait_until(lambda: (c := pipeline.provider.get_call(job["call_id"])).is_final and c, timeout_s=30,
                      interval_s=0.05)


def assert_final(job, status):
    assert job["status"] == status, (job["status"], job.get("last_error"))
    assert isinstance(job.get("finished_at"), int), job
    assert not [f for f in NOT_FINAL_FIELDS if f in job], job


def test_a_call_that_ends_after_the_cancel_cancels_its_job(rig):
    runtime, pipeline, sender, _ = rig
    batch, (job_id,) = _batch(runtime, [(NO_ANSWER, OTHER)])
    assert _dial_all(pipeline, sender) == ["dialed"]
    job = runtime.jobs.get(job_id)
    assert job["status"] == states.IN_CALL and job["poll_at"]
    assert cancel_batch(runtime.batches, runtime.jobs, batch["_id"]).cancelled_jobs == 0   # in a call: goes on

    assert pipeline.finalize(job_id, _ended_call(pipeline, job), source="webhook", refill=False) == "no_answer"
    after = runtime.jobs.get(job_id)
    assert_final(after, states.CANCELLED)
    assert after["reason_code"] == "batch_cancelled" and after["phone_index"] == 0
    # The call itself was accounted for as usual: attempt ended, charge settled, slot free.
    attempt = runtime.attempts.get(job["attempt_id"])
    assert attempt["state"] == attempt_states.ENDED and attempt["outcome"] == "no_answer"
    assert runtime.billing.balance("acc")["reserved"] == 0
    assert runtime.slots.holders("acc") == {}
    # Nothing is left for the dispatch or the maintenance to find, and the second phone was never dialed.
    pipeline.maintain()
    assert pipeline.schedule_due() == 0 and runtime.jobs.get(job_id)["status"] == states.CANCELLED
    assert runtime.jobs.counts(batch["_id"])[states.CANCELLED] == 1


def test_a_conversation_that_ends_after_the_cancel_completes_its_job(rig):
    runtime, pipeline, sender, _ = rig
    batch, (job_id,) = _batch(runtime, [(TALKER,)])
    assert _dial_all(pipeline, sender) == ["dialed"]
    job = runtime.jobs.get(job_id)
    cancel_batch(runtime.batches, runtime.jobs, batch["_id"])
    assert pipeline.finalize(job_id, _ended_call(pipeline, job), source="webhook", refill=False) == "answered"
    assert_final(runtime.jobs.get(job_id), states.COMPLETED)


class CancelsDuringTheCreate:
    """The real provider client, with the batch cancelled by an operator while the create is on its way (after the
    check right before the send, or, ``before_the_check``, between the dial's decision and that check)."""

    def __init__(self, provider, cancel, *, before_the_check=False):
        self.provider, self.cancel, self.before_the_check = provider, cancel, before_the_check

    def create_phone_call(self, **kwargs):
        if self.before_the_check:
            self.cancel()
            return self.provider.create_phone_call(**kwargs)
        check = kwargs.get("precheck")

        def precheck():
            if check is not None:
                check()
            self.cancel()

        return self.provider.create_phone_call(**{**kwargs, "precheck": precheck})

    def __getattr__(self, name):
        return getattr(self.provider, name)


def test_a_cancel_between_the_decision_and_the_send_sends_nothing(rig):
    """The check right before the send reads the batch (from the batch cache): a batch cancelled after the dial
    was decided places no call."""
    runtime, pipeline, sender, simulator = rig
    batch, (job_id,) = _batch(runtime, [(OTHER,)])
    pipeline.provider = CancelsDuringTheCreate(
        pipeline.provider, lambda: cancel_batch(runtime.batches, runtime.jobs, batch["_id"]), before_the_check=True)
    assert _dial_all(pipeline, sender) == ["cancelled"]
    after = runtime.jobs.get(job_id)
    assert_final(after, states.CANCELLED)
    assert runtime.attempts.get(after["attempt_id"])["state"] == attempt_states.NOT_PLACED
    assert simulator.dials() == []
    assert runtime.billing.balance("acc")["reserved"] == 0 and runtime.slots.holders("acc") == {}


def test_a_create_that_fails_after_the_cancel_cancels_its_job(rig):
    runtime, pipeline, sender, simulator = rig
    batch, (job_id,) = _batch(runtime, [(OTHER,)])
    pipeline.provider = CancelsDuringTheCreate(
        pipeline.provider, lambda: cancel_batch(runtime.batches, runtime.jobs, batch["_id"]))
    simulator.script_faults("create_phone_call", "429")   # a free retry: nothing placed, no attempt spent
    assert _dial_all(pipeline, sender) == ["cancelled"]
    after = runtime.jobs.get(job_id)
    assert_final(after, states.CANCELLED)
    assert after["reason_code"] == "batch_cancelled"
    assert runtime.attempts.get(after["attempt_id"])["state"] == attempt_states.NOT_PLACED
    assert runtime.billing.balance("acc")["reserved"] == 0 and runtime.slots.holders("acc") == {}


def test_the_dials_own_cancel_is_final(rig):
    runtime, pipeline, sender, _ = rig
    batch, (job_id,) = _batch(runtime, [(OTHER,)])
    pipeline.schedule_due()
    (_, _, owner, _), = sender.of("dial")
    # The batch is cancelled between the claim and the dial, and its job is back to queued (a claim racing the
    # cancel): the dial finds the cancelled batch.
    runtime.batches.set_status(batch["_id"], states.BATCH_CANCELLED)
    assert pipeline.dial(job_id, owner) == "cancelled"
    assert_final(runtime.jobs.get(job_id), states.CANCELLED)


def test_maintenance_cancels_what_waits_in_a_cancelled_batch_then_stops_looking(rig):
    runtime, pipeline, sender, _ = rig
    batch, (in_call,) = _batch(runtime, [(TALKER,)])
    assert _dial_all(pipeline, sender) == ["dialed"]
    call_job = runtime.jobs.get(in_call)
    assert cancel_batch(runtime.batches, runtime.jobs, batch["_id"]).cancelled_jobs == 0
    assert runtime.batches.get(batch["_id"])["cancelled_at"]
    # Writes racing with the cancel: a finalize that read the batch still active put its job back to wait for its
    # next round, and an import that passed the door before the cancel inserted a contact after it.
    racing, late = runtime.jobs.create_jobs(batch["_id"], "acc", [{"name": "racing", "phones": [OTHER]},
                                                                  {"name": "late", "phones": [NO_ANSWER]}]).job_ids
    runtime.jobs.coll.update_one({"_id": racing}, {"$set": {"status": states.RETRY_WAIT, "tries": 1}})

    pipeline.maintain()   # one run
    for job_id in (racing, late):
        assert_final(runtime.jobs.get(job_id), states.CANCELLED)
    assert runtime.jobs.get(in_call)["status"] == states.IN_CALL   # a call in progress goes on
    assert runtime.batches.cancelled_to_sweep() == [batch["_id"]]   # looked at again while a job is open

    pipeline.finalize(in_call, _ended_call(pipeline, call_job), source="webhook", refill=False)
    pipeline.maintain()
    assert runtime.jobs.has_open_jobs(batch["_id"]) is False
    assert runtime.batches.cancelled_to_sweep() == []   # and no longer once none is
    assert runtime.batches.get(batch["_id"])["status"] == states.BATCH_CANCELLED


# -- end to end -----------------------------------------------------------------------------------------------

E2E_START = datetime(2026, 3, 3, 14, 0, tzinfo=UTC)


def test_a_cancel_while_ten_calls_are_live_leaves_every_job_final_and_dials_nothing_more(stack_factory):
    fast = started_at(E2E_START, speed=60)
    phones = numbers("95", 30)
    # Ten calls held for fifteen simulated minutes (fifteen real seconds): five end as conversations, five reach
    # a voicemail (which puts the job back to wait for its next round, as long as its batch goes on).
    held = {"ring_s": 1, "duration_s": 900}
    scenario = {"numbers": {p: {"outcome": "answer" if i % 2 else "voicemail", **held}
                            for i, p in enumerate(phones)}}
    stack, runtime = stack_factory(clock=fast, scenario=scenario)
    runtime.account_changes.apply("acme", {"plan": {"type": "unlimited"}, "concurrency_limit": 10})
    batch = runtime.batches.create({"name": "cancelled live", "account_id": "acme", "agent_id": "agent_test",
                                    "from_number": "+12125550100",
                                    "call_settings": {"max_attempts": 3, "max_call_duration": 1800}})
    runtime.jobs.create_jobs(batch["_id"], "acme", [{"name": f"c{i}", "phones": [p]} for i, p in enumerate(phones)])
    wait_until(lambda: runtime.jobs.counts(batch["_id"])[states.IN_CALL] == 10, timeout_s=60)

    cancelled_at = runtime.clock.now_ms()
    result = cancel_batch(runtime.batches, runtime.jobs, batch["_id"])
    assert result.cancelled_jobs == 20
    live = runtime.jobs.find({"batch_id": batch["_id"], "status": states.IN_CALL})
    assert len(live) == 10

    wait_final(runtime, batch["_id"], timeout_s=120, stack=stack)
    jobs = {j["_id"]: j for j in runtime.jobs.find({"batch_id": batch["_id"]})}
    for job in jobs.values():
        assert_final(job, job["status"])
    counts = runtime.jobs.counts(batch["_id"])
    for job in live:
        talked = scenario["numbers"][job["contact"]["phones"][0]]["outcome"] == "answer"
        after = jobs[job["_id"]]
        assert after["status"] == (states.COMPLETED if talked else states.CANCELLED), after
        assert runtime.attempts.get(job["attempt_id"])["state"] == attempt_states.ENDED
    assert (counts[states.COMPLETED], counts[states.CANCELLED]) == (5, 25), counts
    # The simulator's record: ten creates, all before the cancel, one per live call.
    dials = stack.simulator.dials()
    assert len(dials) == 10 and all(rec["received_at"] <= cancelled_at for rec in dials)
    assert {rec["body"]["metadata"]["job_id"] for rec in dials} == {j["_id"] for j in live}
    # Figure for the record (not asserted: it is a matter of speed): from the last call's end to its job's end.
    last_end = max(int(runtime.attempts.get(j["attempt_id"])["ended_at"]) for j in live)
    last_final = max(int(j["finished_at"]) for j in jobs.values())
    print(f"last call ended -> every job final: {fast.real_seconds((last_final - last_end) / 1000):.2f} real s")
    # Nothing waits in the batch, and maintenance stops looking at it.
    wait_until(lambda: runtime.batches.cancelled_to_sweep() == [], timeout_s=30)
