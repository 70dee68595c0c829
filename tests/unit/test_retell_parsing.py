"""Pure parts of the Retell client: call parsing, the create body, error mapping, backoff."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import (
    AgentNotFound,
    CallerIdRejected,
    CallNotFound,
    CreateOutcomeUnknown,
    InvalidDestination,
    PaymentRequired,
    ProviderAuthError,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from shared.provider.retell import (
    Call,
    Concurrency,
    _backoff_s,
    build_create_body,
    error_from_response,
    parse_retry_after,
    to_dynamic_variables,
)

# -- Call ---------------------------------------------------------------------------------------------


def test_full_call_object_parses():
    call = Call.from_api({
        "call_id": "call_1", "call_type": "phone_call", "agent_id": "ag", "call_status": "ended",
        "direction": "outbound", "from_number": "+14155550100", "to_number": "+14155550101",
        "start_timestamp": 1_000, "end_timestamp": 61_000, "duration_ms": 60_000,
        "disconnection_reason": "user_hangup", "metadata": {"job_id": "j", "attempt": 2},
        "call_analysis": {"in_voicemail": False, "call_successful": True},
    })
    assert call.call_id == "call_1" and call.is_final and call.connected and call.reason_is_known
    assert (call.start_timestamp_ms, call.end_timestamp_ms, call.duration_ms) == (1_000, 61_000, 60_000)
    assert call.metadata == {"job_id": "j", "attempt": 2} and not call.in_voicemail
    assert call.raw["direction"] == "outbound"


def test_unknown_enum_values_are_kept_as_strings():
    call = Call.from_api({"call_id": "c", "call_status": "teleported", "disconnection_reason": "alien_hangup",
                          "end_timestamp": 5})
    assert call.call_status == "teleported" and call.disconnection_reason == "alien_hangup"
    assert not call.reason_is_known
    assert call.is_final  # an unknown status with an end is over


def test_unknown_status_without_end_is_not_final():
    assert not Call.from_api({"call_id": "c", "call_status": "queued_somewhere"}).is_final


@pytest.mark.parametrize("status,final", [("registered", False), ("ongoing", False), ("ended", True),
                                          ("not_connected", True), ("error", True)])
def test_final_statuses(status, final):
    assert Call.from_api({"call_id": "c", "call_status": status}).is_final is final


def test_registered_call_has_no_timestamps():
    call = Call.from_api({"call_id": "c", "call_status": "registered"})
    assert call.start_timestamp_ms is None and call.duration_ms is None and not call.connected
    assert call.call_analysis == {} and call.metadata == {}


def test_wrong_types_are_tolerated():
    call = Call.from_api({"call_id": "c", "call_status": 3, "start_timestamp": "1000", "end_timestamp": 2000.7,
                          "duration_ms": True, "metadata": "x", "call_analysis": [1], "to_number": 5})
    assert call.call_status == "unknown" and call.start_timestamp_ms == 1000 and call.end_timestamp_ms == 2000
    assert call.duration_ms == 1000  # derived when the field is unusable
    assert call.metadata == {} and call.call_analysis == {} and call.to_number is None


def test_voicemail_from_analysis_or_reason():
    assert Call.from_api({"call_id": "c", "call_status": "ended", "call_analysis": {"in_voicemail": True}}).in_voicemail
    assert Call.from_api({"call_id": "c", "call_status": "ended",
                          "disconnection_reason": "voicemail_reached"}).in_voicemail


@pytest.mark.parametrize("data", [None, [], "call", {"call_status": "ended"}, {"call_id": ""}, {"call_id": 7}])
def test_objects_without_call_id_raise_value_error(data):
    with pytest.raises(ValueError):
        Call.from_api(data)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=3), max_leaves=10)


@given(st.dictionaries(st.sampled_from(["call_status", "disconnection_reason", "start_timestamp", "end_timestamp",
                                        "duration_ms", "metadata", "call_analysis", "to_number", "agent_id",
                                        "call_type", "direction"]), json_values))
def test_parsing_never_crashes_on_any_field_values(fields):
    call = Call.from_api({"call_id": "call_x", **fields})
    assert call.call_id == "call_x"
    assert isinstance(call.is_final, bool) and isinstance(call.in_voicemail, bool)


def test_concurrency_parses_and_computes_room():
    c = Concurrency.from_api({"current_concurrency": 7, "concurrency_limit": 20, "reserved_inbound_concurrency": 3})
    assert (c.current, c.limit, c.available_outbound) == (7, 20, 10)
    assert Concurrency.from_api({}).available_outbound is None


# -- create body ------------------------------------------------------------------------------------


def test_call_settings_map_onto_agent_override():
    body = build_create_body(from_number="+14155550100", to_number="+14155550101", agent_id="agent_x",
                             dynamic_variables={"name": "Ana", "debt": 1200.5, "vip": True, "note": None},
                             metadata={"job_id": "j1", "attempt": 2}, ring_timeout_s=45, max_call_duration_s=600)
    assert body == {
        "from_number": "+14155550100", "to_number": "+14155550101", "override_agent_id": "agent_x",
        "retell_llm_dynamic_variables": {"name": "Ana", "debt": "1200.5", "vip": "true", "note": ""},
        "metadata": {"job_id": "j1", "attempt": 2},
        "agent_override": {"agent": {"ring_duration_ms": 45_000, "max_call_duration_ms": 600_000}},
    }
    assert "ring_timeout" not in str(body)


def test_minimal_body_has_no_optional_fields():
    assert build_create_body(from_number="+1", to_number="+2") == {"from_number": "+1", "to_number": "+2"}


@pytest.mark.parametrize("ring,sent", [(1, 5_000), (5, 5_000), (300, 300_000), (301, 300_000), (29.5, 29_500)])
def test_ring_timeout_is_clamped_to_retell_range(ring, sent):
    body = build_create_body(from_number="+1", to_number="+2", ring_timeout_s=ring)
    assert body["agent_override"]["agent"]["ring_duration_ms"] == sent


@pytest.mark.parametrize("seconds,sent", [(30, 60_000), (60, 60_000), (7200, 7_200_000), (10_000, 7_200_000)])
def test_max_duration_is_clamped_to_retell_range(seconds, sent):
    body = build_create_body(from_number="+1", to_number="+2", max_call_duration_s=seconds)
    assert body["agent_override"]["agent"]["max_call_duration_ms"] == sent


def test_extra_agent_override_is_merged():
    body = build_create_body(from_number="+1", to_number="+2", ring_timeout_s=20,
                             agent_override={"agent": {"webhook_url": "http://x/y"}, "retell_llm": {"model": "m"}})
    assert body["agent_override"] == {"agent": {"webhook_url": "http://x/y", "ring_duration_ms": 20_000},
                                      "retell_llm": {"model": "m"}}


@pytest.mark.parametrize("kwargs", [
    {"from_number": "", "to_number": "+2"}, {"from_number": "+1", "to_number": None},
    {"from_number": "+1", "to_number": "+2", "ring_timeout_s": "30"},
    {"from_number": "+1", "to_number": "+2", "max_call_duration_s": float("nan")},
    {"from_number": "+1", "to_number": "+2", "dynamic_variables": {1: "x"}},
])
def test_bad_arguments_raise_value_error_naming_the_field(kwargs):
    with pytest.raises(ValueError):
        build_create_body(**kwargs)


def test_dynamic_variables_become_strings():
    assert to_dynamic_variables({"a": [1, "b"], "b": {"k": 1}, "c": 0, "d": False}) == {
        "a": '[1,"b"]', "b": '{"k":1}', "c": "0", "d": "false"}


@given(st.dictionaries(st.text(min_size=1, max_size=10), json_values, max_size=8))
def test_dynamic_variables_are_always_string_to_string(variables):
    out = to_dynamic_variables(variables)
    assert set(out) == set(variables) and all(isinstance(v, str) for v in out.values())


# -- errors -----------------------------------------------------------------------------------------

ERR = '{"status": "error", "message": "%s"}'


@pytest.mark.parametrize("status,endpoint,message,cls", [
    (400, "create_phone_call", "to_number must be E.164", InvalidDestination),
    (422, "create_phone_call", "from_number not found", CallerIdRejected),
    (400, "create_phone_call", "from_number must be a valid E.164 phone number", CallerIdRejected),
    (422, "create_phone_call", "Agent agent_x not found", AgentNotFound),
    (400, "create_phone_call", "retell_llm_dynamic_variables.x must be a string", ProviderRejected),
    (401, "get_call", "bad key", ProviderAuthError),
    (402, "create_phone_call", "trial ended", PaymentRequired),
    (404, "get_call", "Call x not found", CallNotFound),
    (422, "get_call", "Call x not found", CallNotFound),
    (422, "stop_call", "Item Not Found", CallNotFound),
    (422, "get_call", "call_id malformed", ProviderRejected),
    (404, "create_phone_call", "no route", ProviderRejected),
    (429, "list_calls", "slow down", RateLimited),
    (500, "create_phone_call", "boom", CreateOutcomeUnknown),     # ambiguous: the call may exist
    (503, "create_phone_call", "down", CreateOutcomeUnknown),
    (409, "create_phone_call", "conflict", CreateOutcomeUnknown),
    (503, "get_call", "down", ProviderUnavailable),
    (409, "get_call", "conflict", ProviderUnavailable),
    (502, "create_phone_call", "bad gateway", CreateOutcomeUnknown),
    (504, "create_phone_call", "gateway timeout", CreateOutcomeUnknown),
    (504, "get_call", "gateway timeout", ProviderTimeout),
    (408, "get_concurrency", "timeout", ProviderTimeout),
])
def test_error_classes(status, endpoint, message, cls):
    error = error_from_response(status, ERR % message, {}, endpoint=endpoint)
    assert type(error) is cls
    assert error.message == message and error.status == status
    assert error.retryable is (cls in (RateLimited, ProviderUnavailable, ProviderTimeout))


def test_non_json_error_body_keeps_its_text():
    error = error_from_response(400, "plain words", {}, endpoint="get_call")
    assert error.message == "plain words"


@pytest.mark.parametrize("headers,seconds", [
    ({"retry-after-ms": "1500"}, 1.5), ({"retry-after": "3"}, 3.0),
    ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
    ({"retry-after": "soon"}, None), ({}, None), ({"retry-after": "-1"}, None),
    ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),
])
def test_retry_after(headers, seconds):
    assert parse_retry_after(headers) == seconds
    error = error_from_response(429, ERR % "x", headers, endpoint="get_call")
    assert isinstance(error, RateLimited) and error.retry_after_s == seconds


@given(st.integers(min_value=0, max_value=20), st.integers(min_value=0, max_value=2**32))
def test_backoff_is_jittered_exponential_and_capped(attempt, seed):
    delay = _backoff_s(attempt, base_s=0.5, max_s=8.0, rng=random.Random(seed))
    nominal = min(8.0, 0.5 * 2 ** attempt)
    assert 0.75 * nominal <= delay <= nominal
