"""retry_delay_by_outcome: parsing and validation, and which delay a failed round waits."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.config import Config
from shared.domain.call_settings import (
    RETRY_DELAY_OUTCOMES,
    InvalidCallSettings,
    RetryDelay,
    choose_retry_delay,
    default_call_settings,
    parse_call_settings,
    retry_delay,
)
from shared.domain.outcomes import Outcome

CONFIG = Config()


def parse(raw):
    return parse_call_settings(raw, config=CONFIG)


def errors_of(raw) -> dict[str, str]:
    with pytest.raises(InvalidCallSettings) as info:
        parse(raw)
    return dict(info.value.errors)


# --- parsing ---------------------------------------------------------------------------------------------------


def test_the_accepted_outcomes_are_those_that_can_end_a_round():
    assert RETRY_DELAY_OUTCOMES == ("voicemail", "no_answer", "busy", "failed_dial", "invalid_number", "timeout",
                                    "dropped", "unsuccessful")


def test_parsed_normalised_and_round_tripped():
    raw = {"retry_delay_hours": 4, "retry_delay_by_outcome": {"voicemail": 24, "busy": 0.25, "no_answer": 2,
                                                              "timeout": None}}
    s = parse(raw)
    assert s.retry_delay_by_outcome == {"voicemail": 24.0, "no_answer": 2.0, "busy": 0.25}
    assert all(isinstance(v, float) for v in s.retry_delay_by_outcome.values())
    doc = s.to_document()
    assert doc == {"retry_delay_hours": 4.0,
                   "retry_delay_by_outcome": {"voicemail": 24.0, "no_answer": 2.0, "busy": 0.25}}
    assert parse(doc).to_document() == doc and parse(doc).retry_delay_by_outcome == s.retry_delay_by_outcome
    doc["retry_delay_by_outcome"]["busy"] = 9
    assert s.to_document()["retry_delay_by_outcome"]["busy"] == 0.25  # a copy


@pytest.mark.parametrize("raw", [None, {}, {"retry_delay_by_outcome": None}])
def test_unset_means_no_outcome_has_its_own_delay(raw):
    s = parse(raw)
    assert s.retry_delay_by_outcome == {} and "retry_delay_by_outcome" not in s.to_document()


def test_an_empty_object_is_kept():
    assert parse({"retry_delay_by_outcome": {}}).to_document() == {"retry_delay_by_outcome": {}}


@pytest.mark.parametrize(("value", "field", "problem"), [
    ([1], "retry_delay_by_outcome", "must be an object of outcome -> hours"),
    ("busy", "retry_delay_by_outcome", "must be an object of outcome -> hours"),
    ({"answered": 1}, "retry_delay_by_outcome.answered", "not an outcome that ends a round"),
    ({"provider_fault": 1}, "retry_delay_by_outcome.provider_fault", "not an outcome that ends a round"),
    ({"Busy": 1}, "retry_delay_by_outcome.Busy", "known: voicemail, no_answer, busy"),
    ({"busy": "1"}, "retry_delay_by_outcome.busy", "must be a number, got str"),
    ({"busy": True}, "retry_delay_by_outcome.busy", "must be a number, got bool"),
    ({"busy": [1]}, "retry_delay_by_outcome.busy", "must be a number, got list"),
    ({"busy": -0.01}, "retry_delay_by_outcome.busy", "between 0.0 and 720.0"),
    ({"voicemail": 720.5}, "retry_delay_by_outcome.voicemail", "between 0.0 and 720.0"),
    ({"timeout": float("nan")}, "retry_delay_by_outcome.timeout", "finite"),
])
def test_bad_values_name_the_field(value, field, problem):
    found = errors_of({"retry_delay_by_outcome": value})
    assert list(found) == [field] and problem in found[field]


def test_every_bad_key_is_named_at_once():
    found = errors_of({"retry_delay_by_outcome": {"busy": -1, "nope": 2, "voicemail": 3}, "max_attempts": 0})
    assert set(found) == {"retry_delay_by_outcome.busy", "retry_delay_by_outcome.nope", "max_attempts"}


_hours = st.floats(0, 720, allow_nan=False) | st.integers(0, 720)
_value = _hours | st.floats(allow_nan=True) | st.integers(-1000, 2000) | st.text(max_size=4) | st.booleans() \
    | st.none() | st.lists(st.integers(), max_size=2)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from([*RETRY_DELAY_OUTCOMES, "answered", "x", ""]), _value, max_size=9))
def test_any_object_is_accepted_exactly_when_every_entry_is_valid(value):
    def valid(k, v):
        if v is None:
            return k in RETRY_DELAY_OUTCOMES
        number = isinstance(v, int | float) and not isinstance(v, bool)
        return k in RETRY_DELAY_OUTCOMES and number and 0 <= v <= 720
    ok = all(valid(k, v) for k, v in value.items())
    try:
        parsed = parse({"retry_delay_by_outcome": value})
    except InvalidCallSettings as exc:
        assert not ok
        bad = {f"retry_delay_by_outcome.{k}" for k, v in value.items() if not valid(k, v)}
        assert {f for f, _ in exc.errors} == bad
        return
    assert ok
    assert parsed.retry_delay_by_outcome == {k: float(v) for k, v in value.items() if v is not None}
    assert parse(parsed.to_document()).to_document() == parsed.to_document()


# --- selection ---------------------------------------------------------------------------------------------


def test_the_outcome_of_the_call_that_ended_the_round_picks_the_delay():
    s = parse({"retry_delay_hours": 4, "retry_delay_by_outcome": {"busy": 0.25, "no_answer": 2, "voicemail": 24}})
    assert choose_retry_delay(s, "busy") == RetryDelay(timedelta(minutes=15), "busy")
    assert choose_retry_delay(s, Outcome.VOICEMAIL) == RetryDelay(timedelta(hours=24), "voicemail")
    assert choose_retry_delay(s, "no_answer").hours == 2
    assert choose_retry_delay(s, "timeout") == RetryDelay(timedelta(hours=4))      # not listed
    assert choose_retry_delay(s, None) == RetryDelay(timedelta(hours=4))           # no call ended the round
    assert retry_delay(s, "busy") == timedelta(minutes=15) and retry_delay(s) == timedelta(hours=4)


def test_a_zero_delay_for_an_outcome_is_used_not_skipped():
    s = parse({"retry_delay_hours": 4, "retry_delay_by_outcome": {"busy": 0}})
    assert choose_retry_delay(s, "busy") == RetryDelay(timedelta(0), "busy")


def test_without_retry_delay_hours_the_global_default_applies():
    cfg = Config(retry_delay_minutes=45)
    s = parse_call_settings({"retry_delay_by_outcome": {"busy": 1}}, config=cfg)
    assert choose_retry_delay(s, "voicemail") == RetryDelay(timedelta(minutes=45))
    assert choose_retry_delay(default_call_settings(cfg), "busy") == RetryDelay(timedelta(minutes=45))
    assert choose_retry_delay(s, "busy").hours == 1


def test_the_stored_document_parsed_again_selects_the_same_as_the_parsed_settings():
    doc = {"retry_delay_hours": 3, "retry_delay_by_outcome": {"dropped": 6}}
    stored = parse(doc).to_document()
    for outcome in (*RETRY_DELAY_OUTCOMES, None):
        assert choose_retry_delay(parse(stored), outcome) == choose_retry_delay(parse(doc), outcome)


@settings(max_examples=300, deadline=None)
@given(st.none() | _hours, st.dictionaries(st.sampled_from(RETRY_DELAY_OUTCOMES), _hours),
       st.none() | st.sampled_from([o.value for o in Outcome]))
def test_selection_is_the_outcomes_entry_else_retry_delay_hours_else_the_default(base, by_outcome, outcome):
    raw = {"retry_delay_by_outcome": by_outcome}
    if base is not None:
        raw["retry_delay_hours"] = base
    chosen = choose_retry_delay(parse(raw), outcome)
    if outcome in by_outcome:
        assert chosen == RetryDelay(timedelta(hours=float(by_outcome[outcome])), outcome)
    elif base is not None:
        assert chosen == RetryDelay(timedelta(hours=float(base)))
    else:
        assert chosen == RetryDelay(timedelta(minutes=CONFIG.retry_delay_minutes))
