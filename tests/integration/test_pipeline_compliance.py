"""Compliance profiles end to end: three campaigns of one account under the calling law of their callees, judged
from the simulator's record of the calls it received.

- Chilean debtors under ``cl-cobranza`` (the original worker's "Cobranza urgente" settings: Monday to Saturday
  09:00-20:00, 5 attempts 2 hours apart): at most one call in any 7 days, none on a Sunday or a Chilean holiday
  (September 18 and 19), none outside 08:00-20:00 Santiago time.
- Florida numbers under ``us-fl`` (telemarketing, chosen by ``"auto"`` from the area code): at most 3 calls in any
  24 hours, none after 20:00 Eastern.
- A debtor with two numbers under ``us-regf``: at most 7 calls in any 7 days over both numbers.

Real processes on a clock running 50,000 times faster than real time (a day in 1.7 real seconds), twelve days; nobody
answers, so every contact keeps being retried and only the law holds the calls back. How many calls fit depends on
the machine's pace, so the checks hold whatever it is, and one check asks that the caps were actually reached.
"""

from __future__ import annotations

import collections
import itertools
from datetime import UTC, date, datetime, timedelta

import pytest
import pytz

from shared.clock import from_ms, started_at
from shared.domain import states
from shared.domain.phones import numbered
from tests.helpers import wait_until

pytestmark = pytest.mark.slow

SANTIAGO = pytz.timezone("America/Santiago")
EASTERN = pytz.timezone("America/New_York")
#: Thursday 2026-09-10, 22:00 in Santiago: the first windows open on Friday morning.
START = SANTIAGO.localize(datetime(2026, 9, 10, 22, 0)).astimezone(UTC)
SPEED = 50_000
#: The original worker's "Cobranza urgente" campaign.
COBRANZA = {"max_call_duration": 600, "ring_timeout": 45, "max_attempts": 5, "retry_delay_hours": 2,
            "allowed_hours": {"start": "09:00", "end": "20:00"}, "days_of_week": [1, 2, 3, 4, 5, 6],
            "timezone": "America/Santiago", "purpose": "collection", "compliance": ["cl-cobranza"]}
TELEMARKETING = {"max_attempts": 40, "retry_delay_hours": 1, "timezone": "auto", "purpose": "telemarketing",
                 "compliance": "auto"}
REG_F = {"max_attempts": 40, "retry_delay_hours": 1, "timezone": "America/New_York", "purpose": "collection",
         "compliance": ["us-regf"]}
CHILEAN_HOLIDAYS = {date(2026, 9, 18), date(2026, 9, 19)}


def _local(rec: dict, zone) -> datetime:
    return from_ms(rec["received_at"]).astimezone(zone)


def test_three_campaigns_keep_the_calling_law_of_their_callees(stack_factory):
    chile, florida = numbered("+5696", 4), numbered("+1305200", 3)
    debt = numbered("+1212200", 2)
    scenario = {"numbers": {p: "no_answer" for p in [*chile, *florida, *debt]}}
    stack, runtime = stack_factory(clock=started_at(START, speed=SPEED), scenario=scenario)
    runtime.account_changes.apply("acme", {"plan": {"type": "unlimited"}, "concurrency_limit": 20})
    batches = {}
    for name, settings, contacts in (
            ("cobranza", COBRANZA, [{"name": f"cl{i}", "phones": [p], "external_id": f"CL-{i}"}
                                    for i, p in enumerate(chile)]),
            ("telemarketing", TELEMARKETING, [{"name": f"fl{i}", "phones": [p]} for i, p in enumerate(florida)]),
            ("reg f", REG_F, [{"name": "debtor", "phones": debt, "external_id": "DEBT-1"}])):
        batch = runtime.batches.create({"name": name, "account_id": "acme", "agent_id": "agent_test",
                                        "from_number": "+12125550100", "call_settings": settings})
        assert runtime.jobs.create_jobs(batch["_id"], "acme", contacts).imported == len(contacts)
        batches[name] = batch["_id"]

    # Twelve days: Friday the 11th to Tuesday the 22nd in Santiago.
    until = SANTIAGO.localize(datetime(2026, 9, 23, 6, 0)).astimezone(UTC)
    wait_until(lambda: runtime.clock.now() >= until, timeout_s=90, interval_s=0.5)
    dials = collections.defaultdict(list)
    for rec in sorted(stack.simulator.dials(timeline=True), key=lambda r: r["received_at"]):
        dials[rec["body"]["to_number"]].append(rec)
    stack.stop(graceful=False)

    # Chile: at most one call in any 7 days, none on Sundays or holidays, 08:00-20:00 (and the batch's 09:00).
    for phone in chile:
        days = [_local(r, SANTIAGO).date() for r in dials[phone]]
        assert days, phone
        for rec in dials[phone]:
            local = _local(rec, SANTIAGO)
            assert local.isoweekday() != 7 and local.date() not in CHILEAN_HOLIDAYS, local
            assert 9 <= local.hour < 20, local
        for first, second in itertools.pairwise(days):
            assert second - first >= timedelta(days=7), days
    # The week's cap was met, and the second call skipped the holidays and the Sunday: Monday the 21st (its window is
    # 0.8 real seconds long at this speed: a machine too loaded to dial in it calls on Tuesday, the next opening).
    assert any(len(dials[p]) == 2 for p in chile), {p: len(dials[p]) for p in chile}
    for phone in chile:
        if len(dials[phone]) == 2:
            assert _local(dials[phone][1], SANTIAGO).date() in (date(2026, 9, 21), date(2026, 9, 22)), dials[phone]

    # Florida: at most 3 calls in any 24 hours, none before 08:00 or from 20:00 Eastern.
    for phone in florida:
        times = [from_ms(r["received_at"]) for r in dials[phone]]
        assert times, phone
        for at in times:
            local = at.astimezone(EASTERN)
            assert 8 <= local.hour < 20, local
            assert sum(at <= other < at + timedelta(hours=24) for other in times) <= 3, (phone, times)
    assert any(len(dials[p]) >= 6 for p in florida), {p: len(dials[p]) for p in florida}   # the cap was met

    # Regulation F: at most 7 calls in any 7 consecutive days over both of the debtor's numbers, 08:00-21:00.
    both = sorted(from_ms(r["received_at"]) for p in debt for r in dials[p])
    assert len(both) >= 7, both
    days = [t.astimezone(EASTERN).date() for t in both]
    for first in set(days):
        assert sum(first <= d < first + timedelta(days=7) for d in days) <= 7, days
    for at in both:
        assert 8 <= at.astimezone(EASTERN).hour < 21, at
    # The caps held calls back without spending the debtor's attempts: still open (its state at the stop depends on
    # where the clock, 7 simulated hours a poll, stood), every round it used was a call.
    job = runtime.jobs.find({"batch_id": batches["reg f"]})[0]
    assert job["status"] not in states.FINAL and job["tries"] <= len(both), job
