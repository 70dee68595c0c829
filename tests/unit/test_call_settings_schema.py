"""The call_settings JSON Schema against the validator it is built from (``jsonschema``, draft 2020-12).

- The README's example batches and the schema's own examples are valid under both.
- A hypothesis property over random settings (valid and not): whatever the validator accepts, the schema
  accepts in its canonical form (``to_document()``), and where the raw spelling is refused by the schema only,
  it is a spelling the validator normalises; whatever the schema accepts, the validator accepts, unless its
  422 names one of the rules a JSON Schema cannot express (:data:`VALIDATOR_ONLY_RULES`): there the
  validator is the authority.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.config import Config
from shared.domain.call_settings import FIELDS, RETRY_DELAY_OUTCOMES, InvalidCallSettings
from shared.domain.call_settings_schema import VALIDATOR_ONLY_RULES, call_settings_schema
from shared.domain.calling_window import validate_call_settings

CONFIG = Config()
NOW = datetime(2026, 3, 3, 13, 0, tzinfo=UTC)
SCHEMA = call_settings_schema(CONFIG)
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
README = Path(__file__).resolve().parents[2] / "README.md"

#: How the validator words the rules of VALIDATOR_ONLY_RULES (in that order).
VALIDATOR_ONLY_MESSAGES = (
    re.compile(r"allows no time at all"),
    re.compile(r"no call could be placed|allows no instant"),
    re.compile(r'must be a local date "YYYY-MM-DD"'),
    re.compile(r"unknown subdivision"),
    re.compile(r"weekdays are whole numbers"),
)


def validator_accepts(raw):
    try:
        return validate_call_settings(raw, config=CONFIG, now=NOW)
    except InvalidCallSettings as exc:
        return exc


def readme_examples() -> list[dict]:
    blocks = re.findall(r"```json\n(.*?)\n```", README.read_text(encoding="utf-8"), re.S)
    found = [json.loads(b)["call_settings"] for b in blocks if '"call_settings"' in b]
    assert len(found) >= 3
    return found


def test_the_schema_is_a_valid_draft_2020_12_schema_with_every_field():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert list(SCHEMA["properties"]) == list(FIELDS)
    assert len(VALIDATOR_ONLY_MESSAGES) == len(VALIDATOR_ONLY_RULES)
    for name, spec in FIELDS.items():
        prop = SCHEMA["properties"][name]
        assert prop["description"] == spec.description and prop["examples"] == [spec.example]
        example = {name: spec.example, **({"timezone": "auto"} if name == "fallback_timezone" else {})}
        assert VALIDATOR.is_valid(example), name
        assert not isinstance(validator_accepts(example), InvalidCallSettings), name
        if spec.bounds is not None:
            number = prop["anyOf"][0]
            assert (number["minimum"], number["maximum"]) == spec.bounds
            assert number["type"] == ("integer" if spec.integer else "number")
    assert SCHEMA["properties"]["max_attempts"]["default"] == CONFIG.max_tries


def test_the_readme_examples_and_the_schema_examples_are_valid_under_both():
    for example in [*readme_examples(), *SCHEMA["examples"]]:
        VALIDATOR.validate(example)
        assert not isinstance(validator_accepts(example), InvalidCallSettings), example


def test_what_the_schema_refuses_the_validator_refuses_too():
    for bad in ({"max_attempts": 0}, {"ring_timeout": 301}, {"windows": []}, {"days_of_week": []},
                {"allowed_hours": {"start": "25:00"}}, {"timezone": "Mars/Olympus"}, {"holidays": "XX"},
                {"fallback_timezone": "UTC", "timezone": "UTC"}, {"color": "red"},
                {"windows": [{"days": [1], "start": "09:00", "end": "18:00"}], "days_of_week": [1]},
                {"retry_delay_by_outcome": {"answered": 1}}, {"on_insufficient_balance": "later"}):
        assert not VALIDATOR.is_valid(bad), bad
        assert isinstance(validator_accepts(bad), InvalidCallSettings), bad


_NUMBERS = st.one_of(st.none(), st.integers(-5, 8000), st.floats(-10, 8000, allow_nan=False), st.booleans(),
                     st.just("5"))
_TIMES = st.sampled_from(["09:00", "9:00", "22:00", "02:00", "24:00", "23:59", "00:00", "18:00", "25:00", "9:5",
                          " 09:00", "x"])
_DAYS = st.one_of(st.lists(st.integers(0, 8), max_size=8), st.just("1-5"))
_ZONES = st.sampled_from(["America/Santiago", "America/New_York", "UTC", "auto", "AUTO", "Mars/Olympus",
                          " America/Santiago"])
_WINDOW = st.fixed_dictionaries({"days": _DAYS, "start": _TIMES, "end": _TIMES})
_SETTINGS = st.fixed_dictionaries({}, optional={
    **{name: _NUMBERS for name, spec in FIELDS.items() if spec.bounds is not None},
    "retry_delay_by_outcome": st.one_of(st.none(), st.dictionaries(
        st.sampled_from([*RETRY_DELAY_OUTCOMES, "answered"]), _NUMBERS, max_size=3)),
    "days_of_week": st.one_of(st.none(), _DAYS),
    "allowed_hours": st.one_of(st.none(), st.fixed_dictionaries({}, optional={"start": _TIMES, "end": _TIMES,
                                                                              "color": st.just(1)})),
    "windows": st.one_of(st.none(), st.lists(_WINDOW, max_size=3)),
    "timezone": st.one_of(st.none(), _ZONES),
    "fallback_timezone": st.one_of(st.none(), _ZONES),
    "holidays": st.one_of(st.none(), st.sampled_from(["CL", "cl", "XX", {"country": "US", "subdivision": "CA"},
                                                      {"country": "US", "subdivision": "ZZ"}, {"country": "CL"}, 5])),
    "blackout_dates": st.one_of(st.none(), st.lists(st.sampled_from(["2026-12-24", "2026-02-30", "2026-1-1", "x"]),
                                                    max_size=3)),
    "on_insufficient_balance": st.one_of(st.none(), st.sampled_from(["fail", "wait", "WAIT", "later"])),
    "color": st.just("red"),
})

#: Mostly canonical values, so the run also meets settings both accept and the rules only the validator knows.
_GOOD_TIMES = st.sampled_from(["00:00", "09:00", "18:00", "22:00", "02:00", "24:00"])
_NEARLY_VALID = st.fixed_dictionaries({}, optional={
    **{name: st.integers(int(spec.bounds[0]), int(spec.bounds[1])) for name, spec in FIELDS.items()
       if spec.bounds is not None},
    "days_of_week": st.lists(st.integers(1, 7), min_size=1, max_size=7),
    "allowed_hours": st.fixed_dictionaries({"start": _GOOD_TIMES, "end": _GOOD_TIMES}),
    "timezone": st.sampled_from(["America/Santiago", "auto", "UTC"]),
    "holidays": st.sampled_from(["CL", "US", {"country": "US", "subdivision": "CA"},
                                 {"country": "US", "subdivision": "ZZ"}]),
    "blackout_dates": st.lists(st.sampled_from(["2026-12-24", "2026-02-30", "2026-03-04"]), max_size=2),
    "on_insufficient_balance": st.sampled_from(["fail", "wait"]),
})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_SETTINGS, _NEARLY_VALID))
def test_the_schema_and_the_validator_agree(raw):
    verdict = validator_accepts(raw)
    schema_errors = list(VALIDATOR.iter_errors(raw))
    if not isinstance(verdict, InvalidCallSettings):
        document = verdict.to_document()
        assert VALIDATOR.is_valid(document), (raw, document)
        for error in schema_errors:        # refused spellings are ones the validator normalises
            name = error.absolute_path[0] if error.absolute_path else None
            assert name is not None and raw.get(name) != document.get(name), (raw, error.message)
    elif not schema_errors:
        for name, message in verdict.errors:   # the schema cannot say these: the validator's 422 decides
            assert any(p.search(message) for p in VALIDATOR_ONLY_MESSAGES), (raw, name, message)
