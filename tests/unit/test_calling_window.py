"""Calling windows: the original worker's cases, the three example batches, DST, holidays, zones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import pytz

from shared.config import Config
from shared.domain.call_settings import CallSettings, InvalidCallSettings, parse_call_settings
from shared.domain.calling_window import (
    HORIZON_S,
    NoAllowedTime,
    describe_window,
    is_allowed_time,
    next_allowed_time,
    resolve_timezones,
)

EN = Config()
ES = Config(lang="es")
SANTIAGO = pytz.timezone("America/Santiago")
NEW_YORK = pytz.timezone("America/New_York")

ORIGINAL = {
    "allowed_hours": {"start": "09:00", "end": "18:00"},
    "days_of_week": [1, 2, 3, 4, 5],
    "timezone": "America/Santiago",
}
# The three example batches of the original design (original-worker.md, "Caso 1/2/3").
COLLECTIONS = {
    "max_call_duration": 600, "ring_timeout": 45, "max_attempts": 5, "retry_delay_hours": 2,
    "allowed_hours": {"start": "09:00", "end": "20:00"}, "days_of_week": [1, 2, 3, 4, 5, 6],
    "timezone": "America/Santiago",
}
SURVEY = {
    "max_call_duration": 300, "ring_timeout": 30, "max_attempts": 2, "retry_delay_hours": 48,
    "allowed_hours": {"start": "10:00", "end": "18:00"}, "days_of_week": [2, 3, 4],
    "timezone": "America/Santiago",
}
ARGENTINA = {
    "max_call_duration": 420, "ring_timeout": 40, "max_attempts": 3, "retry_delay_hours": 24,
    "allowed_hours": {"start": "11:00", "end": "19:00"}, "days_of_week": [1, 2, 3, 4, 5],
    "timezone": "America/Argentina/Buenos_Aires",
}


def local(zone: str, *args: int, is_dst: bool | None = None) -> datetime:
    return pytz.timezone(zone).localize(datetime(*args), is_dst=is_dst)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def cs(raw, config=EN) -> CallSettings:
    """``raw`` parsed, as every caller of the calling window does at its door."""
    return parse_call_settings(raw, config=config)


def allowed(settings, now, phone=None, **kw) -> bool:
    return is_allowed_time(cs(settings), now, phone, config=EN, **kw)[0]


def following(settings, now, phone=None, **kw) -> datetime:
    return next_allowed_time(cs(settings), now, phone, config=EN, **kw)


# --- the original worker's tests ------------------------------------------------------------------------------


def test_original_within_hours_is_allowed():
    monday_10 = local("America/Santiago", 2025, 1, 20, 10)
    assert is_allowed_time(cs(ORIGINAL, config=ES), monday_10, config=ES) == (True, None)


def test_original_outside_hours_says_so_in_spanish():
    ok, reason = is_allowed_time(cs(ORIGINAL, config=ES), local("America/Santiago", 2025, 1, 20, 20), config=ES)
    assert not ok
    assert "fuera del horario permitido" in reason.lower()
    assert "20:00" in reason and "America/Santiago" in reason and "09:00-18:00" in reason


def test_original_weekend_day_not_allowed_in_spanish():
    ok, reason = is_allowed_time(cs(ORIGINAL, config=ES), local("America/Santiago", 2025, 1, 25, 10), config=ES)
    assert not ok
    assert "día no permitido" in reason.lower()
    assert "sábado" in reason and "10:00" in reason and "America/Santiago" in reason


def test_english_reasons_by_default_and_lang_override():
    saturday = local("America/Santiago", 2025, 1, 25, 10)
    assert is_allowed_time(cs(ORIGINAL), saturday, config=EN)[1].startswith("day not allowed: Saturday 2025-01-25 "
                                                                          "10:00 America/Santiago (-03)")
    assert is_allowed_time(cs(ORIGINAL), saturday, config=EN, lang="es")[1].startswith("día no permitido")
    evening = local("America/Santiago", 2025, 1, 20, 20)
    assert is_allowed_time(cs(ORIGINAL), evening, config=EN)[1] == (
        "outside allowed hours: Monday 2025-01-20 20:00 America/Santiago (-03); allowed 09:00-18:00")


def test_saturday_afternoon_waits_for_monday_morning():
    # The original example: {days 1-5, allowed_hours {start 09:00}}: Saturday 15:00 -> Monday 09:00.
    settings = {"days_of_week": [1, 2, 3, 4, 5], "allowed_hours": {"start": "09:00"}, "timezone": "America/Santiago"}
    found = following(settings, local("America/Santiago", 2025, 1, 25, 15))
    assert found == local("America/Santiago", 2025, 1, 27, 9)
    assert found.tzinfo is UTC


def test_no_call_settings_allows_any_time():
    for now in (utc(2025, 1, 1, 3), utc(2025, 6, 15, 23, 59, 59, 999999), local("Asia/Kolkata", 2030, 2, 3, 4, 5)):
        assert is_allowed_time(cs(None), now, config=EN) == (True, None)
        assert is_allowed_time(cs({}), now, config=EN) == (True, None)
        assert following(None, now) == now and following(None, now).tzinfo is UTC


# --- the three example batches --------------------------------------------------------------------------------


def test_collections_batch_mon_sat_9_to_20_santiago():
    assert allowed(COLLECTIONS, local("America/Santiago", 2025, 1, 25, 9))       # Saturday
    assert allowed(COLLECTIONS, local("America/Santiago", 2025, 1, 25, 19, 59, 59))
    assert not allowed(COLLECTIONS, local("America/Santiago", 2025, 1, 25, 20))
    assert not allowed(COLLECTIONS, local("America/Santiago", 2025, 1, 26, 12))  # Sunday
    assert not allowed(COLLECTIONS, local("America/Santiago", 2025, 1, 27, 8, 59, 59))
    scl = "America/Santiago"
    assert following(COLLECTIONS, local(scl, 2025, 1, 25, 20)) == local(scl, 2025, 1, 27, 9)
    assert following(COLLECTIONS, local(scl, 2025, 1, 28, 6)) == local(scl, 2025, 1, 28, 9)


def test_survey_batch_tue_thu_10_to_18():
    friday = local("America/Santiago", 2025, 1, 24, 11)
    ok, reason = is_allowed_time(cs(SURVEY), friday, config=EN)
    assert not ok and reason.startswith("day not allowed") and "Tue-Thu" in reason
    assert following(SURVEY, friday) == local("America/Santiago", 2025, 1, 28, 10)
    assert following(SURVEY, local("America/Santiago", 2025, 1, 29, 18)) == local("America/Santiago", 2025, 1, 30, 10)
    assert allowed(SURVEY, local("America/Santiago", 2025, 1, 30, 17, 59))


def test_argentina_batch_uses_the_clients_zone():
    # July: Santiago is UTC-4, Buenos Aires UTC-3: 10:00 in Santiago is 11:00 in Buenos Aires.
    assert allowed(ARGENTINA, local("America/Santiago", 2025, 7, 14, 10))
    assert not allowed(ARGENTINA, local("America/Santiago", 2025, 7, 14, 9, 59))
    assert following(ARGENTINA, local("America/Santiago", 2025, 7, 14, 8)) == local(
        "America/Argentina/Buenos_Aires", 2025, 7, 14, 11)
    ok, reason = is_allowed_time(cs(ARGENTINA), local("America/Santiago", 2025, 7, 14, 18, 30), config=EN)
    assert not ok and "19:30 America/Argentina/Buenos_Aires" in reason


# --- window shapes --------------------------------------------------------------------------------------------


def test_overnight_window_belongs_to_the_day_it_starts():
    settings = {"days_of_week": [1], "allowed_hours": {"start": "22:00", "end": "02:00"}, "timezone": "UTC"}
    assert allowed(settings, utc(2025, 1, 20, 22))            # Monday 22:00
    assert allowed(settings, utc(2025, 1, 21, 1, 59, 59))     # Tuesday 01:59:59, still Monday's window
    assert not allowed(settings, utc(2025, 1, 21, 2))
    assert not allowed(settings, utc(2025, 1, 21, 22, 30))    # Tuesday's evening: Tuesday not allowed
    assert not allowed(settings, utc(2025, 1, 20, 1))         # Monday 01:00 belongs to Sunday's window
    assert following(settings, utc(2025, 1, 21, 2)) == utc(2025, 1, 27, 22)


def test_overnight_window_from_sunday_wraps_into_monday():
    settings = {"windows": [{"days": [7], "start": "23:00", "end": "01:00"}], "timezone": "UTC"}
    assert allowed(settings, utc(2025, 1, 26, 23, 30)) and allowed(settings, utc(2025, 1, 27, 0, 30))
    assert not allowed(settings, utc(2025, 1, 27, 1))
    assert following(settings, utc(2025, 1, 27, 1)) == utc(2025, 2, 2, 23)


def test_end_2400_is_midnight_and_end_is_exclusive():
    settings = {"allowed_hours": {"start": "18:00", "end": "24:00"}, "timezone": "UTC"}
    assert allowed(settings, utc(2025, 1, 20, 23, 59, 59, 999999))
    assert not allowed(settings, utc(2025, 1, 21, 0))
    assert following(settings, utc(2025, 1, 21, 0)) == utc(2025, 1, 21, 18)
    assert not allowed(settings, utc(2025, 1, 21, 17, 59, 59, 999999))


def test_colombia_collection_hours_as_windows():
    settings = {
        "windows": [{"days": [1, 2, 3, 4, 5], "start": "07:00", "end": "19:00"},
                    {"days": [6], "start": "08:00", "end": "15:00"}],
        "timezone": "America/Bogota", "holidays": "CO",
    }
    assert allowed(settings, local("America/Bogota", 2025, 1, 24, 7))
    assert not allowed(settings, local("America/Bogota", 2025, 1, 25, 7, 30))      # Saturday opens at 08:00
    assert allowed(settings, local("America/Bogota", 2025, 1, 25, 14, 59))
    ok, reason = is_allowed_time(cs(settings), local("America/Bogota", 2025, 1, 25, 15), config=EN)
    assert not ok and reason.startswith("outside allowed hours") and "allowed 08:00-15:00" in reason
    assert following(settings, local("America/Bogota", 2025, 1, 25, 15)) == local("America/Bogota", 2025, 1, 27, 7)


def test_overlapping_windows_are_a_union():
    settings = {"windows": [{"days": [1], "start": "09:00", "end": "12:00"},
                            {"days": [1], "start": "11:00", "end": "14:00"}], "timezone": "UTC"}
    assert allowed(settings, utc(2025, 1, 20, 13, 59))
    assert following(settings, utc(2025, 1, 20, 14)) == utc(2025, 1, 27, 9)


def test_microseconds_are_kept_when_allowed_and_edges_are_whole_seconds():
    now = utc(2025, 1, 20, 12, 0, 0, 123456)
    assert following(ORIGINAL, now) == now
    found = following(ORIGINAL, local("America/Santiago", 2025, 1, 20, 8, 59, 59, 999999))
    assert found == local("America/Santiago", 2025, 1, 20, 9) and found.microsecond == 0


# --- daylight-saving time -------------------------------------------------------------------------------------


def test_spring_forward_gap_opens_at_the_first_valid_instant():
    # Santiago, 2025-09-07: 00:00 -04 jumps to 01:00 -03 (at 04:00 UTC).
    settings = {"days_of_week": [7], "allowed_hours": {"start": "00:30", "end": "06:00"},
                "timezone": "America/Santiago"}
    saturday = local("America/Santiago", 2025, 9, 6, 23, 50)
    assert not allowed(settings, saturday)
    assert following(settings, saturday) == utc(2025, 9, 7, 4)
    assert allowed(settings, utc(2025, 9, 7, 4))
    assert not allowed(settings, utc(2025, 9, 7, 3, 59, 59))
    # New York, 2025-03-09: 02:00 EST jumps to 03:00 EDT (07:00 UTC); a window opening at 02:30 opens then.
    ny = {"days_of_week": [7], "allowed_hours": {"start": "02:30", "end": "04:00"}, "timezone": "America/New_York"}
    assert following(ny, utc(2025, 3, 9, 6)) == utc(2025, 3, 9, 7)
    assert following(ny, utc(2025, 3, 9, 8)) == utc(2025, 3, 16, 6, 30)


def test_window_entirely_inside_the_gap_is_skipped_that_day():
    ny = {"days_of_week": [7], "allowed_hours": {"start": "02:00", "end": "02:45"}, "timezone": "America/New_York"}
    assert following(ny, utc(2025, 3, 9, 0)) == utc(2025, 3, 16, 6)   # 2025-03-16 02:00 EDT


def test_fall_back_overlap_is_judged_on_the_real_instant():
    # New York, 2025-11-02: 02:00 EDT falls back to 01:00 EST at 06:00 UTC; 01:00-02:00 happens twice.
    ny = {"days_of_week": [7], "allowed_hours": {"start": "00:00", "end": "01:30"}, "timezone": "America/New_York"}
    assert allowed(ny, utc(2025, 11, 2, 5, 15))           # 01:15 EDT
    assert not allowed(ny, utc(2025, 11, 2, 5, 45))       # 01:45 EDT
    assert allowed(ny, utc(2025, 11, 2, 6, 15))           # 01:15 EST, the second pass
    assert not allowed(ny, utc(2025, 11, 2, 6, 30))       # 01:30 EST
    assert following(ny, utc(2025, 11, 2, 5, 45)) == utc(2025, 11, 2, 6)
    ok, reason = is_allowed_time(cs(ny), utc(2025, 11, 2, 5, 45), config=EN)
    assert not ok and "01:45 America/New_York (EDT)" in reason


def test_window_after_the_overlap_in_santiago():
    # Santiago, 2025-04-06 03:00 UTC: 00:00 -03 falls back to 23:00 -04 on Saturday the 5th.
    settings = {"days_of_week": [6], "allowed_hours": {"start": "23:30", "end": "24:00"},
                "timezone": "America/Santiago"}
    assert allowed(settings, utc(2025, 4, 6, 2, 30))      # 23:30 -03
    assert not allowed(settings, utc(2025, 4, 6, 3, 0))   # 23:00 -04
    assert following(settings, utc(2025, 4, 6, 3, 0)) == utc(2025, 4, 6, 3, 30)


def test_half_hour_dst_in_lord_howe_and_chatham():
    lh = {"days_of_week": [7], "allowed_hours": {"start": "02:00", "end": "03:00"}, "timezone": "Australia/Lord_Howe"}
    # 2025-10-05 02:00 +1030 jumps to 02:30 +11 (15:30 UTC on the 4th): the window opens at 02:30.
    assert following(lh, utc(2025, 10, 4, 12)) == utc(2025, 10, 4, 15, 30)
    chatham = {"allowed_hours": {"start": "09:00", "end": "17:00"}, "timezone": "Pacific/Chatham"}
    assert following(chatham, utc(2024, 12, 31, 18)) == local("Pacific/Chatham", 2025, 1, 1, 9)   # 07:45 +1345
    assert following(chatham, utc(2024, 12, 31, 18)) == utc(2024, 12, 31, 19, 15)
    assert local("Pacific/Chatham", 2025, 1, 1, 9).utcoffset() == timedelta(hours=13, minutes=45)


def test_next_window_days_away_across_a_dst_change():
    settings = {"days_of_week": [2], "allowed_hours": {"start": "09:00", "end": "10:00"},
                "timezone": "America/New_York"}
    found = following(settings, utc(2025, 3, 5, 20))   # Wednesday before the change
    assert found == local("America/New_York", 2025, 3, 11, 9) == utc(2025, 3, 11, 13)


# --- holidays and blackout dates ------------------------------------------------------------------------------


def test_public_holidays_block_the_local_date():
    settings = {"allowed_hours": {"start": "09:00", "end": "18:00"}, "timezone": "America/Santiago", "holidays": "CL"}
    christmas = local("America/Santiago", 2025, 12, 25, 10)
    ok, reason = is_allowed_time(cs(settings), christmas, config=EN)
    assert not ok and reason.startswith("public holiday (Christmas Day): Thursday 2025-12-25 10:00")
    ok, reason = is_allowed_time(cs(settings, config=ES), christmas, config=ES)
    assert not ok and reason.startswith("día feriado") and "jueves" in reason
    assert following(settings, christmas) == local("America/Santiago", 2025, 12, 26, 9)
    # 18-19 September (Independence Day, Army Day) then the weekend is allowed (days not restricted).
    assert following(settings, local("America/Santiago", 2025, 9, 17, 19)) == local("America/Santiago", 2025, 9, 20, 9)


def test_holiday_subdivision():
    settings = {"allowed_hours": {"start": "09:00", "end": "18:00"}, "timezone": "America/Los_Angeles",
                "holidays": {"country": "US", "subdivision": "CA"}}
    cesar_chavez = local("America/Los_Angeles", 2025, 3, 31, 10)
    assert not allowed(settings, cesar_chavez)
    assert allowed(dict(settings, holidays="US"), cesar_chavez)


def test_holiday_blocks_the_after_midnight_part_of_an_overnight_window():
    settings = {"allowed_hours": {"start": "22:00", "end": "02:00"}, "timezone": "America/Santiago", "holidays": "CL"}
    assert allowed(settings, local("America/Santiago", 2025, 12, 24, 23))
    assert not allowed(settings, local("America/Santiago", 2025, 12, 25, 1))
    assert following(settings, local("America/Santiago", 2025, 12, 24, 23, 59, 59)) == local(
        "America/Santiago", 2025, 12, 24, 23, 59, 59)
    assert following(settings, local("America/Santiago", 2025, 12, 25, 0)) == local("America/Santiago", 2025, 12, 26, 0)


def test_blackout_dates():
    settings = dict(ORIGINAL, blackout_dates=["2025-01-20", "2025-01-21"])
    ok, reason = is_allowed_time(cs(settings), local("America/Santiago", 2025, 1, 20, 10), config=EN)
    assert not ok and reason.startswith("blackout date: Monday 2025-01-20 10:00 America/Santiago")
    ok, reason = is_allowed_time(cs(settings, config=ES), local("America/Santiago", 2025, 1, 20, 10), config=ES)
    assert reason.startswith("fecha bloqueada: lunes")
    assert following(settings, local("America/Santiago", 2025, 1, 19, 12)) == local("America/Santiago", 2025, 1, 22, 9)


# --- zones: auto, fallback, contact ---------------------------------------------------------------------------


def test_auto_takes_the_zone_of_the_number():
    settings = {"allowed_hours": {"start": "09:00", "end": "18:00"}, "timezone": "auto"}
    now = utc(2025, 1, 20, 13, 30)   # 08:30 in New York, 10:30 in Santiago
    assert not allowed(settings, now, "+12125550123")
    assert allowed(settings, now, "+56961234567")
    assert following(settings, now, "+12125550123") == utc(2025, 1, 20, 14)
    assert allowed(settings, now, "9 6123 4567")    # national form, PHONE_DEFAULT_REGION CL


def test_auto_without_a_zone_uses_the_fallback_then_the_default():
    settings = {"allowed_hours": {"start": "09:00", "end": "18:00"}, "timezone": "auto",
                "fallback_timezone": "Asia/Kolkata"}
    parsed = parse_call_settings(settings, config=EN)
    assert resolve_timezones(parsed, "not a number", config=EN) == ("Asia/Kolkata",)
    assert resolve_timezones(parsed, None, config=EN) == ("Asia/Kolkata",)
    without = parse_call_settings({"timezone": "auto", "days_of_week": [1]}, config=EN)
    assert resolve_timezones(without, None, config=EN) == ("America/Santiago",)
    assert resolve_timezones(without, None, config=Config(default_timezone="Europe/London")) == ("Europe/London",)
    now = local("Asia/Kolkata", 2025, 1, 20, 8)
    assert following(settings, now) == local("Asia/Kolkata", 2025, 1, 20, 9)


def test_contact_timezone_wins():
    settings = dict(ORIGINAL)
    now = local("Europe/London", 2025, 1, 20, 10)   # 07:00 in Santiago
    assert not allowed(settings, now)
    assert allowed(settings, now, contact_timezone="Europe/London")
    assert allowed(dict(settings, timezone="auto"), now, "+56961234567", contact_timezone="Europe/London")
    assert following(settings, local("Europe/London", 2025, 1, 20, 8), contact_timezone="Europe/London") == local(
        "Europe/London", 2025, 1, 20, 9)
    with pytest.raises(ValueError, match="Mars/Olympus"):
        is_allowed_time(cs(settings), now, contact_timezone="Mars/Olympus", config=EN)


def test_number_with_several_zones_needs_every_zone_inside():
    # +1 907 maps to America/Adak (UTC-10) and America/Anchorage (UTC-9).
    settings = {"allowed_hours": {"start": "09:00", "end": "18:00"}, "timezone": "auto"}
    now = local("America/Anchorage", 2025, 1, 20, 9, 30)   # 08:30 in Adak
    ok, reason = is_allowed_time(cs(settings), now, "+19075550123", config=EN)
    assert not ok and "America/Adak" in reason
    assert following(settings, now, "+19075550123") == local("America/Adak", 2025, 1, 20, 9)
    assert not allowed(settings, local("America/Adak", 2025, 1, 20, 17, 30), "+19075550123")


def test_zones_that_never_share_window_time_raise_no_allowed_time():
    # +1 800 maps to zones from Guam to Newfoundland: no instant is 09:00-10:00 in all of them.
    settings = {"allowed_hours": {"start": "09:00", "end": "10:00"}, "timezone": "auto"}
    with pytest.raises(NoAllowedTime) as info:
        following(settings, utc(2025, 1, 20), "+18005550199")
    assert "Pacific/Guam" in info.value.zones and isinstance(info.value, ValueError)


def test_never_looks_more_than_a_year_ahead():
    assert HORIZON_S == 366 * 86400
    settings = {"allowed_hours": {"start": "09:00", "end": "10:00"}, "timezone": "auto"}
    with pytest.raises(NoAllowedTime, match="year"):
        following(settings, utc(2025, 1, 20), "+18005550199")


# --- inputs ---------------------------------------------------------------------------------------------------


def test_naive_now_is_rejected():
    with pytest.raises(ValueError, match="timezone-aware"):
        is_allowed_time(cs(ORIGINAL), datetime(2025, 1, 20, 10), config=EN)
    with pytest.raises(ValueError, match="timezone-aware"):
        next_allowed_time(cs(ORIGINAL), datetime(2025, 1, 20, 10), config=EN)


def test_invalid_dict_raises_invalid_call_settings_at_the_door_and_only_parsed_settings_are_taken():
    with pytest.raises(InvalidCallSettings, match="days_of_week"):
        cs({"days_of_week": []})
    for not_parsed in ("09:00-18:00", ORIGINAL, None):
        with pytest.raises(TypeError, match="CallSettings"):
            is_allowed_time(not_parsed, utc(2025, 1, 20), config=EN)
        with pytest.raises(TypeError, match="CallSettings"):
            next_allowed_time(not_parsed, utc(2025, 1, 20), config=EN)
        with pytest.raises(TypeError, match="CallSettings"):
            describe_window(not_parsed, config=EN)


def test_settings_parsed_twice_agree_and_equal_values_of_other_types_do_not_collide():
    parsed = parse_call_settings(ORIGINAL, config=EN)
    for hour in range(0, 24, 3):
        now = local("America/Santiago", 2025, 1, 22, hour)
        assert is_allowed_time(parsed, now, config=EN) == is_allowed_time(cs(ORIGINAL), now, config=EN)
    assert allowed({"days_of_week": [1]}, utc(2025, 1, 20, 12))
    with pytest.raises(InvalidCallSettings):
        cs({"days_of_week": [True]})


def test_the_default_zone_is_the_parsing_configs():
    settings = {"days_of_week": [1], "allowed_hours": {"start": "09:00", "end": "10:00"}}
    now = utc(2025, 1, 20, 12, 30)   # Monday: 09:30 in Santiago, 12:30 in London
    assert allowed(settings, now)
    london = Config(default_timezone="Europe/London")
    assert not is_allowed_time(cs(settings, config=london), now, config=london)[0]


# --- describe_window ------------------------------------------------------------------------------------------


def test_describe_window():
    assert describe_window(cs(None), config=EN) == "any time"
    assert describe_window(cs(None, config=ES), config=ES) == "a cualquier hora"
    assert describe_window(cs(ORIGINAL), config=EN) == "Mon-Fri 09:00-18:00 (America/Santiago)"
    assert describe_window(cs(SURVEY, config=ES), config=ES) == "mar-jue 10:00-18:00 (America/Santiago)"
    colombia = {"windows": [{"days": [1, 2, 3, 4, 5], "start": "07:00", "end": "19:00"},
                            {"days": [6], "start": "08:00", "end": "15:00"}],
                "timezone": "America/Bogota", "holidays": "CO", "blackout_dates": ["2030-01-02"]}
    assert describe_window(cs(colombia), config=EN) == (
        "Mon-Fri 07:00-19:00; Sat 08:00-15:00 (America/Bogota), no calls on CO public holidays, "
        "no calls on 1 blackout date(s)")
    auto = {"timezone": "auto", "days_of_week": [1, 3], "fallback_timezone": "Europe/London"}
    assert describe_window(cs(auto), config=EN) == (
        "Mon, Wed 00:00-24:00 (the callee's local time (zone from the phone number, else Europe/London))")
    assert describe_window(cs({"allowed_hours": {"start": "22:00", "end": "02:00"}}), config=EN) == (
        "every day 22:00-02:00 (America/Santiago)")
