"""Pure parts of the simulator: scenarios, call plans, faults, request validation, list filters."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.dev.simulator.api import ApiError, compile_filter, parse_create_body, parse_list_body
from workers.dev.simulator.calls import CallBook, SimCall
from workers.dev.simulator.scenario import (
    OutcomeSpec,
    ScenarioError,
    parse_faults,
    parse_scenario,
    plan_call,
)
from workers.dev.simulator.templates import render_templates

A, B = "+14155550101", "+14155550102"

# -- scenario -----------------------------------------------------------------------------------------


def test_number_rules_sequences_and_prefixes():
    sc = parse_scenario({
        "numbers": {A: "busy", B: {"sequence": ["no_answer", "no_answer", {"outcome": "answer", "duration_s": 30}]}},
        "prefixes": {"+1415555": "voicemail", "+14155559": "invalid"},
    })
    rng = random.Random(0)
    assert [sc.pick(A, n, rng).outcome for n in range(3)] == ["busy"] * 3
    assert [sc.pick(B, n, rng).outcome for n in range(5)] == ["no_answer", "no_answer", "answer", "answer", "answer"]
    assert sc.pick(B, 2, rng).duration_s == (30.0, 30.0)
    assert sc.pick("+14155559999", 0, rng).outcome == "invalid"  # longest prefix wins
    assert sc.pick("+14155551234", 0, rng).outcome == "voicemail"
    assert sc.rule_for("+442071234567") is None


def test_random_mix_follows_the_weights():
    sc = parse_scenario({"mix": {"answer": 3, "busy": 1}})
    counts = Counter(sc.pick(f"+1415555{i:04d}", 0, random.Random(i)).outcome for i in range(4000))
    assert set(counts) == {"answer", "busy"}
    assert 0.70 < counts["answer"] / 4000 < 0.80


@pytest.mark.parametrize("raw,field", [
    ({"numbers": {"12345": "busy"}}, "numbers"),
    ({"numbers": {A: "exploded"}}, f"numbers[{A}].outcome"),
    ({"numbers": {A: {"outcome": "answer", "duration_s": -1}}}, "duration_s"),
    ({"numbers": {A: {"outcome": "answer", "duration_s": [9, 3]}}}, "duration_s"),
    ({"numbers": {A: {"sequence": []}}}, "sequence"),
    ({"numbers": {A: {"outcome": "answer", "colour": "red"}}}, "colour"),
    ({"mix": {"answer": -1}}, "mix.answer"),
    ({"mix": {"answer": 0}}, "mix"),
    ({"mix": {"teleport": 1}}, "mix.teleport"),
    ({"prefixes": {"415": "busy"}}, "prefixes"),
    ({"seed": "x"}, "seed"),
    ({"defaults": {"answer": {"wait_s": 3}}}, "defaults.answer"),
    ({"numbrs": {}}, "numbrs"),
])
def test_bad_scenarios_name_the_field(raw, field):
    with pytest.raises(ScenarioError, match=field.replace("[", r"\[").replace("]", r"\]").replace("+", r"\+")):
        parse_scenario(raw)


# -- plans ----------------------------------------------------------------------------------------


def plan(outcome, *, ring_ms=30_000, max_ms=3_600_000, **spec):
    for name in ("ring_s", "duration_s"):
        if name in spec:
            spec[name] = (spec[name], spec[name])
    return plan_call(OutcomeSpec(outcome=outcome, **spec), created_ms=1_000_000, ring_duration_ms=ring_ms,
                     max_call_duration_ms=max_ms, rng=random.Random(1))


def test_answer_connects_then_hangs_up():
    p = plan("answer", ring_s=5, duration_s=60)
    assert (p.connect_ms, p.end_ms) == (1_005_000, 1_065_000)
    assert p.reason in ("user_hangup", "agent_hangup") and p.successful and p.final_status == "ended"


def test_ring_duration_is_honoured():
    assert plan("no_answer", ring_ms=10_000).end_ms == 1_010_000
    slow = plan("answer", ring_ms=20_000, ring_s=40)  # answers after 40 s but may ring 20 s
    assert slow.connect_ms is None and slow.reason == "dial_no_answer" and slow.end_ms == 1_020_000
    patient = plan("answer", ring_ms=45_000, ring_s=40)
    assert patient.connect_ms == 1_040_000


def test_max_call_duration_is_honoured():
    p = plan("answer", ring_s=2, duration_s=900, max_ms=600_000)
    assert p.end_ms - p.connect_ms == 600_000 and p.reason == "max_duration_reached" and not p.successful


def test_stuck_ignores_max_duration():
    p = plan("stuck", max_ms=60_000)
    assert p.connect_ms is not None and p.end_ms is None


@pytest.mark.parametrize("outcome,reason", [("busy", "dial_busy"), ("invalid", "invalid_destination"),
                                            ("failed", "dial_failed"), ("no_answer", "dial_no_answer")])
def test_unconnected_outcomes(outcome, reason):
    p = plan(outcome)
    assert p.connect_ms is None and p.reason == reason and p.final_status == "ended" and not p.in_voicemail


def test_voicemail_connects_and_is_flagged():
    p = plan("voicemail", ring_s=15, duration_s=20)
    assert p.connect_ms == 1_015_000 and p.reason == "voicemail_reached" and p.in_voicemail


def test_reason_and_status_overrides():
    p = plan("failed", reason="telephony_provider_unavailable", status="error")
    assert (p.reason, p.final_status) == ("telephony_provider_unavailable", "error")
    unconnected = plan_call(OutcomeSpec(outcome="busy"), created_ms=0, ring_duration_ms=30_000,
                            max_call_duration_ms=60_000, rng=random.Random(0), unconnected_status="not_connected")
    assert unconnected.final_status == "not_connected"


@settings(max_examples=200)
@given(outcome=st.sampled_from(["answer", "voicemail", "no_answer", "busy", "invalid", "failed"]),
       ring_ms=st.integers(5_000, 300_000), max_ms=st.integers(60_000, 7_200_000), seed=st.integers(0, 10**6))
def test_every_plan_respects_ring_and_duration_limits(outcome, ring_ms, max_ms, seed):
    p = plan_call(OutcomeSpec(outcome=outcome), created_ms=0, ring_duration_ms=ring_ms, max_call_duration_ms=max_ms,
                  rng=random.Random(seed))
    assert p.end_ms is not None and p.reason
    if p.connect_ms is None:
        assert p.end_ms <= ring_ms
    else:
        assert p.connect_ms < ring_ms and p.end_ms - p.connect_ms <= max_ms


# -- faults ---------------------------------------------------------------------------------------


def test_scripted_faults_come_first_and_in_order():
    faults = parse_faults({"script": {"create": ["drop", "429", "none"], "get_call": ["500"]}})
    rng = random.Random(0)
    assert [faults.pick("create_phone_call", rng) for _ in range(4)] == ["drop", "429", None, None]
    assert faults.pick("get_call", rng) == "500" and faults.pick("get_call", rng) is None


def test_rates_apply_only_to_chosen_endpoints():
    faults = parse_faults({"rate_500": 1.0, "endpoints": ["get"]})
    rng = random.Random(0)
    assert faults.pick("get_call", rng) == "500" and faults.pick("create_phone_call", rng) is None


@pytest.mark.parametrize("raw", [{"rate_429": 2}, {"rate_429": 0.6, "rate_500": 0.6}, {"slow_ms": -1},
                                 {"script": {"create": ["explode"]}}, {"script": {"nowhere": ["500"]}},
                                 {"rate": 0.1}])
def test_bad_faults_are_refused(raw):
    with pytest.raises(ScenarioError):
        parse_faults(raw)


# -- create bodies --------------------------------------------------------------------------------

OK = {"from_number": "+14155550100", "to_number": A}


def test_valid_body_resolves_overrides():
    req = parse_create_body({**OK, "override_agent_id": "ag", "metadata": {"job_id": "j"},
                             "retell_llm_dynamic_variables": {"name": "Ana"},
                             "agent_override": {"agent": {"ring_duration_ms": 45_000, "max_call_duration_ms": 600_000,
                                                          "webhook_url": "http://h/w"}}})
    assert (req.agent_id, req.ring_duration_ms, req.max_call_duration_ms) == ("ag", 45_000, 600_000)
    assert req.webhook_url == "http://h/w" and req.webhook_events == ("call_started", "call_ended", "call_analyzed")
    defaults = parse_create_body(OK)
    assert (defaults.ring_duration_ms, defaults.max_call_duration_ms) == (30_000, 3_600_000)


@pytest.mark.parametrize("body,words", [
    ({"to_number": A}, "from_number is required"),
    ({"from_number": "+14155550100"}, "to_number is required"),
    ({**OK, "to_number": "4155550101"}, "to_number must be a valid E.164"),
    ({**OK, "to_number": 4155550101}, "to_number must be a string"),
    ({**OK, "ring_timeout": 30}, "unknown field(s) in request body: ring_timeout"),
    ({**OK, "metadata": "job"}, "metadata must be an object"),
    ({**OK, "retell_llm_dynamic_variables": {"n": 3}}, "retell_llm_dynamic_variables.n must be a string"),
    ({**OK, "agent_override": {"agent": {"ring_duration_ms": 1000}}}, "ring_duration_ms must be between"),
    ({**OK, "agent_override": {"agent": {"max_call_duration_ms": "600000"}}},
     "max_call_duration_ms must be an integer"),
    ({**OK, "agent_override": {"agents": {}}}, "unknown field(s): agents"),
    ({**OK, "ignore_e164_validation": "yes"}, "ignore_e164_validation must be a boolean"),
    (["not", "an", "object"], "must be a JSON object"),
])
def test_bad_bodies_get_400_naming_the_field(body, words):
    with pytest.raises(ApiError) as info:
        parse_create_body(body)
    assert info.value.status == 400 and words in info.value.message


def test_ignore_e164_validation_skips_only_from_number():
    assert parse_create_body({**OK, "from_number": "sip:trunk", "ignore_e164_validation": True}).from_number
    with pytest.raises(ApiError):
        parse_create_body({**OK, "to_number": "sip:x", "ignore_e164_validation": True})


# -- list filters ---------------------------------------------------------------------------------

CALL = {"call_id": "call_1", "call_status": "ended", "to_number": A, "agent_id": "ag", "agent_version": 2,
        "start_timestamp": 1000, "duration_ms": 60_000, "metadata": {"job_id": "j1", "attempt": 2},
        "call_analysis": {"in_voicemail": False, "user_sentiment": "Positive", "custom_analysis_data": {"paid": True}}}


@pytest.mark.parametrize("criteria,match", [
    ({"to_number": {"type": "string", "op": "eq", "value": A}}, True),
    ({"to_number": {"type": "string", "op": "sw", "value": "+1415"}}, True),
    ({"to_number": {"type": "string", "op": "eq", "value": B}}, False),
    ({"call_status": {"type": "enum", "op": "in", "value": ["ongoing", "ended"]}}, True),
    ({"call_status": {"type": "enum", "op": "in", "value": ["ongoing"]}}, False),
    ({"start_timestamp": {"type": "range", "op": "bt", "value": [0, 1000]}}, True),
    ({"start_timestamp": {"type": "number", "op": "gt", "value": 1000}}, False),
    ({"end_timestamp": {"type": "number", "op": "ge", "value": 0}}, False),  # missing value never matches
    ({"metadata": [{"type": "string", "op": "eq", "key": "job_id", "value": "j1"}]}, True),
    ({"metadata": [{"type": "number", "op": "eq", "key": "attempt", "value": 2}]}, True),
    ({"metadata": [{"type": "present", "op": "np", "key": "job_id"}]}, False),
    ({"in_voicemail": {"type": "boolean", "op": "eq", "value": False}}, True),
    ({"user_sentiment": {"type": "enum", "op": "in", "value": ["Positive"]}}, True),
    ({"custom_analysis_data": [{"type": "boolean", "op": "eq", "key": "paid", "value": True}]}, True),
    ({"agent": [{"agent_id": "ag", "version": [1]}]}, False),
    ({"agent": [{"agent_id": "zz"}, {"agent_id": "ag"}]}, True),
    ({"to_number": {"type": "string", "op": "eq", "value": A},
      "call_status": {"type": "enum", "op": "in", "value": ["error"]}}, False),
])
def test_filters(criteria, match):
    assert compile_filter(criteria)(CALL) is match


@pytest.mark.parametrize("criteria", [
    {"to_number": {"type": "enum", "op": "in", "value": [A]}},
    {"to_number": {"type": "string", "op": "gt", "value": A}},
    {"call_status": {"type": "enum", "op": "in", "value": "ended"}}, {"metadata": {"type": "present", "op": "pr"}},
    {"metadata": [{"type": "present", "op": "pr"}]}, {"colour": {"type": "string", "op": "eq", "value": "x"}},
    {"start_timestamp": {"type": "range", "op": "bt", "value": [1]}}, "to_number",
])
def test_bad_filters_get_400(criteria):
    with pytest.raises(ApiError) as info:
        compile_filter(criteria)
    assert info.value.status == 400


def _book(n: int) -> CallBook:
    book = CallBook()
    for i in range(n):
        req = parse_create_body({**OK, "to_number": A if i % 2 == 0 else B})
        plan_ = plan("busy")
        book.add(SimCall.planned(call_id=f"call_{i}", seq=i, created_ms=i, request=req, agent_id="ag", plan=plan_,
                                 analysis_delay_ms=0), now_ms=i)
    return book


def test_list_pages_cover_every_call_once_in_both_orders():
    book = _book(7)
    for order in ("descending", "ascending"):
        seen, key = [], None
        while True:
            page = book.list(parse_list_body({"limit": 3, "sort_order": order, "pagination_key": key}), now_ms=10**9)
            seen += [c["call_id"] for c in page["items"]]
            if not page["has_more"]:
                break
            key = page["pagination_key"]
        expected = [f"call_{i}" for i in range(7)]
        assert seen == (expected[::-1] if order == "descending" else expected)


def test_list_filter_total_and_skip():
    book = _book(7)
    body = {"filter_criteria": {"to_number": {"type": "string", "op": "eq", "value": A}}, "limit": 2,
            "include_total": True, "sort_order": "ascending"}
    page = book.list(parse_list_body(body), now_ms=10**9)
    assert [c["call_id"] for c in page["items"]] == ["call_0", "call_2"] and page["total"] == 4 and page["has_more"]
    page2 = book.list(parse_list_body({**body, "pagination_key": page["pagination_key"]}), now_ms=10**9)
    assert [c["call_id"] for c in page2["items"]] == ["call_4", "call_6"] and page2["total"] == 4
    skipped = book.list(parse_list_body({**body, "skip": 3}), now_ms=10**9)
    assert [c["call_id"] for c in skipped["items"]] == ["call_6"] and not skipped["has_more"]


def test_active_count_follows_the_clock_and_stops():
    book = CallBook()
    req = parse_create_body(OK)
    for i, (end, outcome) in enumerate([(10, "busy"), (20, "busy"), (None, "stuck")]):
        p = plan(outcome)
        call = SimCall.planned(call_id=f"c{i}", seq=i, created_ms=0, request=req, agent_id="a", plan=p,
                               analysis_delay_ms=0)
        call.end_ms = end
        book.add(call, now_ms=0)
    assert book.active_count(0) == 3 and book.max_active == 3
    assert book.active_count(10) == 2 and book.active_count(25) == 1
    stuck = book.get("c2")
    assert book.stop(stuck, 30) and book.active_count(30) == 0 and not book.stop(stuck, 31)
    assert stuck.status_at(31) == "ended" and stuck.view(31)["disconnection_reason"] == "manual_stopped"


# -- analysis templates ---------------------------------------------------------------------------

END = 1_773_155_045_789  # 2026-03-10T15:04:05.789Z


@pytest.mark.parametrize("template,rendered", [
    ("{{end}}", "2026-03-10T15:04:05+00:00"),
    ("{{end+2h}}", "2026-03-10T17:04:05+00:00"),
    ("{{end-30m}}", "2026-03-10T14:34:05+00:00"),
    ("{{end+1d}}", "2026-03-11T15:04:05+00:00"),
    ("{{end+90s}}", "2026-03-10T15:05:35+00:00"),
    ("{{end+1d+2h}}", "2026-03-11T17:04:05+00:00"),
    ("{{end+1h-15m}}", "2026-03-10T15:49:05+00:00"),
    ("{{ end+2h }}", "2026-03-10T17:04:05+00:00"),
    ("{{end+2h@America/Santiago}}", "2026-03-10T14:04:05-03:00"),
    ("{{end@Asia/Kolkata}}", "2026-03-10T20:34:05+05:30"),
    ("{{local+2h@America/Santiago}}", "2026-03-10 14:04"),
    ("{{local+1h@UTC}}", "2026-03-10 16:04"),
    ("{{local}}", "2026-03-10 15:04"),
    ("{{date}}", "2026-03-10"),
    ("{{date+1d}}", "2026-03-11"),
    ("{{date+9h}}", "2026-03-11"),  # past midnight UTC
    ("{{date+1d@America/Santiago}}", "2026-03-11"),
    ("{{date@Pacific/Auckland}}", "2026-03-11"),  # 04:04 NZDT
    ("{{date-14h@America/Santiago}}", "2026-03-09"),  # 01:04 UTC on the 10th is 22:04 the day before
])
def test_templates_render_relative_to_the_end(template, rendered):
    assert render_templates(template, END) == rendered


def test_templates_across_daylight_saving_changes():
    # New York springs forward on 2026-03-08 at 07:00 UTC: a day later is an hour later on the wall clock.
    before = 1_772_884_800_000  # 2026-03-07T12:00:00Z = 07:00 EST
    assert render_templates("{{end@America/New_York}}", before) == "2026-03-07T07:00:00-05:00"
    assert render_templates("{{end+1d@America/New_York}}", before) == "2026-03-08T08:00:00-04:00"
    assert render_templates("{{local+1d@America/New_York}}", before) == "2026-03-08 08:00"
    # Santiago falls back on 2026-04-05 at 03:00 UTC (-03 -> -04).
    saturday = 1_775_304_000_000  # 2026-04-04T12:00:00Z = 09:00 -03
    assert render_templates("{{local@America/Santiago}}", saturday) == "2026-04-04 09:00"
    assert render_templates("{{local+1d@America/Santiago}}", saturday) == "2026-04-05 08:00"
    assert render_templates("{{end+1d@America/Santiago}}", saturday) == "2026-04-05T08:00:00-04:00"
    # 02:30 UTC on the 5th is 23:30 on the 4th in Santiago; 30 minutes later it is 23:00 again, still the 4th.
    late = 1_775_356_200_000  # 2026-04-05T02:30:00Z
    assert render_templates("{{local@America/Santiago}} / {{local+30m@America/Santiago}}", late) == \
        "2026-04-04 23:30 / 2026-04-04 23:00"
    assert render_templates("{{date+90m@America/Santiago}}", late) == "2026-04-05"


def test_templates_inside_strings_and_nested_values():
    data = {
        "call_me_back_at": "{{end+2h}}",
        "note": "call me at {{local+1h@UTC}} or after {{local+3h@UTC}}, thanks",
        "opted_out": False, "attempts": 3, "nothing": None,
        "slots": [{"from": "{{end+1d}}", "to": "{{end+1d+1h}}"}, "{{date+2d}}", 7],
        "plain": "no {braces} here, not {{ even these", "empty": "",
    }
    out = render_templates(data, END)
    assert out == {
        "call_me_back_at": "2026-03-10T17:04:05+00:00",
        "note": "call me at 2026-03-10 16:04 or after 2026-03-10 18:04, thanks",
        "opted_out": False, "attempts": 3, "nothing": None,
        "slots": [{"from": "2026-03-11T15:04:05+00:00", "to": "2026-03-11T16:04:05+00:00"}, "2026-03-12", 7],
        "plain": "no {braces} here, not {{ even these", "empty": "",
    }
    assert data["slots"][0]["from"] == "{{end+1d}}"  # the scenario's value is not changed


@pytest.mark.parametrize("value,field,words", [
    ({"call_me_back_at": "{{tomorrow}}"}, "custom_analysis_data.call_me_back_at", "unknown template {{tomorrow}}"),
    ({"at": "{{end+2w}}"}, "custom_analysis_data.at", "unknown template"),
    ({"at": "{{end+h}}"}, "custom_analysis_data.at", "unknown template"),
    ({"at": "{{end 2h}}"}, "custom_analysis_data.at", "unknown template"),
    ({"at": "{{}}"}, "custom_analysis_data.at", "unknown template"),
    ({"at": "ok {{end}} then {{now}}"}, "custom_analysis_data.at", "{{now}}"),
    ({"at": "{{local+1h@Mars/Olympus}}"}, "custom_analysis_data.at", "unknown time zone 'Mars/Olympus'"),
    ({"at": "{{end+9999999d}}"}, "custom_analysis_data.at", "exceed"),
    ({"slots": [{"from": "{{end}}"}, {"from": "{{later}}"}]}, "custom_analysis_data.slots[1].from",
     "unknown template"),
])
def test_bad_templates_are_refused_when_parsed_naming_the_field(value, field, words):
    with pytest.raises(ScenarioError) as info:
        parse_scenario({"numbers": {A: {"outcome": "answer", "custom_analysis_data": value}}})
    message = str(info.value)
    assert f"numbers[{A}].{field}:" in message and words in message
    with pytest.raises(ScenarioError, match=r"numbers\[\+14155550102\]\.sequence\[1\]\.custom_analysis_data"):
        parse_scenario({"numbers": {B: {"sequence": ["busy", {"outcome": "answer", "custom_analysis_data": value}]}}})


def _analysed(spec_raw, *, stop_at=None):
    sc = parse_scenario({"numbers": {A: spec_raw}})
    p = plan_call(sc.pick(A, 0, random.Random(0)), created_ms=END, ring_duration_ms=30_000,
                  max_call_duration_ms=3_600_000, rng=random.Random(0))
    call = SimCall.planned(call_id="c", seq=0, created_ms=END, request=parse_create_body(OK), agent_id="a", plan=p,
                           analysis_delay_ms=5_000)
    if stop_at is not None:
        call.stop(stop_at)
    view = call.view(call.end_ms + 5_000)
    return call, view["call_analysis"]["custom_analysis_data"]


def test_the_analysis_renders_templates_from_the_calls_end():
    custom = {"call_me_back_at": "{{end+2h}}", "at": ["{{local+1h@America/Santiago}}"]}
    answered, data = _analysed({"outcome": "answer", "ring_s": 5, "duration_s": 55, "custom_analysis_data": custom})
    assert answered.end_ms == END + 60_000
    assert data == {"call_me_back_at": "2026-03-10T17:05:05+00:00", "at": ["2026-03-10 13:05"]}
    busy, data = _analysed({"outcome": "busy", "ring_s": 3, "custom_analysis_data": custom})  # never connected
    assert busy.connect_ms is None and data["call_me_back_at"] == "2026-03-10T17:04:08+00:00"
    stopped, data = _analysed({"outcome": "stuck", "custom_analysis_data": custom}, stop_at=END + 600_000)
    assert stopped.reason == "manual_stopped" and data["call_me_back_at"] == "2026-03-10T17:14:05+00:00"
