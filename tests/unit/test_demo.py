"""The demo's pure parts: the campaign it builds, its options, what it prints."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.domain import states
from shared.domain.call_settings import parse_call_settings
from shared.domain.contacts import parse_contact
from shared.domain.outcomes import Outcome, call_reason
from shared.domain.reasons import because
from workers.dev import demo_plan
from workers.dev.demo import DEFAULT_SPEED, parse_args, safe_url
from workers.dev.demo_view import (
    BatchSummary,
    Snapshot,
    Summary,
    calls_by_day,
    duplicate_attempts,
    failure_reason,
    find_window_violations,
    render_live,
    render_progress_line,
    render_summary,
    render_window_check,
    window_state,
)
from workers.dev.simulator.scenario import parse_scenario

FULL_NUMBER = re.compile(r"\+\d{9,}")


def test_the_three_example_batches_validate_and_match_the_design():
    by_key = {spec.key: spec for spec in demo_plan.BATCHES}
    for spec in demo_plan.BATCHES:
        parse_call_settings(spec.call_settings)
    c = by_key["collections"].call_settings
    assert (c["allowed_hours"], c["days_of_week"], c["max_attempts"], c["retry_delay_hours"], c["ring_timeout"],
            c["max_call_duration"], c["timezone"]) == (
        {"start": "09:00", "end": "20:00"}, [1, 2, 3, 4, 5, 6], 5, 2, 45, 600, "America/Santiago")
    s = by_key["survey"].call_settings
    assert (s["allowed_hours"], s["days_of_week"], s["max_attempts"], s["retry_delay_hours"]) == (
        {"start": "10:00", "end": "18:00"}, [2, 3, 4], 2, 48)
    a = by_key["argentina"].call_settings
    assert (a["allowed_hours"], a["days_of_week"], a["timezone"]) == (
        {"start": "11:00", "end": "19:00"}, [1, 2, 3, 4, 5], "America/Argentina/Buenos_Aires")


def test_the_start_is_saturday_early_afternoon_in_santiago():
    local = demo_plan.DEFAULT_START.astimezone(__import__("pytz").timezone("America/Santiago"))
    assert (local.strftime("%A %H:%M"), local.utcoffset()) == ("Saturday 13:00", timedelta(hours=-4))


@given(total=st.integers(min_value=1, max_value=2000))
def test_split_gives_every_contact_to_a_batch(total):
    counts = demo_plan.split(total)
    assert sum(counts.values()) == total and all(n >= 0 for n in counts.values())
    if total >= 3:
        assert all(n >= 1 for n in counts.values())


def test_the_campaign_is_reproducible_and_the_seed_changes_it():
    one, again, other = (demo_plan.build_campaign(120, seed=s) for s in (7, 7, 8))
    assert one.contacts == again.contacts and one.scenario == again.scenario
    assert one.contacts != other.contacts


def test_every_contact_imports_and_every_number_has_a_rule():
    campaign = demo_plan.build_campaign(300, seed=3)
    assert campaign.total == 300
    parse_scenario(campaign.scenario)
    numbers = campaign.scenario["numbers"]
    seen: set[str] = set()
    spec_region = {spec.key: spec.region for spec in demo_plan.BATCHES}
    for key, rows in campaign.contacts.items():
        for row in rows:
            contact = parse_contact(row, region=spec_region[key])
            for phone in contact.phones:
                assert phone in numbers and phone not in seen
                assert phonenumbers.region_code_for_number(phonenumbers.parse(phone)) == spec_region[key]
                seen.add(phone)
    assert len(seen) == len(numbers)
    profiles = set(campaign.profiles.values())
    assert {"answers", "second_number_answers", "busy", "invalid_number", "voicemail"} <= profiles
    assert sum(1 for rows in campaign.contacts.values() for r in rows if len(r["phones"]) == 2) >= 30


def test_some_collections_conversations_ask_what_the_batchs_after_call_rules_act_on():
    campaign = demo_plan.build_campaign(300, seed=7)
    collections_numbers = {p for row in campaign.contacts["collections"] for p in row["phones"]}
    said: dict[str, set[str]] = {"callback_at": set(), "do_not_call": set(), "wrong_person": set()}
    for phone, rule in campaign.scenario["numbers"].items():
        steps = rule["sequence"] if isinstance(rule, dict) and "sequence" in rule else [rule]
        for step in steps:
            custom = step.get("custom_analysis_data", {}) if isinstance(step, dict) else {}
            for field in said.keys() & custom.keys():
                said[field].add(phone)
        if any(isinstance(s, dict) and "callback_at" in s.get("custom_analysis_data", {}) for s in steps):
            # asked on the first call only: the callback is a plain conversation, not another request
            assert "callback_at" in steps[0]["custom_analysis_data"] and len(steps) == 2
            assert "callback_at" not in steps[1]["custom_analysis_data"]
    assert all(said.values()), said
    assert set().union(*said.values()) <= collections_numbers   # only the batch with after_call rules
    rules = parse_call_settings(demo_plan.batch_body(demo_plan.BATCHES[0])["call_settings"]).after_call
    assert (rules.callback_field, rules.opt_out_field, rules.wrong_number_field) == (
        "callback_at", "do_not_call", "wrong_person")


def test_options():
    opts = parse_args([])
    assert (opts.contacts, opts.speed, opts.seed, opts.port, opts.keep_running) == (300, DEFAULT_SPEED, 7, None, False)
    opts = parse_args(["--contacts", "40", "--speed", "16000", "--seed", "3", "--port", "8123", "--keep-running",
                       "--data-dir", "/tmp/d", "--start", "2026-07-06T13:00:00Z"])
    assert (opts.contacts, opts.speed, opts.seed, opts.port, opts.keep_running, opts.data_dir) == (
        40, 16000.0, 3, 8123, True, "/tmp/d")
    assert opts.start == datetime(2026, 7, 6, 13, tzinfo=UTC)
    for bad in (["--contacts", "0"], ["--speed", "-1"], ["--port", "70000"], ["--start", "2026-07-06T13:00"]):
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_safe_url_hides_passwords():
    assert safe_url("redis://:hunter2@10.0.0.1:6379/0") == "redis://:****@10.0.0.1:6379/0"
    assert safe_url("mongodb://app:hunter2@db/x") == "mongodb://app:****@db/x"
    assert safe_url("redis://127.0.0.1:6379/15") == "redis://127.0.0.1:6379/15"


def test_failure_reasons_are_grouped_without_codes_and_counts():
    busy = call_reason(Outcome.BUSY, "dial_busy")
    assert failure_reason(because("max_attempts_after", limit=5, last=busy).fields()) == "max attempts reached: busy"
    invalid = call_reason(Outcome.INVALID_NUMBER, "invalid_destination")
    assert failure_reason(because("no_valid_phone_after", last=invalid).fields()) == (
        "no valid phone number: invalid number")
    assert failure_reason(None) == "unknown"


def _snapshot(**over):
    counts = {key: dict.fromkeys(states.JOB_STATES, 0) for key in ("collections", "survey", "argentina")}
    counts["collections"].update({states.COMPLETED: 3, states.IN_CALL: 2, states.WAITING_SCHEDULE: 5})
    base = dict(now=datetime(2026, 7, 4, 23, 30, tzinfo=UTC), counts=counts, elapsed_s=12.5, campaign_s=9.0,
                speed=8000.0, seed=7, start=demo_plan.DEFAULT_START, dashboard="http://127.0.0.1:8123/login",
                guard=timedelta(hours=1), provider={"dials": 42, "active": 2})
    base.update(over)
    return Snapshot(**base)


def test_live_view_shows_local_times_windows_and_calls_in_flight():
    text = render_live(_snapshot())
    assert "collections  Sat 19:30 -04" in text and "argentina    Sat 20:30 -03" in text
    lines: dict[str, str] = {}
    for line in text.splitlines():  # the first row of each batch: the progress table
        if line.split():
            lines.setdefault(line.split()[0], line)
    assert " closing " in lines["collections"]  # 19:30 + the 1 h guard is past 20:00
    assert " closed " in lines["survey"] and " closed " in lines["argentina"]  # Saturday
    assert "3/10" in lines["collections"]
    assert "calls in flight: 2; the provider has received 42 calls" in text
    assert "http://127.0.0.1:8123/" in text
    line = render_progress_line(_snapshot())
    assert "final 3/10" in line and "in flight 2" in line


def test_window_state():
    collections = demo_plan.BATCHES[0]
    sat_1830 = datetime(2026, 7, 4, 22, 30, tzinfo=UTC)
    assert window_state(collections, sat_1830) == "open"
    assert window_state(collections, sat_1830, timedelta(hours=2)) == "closing"
    assert window_state(collections, sat_1830 + timedelta(hours=2)) == "closed"


def test_summary_table_and_totals():
    rows = [BatchSummary(key="collections", batch_id="b" * 24, contacts=10, completed=7, failed=3, calls=25,
                         retries=9, second_numbers=2, postponed=4, postponed_contacts=3, charges_units=12_345,
                         analysed=7, successful=5, callbacks=2, opted_out=1, wrong_numbers=1),
            BatchSummary(key="survey", contacts=5, completed=5, calls=5)]
    rows[0].failed_by_reason.update({"max attempts reached: busy": 2, "no valid phone number: invalid number": 1})
    summary = Summary(batches=rows, plan_type="credits", balance_before=1000.0, balance_after=987.655, ledger_ok=True,
                      ledger_problems=[], start=demo_plan.DEFAULT_START,
                      end=demo_plan.DEFAULT_START + timedelta(days=4, hours=23), real_s=57.2)
    text = render_summary(summary)
    total = next(line for line in text.splitlines() if line.startswith("total"))
    assert total.split()[:8] == ["total", "15", "12", "3", "0", "30", "9", "2"]
    assert "12.345 cr" in text and "4 (3)" in text
    assert "  collections     2  max attempts reached: busy\n                  1  no valid phone number" in text
    assert "balance 1000.000 -> 987.655; ledger balanced" in text
    assert (f"  collections     7 analysed,    5 successful;  /dashboard/batches/{'b' * 24}  "
            f"/batches/{'b' * 24}/results.csv") in text
    # only the batch whose after_call rules act on the analysis says what they did
    assert ("after the call: 2 callbacks scheduled at the asked time, 1 opted out (do-not-call), 1 wrong numbers "
            "passed over") in text and text.count("after the call:") == 1
    assert "Sat 2026-07-04 13:00 -04 -> Thu 2026-07-09 12:00 -04 (4d 23:00), 57 s real" in text


class _Batches:
    def __init__(self, docs):
        self.docs = docs

    def get(self, batch_id):
        return self.docs.get(batch_id)


class _Runtime:
    def __init__(self, docs):
        self.batches = _Batches(docs)


def _call(batch_id, at, number="+56961234567", attempt="a1"):
    return {"received_at": int(at.timestamp() * 1000), "call_id": "call_x",
            "body": {"to_number": number, "metadata": {"batch_id": batch_id, "attempt_id": attempt}}}


def test_window_check_names_calls_outside_their_window_with_masked_numbers():
    collections = demo_plan.BATCHES[0]
    runtime = _Runtime({"b1": {"call_settings": collections.call_settings}})
    inside = _call("b1", datetime(2026, 7, 4, 23, 59, 59, tzinfo=UTC), attempt="a1")  # Sat 19:59:59
    after = _call("b1", datetime(2026, 7, 5, 0, 0, 0, tzinfo=UTC), attempt="a2")  # Sat 20:00:00
    sunday = _call("b1", datetime(2026, 7, 5, 15, 0, tzinfo=UTC), attempt="a2")
    found = find_window_violations([inside, after, sunday], runtime, {"collections": "b1"})
    assert [v.local for v in found] == ["Sat 2026-07-04 20:00 -04", "Sun 2026-07-05 11:00 -04"]
    text = render_window_check(found, 3, duplicate_attempts([inside, after, sunday]))
    assert "3 calls received by the provider; 2 calls outside their window" in text
    assert "dial check: 1 attempts dialed twice" in text
    assert not FULL_NUMBER.search(text) and "+569******67" in text
    assert "0 calls outside their window" in render_window_check([], 1)


def test_calls_by_day_shows_where_calls_fell_on_each_local_calendar():
    instants = [("b1", datetime(2026, 7, 4, 17, 20)), ("b1", datetime(2026, 7, 4, 21, 10)),
                ("b1", datetime(2026, 7, 6, 13, 5)), ("b3", datetime(2026, 7, 6, 14, 30))]
    calls = [_call(batch, at.replace(tzinfo=UTC)) for batch, at in instants]
    days = calls_by_day(calls, {"collections": "b1", "survey": "b2", "argentina": "b3"})
    assert days == {"collections": ["Sat 13:20-17:10 (2)", "Mon 09:05-09:05 (1)"], "survey": [],
                    "argentina": ["Mon 11:30-11:30 (1)"]}
    text = render_summary(Summary(batches=[], plan_type="credits", balance_before=None, balance_after=None,
                                  ledger_ok=True, ledger_problems=[], start=demo_plan.DEFAULT_START,
                                  end=demo_plan.DEFAULT_START, real_s=1), days)
    assert "  collections  Sat 13:20-17:10 (2)   Mon 09:05-09:05 (1)" in text and "  survey       (none)" in text
