"""call_settings: defaults, normalisation, and every validation error path."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.config import Config
from shared.domain.call_settings import (
    KNOWN_FIELDS,
    CallSettings,
    HolidayCalendar,
    InvalidCallSettings,
    Window,
)
from shared.domain.calling_window import validate_call_settings
from shared.errors import ValidationError

CONFIG = Config()
NOW = datetime(2025, 1, 20, 12, tzinfo=UTC)

# The three example batches of the original design (original-worker.md, "Caso 1/2/3").
EXAMPLES = [
    {"max_call_duration": 600, "ring_timeout": 45, "max_attempts": 5, "retry_delay_hours": 2,
     "allowed_hours": {"start": "09:00", "end": "20:00"}, "days_of_week": [1, 2, 3, 4, 5, 6],
     "timezone": "America/Santiago"},
    {"max_call_duration": 300, "ring_timeout": 30, "max_attempts": 2, "retry_delay_hours": 48,
     "allowed_hours": {"start": "10:00", "end": "18:00"}, "days_of_week": [2, 3, 4], "timezone": "America/Santiago"},
    {"max_call_duration": 420, "ring_timeout": 40, "max_attempts": 3, "retry_delay_hours": 24,
     "allowed_hours": {"start": "11:00", "end": "19:00"}, "days_of_week": [1, 2, 3, 4, 5],
     "timezone": "America/Argentina/Buenos_Aires"},
]


def parse(raw, **kw) -> CallSettings:
    """The door every batch's settings pass: the field checks and defaults, then a window that opens in a year."""
    return validate_call_settings(raw, config=kw.pop("config", CONFIG), now=kw.pop("now", NOW), **kw)


def errors_of(raw, **kw) -> dict[str, str]:
    with pytest.raises(InvalidCallSettings) as info:
        parse(raw, **kw)
    found = dict(info.value.errors)
    for name, message in info.value.errors:
        assert f"{name}: {message}" in str(info.value)
    return found


# --- defaults -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [None, {}])
def test_no_settings_are_the_original_workers_defaults(raw):
    s = parse(raw)
    assert (s.max_attempts, s.retry_delay_hours, s.max_call_duration, s.ring_timeout) == (3, 0.5, 600, 30)
    assert s.timezone == "America/Santiago" and s.on_insufficient_balance == "fail"
    assert s.windows == () and s.holidays is None and s.blackout_dates == () and not s.restricts_time
    assert s.to_document() == {} and s.raw == {}
    assert (s.max_call_duration_ms, s.ring_timeout_ms) == (600_000, 30_000)


def test_defaults_come_from_the_config():
    config = Config(max_tries=7, retry_delay_minutes=90, call_max_duration_minutes=3, ring_timeout_seconds=20,
                    default_timezone="Europe/London")
    s = parse({}, config=config)
    assert (s.max_attempts, s.retry_delay_hours, s.max_call_duration, s.ring_timeout, s.timezone) == (
        7, 1.5, 180, 20, "Europe/London")


def test_a_config_duration_outside_retells_range_is_clamped():
    assert parse({}, config=Config(call_max_duration_minutes=0.5)).max_call_duration == 60
    assert parse({}, config=Config(call_max_duration_minutes=500)).max_call_duration == 7200


def test_default_zero_retry_delay_from_config_is_kept():
    assert parse({}, config=Config(retry_delay_minutes=0)).retry_delay_hours == 0


# --- the example batches and normalisation --------------------------------------------------------------------


@pytest.mark.parametrize("raw", EXAMPLES)
def test_example_batches_parse_and_store_as_given(raw):
    s = parse(raw)
    assert s.to_document() == raw
    assert s.max_attempts == raw["max_attempts"] and s.timezone == raw["timezone"]
    assert s.windows == (Window(days=tuple(raw["days_of_week"]), start=raw["allowed_hours"]["start"],
                                end=raw["allowed_hours"]["end"]),)
    assert parse(s.to_document()).to_document() == raw


def test_document_is_normalised_and_fills_nothing_in():
    s = parse({"days_of_week": [5, 1, 1, 3], "allowed_hours": {"start": "9:00"}, "max_call_duration": 120.0,
               "retry_delay_hours": 1, "timezone": " AUTO ", "fallback_timezone": "Europe/London",
               "holidays": {"country": "us", "subdivision": "ca"},
               "blackout_dates": ["2025-12-31", "2025-12-24", "2025-12-31"], "on_insufficient_balance": "Wait",
               "max_attempts": None})
    assert s.to_document() == {
        "days_of_week": [1, 3, 5], "allowed_hours": {"start": "09:00"}, "max_call_duration": 120,
        "retry_delay_hours": 1.0, "timezone": "auto", "fallback_timezone": "Europe/London",
        "holidays": {"country": "US", "subdivision": "CA"}, "blackout_dates": ["2025-12-24", "2025-12-31"],
        "on_insufficient_balance": "wait",
    }
    assert s.allowed_hours == ("09:00", "24:00") and s.days_of_week == (1, 3, 5)
    assert s.windows == (Window(days=(1, 3, 5), start="09:00", end="24:00"),)
    assert s.holidays == HolidayCalendar(country="US", subdivision="CA")
    assert s.blackout_dates == (date(2025, 12, 24), date(2025, 12, 31))
    assert s.max_attempts == 3 and s.on_insufficient_balance == "wait"
    assert isinstance(s.max_call_duration, int) and isinstance(s.retry_delay_hours, float)


def test_document_is_a_copy():
    s = parse({"days_of_week": [1, 2]})
    s.to_document()["days_of_week"].append(7)
    assert s.to_document() == {"days_of_week": [1, 2]}


def test_shorthand_parts_alone():
    assert parse({"days_of_week": [6, 7]}).windows == (Window(days=(6, 7), start="00:00", end="24:00"),)
    assert parse({"allowed_hours": {"end": "17:30"}}).windows == (
        Window(days=(1, 2, 3, 4, 5, 6, 7), start="00:00", end="17:30"),)


def test_windows_and_holidays_as_string():
    s = parse({"windows": [{"days": [1, 2, 3, 4, 5], "start": "07:00", "end": "19:00"},
                           {"days": [6], "start": "08:00", "end": "15:00"}], "holidays": "co"})
    assert [w.to_document() for w in s.windows] == s.to_document()["windows"]
    assert s.to_document()["holidays"] == "CO" and s.holidays == HolidayCalendar(country="CO")
    assert s.windows[1].start_minute == 480 and s.windows[1].end_minute == 900 and not s.windows[1].overnight


def test_overnight_and_midnight_ends():
    overnight = parse({"allowed_hours": {"start": "22:00", "end": "02:00"}}).windows[0]
    assert overnight.overnight and overnight.end_minute == 120
    assert parse({"allowed_hours": {"start": "00:00", "end": "24:00"}}).windows[0].end_minute == 1440
    assert parse({"allowed_hours": {"start": "18:00", "end": "00:00"}}).windows[0].overnight


def test_bounds_are_inclusive():
    for name, (low, high) in {"max_call_duration": (60, 7200), "ring_timeout": (5, 300), "max_attempts": (1, 100),
                              "retry_delay_hours": (0, 720)}.items():
        assert getattr(parse({name: low}), name) == low
        assert getattr(parse({name: high}), name) == high


def test_fractional_retry_delay():
    assert parse({"retry_delay_hours": 0.25}).retry_delay_hours == 0.25


def test_invalid_call_settings_is_a_value_error_in_the_error_tree():
    with pytest.raises(InvalidCallSettings) as info:
        parse({"max_attempts": 0})
    assert isinstance(info.value, ValueError) and isinstance(info.value, ValidationError)
    assert str(info.value).startswith("invalid call_settings: max_attempts:")


# --- every validation error path ------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [[], "x", 3])
def test_not_an_object(raw):
    assert errors_of(raw) == {"call_settings": f"must be an object, got {type(raw).__name__}"}


def test_unknown_fields_list_the_known_ones():
    found = errors_of({"colour": "red", "max_attempts": 2})
    assert list(found) == ["colour"]
    assert all(name in found["colour"] for name in KNOWN_FIELDS)


@pytest.mark.parametrize(("name", "value", "problem"), [
    ("max_call_duration", 59, "between 60 and 7200"),
    ("max_call_duration", 7201, "between 60 and 7200"),
    ("max_call_duration", 90.5, "whole number"),
    ("max_call_duration", "600", "must be a number, got str"),
    ("ring_timeout", 4, "between 5 and 300"),
    ("ring_timeout", 301, "between 5 and 300"),
    ("ring_timeout", True, "must be a number, got bool"),
    ("max_attempts", 0, "between 1 and 100"),
    ("max_attempts", 101, "between 1 and 100"),
    ("max_attempts", 2.5, "whole number"),
    ("max_attempts", [3], "must be a number, got list"),
    ("retry_delay_hours", -0.5, "between 0.0 and 720.0"),
    ("retry_delay_hours", 721, "between 0.0 and 720.0"),
    ("retry_delay_hours", float("nan"), "finite"),
    ("retry_delay_hours", float("inf"), "finite"),
])
def test_numbers(name, value, problem):
    found = errors_of({name: value})
    assert list(found) == [name] and problem in found[name]


@pytest.mark.parametrize(("name", "value", "problem"), [
    ("timezone", "Mars/Olympus", "unknown IANA time zone 'Mars/Olympus'"),
    ("timezone", "", "unknown IANA time zone ''"),
    ("timezone", 5, "must be an IANA time zone name"),
])
def test_timezone(name, value, problem):
    found = errors_of({name: value})
    assert problem in found[name] and '"auto"' in found[name]


def test_fallback_timezone():
    assert "unknown IANA time zone" in errors_of({"timezone": "auto", "fallback_timezone": "Nowhere"})[
        "fallback_timezone"]
    assert "unknown IANA time zone 'auto'" in errors_of({"timezone": "auto", "fallback_timezone": "auto"})[
        "fallback_timezone"]
    assert errors_of({"timezone": "America/Santiago", "fallback_timezone": "Europe/London"}) == {
        "fallback_timezone": 'is only used with timezone "auto"'}
    assert errors_of({"fallback_timezone": "Europe/London"}) == {
        "fallback_timezone": 'is only used with timezone "auto"'}


@pytest.mark.parametrize(("value", "problem"), [
    ([], "is empty"),
    ("1-5", "must be a list of weekdays"),
    ([0, 1], "1-7"),
    ([8], "1-7"),
    (["1"], "1-7"),
    ([True], "1-7"),
    ([1.5], "1-7"),
])
def test_days_of_week(value, problem):
    assert problem in errors_of({"days_of_week": value})["days_of_week"]


@pytest.mark.parametrize(("value", "field", "problem"), [
    ("09:00-18:00", "allowed_hours", "must be an object"),
    ({"from": "09:00"}, "allowed_hours", "unknown keys from (known: start, end)"),
    ({"start": "9"}, "allowed_hours.start", '"HH:MM"'),
    ({"start": "24:00"}, "allowed_hours.start", '"23:59"'),
    ({"start": "12:60"}, "allowed_hours.start", '"HH:MM"'),
    ({"start": 9}, "allowed_hours.start", "got int"),
    ({"end": "24:01"}, "allowed_hours.end", '"24:00"'),
    ({"end": "25:00"}, "allowed_hours.end", '"24:00"'),
    ({"end": "9:00am"}, "allowed_hours.end", '"HH:MM"'),
    ({"start": "10:00", "end": "10:00"}, "allowed_hours", "allows no time at all"),
    ({"start": "00:00", "end": "00:00"}, "allowed_hours", "allows no time at all"),
    ({"end": "00:00"}, "allowed_hours", "allows no time at all"),
])
def test_allowed_hours(value, field, problem):
    found = errors_of({"allowed_hours": value})
    assert problem in found[field], found


def test_windows_cannot_be_combined_with_the_shorthand():
    found = errors_of({"windows": [{"days": [1], "start": "09:00", "end": "10:00"}], "days_of_week": [1]})
    assert "cannot be combined" in found["windows"]
    found = errors_of({"windows": [{"days": [1], "start": "09:00", "end": "10:00"}],
                       "allowed_hours": {"start": "09:00"}})
    assert "cannot be combined" in found["windows"]


@pytest.mark.parametrize(("value", "field", "problem"), [
    ({"days": [1]}, "windows", "must be a list"),
    ([], "windows", "is empty"),
    ([{"days": [1], "start": "09:00", "end": "10:00"}] * 51, "windows", "at most 50"),
    (["09:00-10:00"], "windows[0]", "must be an object"),
    ([{"days": [1], "start": "09:00", "end": "10:00", "tz": "UTC"}], "windows[0]", "unknown keys tz"),
    ([{"start": "09:00", "end": "10:00"}], "windows[0].days", "is required"),
    ([{"days": [1], "end": "10:00"}], "windows[0].start", "is required"),
    ([{"days": [1], "start": "09:00"}], "windows[0].end", "is required"),
    ([{"days": [1], "start": "09:00", "end": "10:00"}, {"days": [], "start": "09:00", "end": "10:00"}],
     "windows[1].days", "is empty"),
    ([{"days": [1], "start": "9h", "end": "10:00"}], "windows[0].start", '"HH:MM"'),
    ([{"days": [1], "start": "09:00", "end": "10:61"}], "windows[0].end", '"HH:MM"'),
    ([{"days": [1], "start": "09:00", "end": "09:00"}], "windows[0]", "allows no time at all"),
])
def test_windows(value, field, problem):
    found = errors_of({"windows": value})
    assert problem in found[field], found


@pytest.mark.parametrize(("value", "field", "problem"), [
    (["CO"], "holidays", "must be a country code"),
    ("XX", "holidays", "unknown country 'XX'"),
    ("Colombia", "holidays", "unknown country"),
    ({"country": "ZZ"}, "holidays.country", "unknown country 'ZZ'"),
    ({"country": 5}, "holidays.country", "unknown country 5"),
    ({"subdivision": "CA"}, "holidays.country", "unknown country None"),
    ({"country": "US", "state": "CA"}, "holidays", "unknown keys state"),
    ({"country": "US", "subdivision": "XX"}, "holidays.subdivision", "unknown subdivision 'XX' of US (known: AK"),
    ({"country": "CO", "subdivision": "ANT"}, "holidays.subdivision", "(it has none)"),
])
def test_holidays(value, field, problem):
    found = errors_of({"holidays": value})
    assert problem in found[field], found


@pytest.mark.parametrize(("value", "field", "problem"), [
    ("2025-12-25", "blackout_dates", "must be a list"),
    (["2025-12-25", "2025-02-30"], "blackout_dates[1]", "'2025-02-30'"),
    (["20251225"], "blackout_dates[0]", '"YYYY-MM-DD"'),
    ([20251225], "blackout_dates[0]", '"YYYY-MM-DD"'),
    (["2025-W01-1"], "blackout_dates[0]", '"YYYY-MM-DD"'),
    (["2025-01-01"] * 1001, "blackout_dates", "at most 1000"),
])
def test_blackout_dates(value, field, problem):
    found = errors_of({"blackout_dates": value})
    assert problem in found[field], found


@pytest.mark.parametrize("value", ["later", "", 1, True])
def test_on_insufficient_balance(value):
    found = errors_of({"on_insufficient_balance": value})
    assert "'fail', 'wait'" in found["on_insufficient_balance"]


def test_every_bad_field_is_named_at_once():
    found = errors_of({"max_attempts": 0, "ring_timeout": 1, "timezone": "Nowhere", "days_of_week": [9],
                       "allowed_hours": {"start": "25:00"}, "holidays": "XX", "blackout_dates": ["tomorrow"],
                       "on_insufficient_balance": "retry", "extra": 1})
    assert set(found) == {"max_attempts", "ring_timeout", "timezone", "days_of_week", "allowed_hours.start",
                          "holidays", "blackout_dates[0]", "on_insufficient_balance", "extra"}


# --- settings that allow no instant ---------------------------------------------------------------------------


def test_every_allowed_day_blacked_out_for_a_year_is_rejected():
    sundays = [(date(2025, 1, 26) + timedelta(weeks=k)).isoformat() for k in range(53)]
    raw = {"days_of_week": [7], "blackout_dates": sundays}
    found = errors_of(raw)
    assert "no call could be placed in the year from 2025-01-20 (America/Santiago)" in found["blackout_dates"]
    # A year later the list no longer covers a whole year of Sundays: the same settings are valid.
    assert parse(raw, now=NOW + timedelta(days=365)).blackout_dates[-1] == date(2026, 1, 25)
    # One Sunday missing from the list is enough.
    assert parse({"days_of_week": [7], "blackout_dates": sundays[:30] + sundays[31:]}).days_of_week == (7,)


def test_a_year_of_blackouts_with_auto_zone_checks_the_fallback_zone():
    every_day = [(date(2025, 1, 19) + timedelta(days=k)).isoformat() for k in range(368)]
    found = errors_of({"timezone": "auto", "fallback_timezone": "Asia/Kolkata", "blackout_dates": every_day})
    assert "(Asia/Kolkata)" in found["blackout_dates"]


def test_parse_uses_the_shared_clock_when_now_is_not_given():
    # 2025-01-20 12:00 UTC is Monday 09:00 in Santiago; the Sunday just before is already past.
    from shared.clock import started_at, use_clock

    sundays = [(date(2025, 1, 26) + timedelta(weeks=k)).isoformat() for k in range(53)]
    with use_clock(started_at(datetime(2025, 1, 20, 12, tzinfo=UTC), speed=1e-6)), pytest.raises(InvalidCallSettings):
        validate_call_settings({"days_of_week": [7], "blackout_dates": sundays}, config=CONFIG)
    with use_clock(started_at(datetime(2027, 1, 20, tzinfo=UTC), speed=1e-6)):
        assert validate_call_settings({"days_of_week": [7], "blackout_dates": sundays}, config=CONFIG).restricts_time


# --- robustness ---------------------------------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10_000) | st.floats(allow_nan=True) | st.text(max_size=12)
    | st.sampled_from(["09:00", "24:00", "auto", "CO", "2025-12-25", "America/Santiago", "wait"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["days", "start", "end", "country", "subdivision", "x", "busy", "voicemail"]), inner,
        max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from([*KNOWN_FIELDS, "colour"]), _json, max_size=6))
def test_any_json_is_accepted_or_rejected_with_named_fields(raw):
    try:
        parsed = parse(raw)
    except InvalidCallSettings as exc:
        assert exc.errors and all(isinstance(f, str) and isinstance(m, str) and m for f, m in exc.errors)
        named = {f.split(".")[0].split("[")[0] for f, _ in exc.errors}
        # a missing field another one requires is named too: compliance "auto" needs a purpose
        assert named <= {*raw, "windows", "fallback_timezone", "purpose"}
        return
    assert set(parsed.to_document()) <= set(raw)
    assert parse(parsed.to_document()).to_document() == parsed.to_document()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 7), min_size=1, max_size=7), st.integers(0, 1439), st.integers(1, 1440))
def test_shorthand_round_trips(days, start, end):
    raw = {"days_of_week": days, "allowed_hours": {"start": f"{start // 60:02d}:{start % 60:02d}",
                                                   "end": f"{end // 60:02d}:{end % 60:02d}"}}
    if start == end:
        assert "allowed_hours" in errors_of(raw)
        return
    parsed = parse(raw)
    assert parsed.windows[0].start_minute == start and parsed.windows[0].end_minute == end
    assert parsed.windows[0].days == tuple(sorted(set(days)))
    assert parse(parsed.to_document()).windows == parsed.windows


def test_every_example_in_the_docs_is_valid():
    import json
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "call_settings.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```json\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 6
    for block in blocks:
        raw = json.loads(block)
        assert parse(raw).to_document() == raw


def test_call_settings_never_imports_the_calling_window():
    """The calling window reads call_settings; call_settings needs nothing of it, not even lazily (no cycle)."""
    import ast
    from pathlib import Path

    import shared.domain.call_settings as module

    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert "shared.domain.calling_window" not in imported and imported


def test_a_batch_without_settings_gets_one_shared_defaults_object_per_configuration():
    from shared.domain.call_settings import default_call_settings, parse_call_settings

    assert default_call_settings(CONFIG) is default_call_settings(CONFIG)
    assert default_call_settings(CONFIG) == parse_call_settings(None, config=CONFIG)
    other = Config(max_tries=7)
    assert default_call_settings(other).max_attempts == 7
    assert default_call_settings(CONFIG).max_attempts == CONFIG.max_tries
