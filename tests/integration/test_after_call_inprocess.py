"""A conversation's analysis applied to its contact (``call_settings.after_call``), one path at a time, in this
process: real MongoDB and Redis, the provider scripted (see :mod:`tests.integration.test_steps_inprocess`).

- the finalize decides at once when the ended call carries the analysis, in its own write of the job;
- without it the job waits (``analyzing``) and the ``call_analyzed`` webhook (or a look) decides it;
- an opt-out lists the number on the account's do-not-call list (with the call's id) and fails the contact;
- a job whose analysis came while its finalize was still writing is decided by the check; one whose twin finalize
  (a poll and a webhook at once) kept the analysis is decided by the finalize that moved it; one whose analysis never
  came moves on as a conversation once the wait has passed;
- a batch without rules completes a conversation at once, as before.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from shared.clock import from_ms
from shared.domain import states
from shared.domain.results import contact_result
from shared.provider.retell import Call
from tests.integration.test_steps_inprocess import PHONE, Rig, dispatched, registered, rig  # noqa: F401 - fixture

SECOND = "+12125550102"
RULES = {"success": "call_successful", "callback_field": "call_me_back_at", "opt_out_field": "do_not_call",
         "wrong_number_field": "wrong_person"}


def in_call(at: Rig, *, after_call: dict[str, Any] | None = RULES, phones: tuple[str, ...] = (PHONE,)) -> str:
    """A job of a batch with ``after_call`` whose create was answered: its id."""
    rt = at.runtime
    settings = {"max_attempts": 3, "retry_delay_hours": 1, **({"after_call": after_call} if after_call else {})}
    batch = rt.batches.create({"name": "after call", "account_id": "acc", "agent_id": "agent_test",
                               "call_settings": settings})
    job_id = rt.jobs.create_jobs(batch["_id"], "acc", [{"name": "c", "phones": list(phones)}]).job_ids[0]
    at.provider.script("create_phone_call", registered)
    assert at.pipeline.dial(job_id, dispatched(at, job_id)) == "dialed"
    return job_id


def ended(at: Rig, *, analysis: dict[str, Any] | None = None, to: str = PHONE) -> Call:
    now = at.runtime.clock.now_ms()
    body: dict[str, Any] = {"call_id": "call_1", "call_status": "ended", "to_number": to,
                            "disconnection_reason": "user_hangup", "start_timestamp": now - 30_000,
                            "duration_ms": 30_000, "end_timestamp": now}
    if analysis is not None:
        body["call_analysis"] = analysis
    return Call.from_api(body)


def said(successful: bool = True, **custom: Any) -> dict[str, Any]:
    return {"call_successful": successful, "call_summary": "s", "user_sentiment": "Neutral", "in_voicemail": False,
            "custom_analysis_data": custom}


def test_the_finalize_decides_at_once_when_the_call_carries_its_analysis(rig):  # noqa: F811
    job_id = in_call(rig)
    before = rig.runtime.clock.now_ms()
    assert rig.pipeline.finalize(job_id, ended(rig, analysis=said(False))) == "answered"
    after = rig.runtime.clock.now_ms()
    job = rig.runtime.jobs.get(job_id)
    assert job["status"] == states.RETRY_WAIT and job["tries"] == 1
    assert job["reason_params"]["outcome"] == "unsuccessful"
    assert job["result"]["calls"] == 1 and job["result"]["after_call"] == "unsuccessful"   # one write: both
    assert before + 3600 * 1000 <= job["next_try_at"] <= after + 3600 * 1000     # retry_delay_hours: 1


def test_a_callback_in_the_ended_call_is_scheduled_by_the_finalize(rig):  # noqa: F811
    job_id = in_call(rig)
    asked = from_ms(rig.runtime.clock.now_ms()) + timedelta(days=1)
    rig.pipeline.finalize(job_id, ended(rig, analysis=said(call_me_back_at=asked.isoformat())))
    job = rig.runtime.jobs.get(job_id)
    assert job["status"] == states.WAITING_SCHEDULE and job["callback_at"] == int(asked.timestamp() * 1000)
    assert job["result"]["calls"] == 1 and job["result"]["callbacks"] == 1 and "lease_owner" not in job


def test_without_its_analysis_the_job_waits_and_the_webhook_decides_it(rig):  # noqa: F811
    job_id = in_call(rig)
    rig.pipeline.finalize(job_id, ended(rig))
    job = rig.runtime.jobs.get(job_id)
    assert job["status"] == states.ANALYZING and job["reason_code"] == "awaiting_analysis"
    assert "lease_owner" not in job and list(rig.runtime.slots.holders("acc")) == []
    assert rig.pipeline.schedule_due() == 0                 # not claimable: nothing is dialed meanwhile
    asked = from_ms(rig.runtime.clock.now_ms()) + timedelta(hours=3)
    assert rig.pipeline.record_analysis(ended(rig, analysis=said(call_me_back_at=asked.isoformat()))) == "analyzed"
    job = rig.runtime.jobs.get(job_id)
    assert job["status"] == states.WAITING_SCHEDULE and job["reason_code"] == "callback_scheduled"
    assert job["next_try_at"] == job["callback_at"] == int(asked.timestamp() * 1000)
    assert job["tries"] == 0 and job["callbacks"] == 1
    assert contact_result(job)["status"] == states.WAITING_SCHEDULE
    # the same analysis again (a retried webhook) changes nothing
    assert rig.pipeline.record_analysis(ended(rig, analysis=said(call_me_back_at="x"))) == "duplicate"
    assert rig.runtime.jobs.get(job_id)["callbacks"] == 1


def test_an_opt_out_lists_the_number_with_its_call_and_fails_the_contact(rig):  # noqa: F811
    job_id = in_call(rig, after_call={**RULES, "opt_out_scope": "contact"}, phones=(PHONE, SECOND))
    rig.pipeline.finalize(job_id, ended(rig))
    rig.pipeline.record_analysis(ended(rig, analysis=said(do_not_call=True, call_me_back_at="2030-01-01")))
    job = rig.runtime.jobs.get(job_id)
    assert job["status"] == states.FAILED and job["reason_code"] == "opted_out"
    entries = {e["number"]: e for e in rig.runtime.dnc.entries("acc", [PHONE, SECOND])}
    assert set(entries) == {PHONE, SECOND}
    assert all(e["reason"] == "opt_out" and e["call_id"] == "call_1" and e["scope"] == "acc"
               for e in entries.values())


def test_a_wrong_person_dials_the_next_number_now(rig):  # noqa: F811
    job_id = in_call(rig, phones=(PHONE, SECOND))
    rig.pipeline.finalize(job_id, ended(rig, analysis=said(wrong_person="yes")), refill=False)
    job = rig.runtime.jobs.get(job_id)
    assert (job["status"], job["phone_index"], job["invalid_phones"]) == (states.PENDING, 1, [0])
    assert job["reason_code"] == "wrong_person" and job["tries"] == 0
    assert job["next_try_at"] <= rig.runtime.clock.now_ms()


def test_an_analysis_kept_while_the_finalize_was_writing_is_applied_by_the_check(rig):  # noqa: F811
    job_id = in_call(rig)
    aid = rig.runtime.jobs.get(job_id)["attempt_id"]
    rig.pipeline.finalize(job_id, ended(rig))
    # the webhook's analysis reached the attempt, but its job was not decided (say its process died then)
    assert rig.runtime.attempts.record_analysis(aid, "call_1", said(True), {})
    assert rig.runtime.jobs.get(job_id)["status"] == states.ANALYZING
    assert rig.pipeline.check_analyzing() == 0              # not due yet
    rig.time.shift_s += rig.pipeline.timing.analysis_check_ms(0, rig.runtime.clock) / 1000 + 1
    assert rig.pipeline.check_analyzing() == 1
    job = rig.runtime.jobs.get(job_id)
    assert job["status"] == states.COMPLETED and job["result"]["after_call"] == "completed"


def test_a_poll_and_a_webhook_at_once_decide_the_job_with_the_analysis_either_of_them_had(rig):  # noqa: F811
    # The poll's read of the call had the analysis and ended the attempt with it, then lost the job's write to the
    # webhook's finalize, whose call_ended had none: the job is decided now, with the attempt's analysis (no later
    # delivery brings it: a call_analyzed finds it kept already), not at the check seconds later.
    job_id = in_call(rig)
    aid = rig.runtime.jobs.get(job_id)["attempt_id"]
    now = rig.runtime.clock.now_ms()
    asked = from_ms(now) + timedelta(hours=3)
    twin = said(call_me_back_at=asked.isoformat())
    assert rig.runtime.attempts.end(aid, {"call_id": "call_1", "outcome": "answered", "ended_at": now,
                                          **rig.pipeline.timing.analysis_fields(twin, connected=True, now_ms=now,
                                                                                clock=rig.runtime.clock)})
    assert rig.pipeline.finalize(job_id, ended(rig), source="webhook") == "answered"
    job = rig.runtime.jobs.get(job_id)
    assert job["status"] == states.WAITING_SCHEDULE and job["reason_code"] == "callback_scheduled", job
    assert job["callback_at"] == int(asked.timestamp() * 1000) and job["callbacks"] == 1
    assert rig.pipeline.record_analysis(ended(rig, analysis=twin)) == "duplicate"   # the late call_analyzed


def test_an_analysis_that_never_comes_completes_the_contact_as_a_conversation(rig):  # noqa: F811
    job_id = in_call(rig)
    rig.pipeline.finalize(job_id, ended(rig))
    first = rig.runtime.jobs.get(job_id)["next_try_at"]
    rig.time.shift_s += rig.pipeline.timing.analysis_check_ms(0, rig.runtime.clock) / 1000 + 1
    assert rig.pipeline.check_analyzing() == 1              # still awaited: checked again when the wait is over
    job = rig.runtime.jobs.get(job_id)
    assert job["status"] == states.ANALYZING and job["next_try_at"] > first
    rig.time.shift_s += rig.pipeline.timing.analysis_wait_s
    rig.pipeline.look_for_analyses()                        # the attempt's wait ends: analysis_missing
    assert rig.pipeline.check_analyzing() == 1
    job = rig.runtime.jobs.get(job_id)
    assert job["status"] == states.COMPLETED and job["reason_code"] == "analysis_never_came"
    assert job["result"]["after_call"] == "no_analysis"


def test_a_batch_without_rules_completes_a_conversation_at_once(rig):  # noqa: F811
    job_id = in_call(rig, after_call=None)
    rig.pipeline.finalize(job_id, ended(rig))
    job = rig.runtime.jobs.get(job_id)
    assert job["status"] == states.COMPLETED and "after_call" not in job["result"]
