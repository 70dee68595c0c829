"""What a call and a contact came to, kept by the finalize and by the analysis that comes after it: in this process,
on real MongoDB and Redis, the provider scripted (see :mod:`tests.integration.test_steps_inprocess`)."""

from __future__ import annotations

from typing import Any

from shared.domain import states
from shared.domain.results import contact_result, read_analysis
from shared.pipeline.result_events import ResultEvents
from shared.provider.retell import Call
from shared.stores import attempts as attempt_states
from tests.integration.test_steps_inprocess import PHONE, Rig, in_call, rig  # noqa: F401 - the fixture


class NoDeliveries:
    def deliver_result(self, event_id: str, token: str) -> None:
        raise AssertionError("no account here has a result webhook")


def sweep(at: Rig) -> Any:
    """The results sweep: the analyses of conversations into their contacts' results."""
    rt = at.runtime
    return ResultEvents(store=rt.result_event_store, jobs=rt.jobs, sender=NoDeliveries(), clock=rt.clock,
                        config=rt.config).sweep()

ANALYSIS = {"call_successful": True, "call_summary": "Promised to pay on Friday.", "user_sentiment": "Positive",
            "in_voicemail": False, "custom_analysis_data": {"promise_to_pay_date": "2026-03-06"}}


def ended(at: Rig, *, analysis: dict[str, Any] | None = None, talk_s: int = 42, connected: bool = True,
          reason: str = "user_hangup", transcript: str | None = None) -> Call:
    """The provider's object of the test's call, ended now (talked ``talk_s`` seconds when ``connected``)."""
    now = at.runtime.clock.now_ms()
    body: dict[str, Any] = {"call_id": "call_1", "call_status": "ended", "to_number": PHONE,
                            "disconnection_reason": reason if connected else "dial_no_answer",
                            "end_timestamp": now, "recording_url": "https://example.test/rec/call_1.wav",
                            "call_cost": {"combined_cost": 7.5}}
    if connected:
        body.update(start_timestamp=now - talk_s * 1000, duration_ms=talk_s * 1000)
    if analysis is not None:
        body["call_analysis"] = analysis
    if transcript is not None:
        body["transcript"] = transcript
    return Call.from_api(body)


def test_an_analysis_in_the_ended_call_is_kept_with_the_attempt_and_the_contacts_result(rig):  # noqa: F811
    job_id, _ = in_call(rig)
    assert rig.pipeline.finalize(job_id, ended(rig, analysis=ANALYSIS)) == "answered"
    job = rig.runtime.jobs.get(job_id)
    attempt = rig.runtime.attempts.get(job["result"]["last_attempt_id"])
    assert read_analysis(attempt["analysis"]) == ANALYSIS and attempt["recording_url"].endswith("call_1.wav")
    assert attempt["call_cost"] == 7.5 and "transcript" not in attempt     # the batch keeps no transcripts
    assert attempt["notify_ended"] and attempt["notify_analyzed"]
    assert "analysis_due_at" not in attempt
    result = contact_result(job)
    assert result["status"] == states.COMPLETED and result["final"] and job["notify_final"]
    assert (result["calls"], result["talk_s"], result["last_outcome"]) == (1, 42.0, "answered")
    assert result["analysis"] == ANALYSIS and not result["analysis_pending"]


def test_an_analysis_that_comes_later_is_looked_for_and_kept_without_reopening_the_job(rig):  # noqa: F811
    job_id, _ = in_call(rig)
    rig.pipeline.finalize(job_id, ended(rig))
    job = rig.runtime.jobs.get(job_id)
    aid = job["result"]["last_attempt_id"]
    assert job["status"] == states.COMPLETED and contact_result(job)["analysis_pending"]
    attempt = rig.runtime.attempts.get(aid)
    assert attempt["analysis_due_at"] > rig.runtime.clock.now_ms() and "notify_analyzed" not in attempt

    assert rig.pipeline.look_for_analyses() == 0               # not due yet: the provider is not asked
    assert rig.provider.calls_to("get_call") == []
    rig.time.shift_s += 6
    rig.provider.script("get_call", ended(rig), ended(rig, analysis=ANALYSIS))
    assert rig.pipeline.look_for_analyses() == 1               # not there yet: looked for again later
    again = rig.runtime.attempts.get(aid)
    assert again["analysis_looks"] == 1 and again["analysis_due_at"] > rig.runtime.clock.now_ms()
    rig.time.shift_s += 6
    assert rig.pipeline.look_for_analyses() == 1
    attempt = rig.runtime.attempts.get(aid)
    assert read_analysis(attempt["analysis"]) == ANALYSIS and attempt["notify_analyzed"]
    assert contact_result(rig.runtime.jobs.get(job_id))["analysis_pending"]     # until the sweep copies it
    assert sweep(rig).results == 1
    assert "notify_analyzed" not in rig.runtime.attempts.get(aid)
    assert sweep(rig).results == 0
    assert "analysis_due_at" not in attempt and "analysis_until" not in attempt
    job = rig.runtime.jobs.get(job_id)
    assert job["status"] == states.COMPLETED and job["finished_at"] <= attempt["analysis_at"]
    result = contact_result(job)
    assert result["analysis"] == ANALYSIS and not result["analysis_pending"]
    # the webhook of the same analysis afterwards changes nothing
    assert rig.pipeline.record_analysis(ended(rig, analysis={**ANALYSIS, "call_summary": "other"})) == "duplicate"
    assert read_analysis(rig.runtime.attempts.get(aid)["analysis"]) == ANALYSIS


def test_the_call_analyzed_webhook_after_the_finalize_keeps_the_analysis(rig):  # noqa: F811
    job_id, _ = in_call(rig)
    rig.pipeline.finalize(job_id, ended(rig))
    assert rig.pipeline.record_analysis(ended(rig)) == "not_ready"
    assert rig.pipeline.record_analysis(ended(rig, analysis=ANALYSIS)) == "analyzed"
    sweep(rig)
    assert contact_result(rig.runtime.jobs.get(job_id))["analysis"] == ANALYSIS
    assert rig.pipeline.record_analysis(ended(rig, analysis=ANALYSIS)) == "duplicate"


def test_an_analysis_that_never_comes_ends_the_wait_and_the_contact_keeps_none(rig):  # noqa: F811
    job_id, _ = in_call(rig)
    rig.pipeline.finalize(job_id, ended(rig))
    aid = rig.runtime.jobs.get(job_id)["result"]["last_attempt_id"]
    rig.time.shift_s += rig.pipeline.timing.analysis_wait_s + 1
    assert rig.pipeline.look_for_analyses() == 1
    assert rig.provider.calls_to("get_call") == []             # past the wait: not asked again
    attempt = rig.runtime.attempts.get(aid)
    assert attempt["analysis_missing"] and "analysis_due_at" not in attempt
    result = contact_result(rig.runtime.jobs.get(job_id))
    assert result["analysis"] is None and not result["analysis_pending"]
    assert rig.pipeline.look_for_analyses() == 0


def test_a_call_that_never_connected_counts_as_a_call_and_waits_for_no_analysis(rig):  # noqa: F811
    job_id, _ = in_call(rig)
    assert rig.pipeline.finalize(job_id, ended(rig, connected=False)) == "no_answer"
    job = rig.runtime.jobs.get(job_id)
    attempt = rig.runtime.attempts.get(job["result"]["last_attempt_id"])
    assert attempt["state"] == attempt_states.ENDED and "analysis_due_at" not in attempt
    result = contact_result(job)
    assert (result["calls"], result["talk_s"], result["last_outcome"]) == (1, 0.0, "no_answer")
    assert result["analysis"] is None and not result["analysis_pending"] and not result["final"]
    assert "notify_final" not in job


def test_a_batch_that_keeps_transcripts_keeps_each_calls_capped_transcript(rig):  # noqa: F811
    rt = rig.runtime
    batch = rt.batches.create({"name": "kept", "account_id": "acc", "agent_id": "agent_test",
                               "call_settings": {"keep_transcripts": True}})
    job_id = rt.jobs.create_jobs(batch["_id"], "acc", [{"name": "c", "phones": [PHONE]}]).job_ids[0]
    from tests.integration.test_steps_inprocess import dispatched, registered
    rig.provider.script("create_phone_call", registered)
    assert rig.pipeline.dial(job_id, dispatched(rig, job_id)) == "dialed"
    long_text = "Agent: hola\n" * 3000
    rig.pipeline.finalize(job_id, ended(rig, analysis=ANALYSIS, transcript=long_text))
    attempt = rt.attempts.get(rt.jobs.get(job_id)["result"]["last_attempt_id"])
    assert attempt["transcript"] == long_text[:20_000] and attempt["transcript_truncated"]
