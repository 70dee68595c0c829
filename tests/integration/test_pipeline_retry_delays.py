"""retry_delay_by_outcome end to end: each failed round waits the delay of the outcome of the call that ended
it, through real processes (simulator, dramatiq workers, clock) on a sped-up clock.

The checks read what the system decided: the next round's ``due_at`` (the job's ``next_try_at`` written by the
failed round) against the ``finalized_at`` of the call that ended the round, the ``call_finalized`` log events,
and the simulator's record of when it received each call.
"""

from __future__ import annotations

import collections
import itertools
import json
from datetime import UTC, datetime

import pytest

from shared.clock import started_at
from shared.domain import states
from tests.integration.test_pipeline_campaign import numbers, setup_campaign, wait_final

pytestmark = pytest.mark.slow   # a running stack (simulator, workers, clock) or the simulator process

START = datetime(2026, 3, 3, 14, 0, tzinfo=UTC)   # a Tuesday; no calling window is set
SPEED = 240
#: Hours per outcome, 1.5 real seconds apart at SPEED, so that the allowance below tells them apart.
SETTINGS = {"max_attempts": 2, "retry_delay_hours": 0.3,
            "retry_delay_by_outcome": {"busy": 0, "no_answer": 0.1, "voicemail": 0.2}}
#: Real seconds between the call's ``finalized_at`` and the failed round's write (both taken by the one process
#: finalizing the call, one MongoDB write apart; no broker or poll in between), in simulated ms.
APPLY_ALLOWANCE_MS = 1.0 * SPEED * 1000
#: A clock re-measured between the two readings may step back by a few real milliseconds.
CLOCK_STEP_MS = 0.1 * SPEED * 1000


def _finalized_events(stack) -> dict[str, list[dict]]:
    """The ``call_finalized`` log events of the stack's processes, per job."""
    found = collections.defaultdict(list)
    for path in stack.log_dir.glob("*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if '"call_finalized"' not in line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == "call_finalized":
                found[record["job_id"]].append(record)
    return found


def test_each_failed_round_waits_the_delay_of_the_outcome_that_ended_it(stack_factory):
    busy, no_answer, voicemail, first, last, dropped = numbers("95", 6)
    drop = {"outcome": "answer", "ring_s": 1, "duration_s": 10, "reason": "error_llm_websocket_lost_connection"}
    scenario = {"numbers": {busy: "busy", no_answer: "no_answer", voicemail: "voicemail", first: "voicemail",
                            last: "no_answer", dropped: drop}}
    stack, runtime = stack_factory(clock=started_at(START, speed=SPEED), scenario=scenario)
    contacts = [{"name": "busy", "phones": [busy]}, {"name": "no_answer", "phones": [no_answer]},
                {"name": "voicemail", "phones": [voicemail]},
                {"name": "last_phone", "phones": [first, last]},   # voicemail, then no answer ends the round
                {"name": "dropped", "phones": [dropped]}]          # not listed: retry_delay_hours
    expected = {"busy": ("busy", 0), "no_answer": ("no_answer", 0.1), "voicemail": ("voicemail", 0.2),
                "last_phone": ("no_answer", 0.1), "dropped": ("default", 0.3)}
    batch = setup_campaign(runtime, contacts, SETTINGS)
    wait_final(runtime, batch["_id"], timeout_s=60, stack=stack)
    received = {r["body"]["metadata"]["attempt_id"]: r["received_at"] for r in stack.simulator.dials()}
    events = _finalized_events(stack)
    for job in runtime.jobs.find({"batch_id": batch["_id"]}):
        name = job["contact"]["name"]
        outcome, hours = expected[name]
        assert job["status"] == states.FAILED and job["tries"] == 2, (name, job)
        attempts = runtime.attempts.for_job(job["_id"])
        assert len(attempts) == 2 * len(job["contact"]["phones"]), (name, attempts)
        rounds = [a["_id"].split(":")[1] for a in attempts]   # <job>:r<round>:p<phone>:d<dial>
        assert len(set(rounds)) == 2 and rounds == sorted(rounds), (name, rounds)
        split = rounds.index(rounds[-1])
        ended_round, next_round = attempts[split - 1], attempts[split]   # the last call of round 1, round 2's first
        # the system's decision: the log of the round that failed names the outcome and the hours chosen
        waits = [e for e in events[job["_id"]] if e["status"] == states.RETRY_WAIT]
        assert [(e["outcome"], e["retry_delay_for"], e["retry_delay_hours"]) for e in waits] == [
            (ended_round["outcome"], outcome, hours)], (name, events[job["_id"]])
        # ... as written: the next round was due that long after the call that ended the round was finalized
        gap_ms = next_round["due_at"] - ended_round["finalized_at"]
        delay_ms = hours * 3_600_000
        assert delay_ms - CLOCK_STEP_MS <= gap_ms <= delay_ms + APPLY_ALLOWANCE_MS, (name, gap_ms, delay_ms)
        # ... and carried out no earlier
        assert next_round["created_at"] >= next_round["due_at"], (name, next_round)
        assert received[next_round["_id"]] >= next_round["due_at"]
        for earlier, later in itertools.pairwise(attempts):
            assert later["created_at"] >= earlier["finalized_at"]
