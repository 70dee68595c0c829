"""Calling windows, call_settings and the concurrency limit, end to end through real processes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import pytz

from shared.clock import from_ms, started_at, to_ms
from shared.domain import states
from shared.domain.call_settings import parse_call_settings
from shared.domain.calling_window import is_allowed_time
from tests.helpers import jitter_s, wait_until
from tests.integration.test_pipeline_campaign import numbers, setup_campaign, wait_final

pytestmark = pytest.mark.slow   # a running stack (simulator, workers, clock) or the simulator process

SANTIAGO = pytz.timezone("America/Santiago")
NEW_YORK = pytz.timezone("America/New_York")
#: Phase 1 of the weekend tests: fast enough to cross a weekend in seconds, slow enough that the
#: decisions made in the first seconds (start-up included) still fall on the Saturday: 1,000x leaves
#: 30 real seconds of start-up before Saturday 15:00 becomes Sunday.
DECIDE_SPEED = 1_000
#: Phase 2: the window itself at 60x, where a second of real jitter is one simulated minute and a
#: 30-minute window lasts 30 real seconds, with the default 0.5 s dial guard.
DIAL_SPEED = 60


def local(ms: int, zone) -> datetime:
    return from_ms(ms).astimezone(zone)


def postponed_then_dialed(stack_factory, *, start: datetime, opens: datetime, settings: dict, phones: list[str],
                          scenario: dict):
    """Phase 1: a stack from ``start`` until every job waits for the window, with ``next_try_at`` at ``opens``
    (the decision). Phase 2: a new stack on a clock that reads two minutes before ``opens`` and runs at
    :data:`DIAL_SPEED`, until every job is final. Returns the phase 2 runtime, the batch and the
    simulator's record of the calls it received."""
    stack, runtime = stack_factory(clock=started_at(start.astimezone(UTC), speed=DECIDE_SPEED), scenario=scenario)
    batch = setup_campaign(runtime, [{"name": f"c{i}", "phones": [p]} for i, p in enumerate(phones)], settings)

    def postponed():
        jobs = runtime.jobs.find({"batch_id": batch["_id"]})
        return all(j["status"] == states.WAITING_SCHEDULE for j in jobs) and jobs
    jobs = wait_until(postponed, timeout_s=30)
    assert {from_ms(j["next_try_at"]) for j in jobs} == {opens}
    assert stack.simulator.dials() == []
    stack.stop()
    # Nothing moved after the decision: the jobs wait in MongoDB, not in the broker.
    assert all(j["status"] == states.WAITING_SCHEDULE for j in runtime.jobs.find({"batch_id": batch["_id"]}))

    stack, runtime = stack_factory(clock=started_at(opens - timedelta(minutes=2), speed=DIAL_SPEED),
                                   scenario=scenario)
    wait_final(runtime, batch["_id"], timeout_s=90, stack=stack)
    dials = stack.simulator.dials()
    assert len(dials) == len(phones)
    for attempt in runtime.attempts.coll.find({"batch_id": batch["_id"]}):
        assert from_ms(attempt["due_at"]) == opens, attempt   # dialed for the decided instant
    assert min(rec["received_at"] for rec in dials) >= to_ms(opens)
    return runtime, batch, jobs, dials


def test_saturday_job_waits_until_monday_nine_across_the_dst_change(stack_factory):
    # Santiago leaves summer time on Sunday 2026-04-05 (UTC-3 -> UTC-4): Monday 09:00 is 13:00 UTC.
    phones = numbers("71", 5)
    settings = {"days_of_week": [1, 2, 3, 4, 5], "allowed_hours": {"start": "09:00", "end": "09:30"},
                "timezone": "America/Santiago"}
    monday_9 = datetime(2026, 4, 6, 13, 0, tzinfo=UTC)
    runtime, batch, postponed, dials = postponed_then_dialed(
        stack_factory, start=SANTIAGO.localize(datetime(2026, 4, 4, 15, 0)), opens=monday_9, settings=settings,
        phones=phones, scenario={"numbers": {p: {"outcome": "answer", "duration_s": 60} for p in phones}})
    assert all("Saturday" in j["last_error"] and "America/Santiago" in j["last_error"] for j in postponed)
    for rec in dials:
        at = local(rec["received_at"], SANTIAGO)
        assert at.weekday() == 0 and (9, 0) <= (at.hour, at.minute) < (9, 30), at
    assert all(j["status"] == states.COMPLETED and j.get("postponed_by_schedule", 0) >= 1
               for j in runtime.jobs.find({"batch_id": batch["_id"]}))


def test_spring_forward_weekend_keeps_calls_inside_the_window(stack_factory):
    # New York springs forward on Sunday 2026-03-08: Monday 08:00 EDT is 12:00 UTC, not 13:00.
    phones = [f"+1212555{n:04d}" for n in range(130, 140)]
    settings = {"windows": [{"days": [1, 2, 3, 4, 5], "start": "08:00", "end": "08:40"}],
                "timezone": "auto"}  # the zone comes from each +1 212 number: New York
    runtime, batch, _, dials = postponed_then_dialed(
        stack_factory, start=NEW_YORK.localize(datetime(2026, 3, 7, 12, 0)),
        opens=datetime(2026, 3, 9, 12, 0, tzinfo=UTC), settings=settings, phones=phones,
        scenario={"numbers": {p: {"outcome": "answer", "duration_s": 30} for p in phones}})
    for rec in dials:
        at = local(rec["received_at"], NEW_YORK)
        assert at.date() == datetime(2026, 3, 9).date() and at.hour == 8 and at.minute < 40, at
        assert is_allowed_time(parse_call_settings(settings), from_ms(rec["received_at"]), rec["body"]["to_number"])[0]
    assert {j["status"] for j in runtime.jobs.find({"batch_id": batch["_id"]})} == {states.COMPLETED}


def test_settings_reach_the_provider_and_overlong_calls_are_stopped(stack_factory):
    fast = started_at(datetime(2026, 3, 3, 14, 0, tzinfo=UTC), speed=60)
    talker, stuck = numbers("72", 2)
    stack, runtime = stack_factory(clock=fast, scenario={"numbers": {talker: {"outcome": "answer", "duration_s": 30},
                                                                     stuck: "stuck"}})
    settings = {"ring_timeout": 45, "max_call_duration": 120, "max_attempts": 1, "retry_delay_hours": 1}
    batch = setup_campaign(runtime, [{"name": "talker", "phones": [talker]}, {"name": "stuck", "phones": [stuck]}],
                           settings)
    wait_final(runtime, batch["_id"], timeout_s=60, stack=stack)
    for rec in stack.simulator.dials():
        agent = rec["body"]["agent_override"]["agent"]
        assert agent["ring_duration_ms"] == 45_000 and agent["max_call_duration_ms"] == 120_000
        assert rec["body"]["override_agent_id"] == "agent_test"
        assert rec["body"]["metadata"]["batch_id"] == batch["_id"]
    jobs = {j["contact"]["name"]: j for j in runtime.jobs.find({"batch_id": batch["_id"]})}
    assert jobs["talker"]["status"] == states.COMPLETED
    job = jobs["stuck"]
    assert job["status"] == states.FAILED and "max attempts reached (1)" in job["last_error"]
    (attempt,) = runtime.attempts.for_job(job["_id"])
    assert attempt["outcome"] == "timeout" and attempt["stopped_for_timeout"]
    assert attempt["disconnection_reason"] == "manual_stopped"  # we stopped it; the provider ignored its limit
    # The stop was decided by the first poll past max_call_duration + grace (polls come every 30 s at most),
    # and the provider ended the call when told: each compared with the jitter budget of this clock. The two instants
    # of the second check are read by two processes (the worker, the simulator), each measuring the shared time to
    # within its round trip: a loaded machine saw the end 0.2 real ms (12 simulated ms) "before" the request.
    past_limit_s = (attempt["stop_requested_at"] - attempt["started_at"]) / 1000 - (120 + 30)
    assert 0 < past_limit_s <= 30 + jitter_s(fast), past_limit_s
    assert abs(attempt["ended_at"] - attempt["stop_requested_at"]) / 1000 <= jitter_s(fast)


def test_concurrency_limit_holds_across_two_worker_commands(stack_factory):
    fast = started_at(datetime(2026, 3, 3, 14, 0, tzinfo=UTC), speed=60)
    phones = numbers("73", 20)
    stack, runtime = stack_factory(clock=fast, workers=2,
                                   # calls of 80 s (1.3 real s): long enough that a loaded machine still fills the slots
                                   scenario={"numbers": {p: {"outcome": "answer", "duration_s": 80, "ring_s": 1}
                                                         for p in phones}},
                                   simulator_flags={"concurrency_limit": 100})
    batch = setup_campaign(runtime, [{"name": f"c{i}", "phones": [p]} for i, p in enumerate(phones)], {}, limit=4)
    wait_final(runtime, batch["_id"], timeout_s=120, stack=stack)
    stats = stack.simulator.stats()
    assert stats["dials"] == 20
    assert stats["max_active"] == 4  # never more than the account's 4 slots, and they were all used
    assert all(j["status"] == states.COMPLETED for j in runtime.jobs.find({"batch_id": batch["_id"]}))
