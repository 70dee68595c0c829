"""What a conversation's analysis decides (``call_settings.after_call``), as plain functions: the settings' shape,
the rules' order, the callback's time (with properties over times, zones and windows)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.config import Config
from shared.domain import states
from shared.domain.after_call import (
    CALLBACK_MAX_AHEAD,
    AfterCallAction,
    callback_time,
    decide_after_analysis,
    describe_after_call,
    is_true,
    read_asked,
    success_met,
)
from shared.domain.call_settings import InvalidCallSettings, parse_call_settings
from shared.domain.calling_window import is_allowed_time
from shared.domain.outcomes import ROUND_ENDING, Outcome
from shared.domain.reasons import because

CONFIG = Config()
SANTIAGO = "America/Santiago"
PHONES = ["+56961234567", "+56961234568"]
#: Monday 2026-03-02 12:00 in Santiago (UTC-3).
MONDAY_NOON = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
RULES = {"success": "call_successful", "callback_field": "call_me_back_at", "opt_out_field": "do_not_call",
         "wrong_number_field": "wrong_person"}
EXAMPLES = int(os.environ.get("OUTDIAL_PROPERTY_EXAMPLES", "150"))
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def call_settings(**after_call):
    return parse_call_settings({"days_of_week": [1, 2, 3, 4, 5], "allowed_hours": {"start": "09:00", "end": "18:00"},
                                "timezone": SANTIAGO, "holidays": "CL", "max_attempts": 3, "retry_delay_hours": 2,
                                "retry_delay_by_outcome": {"unsuccessful": 24},
                                "after_call": {**RULES, **after_call}})


def analyzing_job(**over):
    doc = {"_id": "j" * 24, "status": states.ANALYZING, "tries": 0, "phone_index": 0, "invalid_phones": [],
           "call_id": "call_1", "attempt_id": "a1", "contact": {"phones": list(PHONES)}}
    doc.update(over)
    return doc


def analysis(successful=True, **custom):
    return {"call_successful": successful, "call_summary": "s", "custom_analysis_data": custom}


def decide(custom=None, *, successful=True, job=None, ended=MONDAY_NOON, now=None, stopped=None, **rules):
    return decide_after_analysis(job or analyzing_job(), analysis(successful, **(custom or {})),
                                 call_settings(**rules), ended=ended, now=now or ended + timedelta(seconds=30),
                                 config=CONFIG, stopped=stopped)


# -- the settings ---------------------------------------------------------------------------------------------


def test_after_call_is_parsed_with_its_defaults_and_stored_as_given():
    s = parse_call_settings({"after_call": {"callback_field": "cb", "opt_out_scope": "Contact"}})
    rules = s.after_call
    assert (rules.success, rules.callback_field, rules.max_callbacks, rules.opt_out_scope) == (
        "conversation", "cb", 2, "contact")
    assert rules.needs_analysis
    assert s.to_document() == {"after_call": {"callback_field": "cb", "opt_out_scope": "contact"}}
    assert not parse_call_settings({}).after_call.needs_analysis
    assert not parse_call_settings({"after_call": {"success": "conversation"}}).after_call.needs_analysis


@pytest.mark.parametrize(("after_call", "field", "words"), [
    ({"success": "always"}, "call_settings.after_call.success", '"conversation", "call_successful"'),
    ({"success": {"field": "x"}}, "call_settings.after_call.success", 'exactly one of "equals"'),
    ({"success": {"field": "x", "in": []}}, "call_settings.after_call.success.in", "list of 1 to 50"),
    ({"success": {"equals": 1}}, "call_settings.after_call.success.field", "is required"),
    ({"callback_field": "has space"}, "call_settings.after_call.callback_field", "custom_analysis_data"),
    ({"max_callbacks": 21}, "call_settings.after_call.max_callbacks", "between 0 and 20"),
    ({"opt_out_scope": "everyone"}, "call_settings.after_call.opt_out_scope", "'number', 'contact'"),
    ({"wrong_number": "x"}, "call_settings.after_call.wrong_number", "unknown field"),
    ([], "call_settings.after_call", "must be an object"),
])
def test_bad_after_call_settings_name_the_field(after_call, field, words):
    with pytest.raises(InvalidCallSettings) as caught:
        parse_call_settings({"after_call": after_call})
    assert any(f"call_settings.{f}" == field and words in m for f, m in caught.value.errors), caught.value.errors


def test_unsuccessful_is_an_outcome_with_its_own_retry_delay():
    assert Outcome.UNSUCCESSFUL in ROUND_ENDING
    s = call_settings()
    assert s.retry_delay_by_outcome == {"unsuccessful": 24.0}


def test_the_rules_in_words():
    said = describe_after_call(call_settings(opt_out_scope="contact").after_call)
    assert said[0].startswith("do_not_call true: the contact's numbers go")
    assert "at most 2 callbacks" in said[2] and "call_successful" in said[3]


# -- reading the analysis -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    (True, True), (1, True), ("yes", True), (" Sí ", True), ("TRUE", True),
    (False, False), (0, False), ("no", False), (None, False), ("", False), ({"a": 1}, False), (2, False),
])
def test_what_reads_as_true(value, expected):
    assert is_true(value) is expected


@pytest.mark.parametrize(("rule", "custom", "successful", "met"), [
    ("conversation", {}, False, True),
    ("call_successful", {}, True, True),
    ("call_successful", {}, False, False),
    ({"field": "promise", "equals": True}, {"promise": True}, False, True),
    ({"field": "promise", "equals": True}, {"promise": "yes"}, False, True),
    ({"field": "promise", "equals": True}, {"promise": False}, True, False),
    ({"field": "promise", "equals": True}, {}, True, False),
    ({"field": "status", "in": ["paid", "promised"]}, {"status": " Promised"}, False, True),
    ({"field": "status", "in": ["paid", "promised"]}, {"status": "refused"}, True, False),
    ({"field": "amount", "equals": 100}, {"amount": "100"}, False, True),
    ({"field": "amount", "equals": 100}, {"amount": 100.0}, False, True),
])
def test_success_rules(rule, custom, successful, met):
    assert success_met(rule, analysis(successful, **custom)) is met


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-03-10T15:00:00-03:00", datetime(2026, 3, 10, 18, 0, tzinfo=UTC)),
    ("2026-03-10T18:00:00Z", datetime(2026, 3, 10, 18, 0, tzinfo=UTC)),
    ("2026-03-10 15:00", datetime(2026, 3, 10, 18, 0, tzinfo=UTC)),   # local, Santiago (UTC-3 in March)
    ("2026-03-10T15:30:10", datetime(2026, 3, 10, 18, 30, 10, tzinfo=UTC)),
    ("2026-07-10 15:00", datetime(2026, 7, 10, 19, 0, tzinfo=UTC)),   # Santiago's winter, UTC-4
    ("2026-03-10", datetime(2026, 3, 10, 3, 0, tzinfo=UTC)),          # a date: local midnight
])
def test_asked_times_are_read_in_the_callees_zone(text, expected):
    asked = read_asked(text, SANTIAGO)
    assert asked is not None and asked.at == expected
    assert asked.date_only is (len(text) == 10)


@pytest.mark.parametrize("text", ["tomorrow", "2026-02-30", "2026-03-10 25:00", "10/03/2026", "", 5, None,
                                  "2026-03-10T15:00:00.5", "x" * 50])
def test_unreadable_asked_times(text):
    assert read_asked(text, SANTIAGO) is None


def test_a_local_time_in_a_dst_gap_moves_forward():
    # Santiago springs forward on 2026-09-06 at 00:00 -> 01:00: 00:30 does not exist that day.
    asked = read_asked("2026-09-06 00:30", SANTIAGO)
    assert asked is not None
    assert asked.at.astimezone(ZoneInfo(SANTIAGO)).strftime("%H:%M") == "01:30"


# -- the decision ---------------------------------------------------------------------------------------------


def test_an_opt_out_lists_the_number_and_fails_the_contact():
    d = decide({"do_not_call": True, "call_me_back_at": "2026-03-03 10:00"})
    assert d.action == AfterCallAction.OPTED_OUT and d.dnc_numbers == (PHONES[0],)
    assert d.write.status == states.FAILED and d.write.set_["reason_code"] == "opted_out"
    assert d.write.where == {"call_id": "call_1"}
    both = decide({"do_not_call": "yes"}, opt_out_scope="contact", job=analyzing_job(phone_index=1))
    assert both.dnc_numbers == tuple(PHONES)


def test_an_opt_out_of_a_cancelled_batch_still_lists_and_fails():
    d = decide({"do_not_call": True}, stopped=because("batch_cancelled"))
    assert d.write.status == states.FAILED and d.dnc_numbers


def test_a_wrong_person_marks_the_number_and_dials_the_next_one_now():
    d = decide({"wrong_person": True}, successful=False)
    assert d.action == AfterCallAction.WRONG_NUMBER
    w = d.write
    assert w.status == states.PENDING and w.set_["phone_index"] == 1 and w.set_["invalid_phones"] == [0]
    assert w.set_["next_try_at"] == int((MONDAY_NOON + timedelta(seconds=30)).timestamp() * 1000)
    assert w.set_["reason_code"] == "wrong_person" and w.inc == {"result.wrong_numbers": 1}
    # the last number: a failed round, its attempt spent
    last = decide({"wrong_person": True}, job=analyzing_job(phone_index=1))
    assert last.write.status == states.RETRY_WAIT and last.write.set_["tries"] == 1
    only = decide({"wrong_person": True}, job=analyzing_job(phone_index=1, invalid_phones=[0]))
    assert only.write.status == states.FAILED and only.write.set_["reason_code"] == "no_valid_phone_after"


def test_a_callback_is_scheduled_at_the_asked_time_without_spending_an_attempt():
    d = decide({"call_me_back_at": "2026-03-03 10:00"}, successful=True)
    assert d.action == AfterCallAction.CALLBACK
    w = d.write
    at = int(datetime(2026, 3, 3, 13, 0, tzinfo=UTC).timestamp() * 1000)
    assert w.status == states.WAITING_SCHEDULE and w.set_["next_try_at"] == at == w.set_["callback_at"]
    assert "tries" not in w.set_ and w.inc == {"callbacks": 1, "result.callbacks": 1}
    assert w.set_["reason_code"] == "callback_scheduled" and "2026-03-03 10:00" in w.set_["last_error"]


def test_a_callback_outside_the_window_waits_for_the_next_allowed_time():
    # Tuesday 20:00 is after hours: Wednesday 09:00.
    d = decide({"call_me_back_at": "2026-03-03T20:00:00-03:00"})
    assert d.write.set_["next_try_at"] == int(datetime(2026, 3, 4, 12, 0, tzinfo=UTC).timestamp() * 1000)
    # A date alone: the first allowed time that day.
    day = decide({"call_me_back_at": "2026-03-05"})
    assert day.write.set_["next_try_at"] == int(datetime(2026, 3, 5, 12, 0, tzinfo=UTC).timestamp() * 1000)


def test_a_callback_on_a_holiday_moves_to_the_next_working_day():
    # 2026-09-18 and 09-19 are Chilean public holidays (Friday, Saturday): Monday 21st, 09:00.
    ended = datetime(2026, 9, 16, 15, 0, tzinfo=UTC)
    d = decide({"call_me_back_at": "2026-09-18 11:00"}, ended=ended)
    assert d.write.set_["next_try_at"] == int(datetime(2026, 9, 21, 12, 0, tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(("asked", "why"), [
    ("someday", "unreadable"), ("2026-03-01 10:00", "past"), ("2026-03-01", "past"),
    ("2026-04-10 10:00", "too_far"),
])
def test_a_callback_that_cannot_be_placed_falls_back_to_the_success_rule(asked, why):
    met = decide({"call_me_back_at": asked}, successful=True)
    assert met.action == AfterCallAction.COMPLETED and met.callback_ignored == why
    missed = decide({"call_me_back_at": asked}, successful=False)
    assert missed.action == AfterCallAction.UNSUCCESSFUL and missed.callback_ignored == why


def test_a_date_of_today_is_not_in_the_past():
    d = decide({"call_me_back_at": "2026-03-02"})
    assert d.action == AfterCallAction.CALLBACK
    assert d.write.set_["next_try_at"] == int((MONDAY_NOON + timedelta(seconds=30)).timestamp() * 1000)


def test_callbacks_stop_at_max_callbacks():
    d = decide({"call_me_back_at": "2026-03-03 10:00"}, successful=False, job=analyzing_job(callbacks=2))
    assert d.action == AfterCallAction.UNSUCCESSFUL and d.callback_ignored == "max_callbacks"
    assert decide({"call_me_back_at": "2026-03-03 10:00"}, max_callbacks=0).callback_ignored == "max_callbacks"


def test_an_unsuccessful_conversation_spends_the_attempt_and_waits_its_delay():
    d = decide(successful=False)
    assert d.action == AfterCallAction.UNSUCCESSFUL
    w = d.write
    now_ms = int((MONDAY_NOON + timedelta(seconds=30)).timestamp() * 1000)
    assert w.status == states.RETRY_WAIT and w.set_["tries"] == 1 and w.set_["phone_index"] == 0
    assert w.set_["next_try_at"] == now_ms + 24 * 3600 * 1000
    assert w.set_["reason_code"] == "call_outcome" and w.set_["reason_params"]["outcome"] == "unsuccessful"
    last = decide(successful=False, job=analyzing_job(tries=2))
    assert last.write.status == states.FAILED and last.write.set_["reason_code"] == "max_attempts_after"


def test_a_successful_conversation_completes_and_a_missing_analysis_counts_as_one():
    assert decide().write.status == states.COMPLETED
    missing = decide_after_analysis(analyzing_job(), None, call_settings(), ended=MONDAY_NOON, now=MONDAY_NOON,
                                    config=CONFIG)
    assert missing.action == AfterCallAction.NO_ANALYSIS and missing.write.status == states.COMPLETED
    assert missing.write.set_["reason_code"] == "analysis_never_came"


def test_what_would_wait_is_cancelled_in_a_cancelled_batch():
    for custom, successful in (({"call_me_back_at": "2026-03-03 10:00"}, True), ({}, False),
                               ({"wrong_person": True}, True)):
        d = decide(custom, successful=successful, stopped=because("batch_cancelled"))
        assert d.write.status == states.CANCELLED and d.write.set_["reason_code"] == "batch_cancelled"
    assert decide(stopped=because("batch_cancelled")).write.status == states.COMPLETED


# -- properties of the callback's time ------------------------------------------------------------------------

ZONES = (SANTIAGO, "America/New_York", "Europe/Madrid", "America/Bogota")
WINDOWS = st.sampled_from([
    {"days_of_week": [1, 2, 3, 4, 5], "allowed_hours": {"start": "09:00", "end": "18:00"}},
    {"days_of_week": [1, 2, 3, 4, 5, 6], "allowed_hours": {"start": "08:00", "end": "20:00"}},
    {"windows": [{"days": [1, 2, 3, 4, 5], "start": "07:00", "end": "08:30"},
                 {"days": [6], "start": "10:00", "end": "12:00"}]},
    {"days_of_week": [2, 4], "allowed_hours": {"start": "22:00", "end": "02:00"}},
])
ENDS = st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC))


@st.composite
def asked_values(draw, ended):
    offset = draw(st.integers(min_value=-3 * 86400, max_value=35 * 86400))
    at = ended + timedelta(seconds=offset)
    zone = ZoneInfo(draw(st.sampled_from(ZONES)))
    form = draw(st.sampled_from(["iso", "local", "date"]))
    if form == "iso":
        return at.astimezone(zone).isoformat(timespec="seconds")
    if form == "local":
        return at.astimezone(zone).strftime("%Y-%m-%d %H:%M")
    return at.astimezone(zone).strftime("%Y-%m-%d")


@PROPERTY
@given(window=WINDOWS, zone=st.sampled_from(ZONES), holidays=st.sampled_from([None, "CL", "US", "ES"]),
       ended=ENDS, data=st.data(), guard_s=st.sampled_from([0, 30, 600]), late_s=st.integers(0, 900))
def test_a_callback_time_is_allowed_never_before_the_asked_time_and_within_30_days(window, zone, holidays, ended,
                                                                                   data, guard_s, late_s):
    s = parse_call_settings({**window, "timezone": zone, **({"holidays": holidays} if holidays else {})})
    value = data.draw(asked_values(ended))
    now = ended + timedelta(seconds=late_s)
    guard = timedelta(seconds=guard_s)
    found = callback_time(value, ended=ended, now=now, settings=s, phone=PHONES[0], contact_timezone=None,
                          guard=guard, config=CONFIG)
    asked = read_asked(value, zone)
    assert asked is not None
    if found.at is None:
        assert found.problem in ("past", "too_far", "no_window")
        return
    assert is_allowed_time(s, found.at, PHONES[0], config=CONFIG)[0]
    assert is_allowed_time(s, found.at + guard, PHONES[0], config=CONFIG)[0]
    assert found.at >= asked.at and found.at >= now
    assert found.at <= ended + CALLBACK_MAX_AHEAD
    if not asked.date_only:
        assert asked.at >= ended
    if asked.date_only:  # the first allowed time that day or after: never an allowed minute skipped that day
        start = max(asked.at, now)
        probe = start
        while probe < found.at and probe < start + timedelta(days=1):
            assert not (is_allowed_time(s, probe, PHONES[0], config=CONFIG)[0]
                        and is_allowed_time(s, probe + guard, PHONES[0], config=CONFIG)[0]), probe
            probe += timedelta(minutes=15)


@PROPERTY
@given(zone=st.sampled_from(ZONES), ended=ENDS, offset_s=st.integers(-86400, 40 * 86400))
def test_past_and_far_asked_times_are_ignored(zone, ended, offset_s):
    s = parse_call_settings({"timezone": zone})   # any time allowed: only the bounds decide
    at = ended + timedelta(seconds=offset_s)
    value = at.astimezone(ZoneInfo(zone)).isoformat(timespec="seconds")
    found = callback_time(value, ended=ended, now=ended, settings=s, phone=PHONES[0], contact_timezone=None,
                          guard=timedelta(0), config=CONFIG)
    exact = read_asked(value, zone).at
    if exact < ended:
        assert found.problem == "past"
    elif exact > ended + CALLBACK_MAX_AHEAD:
        assert found.problem == "too_far"
    else:
        assert found.at == exact
