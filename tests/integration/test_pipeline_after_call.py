"""Acting on what the person said, end to end: a running stack (simulator, workers, clock, web dyno receiving the
simulator's webhooks) whose simulator scripts each number's analysis, judged from the simulator's record of the
calls it received and from what outdial decided (the recorded ``next_try_at``/``callback_at``, the attempt counts).

Timing is budgeted, never assumed: a callback is never placed before the time it was scheduled for, nor in a closed
part of the window, and it is placed at most :data:`LATE_REAL_S` real seconds (times the clock's speed) after it.
"""

from __future__ import annotations

import collections
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytz

from shared.clock import from_ms, started_at
from shared.domain import states
from shared.domain.after_call import read_asked
from shared.domain.call_settings import parse_call_settings
from shared.domain.calling_window import is_allowed_time, next_allowed_time
from tests.helpers import wait_until
from tests.integration.test_web_process import numbers, stack_with_web

pytestmark = pytest.mark.slow

NEW_YORK = pytz.timezone("America/New_York")
#: Real seconds a dial may come after the time it was scheduled for: the dispatch, the broker and a loaded machine.
LATE_REAL_S = 10.0
#: Wednesday 08:20 in New York: the contacts are in before the window opens at 09:00.
START = NEW_YORK.localize(datetime(2026, 3, 4, 8, 20)).astimezone(UTC)
SPEED = 600
RULES = {"success": {"field": "promise_to_pay", "equals": True}, "callback_field": "call_me_back_at",
         "max_callbacks": 2, "opt_out_field": "do_not_call", "wrong_number_field": "wrong_person"}
#: Weekdays 09:00-18:00 with a closed half hour (10:30-11:00): a callback asked inside it waits for 11:00.
SETTINGS = {"timezone": "America/New_York", "max_attempts": 2, "retry_delay_hours": 12,
            "retry_delay_by_outcome": {"unsuccessful": 0.5}, "max_call_duration": 120,
            "windows": [{"days": [1, 2, 3, 4, 5], "start": "09:00", "end": "10:30"},
                        {"days": [1, 2, 3, 4, 5], "start": "11:00", "end": "18:00"}],
            "after_call": RULES}


def answer(**custom: Any) -> dict[str, Any]:
    return {"outcome": "answer", "ring_s": 2, "duration_s": 30, "custom_analysis_data": custom}


def scripted() -> tuple[dict[str, Any], dict[str, list[list[str]]]]:
    """The simulator's rules, and each group's contacts (their numbers)."""
    groups: dict[str, list[list[str]]] = collections.defaultdict(list)
    rules: dict[str, Any] = {}
    for phone in numbers("61", 6):        # a callback in 30 minutes, inside the window; then a promise
        rules[phone] = {"sequence": [answer(call_me_back_at="{{end+30m}}", promise_to_pay=False),
                                     answer(promise_to_pay=True)]}
        groups["callback"].append([phone])
    for phone in numbers("62", 5):        # a callback asked in the closed half hour; then a promise
        # (a local time, read in the callee's zone: inside the gap whenever the call was placed before it; a loaded
        # machine once took 10 real seconds, 100 simulated minutes, to place its first calls)
        rules[phone] = {"sequence": [answer(call_me_back_at="2026-03-04 10:45"),
                                     answer(promise_to_pay=True)]}
        groups["closed"].append([phone])
    for phone in numbers("63", 5):        # "do not call me again"
        rules[phone] = answer(do_not_call=True, promise_to_pay=True)
        groups["opt_out"].append([phone])
    for first, second in zip(numbers("64", 5), numbers("65", 5), strict=True):   # the wrong person, then the debtor
        rules[first] = answer(wrong_person=True)
        rules[second] = answer(promise_to_pay=True)
        groups["wrong"].append([first, second])
    for phone in numbers("66", 5):        # no promise, then a promise
        rules[phone] = {"sequence": [answer(promise_to_pay=False), answer(promise_to_pay=True)]}
        groups["unsuccessful"].append([phone])
    for phone in numbers("67", 4):        # asks for a callback at every call, never promises
        rules[phone] = answer(call_me_back_at="{{end+20m}}", promise_to_pay=False)
        groups["keeps_asking"].append([phone])
    for phone in numbers("68", 2):        # fresh contacts of the second batch
        rules[phone] = answer(promise_to_pay=True)
        groups["fresh"].append([phone])
    return rules, groups


def test_the_analysis_schedules_callbacks_lists_opt_outs_skips_wrong_numbers_and_retries_the_unsuccessful(
        stack_factory):
    rules, groups = scripted()
    stack, runtime, client = stack_with_web(stack_factory, rules, speed=SPEED, start=START)
    assert client.put("/accounts/acme", {"plan": {"type": "unlimited"}, "concurrency_limit": 30}).status == 201
    batch = {"account_id": "acme", "agent_id": "agent_test", "from_number": "+12125550100",
             "call_settings": SETTINGS}
    bid = client.post("/batches", {"name": "collections", **batch}).json()["id"]
    first_groups = [g for g in groups if g != "fresh"]
    contacts = [{"name": f"{g}{i}", "phones": phones, "external_id": f"{g}{i}"}
                for g in first_groups for i, phones in enumerate(groups[g])]
    assert len(contacts) == 30
    assert client.post(f"/batches/{bid}/contacts", {"contacts": contacts}).json()["imported"] == 30

    def final(batch_id: str) -> bool:
        return all(j["status"] in states.FINAL for j in runtime.jobs.find({"batch_id": batch_id}))

    def opted_out() -> bool:
        jobs = [j for j in runtime.jobs.find({"batch_id": bid}) if j["contact"]["external_id"].startswith("opt_out")]
        return len(jobs) == 5 and all(j["status"] == states.FAILED for j in jobs)

    wait_until(opted_out, timeout_s=60, interval_s=0.2)
    # A second campaign of the account, with the opted-out numbers and two fresh ones.
    second = client.post("/batches", {"name": "second", **batch}).json()["id"]
    again = [{"name": f"again{i}", "phones": phones, "external_id": f"again{i}"}
             for i, phones in enumerate(groups["opt_out"] + groups["fresh"])]
    assert client.post(f"/batches/{second}/contacts", {"contacts": again}).json()["imported"] == 7
    try:
        wait_until(lambda: final(bid) and final(second), timeout_s=120, interval_s=0.5)
    except TimeoutError:
        raise AssertionError(f"not final: {runtime.jobs.counts(bid)} {runtime.jobs.counts(second)}") from None

    seen = Seen(stack, runtime, {j["contact"]["external_id"]: j
                                 for j in runtime.jobs.find({"batch_id": {"$in": [bid, second]}})})
    for phone, calls in seen.dials.items():       # every call inside the window, with the guard
        for rec in calls:
            assert is_allowed_time(seen.settings, seen.at(rec), phone)[0], (phone, seen.at(rec))
    check_callbacks(seen, groups)
    check_opt_outs(seen, groups)
    check_wrong_numbers_and_unsuccessful(seen, groups)

    # What the operator sees: the counts of actions on /metrics, the results of each contact.
    metrics = client.get("/metrics").text
    for action in ("callback", "opted_out", "wrong_number", "unsuccessful", "completed"):
        assert f'outdial_after_call_actions_total{{action="{action}"' in metrics.replace("process=", ""), action
    assert client.get(f"/jobs/{seen.jobs['opt_out0']['_id']}").json()["result"]["after_call"] == "opted_out"


class Seen:
    """The simulator's record of the calls (each number's, oldest first) and the jobs, with the run's budgets."""

    def __init__(self, stack: Any, runtime: Any, jobs: dict[str, dict[str, Any]]) -> None:
        self.stack, self.runtime, self.jobs = stack, runtime, jobs
        self.settings = parse_call_settings(SETTINGS)
        self.guard = timedelta(seconds=runtime.config.pipeline_dial_guard_s * SPEED)
        self.late = timedelta(seconds=LATE_REAL_S * SPEED)
        self.dials: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        for rec in sorted(stack.simulator.dials(timeline=True), key=lambda r: r["received_at"]):
            self.dials[rec["body"]["to_number"]].append(rec)

    @staticmethod
    def at(rec: dict[str, Any]) -> datetime:
        return from_ms(rec["received_at"])

    @staticmethod
    def ended(rec: dict[str, Any]) -> datetime:
        return from_ms(rec["call"]["end_ms"])

    def asked(self, rec: dict[str, Any]) -> datetime:
        """The callback time the person asked for in this call, as the simulator's analysis of it says."""
        call = self.stack.simulator.call_debug(rec["call_id"])["call"]
        read = read_asked(call["call_analysis"]["custom_analysis_data"]["call_me_back_at"], "America/New_York")
        assert read is not None
        return read.at


def _decided_late(seen: Seen, job: dict[str, Any], due: datetime, phone: str) -> bool:
    """A callback decided after the time it was due (the analysis came late on a loaded machine): then it is due at
    the decision's own time, which the window allows with the guard, never before the time asked for."""
    at = from_ms(job["callback_at"])
    return at > due and is_allowed_time(seen.settings, at, phone)[0] and is_allowed_time(
        seen.settings, at + seen.guard, phone)[0]


def check_callbacks(seen: Seen, groups: dict[str, list[list[str]]]) -> None:
    # Inside the window: placed at the asked time (never before); then the promise completes the contact.
    for i, (phone,) in enumerate(groups["callback"]):
        job = seen.jobs[f"callback{i}"]
        first, again = seen.dials[phone]
        wanted = seen.asked(first)
        assert job["status"] == states.COMPLETED and job["callbacks"] == 1 and job["tries"] == 0, job
        assert job["callback_at"] == int(wanted.timestamp()) * 1000 or not is_allowed_time(
            seen.settings, wanted + seen.guard, phone)[0] or _decided_late(seen, job, wanted, phone), (
            job["callback_at"], wanted)
        assert seen.at(again) >= wanted
        assert job["callback_at"] <= again["received_at"] <= job["callback_at"] + seen.late.total_seconds() * 1000
    # Asked in the closed half hour: placed when the window opens again (11:00), never inside it.
    in_gap = 0
    for i, (phone,) in enumerate(groups["closed"]):
        job = seen.jobs[f"closed{i}"]
        first, again = seen.dials[phone]
        wanted = seen.asked(first)
        expected = next_allowed_time(seen.settings, wanted, phone)
        in_gap += expected > wanted
        assert job["status"] == states.COMPLETED and job["callbacks"] == 1
        assert job["callback_at"] == int(expected.timestamp()) * 1000 or _decided_late(seen, job, expected, phone), (
            wanted, expected, job["callback_at"])
        assert job["callback_at"] <= again["received_at"] <= job["callback_at"] + seen.late.total_seconds() * 1000
    assert in_gap >= 3, "the callbacks were asked in the closed half hour"
    # Keeps asking: two callbacks, then its asks are ignored and the success rule decides (unsuccessful twice,
    # max_attempts 2).
    for i, (phone,) in enumerate(groups["keeps_asking"]):
        job = seen.jobs[f"keeps_asking{i}"]
        assert len(seen.dials[phone]) == 4, [seen.at(r) for r in seen.dials[phone]]
        assert job["callbacks"] == 2 and job["status"] == states.FAILED
        assert job["reason_code"] == "max_attempts_after"
        assert job["reason_params"]["last"]["params"]["outcome"] == "unsuccessful"


def check_opt_outs(seen: Seen, groups: dict[str, list[list[str]]]) -> None:
    # Listed with the call; no call to the number after it, from this batch or the second one.
    for i, (phone,) in enumerate(groups["opt_out"]):
        (only,) = seen.dials[phone]
        assert seen.jobs[f"opt_out{i}"]["reason_code"] == "opted_out"
        again = seen.jobs[f"again{i}"]
        assert again["status"] == states.FAILED and again["reason_code"] == "do_not_call"
        (entry,) = seen.runtime.dnc.entries("acme", [phone])
        assert entry["reason"] == "opt_out" and entry["call_id"] == only["call_id"] and entry["scope"] == "acme"
    for i, (phone,) in enumerate(groups["fresh"]):
        assert seen.jobs[f"again{len(groups['opt_out']) + i}"]["status"] == states.COMPLETED
        assert len(seen.dials[phone]) == 1


def check_wrong_numbers_and_unsuccessful(seen: Seen, groups: dict[str, list[list[str]]]) -> None:
    # Wrong person: that number is never called again; the next one is dialed in the same round.
    for i, (wrong, right) in enumerate(groups["wrong"]):
        job = seen.jobs[f"wrong{i}"]
        (first,) = seen.dials[wrong]
        (then,) = seen.dials[right]
        assert job["status"] == states.COMPLETED and job["tries"] == 0 and job["invalid_phones"] == [0]
        # before the batch's retry delay (12 h) could have passed: the same round, whatever the machine's pace
        assert seen.ended(first) <= seen.at(then) < seen.ended(first) + timedelta(hours=12), (seen.ended(first),
                                                                                          seen.at(then))
    # Unsuccessful: the attempt is spent and the contact is retried after the outcome's delay (half an hour).
    for i, (phone,) in enumerate(groups["unsuccessful"]):
        job = seen.jobs[f"unsuccessful{i}"]
        first, retried = seen.dials[phone]
        assert job["status"] == states.COMPLETED and job["tries"] == 1
        due = next_allowed_time(seen.settings, seen.ended(first) + timedelta(hours=0.5), phone)
        assert due <= seen.at(retried) + timedelta(seconds=1)
        assert seen.at(retried) < seen.ended(first) + timedelta(hours=12)   # the outcome's delay, not the batch's


HOLIDAY_START = NEW_YORK.localize(datetime(2026, 11, 22, 0, 0)).astimezone(UTC)   # Sunday, midnight


def test_a_callback_asked_for_a_public_holiday_is_placed_the_next_allowed_day(stack_factory):
    # Thursday 2026-11-26 is Thanksgiving. The window is open all day every day but the holiday; at 20,000 times real
    # time a day passes in 4.3 real seconds, so the stack has 17 real seconds to come up and place the first calls
    # before the holiday (a loaded machine took 8).
    phones = numbers("69", 3)
    rules = {p: answer(call_me_back_at=text) for p, text in zip(
        phones, ("2026-11-26", "2026-11-26 10:30", "2026-11-26T12:00:00-05:00"), strict=True)}
    stack, runtime, client = stack_with_web(stack_factory, rules, speed=20_000, start=HOLIDAY_START)
    settings = {"timezone": "America/New_York", "holidays": "US", "max_attempts": 1,
                "windows": [{"days": [1, 2, 3, 4, 5, 6, 7], "start": "00:00", "end": "24:00"}],
                "after_call": {"callback_field": "call_me_back_at"}}
    assert client.put("/accounts/acme", {"plan": {"type": "unlimited"}, "concurrency_limit": 5}).status == 201
    bid = client.post("/batches", {"name": "holiday", "account_id": "acme", "agent_id": "agent_test",
                                   "from_number": "+12125550100", "call_settings": settings}).json()["id"]
    contacts = [{"name": f"h{i}", "phones": [p]} for i, p in enumerate(phones)]
    assert client.post(f"/batches/{bid}/contacts", {"contacts": contacts}).json()["imported"] == 3
    wait_until(lambda: all(j["status"] in states.FINAL for j in runtime.jobs.find({"batch_id": bid})),
               timeout_s=60, interval_s=0.2)
    friday = NEW_YORK.localize(datetime(2026, 11, 27, 0, 0)).astimezone(UTC)
    thanksgiving = datetime(2026, 11, 26).date()
    for job in runtime.jobs.find({"batch_id": bid}):
        phone = job["contact"]["phones"][0]
        calls = sorted(stack.simulator.dials(phone, timeline=True), key=lambda r: r["received_at"])
        assert len(calls) == 2, calls
        assert from_ms(calls[0]["received_at"]).astimezone(NEW_YORK).date() < thanksgiving
        assert job["callback_at"] == int(friday.timestamp()) * 1000, from_ms(job["callback_at"])
        assert from_ms(calls[1]["received_at"]) >= friday
        assert all(from_ms(c["received_at"]).astimezone(NEW_YORK).date() != thanksgiving for c in calls)
        assert job["status"] == states.COMPLETED and job["callbacks"] == 1


def test_contacts_waiting_for_their_analysis_are_decided_after_a_worker_is_killed(stack_factory):
    # Without webhooks: the polls end the calls and the results sweep looks for the analyses, which the simulator
    # makes 15 simulated minutes after each call (3 real seconds). The worker is killed (SIGKILL) while
    # conversations wait for their analysis; a new one decides every contact, none twice.
    phones = numbers("60", 12)
    rules = {p: {"sequence": [answer(call_me_back_at="{{end+10m}}", promise_to_pay=False),
                              answer(promise_to_pay=True)]} if i % 2 else answer(promise_to_pay=i % 4 == 0)
             for i, p in enumerate(phones)}
    stack, runtime = stack_factory(clock=started_at(START + timedelta(minutes=40), speed=300),
                                   scenario={"numbers": rules, "analysis_delay_s": 900},
                                   config_overrides={"retell_webhooks": False})
    runtime.account_changes.apply("acme", {"plan": {"type": "unlimited"}, "concurrency_limit": 12})
    batch = runtime.batches.create({"name": "killed", "account_id": "acme", "agent_id": "agent_test",
                                    "from_number": "+12125550100", "call_settings": {**SETTINGS, "windows": None,
                                                                                     "max_attempts": 1}})
    runtime.jobs.create_jobs(batch["_id"], "acme", [{"name": f"k{i}", "phones": [p]} for i, p in enumerate(phones)])
    def analyzing() -> bool:   # no job holds a lease then: the test waits for no lease to end
        counts = runtime.jobs.counts(batch["_id"])
        return counts[states.ANALYZING] >= 3 and not any(counts[s] for s in states.LEASED)

    wait_until(analyzing, timeout_s=60, interval_s=0.05)
    stack.kill_worker(0)
    stack.start_worker()
    wait_until(lambda: all(j["status"] in states.FINAL for j in runtime.jobs.find({"batch_id": batch["_id"]})),
               timeout_s=120, interval_s=0.5)
    for i, phone in enumerate(phones):
        (job,) = runtime.jobs.find({"batch_id": batch["_id"], "contact.phones": phone})
        calls = stack.simulator.dials(phone)
        if i % 2:     # asked for a callback, then promised: two calls, one callback
            assert len(calls) == 2 and job["callbacks"] == 1 and job["status"] == states.COMPLETED, (job, calls)
        else:         # one call: completed on a promise, else unsuccessful on its only attempt
            assert len(calls) == 1, calls
            assert job["status"] == (states.COMPLETED if i % 4 == 0 else states.FAILED), job
