import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.domain.outcomes import EFFECTS, Effect, Outcome, classify, reason_text

# Every disconnection_reason the current Retell SDK knows (reference: retell-api.md, section 4).
KNOWN_REASONS = """user_hangup agent_hangup call_transfer voicemail_reached ivr_reached inactivity
max_duration_reached concurrency_limit_reached no_concurrency_fallback no_valid_payment scam_detected dial_busy
dial_failed dial_no_answer invalid_destination telephony_provider_permission_denied telephony_provider_unavailable
sip_routing_error marked_as_spam user_declined error_llm_websocket_open error_llm_websocket_lost_connection
error_llm_websocket_runtime error_llm_websocket_corrupt_payload error_no_audio_received error_asr error_retell
error_unknown error_user_not_joined registered_call_timeout transfer_bridged transfer_cancelled manual_stopped
call_take_over""".split()


@pytest.mark.parametrize(("reason", "connected", "expected"), [
    ("user_hangup", True, Outcome.ANSWERED),
    ("agent_hangup", True, Outcome.ANSWERED),
    ("dial_no_answer", False, Outcome.NO_ANSWER),
    ("dial_busy", False, Outcome.BUSY),
    ("voicemail_reached", True, Outcome.VOICEMAIL),
    ("invalid_destination", False, Outcome.INVALID_NUMBER),
    ("dial_failed", False, Outcome.FAILED_DIAL),
    ("max_duration_reached", True, Outcome.TIMEOUT),
    ("manual_stopped", True, Outcome.TIMEOUT),
    ("concurrency_limit_reached", False, Outcome.PROVIDER_FAULT),
    ("error_llm_websocket_open", False, Outcome.PROVIDER_FAULT),
    ("error_llm_websocket_lost_connection", True, Outcome.DROPPED),   # a 90 s talk that broke: not "retry soon"
    ("telephony_provider_unavailable", True, Outcome.DROPPED),
    ("telephony_provider_unavailable", False, Outcome.PROVIDER_FAULT),
    ("no_valid_payment", False, Outcome.ACCOUNT_PROBLEM),
    ("a_reason_from_the_future", True, Outcome.ANSWERED),
    ("a_reason_from_the_future", False, Outcome.FAILED_DIAL),
    (None, False, Outcome.FAILED_DIAL),
])
def test_classification_table(reason, connected, expected):
    assert classify(reason, connected=connected) == expected


def test_voicemail_analysis_wins():
    assert classify("user_hangup", connected=True, call_analysis={"in_voicemail": True}) == Outcome.VOICEMAIL
    assert classify("user_hangup", connected=True, call_analysis={"in_voicemail": False}) == Outcome.ANSWERED


def test_a_known_reason_depends_on_the_connection_only_for_provider_faults():
    for reason in KNOWN_REASONS:
        a = classify(reason, connected=True)
        b = classify(reason, connected=False)
        assert a == b or (b == Outcome.PROVIDER_FAULT and a == Outcome.DROPPED), reason


@given(st.one_of(st.none(), st.text(max_size=80)),
       st.one_of(st.none(), st.dictionaries(st.text(max_size=10), st.one_of(st.booleans(), st.text(max_size=5)))))
def test_a_connected_call_is_never_retried_soon(reason, analysis):
    assert EFFECTS[classify(reason, connected=True, call_analysis=analysis)] != Effect.RETRY_SOON


@given(st.one_of(st.none(), st.text(max_size=80)), st.booleans(),
       st.one_of(st.none(), st.dictionaries(st.text(max_size=10), st.one_of(st.booleans(), st.text(max_size=5)))))
def test_classify_never_raises_and_every_outcome_has_an_effect(reason, connected, analysis):
    outcome = classify(reason, connected=connected, call_analysis=analysis)
    assert outcome in EFFECTS
    assert reason_text(outcome, reason, lang="es")


def test_effects():
    assert EFFECTS[Outcome.ANSWERED] == Effect.COMPLETE
    assert EFFECTS[Outcome.INVALID_NUMBER] == Effect.INVALID_PHONE
    assert EFFECTS[Outcome.PROVIDER_FAULT] == Effect.RETRY_SOON
    assert EFFECTS[Outcome.DROPPED] == EFFECTS[Outcome.TIMEOUT] == Effect.FAILED_ROUND
    assert EFFECTS[Outcome.ACCOUNT_PROBLEM] == Effect.HOLD
    assert {EFFECTS[o] for o in (Outcome.NO_ANSWER, Outcome.BUSY, Outcome.VOICEMAIL, Outcome.FAILED_DIAL)} == {
        Effect.NEXT_PHONE}
