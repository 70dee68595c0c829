"""Calling windows, call_settings and the concurrency limit, end to end through real processes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytz

from shared import states
from shared.clock import from_ms, started_at
from shared.schedule import is_allowed_time
from tests.integration.test_pipeline_campaign import numbers, setup_campaign, wait_final

SANTIAGO = pytz.timezone("America/Santiago")
NEW_YORK = pytz.timezone("America/New_York")
#: At 10,000x a 30-minute window lasts 0.18 real seconds: a guard of 0.5 real seconds would close it.
NARROW_GUARD = {"pipeline_dial_guard_s": 0.02}


def local(ms: int, zone) -> datetime:
    return from_ms(ms).astimezone(zone)


def test_saturday_job_waits_until_monday_nine_across_the_dst_change(stack_factory):
    # Santiago leaves summer time on Sunday 2026-04-05 (UTC-3 -> UTC-4): Monday 09:00 is 13:00 UTC.
    saturday_3pm = SANTIAGO.localize(datetime(2026, 4, 4, 15, 0))
    fast = started_at(saturday_3pm.astimezone(UTC), speed=10_000)
    phones = numbers("71", 5)
    stack, runtime = stack_factory(clock=fast, config_overrides=NARROW_GUARD,
                                   scenario={"numbers": {p: {"outcome": "answer", "duration_s": 60} for p in phones}})
    settings = {"days_of_week": [1, 2, 3, 4, 5], "allowed_hours": {"start": "09:00", "end": "09:30"},
                "timezone": "America/Santiago"}
    batch = setup_campaign(runtime, [{"name": f"c{i}", "phones": [p]} for i, p in enumerate(phones)], settings)
    monday_9 = datetime(2026, 4, 6, 13, 0, tzinfo=UTC)

    def postponed():
        jobs = runtime.jobs.find({"batch_id": batch["_id"]})
        return all(j["status"] == states.WAITING_SCHEDULE for j in jobs) and jobs
    from shared.simulator_process import wait_until
    jobs = wait_until(postponed, timeout_s=30)
    assert {from_ms(j["next_try_at"]) for j in jobs} == {monday_9}
    assert all("Saturday" in j["last_error"] and "America/Santiago" in j["last_error"] for j in jobs)
    assert stack.simulator.dials() == []

    wait_final(runtime, batch["_id"], timeout_s=60, stack=stack)
    dials = stack.simulator.dials()
    assert len(dials) == 5
    for rec in dials:
        at = local(rec["received_at"], SANTIAGO)
        assert at.weekday() == 0 and (at.hour, at.minute) >= (9, 0) and (at.hour, at.minute) < (9, 30), at
    assert all(j["status"] == states.COMPLETED and j.get("postponed_by_schedule", 0) >= 1
               for j in runtime.jobs.find({"batch_id": batch["_id"]}))


def test_spring_forward_weekend_keeps_calls_inside_the_window(stack_factory):
    # New York springs forward on Sunday 2026-03-08: Monday 08:00 EDT is 12:00 UTC, not 13:00.
    saturday_noon = NEW_YORK.localize(datetime(2026, 3, 7, 12, 0))
    fast = started_at(saturday_noon.astimezone(UTC), speed=10_000)
    phones = [f"+1212555{n:04d}" for n in range(130, 140)]
    stack, runtime = stack_factory(clock=fast, config_overrides=NARROW_GUARD,
                                   scenario={"numbers": {p: {"outcome": "answer", "duration_s": 30} for p in phones}})
    settings = {"windows": [{"days": [1, 2, 3, 4, 5], "start": "08:00", "end": "08:40"}],
                "timezone": "auto"}  # the zone comes from each +1 212 number: New York
    batch = setup_campaign(runtime, [{"name": f"c{i}", "phones": [p]} for i, p in enumerate(phones)], settings)
    wait_final(runtime, batch["_id"], timeout_s=60, stack=stack)
    dials = stack.simulator.dials()
    assert len(dials) == len(phones)
    for rec in dials:
        at = local(rec["received_at"], NEW_YORK)
        assert at.date() == datetime(2026, 3, 9).date() and at.hour == 8 and at.minute < 40, at
        assert is_allowed_time(settings, from_ms(rec["received_at"]), rec["body"]["to_number"])[0]


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
    talked_s = (attempt["ended_at"] - attempt["started_at"]) / 1000
    assert 120 < talked_s < 120 + 30 + 60  # past max_call_duration + grace, stopped within a poll or two


def test_concurrency_limit_holds_across_two_worker_commands(stack_factory):
    fast = started_at(datetime(2026, 3, 3, 14, 0, tzinfo=UTC), speed=60)
    phones = numbers("73", 40)
    stack, runtime = stack_factory(clock=fast, workers=2,
                                   scenario={"numbers": {p: {"outcome": "answer", "duration_s": 40, "ring_s": 1}
                                                         for p in phones}},
                                   simulator_flags={"concurrency_limit": 100})
    batch = setup_campaign(runtime, [{"name": f"c{i}", "phones": [p]} for i, p in enumerate(phones)], {}, limit=4)
    wait_final(runtime, batch["_id"], timeout_s=120, stack=stack)
    stats = stack.simulator.stats()
    assert stats["dials"] == 40
    assert stats["max_active"] == 4  # never more than the account's 4 slots, and they were all used
    assert all(j["status"] == states.COMPLETED for j in runtime.jobs.find({"batch_id": batch["_id"]}))
