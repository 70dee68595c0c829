"""The account's contact policy end to end: three campaigns share 25 numbers under Regulation F's caps.

Real processes on a clock running 20,000 times faster than real time (a day in 4.3 real seconds). The
checks read the simulator's own record of the calls it received, and the waits the system recorded; how
many calls fit in the first day depends on the machine's speed, so no check counts on it.
"""

from __future__ import annotations

import collections
import json
from datetime import UTC, date, datetime, timedelta

import pytest
import pytz

from shared.clock import from_ms, started_at
from shared.domain import states
from shared.domain.call_settings import parse_call_settings
from shared.domain.calling_window import next_allowed_time
from tests.helpers import wait_until
from tests.integration.test_pipeline_campaign import numbers

pytestmark = pytest.mark.slow   # a running stack (simulator, workers, clock) or the simulator process

SANTIAGO = pytz.timezone("America/Santiago")
#: Monday 22:30 in Santiago: the stack starts during the night, and the first window opens on Tuesday.
START = SANTIAGO.localize(datetime(2026, 3, 2, 22, 30)).astimezone(UTC)
REG_F = {"max_calls": {"count": 7, "days": 7}, "max_calls_per_day": 2, "quiet_days_after_answer": 7}
SETTINGS = {"allowed_hours": {"start": "06:00", "end": "22:00"}, "timezone": "America/Santiago",
            "max_attempts": 30, "retry_delay_hours": 1}
DAY_MS = 86_400_000


def _day(ms: int) -> date:
    return from_ms(ms).astimezone(SANTIAGO).date()


def _first_allowed_day(calls: list[tuple[date, date | None]], since: date) -> date:
    """Brute force over the simulator's record: the first local day >= ``since`` on which Regulation F
    lets one more call through, given ``(day placed, day of its conversation or None)`` per call."""
    day = since
    while True:
        on_day = sum(placed == day for placed, _ in calls)
        in_week = sum(day - timedelta(days=6) <= placed <= day for placed, _ in calls)
        quiet = any(talk is not None and talk <= day < talk + timedelta(days=7) for _, talk in calls)
        if on_day < 2 and in_week < 7 and not quiet:
            return day
        day += timedelta(days=1)


def test_three_campaigns_sharing_twenty_five_numbers_keep_regulation_f(stack_factory):
    # 25 numbers, 2 calls a day each at most: about 12 calls a real second at this speed, well inside what a
    # loaded 2-core machine places, so every number can reach its week's cap by Friday.
    phones = numbers("81", 25)
    talkers = set(phones[:5])   # these answer their third call; the others never answer
    answer_third = {"sequence": ["no_answer", "no_answer", {"outcome": "answer", "duration_s": 60}]}
    scenario = {"numbers": {p: answer_third if p in talkers else "no_answer" for p in phones}}
    stack, runtime = stack_factory(clock=started_at(START, speed=20_000), scenario=scenario)
    runtime.account_changes.apply("acme", {"plan": {"type": "unlimited"}, "concurrency_limit": 50,
                                           "contact_policy": REG_F})
    for b in range(3):
        batch = runtime.batches.create({"name": f"campaign {b}", "account_id": "acme", "agent_id": "agent_test",
                                        "from_number": "+12125550100", "call_settings": SETTINGS})
        contacts = [{"name": f"b{b}c{i}", "phones": [p], "external_id": f"D-{i}"} for i, p in enumerate(phones)]
        assert runtime.jobs.create_jobs(batch["_id"], "acme", contacts).imported == 25

    # Four days of calls (Tuesday to Friday); on Saturday morning the contacts whose number had its week's
    # 7 calls are decided again, and wait. How many calls fit in a day depends on the machine's speed, so the
    # checks below hold whatever the pace.
    saturday = SANTIAGO.localize(datetime(2026, 3, 7, 6, 0)).astimezone(UTC)

    def week_capped():
        jobs = runtime.jobs.find({"account_id": "acme", "status": states.WAITING_SCHEDULE})
        return runtime.clock.now() >= saturday and sum("7 calls in the 7 days" in j["last_error"] for j in jobs) >= 15

    wait_until(week_capped, timeout_s=120, interval_s=0.2)
    # The jobs before the simulator's record: the calls a job's decision counted were reserved before it was written
    # and their creates go out milliseconds later, so the record read next holds them (read the other way round, a
    # loaded run's decision made in between counted a call the record missed).
    jobs = runtime.jobs.find({"account_id": "acme"})
    dials = stack.simulator.dials(timeline=True)
    stack.stop(graceful=False)
    logs = "".join(path.read_text() for path in stack.log_dir.glob("*.log"))

    record = collections.defaultdict(list)   # number -> [(day placed, day of the conversation or None)]
    spans = collections.defaultdict(list)    # number -> [(created, ended)] in simulated ms
    for rec in sorted(dials, key=lambda r: r["received_at"]):
        call = rec["call"]
        talk = _day(call["end_ms"]) if call.get("connect_ms") is not None else None
        record[rec["body"]["to_number"]].append((_day(rec["received_at"]), talk))
        spans[rec["body"]["to_number"]].append((call["created_ms"], call["end_ms"]))
    assert set(record) <= set(phones)
    for phone, calls in record.items():
        days = collections.Counter(placed for placed, _ in calls)
        assert max(days.values()) <= 2, (phone, days)                                   # per day
        for first in days:                                                              # any 7 consecutive days
            assert sum(n for d, n in days.items() if first <= d < first + timedelta(days=7)) <= 7, (phone, days)
        for _, talk in calls:                                                           # quiet after a conversation
            if talk is not None:
                assert not [d for d, _ in calls if talk < d < talk + timedelta(days=7)], (phone, calls)
        for (_, ended), (created, _) in zip(spans[phone], spans[phone][1:], strict=False):   # one call at a time
            assert ended is not None and created >= ended, (phone, spans[phone])
        # The first week's calls (Tuesday to Monday): a slow machine may run the clock into the next week,
        # whose calls the rolling check above covers.
        first_week = [c for c in calls if c[0] < date(2026, 3, 10)]
        assert len(first_week) <= (3 if phone in talkers else 7), (phone, calls)
    capped = [p for p in phones if p not in talkers
              and len([c for c in record[p] if c[0] < date(2026, 3, 10)]) == 7]
    assert len(capped) >= 10, collections.Counter(len(record[p]) for p in phones)   # the week's cap was reached

    # Every contact held back by a cap waits for the first instant the caps (by the simulator's record) and
    # the window allow.
    waiting = [j for j in jobs if j["status"] == states.WAITING_SCHEDULE
               and j["last_error"].startswith("contact policy: ") and "in progress" not in j["last_error"]]
    reasons = collections.Counter()
    for job in waiting:
        phone = job["contact"]["phones"][0]
        decided = _day(job["updated_at"])
        known = [c for c in record[phone] if c[0] <= decided]
        first = _first_allowed_day(known, decided)
        expected = next_allowed_time(parse_call_settings(SETTINGS), max(from_ms(job["updated_at"]), SANTIAGO.localize(
            datetime.combine(first, datetime.min.time())).astimezone(UTC)), phone)
        assert from_ms(job["next_try_at"]) == expected, (phone, job["last_error"], record[phone])
        reasons.update(r for r in ("7 calls in the 7 days", "quiet days") if r in job["last_error"])
    assert reasons["7 calls in the 7 days"] >= 15 and reasons["quiet days"] >= 1, reasons
    completed = [j for j in jobs if j["status"] == states.COMPLETED]
    assert len(completed) <= len(talkers)   # one contact per talker at most: the others keep quiet

    # One diagnostic line per dial decision: settings used, the window's verdict and why, what the create
    # sends, which attempt of how many; never a whole number.
    decisions = [json.loads(line) for line in logs.splitlines() if '"dial_decision"' in line]
    proceed = [d for d in decisions if d["step"] == "proceed"]
    assert len(proceed) >= len(dials) and {d["settings"] for d in decisions} == {"batch"}
    assert all(d["window"] == "open" and "America/Santiago" in d["window_reason"] and d["ring_timeout_s"] == 30
               and d["max_call_duration_s"] == 600 and d["attempt"].endswith("/30") for d in proceed), proceed[0]
    # The stack starts 7.5 hours before the window opens (1.35 real seconds at this speed): the dials decided in
    # the night, when the machine started the stack fast enough to have any, say why the window was closed.
    closed = [d for d in decisions if d["step"] == "outside_window"]
    assert all(d["window"] == "closed" and d["window_reason"] for d in closed), closed[:1]
    assert not [p for p in phones if p in logs]
