"""A whole campaign through real processes: simulator, dramatiq workers, clock, MongoDB, Redis."""

from __future__ import annotations

import collections
from datetime import UTC, datetime

import pytest

from shared.clock import started_at
from shared.domain import states
from shared.domain.phones import numbered
from tests.helpers import wait_until

pytestmark = pytest.mark.slow   # a running stack (simulator, workers, clock) or the simulator process

START = datetime(2026, 3, 3, 13, 0, tzinfo=UTC)  # a Tuesday, 10:00 in Santiago


def numbers(prefix: str, count: int) -> list[str]:
    """``count`` valid Chilean mobile numbers starting with ``prefix`` (after +569)."""
    return numbered(f"+569{prefix}", count)


def setup_campaign(runtime, contacts, call_settings, *, limit=20):
    runtime.account_changes.apply("acme", {"plan": {"type": "unlimited"}, "concurrency_limit": limit})
    batch = runtime.batches.create({"name": "campaign", "account_id": "acme", "agent_id": "agent_test",
                                    "from_number": "+12125550100", "call_settings": call_settings})
    result = runtime.jobs.create_jobs(batch["_id"], "acme", contacts)
    assert result.imported == len(contacts), result.errors
    return batch


def wait_final(runtime, batch_id, *, timeout_s, stack):
    def done():
        counts = runtime.jobs.counts(batch_id)
        return sum(counts[s] for s in states.FINAL) == sum(counts.values())
    try:
        wait_until(done, timeout_s=timeout_s, interval_s=0.2)
    except TimeoutError:
        raise AssertionError(f"not final: {runtime.jobs.counts(batch_id)}\n{stack.logs()}") from None


def attempts_by_job(stack):
    """The simulator's record of created calls, per job: [metadata...] in order."""
    per_job = collections.defaultdict(list)
    for rec in stack.simulator.dials():
        meta = rec["body"].get("metadata", {})
        per_job[meta.get("job_id")].append(meta)
    return per_job


def assert_no_attempt_dialed_twice(stack):
    seen = collections.Counter(rec["body"]["metadata"]["attempt_id"] for rec in stack.simulator.dials())
    twice = [a for a, n in seen.items() if n > 1]
    assert not twice, f"attempts dialed twice: {twice[:5]}"


def test_three_hundred_contacts_with_scripted_outcomes(stack_factory):
    fast = started_at(START, speed=240)
    groups = {
        "answer": numbers("61", 60),
        "second_number": numbers("62", 60),
        "busy": numbers("63", 60),
        "invalid": numbers("64", 60),
        "voicemail_then_answer": numbers("65", 60),
    }
    fallback = numbers("66", 60)
    rules = {}
    for n in groups["answer"]:
        rules[n] = {"outcome": "answer", "duration_s": 20}
    for first, second in zip(groups["second_number"], fallback, strict=True):
        rules[first] = "no_answer"
        rules[second] = {"outcome": "answer", "duration_s": 20}
    for n in groups["busy"]:
        rules[n] = "busy"
    for n in groups["invalid"]:
        rules[n] = "invalid"
    for n in groups["voicemail_then_answer"]:
        rules[n] = {"sequence": ["voicemail", "voicemail", {"outcome": "answer", "duration_s": 20}]}
    scenario = {"numbers": rules, "defaults": {"voicemail": {"ring_s": [2, 4], "duration_s": [8, 12]}}}
    stack, runtime = stack_factory(clock=fast, scenario=scenario, workers=1, processes=2,
                                   simulator_flags={"concurrency_limit": 20})
    contacts = []
    for group, phones in groups.items():
        for i, phone in enumerate(phones):
            extra = [fallback[i]] if group == "second_number" else []
            contacts.append({"name": f"{group}-{i}", "phones": [phone, *extra], "external_id": f"{group}-{i}",
                             "variables": {"group": group}})
    settings = {"max_attempts": 3, "retry_delay_hours": 0.05, "ring_timeout": 30, "max_call_duration": 300}
    batch = setup_campaign(runtime, contacts, settings)
    wait_final(runtime, batch["_id"], timeout_s=180, stack=stack)

    jobs = {j["contact"]["external_id"]: j for j in runtime.jobs.find({"batch_id": batch["_id"]})}
    dialed = attempts_by_job(stack)
    expected = {
        "answer": (states.COMPLETED, 0, 1),
        "second_number": (states.COMPLETED, 0, 2),
        "busy": (states.FAILED, 3, 3),
        "invalid": (states.FAILED, 0, 1),
        "voicemail_then_answer": (states.COMPLETED, 2, 3),
    }
    wrong = []
    for key, job in jobs.items():
        group = key.rsplit("-", 1)[0]
        status, tries, calls = expected[group]
        got = (job["status"], job["tries"], len(dialed[job["_id"]]), len(runtime.attempts.for_job(job["_id"])))
        if got != (status, tries, calls, calls):
            wrong.append((key, got, job.get("last_error")))
    assert not wrong, wrong[:10]
    assert all(jobs[f"busy-{i}"]["last_error"].startswith("max attempts reached (3)") for i in range(60))
    assert all(jobs[f"invalid-{i}"]["invalid_phones"] == [0] for i in range(60))
    assert all(jobs[f"invalid-{i}"]["last_error"].startswith("no valid phone number") for i in range(60))
    for i in range(60):  # the fallback number was dialed after the first, in the same round
        calls = dialed[jobs[f"second_number-{i}"]["_id"]]
        assert [c["round"] for c in calls] == [1, 1]
    assert_no_attempt_dialed_twice(stack)
    assert stack.simulator.stats()["max_active"] <= 20
    assert runtime.batches.get(batch["_id"])["status"] in (states.BATCH_ACTIVE, states.BATCH_COMPLETED)
