"""Do-not-call lists in a running campaign: real processes (simulator, dramatiq workers, clock), the real web app,
and the simulator's own record of every create it received.

A number put on a list mid-campaign is never dialed once the write has returned; a contact whose numbers are
all listed fails "do not call" and is never dialed; a listed number is passed over for the contact's next one;
a dial already decided when its number is listed is stopped by the check right before its send.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.clock import started_at
from shared.domain import states
from shared.stores import attempts as attempt_states
from tests.fixtures.web import ADMIN_TOKEN
from tests.helpers import wait_until
from tests.integration.test_pipeline_campaign import numbers, setup_campaign, wait_final
from tests.integration.test_pipeline_fences import with_faults
from workers.runtime import build_runtime

pytestmark = pytest.mark.slow   # a running stack (simulator, workers, clock) or the simulator process

START = datetime(2026, 3, 3, 14, 0, tzinfo=UTC)   # a Tuesday, 11:00 in Santiago
ANSWER = {"outcome": "answer", "ring_s": 1, "duration_s": 20}
BUSY = {"outcome": "busy", "ring_s": 1}


def api_for(runtime, web_factory):
    """The real web app on the stack's services and clock, with an admin token."""
    web_rt = build_runtime(runtime.config.with_overrides(admin_token=ADMIN_TOKEN), runtime.clock)
    return web_factory(runtime=web_rt).client()


def by_name(runtime, batch_id):
    return {j["contact"]["name"]: j for j in runtime.jobs.find({"batch_id": batch_id})}


def test_numbers_listed_before_and_during_a_campaign_are_never_dialed(stack_factory, web_factory):
    clock = started_at(START, speed=60)
    busy = numbers("81", 4)                          # called round after round until they are listed
    all_listed = numbers("82", 2)
    first_listed, second_ok = numbers("83", 2)
    no_answer, rest_listed = numbers("84", 2)
    rules = {**dict.fromkeys(busy, BUSY), **dict.fromkeys([second_ok], ANSWER), no_answer: "no_answer"}
    stack, runtime = stack_factory(clock=clock, scenario={"numbers": rules}, simulator_flags={"concurrency_limit": 20})
    api = api_for(runtime, web_factory)
    steady = setup_campaign(runtime, [{"name": f"busy{i}", "phones": [p]} for i, p in enumerate(busy)],
                            {"max_attempts": 100, "retry_delay_hours": 0.005})   # a round every 0.3 real s
    # listed before anything is dialed: on the account's list and on the global one
    assert api.post("/accounts/acme/dnc", {"numbers": [*all_listed, rest_listed], "reason": "asked"}).status == 200
    assert api.post("/dnc", {"numbers": [first_listed], "reason": "regulator"}).status == 200
    other = runtime.batches.create({"name": "listed", "account_id": "acme", "agent_id": "agent_test",
                                    "from_number": "+12125550100",
                                    "call_settings": {"max_attempts": 2, "retry_delay_hours": 0.005}})
    runtime.jobs.create_jobs(other["_id"], "acme", [
        {"name": "all_listed", "phones": all_listed},
        {"name": "first_listed", "phones": [first_listed, second_ok]},
        {"name": "rest_listed", "phones": [no_answer, rest_listed]},
    ])
    # mid-campaign: every busy number has been called at least twice; then it is listed
    wait_until(lambda: all(len(stack.simulator.dials(p)) >= 2 for p in busy), timeout_s=60, interval_s=0.1)
    reply = api.post("/accounts/acme/dnc", {"numbers": busy[:2], "reason": "mid-campaign"})
    assert reply.status == 200, reply.text
    reply = api.post("/dnc", {"numbers": busy[2:]})
    assert reply.status == 200, reply.text
    returned_ms = clock.now_ms()     # on the simulator's clock: both read this machine's time at the same speed
    wait_final(runtime, steady["_id"], timeout_s=60, stack=stack)
    wait_final(runtime, other["_id"], timeout_s=60, stack=stack)

    for phone in busy:
        received = [r["received_at"] for r in stack.simulator.calls(to_number=phone)]
        late = [r for r in received if r > returned_ms]
        assert len(received) >= 2 and late == [], (phone, returned_ms, received)
    for job in runtime.jobs.find({"batch_id": steady["_id"]}):
        assert job["status"] == states.FAILED and job["last_error"] == "do not call", job
        assert job["outcome"] == "do_not_call" and job["tries"] < 100

    jobs = by_name(runtime, other["_id"])
    assert jobs["all_listed"]["status"] == states.FAILED and jobs["all_listed"]["last_error"] == "do not call"
    assert jobs["all_listed"]["dials"] == 0 and runtime.attempts.for_job(jobs["all_listed"]["_id"]) == []
    assert jobs["first_listed"]["status"] == states.COMPLETED
    assert [a["to_number"] for a in runtime.attempts.for_job(jobs["first_listed"]["_id"])] == [second_ok]
    rest = jobs["rest_listed"]
    assert rest["status"] == states.FAILED and rest["tries"] == 2
    assert rest["last_error"] == ("max attempts reached (2): "
                                  "the remaining numbers of the round are on the do-not-call list")
    assert [a["to_number"] for a in runtime.attempts.for_job(rest["_id"])] == [no_answer, no_answer]
    for phone in (*all_listed, first_listed, rest_listed):
        assert stack.simulator.calls(to_number=phone) == [], phone
    assert len(stack.simulator.dials(second_ok)) == 1 and len(stack.simulator.dials(no_answer)) == 2
    assert runtime.slots.holders("acme") == {}


def test_a_number_listed_after_its_dial_was_decided_is_stopped_right_before_the_send(stack_factory, web_factory):
    # The worker's first attempt insert stalls 3 real seconds: the dial was decided (the first number chosen),
    # the number is listed meanwhile, and the check right before the send stops it.
    first, second = numbers("85", 2)
    stack, runtime = stack_factory(clock=started_at(START, speed=60),
                                   scenario={"numbers": {first: ANSWER, second: ANSWER}},
                                   env=with_faults(OUTDIAL_TEST_STALL="AttemptStore.insert:3:1"))
    api = api_for(runtime, web_factory)
    batch = setup_campaign(runtime, [{"name": "c", "phones": [first, second]}], {})
    job = wait_until(lambda: (j := runtime.jobs.find({"batch_id": batch["_id"]})[0])["status"] == states.DIALING
                     and j, timeout_s=60, interval_s=0.05)
    assert job["phone_index"] == 0
    reply = api.post("/accounts/acme/dnc", {"numbers": [first]})
    assert reply.status == 200, reply.text
    wait_final(runtime, batch["_id"], timeout_s=60, stack=stack)
    assert stack.simulator.calls(to_number=first) == []
    assert len(stack.simulator.dials(second)) == 1
    done = runtime.jobs.get(job["_id"])
    assert done["status"] == states.COMPLETED and done["tries"] == 0     # the stopped dial spent nothing
    aborted, placed = runtime.attempts.for_job(job["_id"])
    assert aborted["to_number"] == first and aborted["state"] == attempt_states.NOT_PLACED
    assert "do-not-call" in aborted["error"]
    assert placed["to_number"] == second and placed["state"] == attempt_states.ENDED
    assert '"kind": "dnc"' in stack.logs()
    assert runtime.slots.holders("acme") == {} and runtime.billing.check("acme").ok
