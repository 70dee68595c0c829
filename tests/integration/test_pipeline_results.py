"""Results end to end: a running stack (simulator, workers, clock, web dyno) whose simulator scripts each number's
analysis; what outdial keeps and exports agrees with the simulator's record of each contact's last conversation."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest

from shared.domain import states
from shared.domain.results import read_analysis
from tests.helpers import wait_until
from tests.integration.test_web_process import numbers, stack_with_web

pytestmark = pytest.mark.slow

SENTIMENTS = ("Positive", "Neutral", "Negative")


def scripted(count_each: int) -> tuple[dict[str, Any], dict[str, str]]:
    """Scenario rules and each number's kind: answered at once with a scripted analysis, a voicemail then an
    answer, never answered, and one contact whose name is a spreadsheet formula."""
    rules: dict[str, Any] = {}
    kinds: dict[str, str] = {}
    for i, phone in enumerate(numbers("81", count_each)):
        rules[phone] = {"outcome": "answer", "ring_s": 2, "duration_s": 30 + i, "successful": i % 3 != 0,
                        "sentiment": SENTIMENTS[i % 3],
                        "custom_analysis_data": {"promise_to_pay_date": f"2026-03-{10 + i:02d}", "amount": 1000 * i,
                                                 "wrong_person": i % 4 == 0}}
        kinds[phone] = "answer"
    for i, phone in enumerate(numbers("82", count_each)):
        rules[phone] = {"sequence": [{"outcome": "voicemail", "ring_s": 2, "duration_s": 8},
                                     {"outcome": "answer", "ring_s": 2, "duration_s": 20, "successful": True,
                                      "sentiment": "Positive", "custom_analysis_data": {"callback_at": f"day {i}"}}]}
        kinds[phone] = "voicemail_then_answer"
    for phone in numbers("83", count_each):
        rules[phone] = "no_answer"
        kinds[phone] = "no_answer"
    return rules, kinds


def last_conversation(stack: Any, runtime: Any, job: dict[str, Any]) -> dict[str, Any] | None:
    """The simulator's call object of the job's last conversation, as the simulator now shows it."""
    aid = (job.get("result") or {}).get("analysis_attempt_id")
    if aid is None:
        return None
    call_id = runtime.attempts.get(aid)["call_id"]
    return stack.simulator.call_debug(call_id)["call"]


@pytest.mark.parametrize("webhooks", [True, False], ids=["webhooks", "polls"])
def test_every_contacts_result_agrees_with_the_simulators_record(stack_factory, webhooks):
    rules, kinds = scripted(10)
    stack, runtime, client = stack_with_web(stack_factory, rules, speed=60, retell_webhooks=webhooks)
    assert client.put("/accounts/acme", {"plan": {"type": "unlimited"}, "concurrency_limit": 10}).status == 201
    bid = client.post("/batches", {"name": "results", "account_id": "acme", "agent_id": "agent_test",
                                   "from_number": "+12125550100",
                                   "call_settings": {"max_attempts": 2, "retry_delay_hours": 0.02,
                                                     "max_call_duration": 120, "keep_transcripts": True}}
                      ).json()["id"]
    contacts = [{"name": f"c{i}", "phones": [p], "external_id": f"x{i}", "variables": {"kind": kinds[p]}}
                for i, p in enumerate(rules)]
    contacts.append({"name": '=HYPERLINK("http://x")', "phones": [numbers("84", 1)[0]], "external_id": "formula"})
    assert client.post(f"/batches/{bid}/contacts", {"contacts": contacts}).json()["imported"] == len(contacts)

    def settled() -> bool:
        jobs = runtime.jobs.find({"batch_id": bid})
        return all(j["status"] in states.FINAL and not (j.get("result") or {}).get("analysis_pending") for j in jobs)

    try:
        wait_until(settled, timeout_s=240, interval_s=0.2)
    except TimeoutError:
        raise AssertionError(f"not settled: {runtime.jobs.counts(bid)}\n{stack.logs()}") from None

    jobs = {j["_id"]: j for j in runtime.jobs.find({"batch_id": bid})}
    wrong = []
    for job in jobs.values():
        kind = kinds.get(job["contact"]["phones"][0], "formula")
        result = client.get(f"/jobs/{job['_id']}").json()["result"]
        dialed = stack.simulator.dials(job["contact"]["phones"][0])
        if result["calls"] != len(dialed):
            wrong.append((job["_id"], "calls", result["calls"], len(dialed)))
        seen = last_conversation(stack, runtime, job)
        if kind == "no_answer":
            if seen is not None or result["analysis"] is not None or result["last_outcome"] != "no_answer":
                wrong.append((job["_id"], kind, result))
            continue
        if seen is None:
            wrong.append((job["_id"], kind, "no conversation kept"))
            continue
        expected = {k: seen["call_analysis"][k] for k in ("call_successful", "call_summary", "user_sentiment",
                                                          "in_voicemail", "custom_analysis_data")}
        if result["analysis"] != expected or result["status"] != states.COMPLETED:
            wrong.append((job["_id"], kind, result["analysis"], expected))
        attempt = runtime.attempts.get(job["result"]["analysis_attempt_id"])
        if (read_analysis(attempt["analysis"]) != expected or attempt.get("recording_url") != seen["recording_url"]
                or attempt.get("transcript") != seen["transcript"]):
            wrong.append((job["_id"], kind, "attempt", attempt))
        if abs(result["talk_s"] * 1000 - sum(d.get("duration_ms", 0) for d in [seen])) > 1 and kind == "answer":
            wrong.append((job["_id"], kind, "talk", result["talk_s"], seen.get("duration_ms")))
    assert not wrong, wrong[:5]

    if webhooks:   # the analysis came by call_analyzed; nobody asked the provider about a call
        assert stack.simulator.stats()["requests"].get("get_call", 0) == 0
    # A fresh link to the last conversation's recording, asked of the provider.
    answered = next(j for j in jobs.values() if kinds.get(j["contact"]["phones"][0]) == "answer")
    link = client.get(f"/jobs/{answered['_id']}/recording").json()
    assert link["recording_url"] == last_conversation(stack, runtime, answered)["recording_url"]
    unanswered = next(j for j in jobs.values() if kinds.get(j["contact"]["phones"][0]) == "no_answer")
    assert client.get(f"/jobs/{unanswered['_id']}/recording").status == 404

    _check_export(client, bid, stack, runtime, jobs)


def _check_export(client: Any, bid: str, stack: Any, runtime: Any, jobs: dict[str, dict[str, Any]]) -> None:
    """Every CSV row agrees with the simulator's record of that contact's last conversation."""
    reply = client.get(f"/batches/{bid}/results.csv")
    if reply.status == 404 and "results.csv" not in reply.text:
        return
    assert reply.status == 200, reply.text
    rows = list(csv.DictReader(io.StringIO(reply.text)))
    assert len(rows) == len(jobs)
    by_id = {r["job_id"]: r for r in rows}
    formula = next(r for r in rows if r["external_id"] == "formula")
    assert formula["name"] == "'=HYPERLINK(\"http://x\")"
    for job_id, job in jobs.items():
        row = by_id[job_id]
        seen = last_conversation(stack, runtime, job)
        if seen is None:
            assert row["summary"] == "" and row["call_successful"] == "", row
            continue
        analysis = seen["call_analysis"]
        assert row["summary"] == analysis["call_summary"] and row["sentiment"] == analysis["user_sentiment"]
        assert row["call_successful"] == str(analysis["call_successful"]).lower()
        assert row["recording_url"] == seen["recording_url"]
        for key, value in analysis["custom_analysis_data"].items():
            cell = row[f"custom.{key}"]
            assert cell == (str(value).lower() if isinstance(value, bool) else str(value)), (key, cell, value)
