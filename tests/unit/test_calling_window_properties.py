"""Property tests: the calling window against a brute-force oracle.

The oracle knows nothing of the implementation's transition tables or weekly intervals: it asks
pytz for the local reading of an instant (``astimezone``), checks the date against the blackout
list and the ``holidays`` package, and the weekday and time of day against each rule as written.
``next_allowed_time`` is checked by walking minute by minute from ``now``: every UTC offset of
these zones (and every window edge) is a whole minute, so the first allowed minute is the answer.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from functools import cache

import holidays as holidays_lib
import pytest
import pytz
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.config import Config
from shared.domain.call_settings import default_call_settings
from shared.domain.calling_window import NoAllowedTime, is_allowed_time, next_allowed_time, validate_call_settings

ZONES = (
    "America/Santiago", "America/New_York", "Europe/London", "Australia/Lord_Howe", "Pacific/Chatham",
    "Asia/Kolkata", "America/Argentina/Buenos_Aires",
)
COUNTRIES = ("CL", "US", "GB", "AU", "NZ", "IN", "AR", "CO")
#: Numbers that map to several zones, and those zones.
MULTI_ZONE_PHONES = ("+61412345678", "+64211234567", "+19075550123")
CONFIG = Config()
FIRST = datetime(2016, 1, 1, tzinfo=UTC)
LAST = datetime(2034, 12, 31, tzinfo=UTC)
#: Longest minute-by-minute walk the oracle does (the settings generated keep answers well inside it).
MAX_WALK = timedelta(days=40)
#: Examples per property; raise ``OUTDIAL_PROPERTY_EXAMPLES`` for a longer search (e.g. 5000 before a release).
EXAMPLES = int(os.environ.get("OUTDIAL_PROPERTY_EXAMPLES", "100"))
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- the oracle ------------------------------------------------------------------------------------------------


@cache
def _calendar(country: str) -> holidays_lib.HolidayBase:
    return holidays_lib.country_holidays(country)


def _rules(raw: dict) -> list[tuple[set[int], int, int]] | None:
    """``[(days, start minute, end minute)]``, or None when any time of day is allowed."""
    if raw.get("windows"):
        return [(set(w["days"]), _minute(w["start"]), _minute(w["end"])) for w in raw["windows"]]
    if raw.get("days_of_week") is None and raw.get("allowed_hours") is None:
        return None
    hours = raw.get("allowed_hours") or {}
    days = set(raw.get("days_of_week") or range(1, 8))
    return [(days, _minute(hours.get("start", "00:00")), _minute(hours.get("end", "24:00")))]


def _minute(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def oracle_allowed_in(raw: dict, zone: str, instant: datetime) -> bool:
    local = instant.astimezone(pytz.timezone(zone))
    day = local.date()
    if day.isoformat() in set(raw.get("blackout_dates") or ()):
        return False
    if raw.get("holidays") and day in _calendar(raw["holidays"]):
        return False
    rules = _rules(raw)
    if rules is None:
        return True
    second = local.hour * 3600 + local.minute * 60 + local.second
    weekday = local.isoweekday()
    yesterday = 7 if weekday == 1 else weekday - 1
    for days, start, end in rules:
        start_s, end_s = start * 60, end * 60
        if end_s > start_s:
            if weekday in days and start_s <= second < end_s:
                return True
        elif (weekday in days and second >= start_s) or (yesterday in days and second < end_s):
            return True
    return False


def oracle_allowed(raw: dict, zones: tuple[str, ...], instant: datetime) -> bool:
    return all(oracle_allowed_in(raw, zone, instant) for zone in zones)


def oracle_next(raw: dict, zones: tuple[str, ...], now: datetime) -> datetime | None:
    """Walk minute by minute; None when nothing is allowed within MAX_WALK."""
    if oracle_allowed(raw, zones, now):
        return now
    minute = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while minute - now <= MAX_WALK:
        if oracle_allowed(raw, zones, minute):
            return minute
        minute += timedelta(minutes=1)
    return None


# --- strategies ----------------------------------------------------------------------------------------------

_EDGE_MINUTES = (0, 30, 60, 90, 120, 150, 165, 180, 210, 1320, 1350, 1380, 1410, 1425, 1439)


@st.composite
def hhmm(draw: st.DrawFn, *, end: bool = False) -> str:
    minute = draw(st.one_of(st.sampled_from(_EDGE_MINUTES), st.integers(0, 1439)))
    if end and draw(st.booleans()) and minute == 0:
        minute = 1440
    return f"{minute // 60:02d}:{minute % 60:02d}"


@st.composite
def rule(draw: st.DrawFn, *, min_hours: int = 0) -> dict:
    days = draw(st.lists(st.integers(1, 7), min_size=1, max_size=7, unique=True))
    start = draw(hhmm())
    if min_hours:
        length = draw(st.integers(min_hours * 60, 23 * 60))
        end_minute = (_minute(start) + length) % 1440
        end = f"{end_minute // 60:02d}:{end_minute % 60:02d}"
    else:
        end = draw(hhmm(end=True).filter(lambda e: _minute(e) != _minute(start)))
    return {"days": sorted(days), "start": start, "end": end}


@st.composite
def instants(draw: st.DrawFn, zone: str) -> datetime:
    """Uniform over 2016-2034, or within three days of one of the zone's clock changes."""
    tz = pytz.timezone(zone)
    changes = [t for t in getattr(tz, "_utc_transition_times", []) if FIRST.replace(tzinfo=None) < t
               < LAST.replace(tzinfo=None)]
    if changes and draw(st.booleans()):
        base = draw(st.sampled_from(changes)).replace(tzinfo=UTC)
        instant = base + timedelta(seconds=draw(st.integers(-3 * 86400, 3 * 86400)))
    else:
        instant = FIRST + timedelta(seconds=draw(st.integers(0, int((LAST - FIRST).total_seconds()))))
    if draw(st.booleans()):
        instant = instant.replace(second=0)
    return instant + timedelta(microseconds=draw(st.sampled_from([0, 0, 1, 500_000, 999_999])))


@st.composite
def scenario(draw: st.DrawFn, *, zones: tuple[str, ...] = ZONES, min_hours: int = 0) -> tuple[dict, str, datetime]:
    zone = draw(st.sampled_from(zones))
    now = draw(instants(zone))
    raw: dict = {"timezone": zone}
    form = draw(st.sampled_from(["windows", "shorthand", "days", "hours", "none"]))
    if form == "windows":
        raw["windows"] = draw(st.lists(rule(min_hours=min_hours), min_size=1, max_size=3))
    elif form == "shorthand":
        r = draw(rule(min_hours=min_hours))
        raw["days_of_week"], raw["allowed_hours"] = r["days"], {"start": r["start"], "end": r["end"]}
    elif form == "days":
        raw["days_of_week"] = draw(st.lists(st.integers(1, 7), min_size=1, max_size=7, unique=True))
    elif form == "hours":
        r = draw(rule(min_hours=min_hours))
        raw["allowed_hours"] = {"start": r["start"], "end": r["end"]}
    if draw(st.integers(0, 3)) == 0:
        raw["holidays"] = draw(st.sampled_from(COUNTRIES))
    local_day = now.astimezone(pytz.timezone(zone)).date()
    offsets = draw(st.lists(st.integers(-2, 12), max_size=4))
    if offsets:
        raw["blackout_dates"] = [(local_day + timedelta(days=k)).isoformat() for k in offsets]
    if form == "none" and "holidays" not in raw and not offsets:
        raw["blackout_dates"] = [local_day.isoformat()]
    return raw, zone, now


def _parse(raw: dict, now: datetime):
    return validate_call_settings(raw, config=CONFIG, now=now)


# --- properties ----------------------------------------------------------------------------------------------


@PROPERTY
@given(scenario())
def test_is_allowed_time_agrees_with_the_oracle(case):
    raw, zone, now = case
    allowed, reason = is_allowed_time(_parse(raw, now), now, config=CONFIG)
    assert allowed == oracle_allowed(raw, (zone,), now), (raw, now.isoformat())
    assert (reason is None) == allowed
    if reason is not None:
        assert zone in reason


@PROPERTY
@given(scenario())
def test_next_allowed_time_is_the_first_allowed_minute(case):
    raw, zone, now = case
    found = next_allowed_time(_parse(raw, now), now, config=CONFIG)
    assert found.tzinfo is not None and found.utcoffset() == timedelta(0)
    assert found >= now
    assert found - now <= timedelta(days=366)
    assert is_allowed_time(_parse(raw, now), found, config=CONFIG)[0]
    assert oracle_next(raw, (zone,), now) == found, (raw, now.isoformat())


@PROPERTY
@given(st.data())
def test_contact_timezone_wins(data):
    raw, _, now = data.draw(scenario())
    contact_zone = data.draw(st.sampled_from(ZONES))
    raw = dict(raw, timezone="auto")
    settings_ = _parse(raw, now)
    allowed, _ = is_allowed_time(settings_, now, "+12125550123", contact_timezone=contact_zone, config=CONFIG)
    assert allowed == oracle_allowed(raw, (contact_zone,), now)
    found = next_allowed_time(settings_, now, "+12125550123", contact_timezone=contact_zone, config=CONFIG)
    assert found == oracle_next(raw, (contact_zone,), now)


@settings(max_examples=max(EXAMPLES // 2, 1), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_numbers_with_several_zones_need_every_zone_inside(data):
    from shared.domain.phones import phone_timezones

    phone = data.draw(st.sampled_from(MULTI_ZONE_PHONES))
    zones = phone_timezones(phone)
    raw, _, now = data.draw(scenario(zones=zones, min_hours=9))
    raw = dict(raw, timezone="auto")
    settings_ = _parse(raw, now)
    allowed, reason = is_allowed_time(settings_, now, phone, config=CONFIG)
    assert allowed == oracle_allowed(raw, zones, now)
    assert allowed or any(zone in reason for zone in zones)
    try:
        found = next_allowed_time(settings_, now, phone, config=CONFIG)
    except NoAllowedTime:
        found = None
    expected = oracle_next(raw, zones, now)
    if found is None:
        assert expected is None
    else:
        assert found >= now and oracle_allowed(raw, zones, found)
        if found - now <= MAX_WALK:
            assert expected == found


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(ZONES), st.integers(0, 18 * 365))
def test_default_settings_allow_every_instant(zone, day):
    now = FIRST + timedelta(days=day, seconds=day * 37 % 86400)
    assert is_allowed_time(default_call_settings(CONFIG), now, config=CONFIG) == (True, None)
    assert next_allowed_time(_parse({}, now), now, config=CONFIG) == now


def test_oracle_sees_the_original_examples():
    raw = {"days_of_week": [1, 2, 3, 4, 5], "allowed_hours": {"start": "09:00"}, "timezone": "America/Santiago"}
    saturday = pytz.timezone("America/Santiago").localize(datetime(2025, 1, 25, 15, 0))
    monday = pytz.timezone("America/Santiago").localize(datetime(2025, 1, 27, 9, 0))
    assert oracle_next(raw, ("America/Santiago",), saturday) == monday
    assert next_allowed_time(_parse(raw, saturday), saturday, config=CONFIG) == monday


@pytest.mark.parametrize("zone", ZONES)
def test_whole_minute_offsets_make_the_minute_walk_exact(zone):
    tz = pytz.timezone(zone)
    infos = [info for t, info in zip(tz._utc_transition_times, tz._transition_info, strict=True)
             if datetime(2015, 1, 1) <= t <= datetime(2035, 1, 1)]
    offsets = {info[0].total_seconds() for info in infos} | {tz.utcoffset(datetime(2016, 1, 1)).total_seconds()}
    assert offsets and all(seconds % 60 == 0 for seconds in offsets)
