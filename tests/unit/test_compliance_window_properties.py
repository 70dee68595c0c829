"""Property tests: the effective calling window of a batch under compliance profiles.

For random settings x profiles x instants x numbers, no time that ``next_allowed_time`` or the preview gives lies
outside any applicable profile's window (read in every zone the callee may be in) or outside the batch's own, and
no earlier instant was allowed by all of them. The instants include Santiago's daylight-saving changes and Chile's
September holidays.
"""

from __future__ import annotations

import dataclasses
import os
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.config import Config
from shared.domain.call_settings import parse_call_settings
from shared.domain.calling_window import (
    NoAllowedTime,
    applicable_profiles,
    excluded_by_profiles,
    is_allowed_time,
    next_allowed_time,
    upcoming_call_times,
)
from shared.domain.compliance import REGISTRY

CONFIG = Config()
EXAMPLES = int(os.environ.get("OUTDIAL_PROPERTY_EXAMPLES", "80"))
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: Chilean, Floridian (Eastern), Texan, Mississippian, Colombian, Peruvian, Mexican and Spanish numbers.
PHONES = ("+56961234567", "+13055550123", "+12145550123", "+16015550123", "+573001234567", "+51912345678",
          "+525512345678", "+34612345678")
PROFILE_IDS = ("cl-cobranza", "us-federal", "us-regf", "us-fl", "us-tx", "us-ms", "us-ri", "co-cobranza",
               "pe-cobranza", "mx-cobranza", "es-comercial")
WINDOWS = st.sampled_from([
    {},
    {"days_of_week": [1, 2, 3, 4, 5, 6], "allowed_hours": {"start": "09:00", "end": "20:00"}},
    {"windows": [{"days": [1, 2, 3, 4, 5, 6, 7], "start": "06:00", "end": "23:00"}]},
    {"days_of_week": [6, 7], "allowed_hours": {"start": "10:00", "end": "14:00"}},
    {"allowed_hours": {"start": "21:00", "end": "07:00"}},
])
ZONES = st.sampled_from(["America/Santiago", "auto", "America/New_York", "Europe/Madrid"])
#: Santiago's clocks change in April and September, and September 18-19 are Chile's national holidays.
INSTANTS = st.one_of(
    st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)),
    st.sampled_from([datetime(2026, 4, 4, 23, 0), datetime(2026, 9, 5, 23, 0), datetime(2026, 9, 17, 20, 0),
                     datetime(2027, 9, 16, 22, 30), datetime(2026, 12, 31, 23, 59)]).map(
        lambda d: d.replace(tzinfo=UTC)))


def _compliance(draw: st.DrawFn) -> list[str] | str:
    if draw(st.booleans()):
        return "auto"
    return draw(st.lists(st.sampled_from(PROFILE_IDS), min_size=1, max_size=3, unique=True))


@st.composite
def cases(draw: st.DrawFn) -> tuple:
    window = draw(WINDOWS)
    zone = draw(ZONES)
    raw = {**window, "timezone": zone, "compliance": _compliance(draw),
           "purpose": draw(st.sampled_from(["collection", "telemarketing", "reminder", "survey"]))}
    if draw(st.booleans()):
        raw["holidays"] = "CL"
    return parse_call_settings(raw), draw(st.sampled_from(PHONES)), draw(INSTANTS), draw(
        st.sampled_from([None, None, "America/Bogota", "Europe/Madrid"]))


def _inside_every_profile(s, phone, at, contact_timezone) -> bool:
    own = parse_call_settings({k: v for k, v in s.raw.items() if k not in ("compliance", "purpose")})
    if not is_allowed_time(own, at, phone, contact_timezone=contact_timezone, config=CONFIG)[0]:
        return False
    for profile in applicable_profiles(s, phone, config=CONFIG):
        zones = ([profile.fixed_zone] if profile.fixed_zone else
                 [z for z in (contact_timezone,) if z] + list(_number_zones(phone)))
        for zone in zones or ["UTC"]:
            if not is_allowed_time(dataclasses.replace(profile.settings, timezone=zone), at, config=CONFIG)[0]:
                return False
    return True


def _number_zones(phone: str) -> tuple[str, ...]:
    from shared.domain.phones import phone_timezones

    return tuple(phone_timezones(phone))


@PROPERTY
@given(cases())
def test_the_next_allowed_time_is_inside_the_batch_and_every_profile(case):
    s, phone, now, contact_timezone = case
    try:
        at = next_allowed_time(s, now, phone, contact_timezone=contact_timezone, config=CONFIG)
    except NoAllowedTime:
        return
    assert at >= now
    assert _inside_every_profile(s, phone, at, contact_timezone), (s.raw, phone, now, at)
    assert is_allowed_time(s, at, phone, contact_timezone=contact_timezone, config=CONFIG)[0]
    # nothing earlier was allowed by all of them (probed every 20 minutes, and just before)
    probe = now
    while probe < at - timedelta(seconds=1) and probe < now + timedelta(days=10):
        assert not is_allowed_time(s, probe, phone, contact_timezone=contact_timezone, config=CONFIG)[0], probe
        probe += timedelta(minutes=20)
    if at > now:
        assert not is_allowed_time(s, at - timedelta(seconds=1), phone, contact_timezone=contact_timezone,
                                   config=CONFIG)[0]


@PROPERTY
@given(cases())
def test_the_preview_proposes_only_allowed_times_and_explains_the_excluded_ones(case):
    s, phone, now, contact_timezone = case
    try:
        times = upcoming_call_times(s, now, 5, phone, contact_timezone=contact_timezone, config=CONFIG)
    except NoAllowedTime:
        return
    profiles = {p.id for p in applicable_profiles(s, phone, config=CONFIG)}
    for entry in times:
        assert _inside_every_profile(s, phone, entry["at"], contact_timezone), (s.raw, phone, entry)
        assert {p["id"] for p in entry["profiles"]} == profiles
    for gone in excluded_by_profiles(s, now, 5, phone, contact_timezone=contact_timezone, config=CONFIG):
        assert gone["profile"] in profiles and gone["why"].startswith(gone["profile"] + ": ")
        assert not is_allowed_time(s, gone["at"], phone, contact_timezone=contact_timezone, config=CONFIG)[0]


def test_every_built_in_profile_is_known():
    assert {p for p in PROFILE_IDS if REGISTRY.get(p) is None} == set()


def test_a_batch_naming_an_unknown_profile_or_one_that_closes_every_time_is_refused():
    import pytest

    from shared.domain.call_settings import InvalidCallSettings
    from shared.domain.calling_window import validate_call_settings

    with pytest.raises(InvalidCallSettings) as unknown:
        validate_call_settings({"compliance": ["cl-cobranza", "xx-nothing"]}, config=CONFIG)
    assert [f for f, _ in unknown.value.errors] == ["compliance[1]"]
    with pytest.raises(InvalidCallSettings) as closed:   # Sundays only, under a law with no Sunday calls
        validate_call_settings({"days_of_week": [7], "compliance": ["cl-cobranza"]}, config=CONFIG)
    assert closed.value.errors[0][0] == "compliance" and "share no instant" in closed.value.errors[0][1]
    assert validate_call_settings({"days_of_week": [6, 7], "compliance": ["cl-cobranza"]},
                                  config=CONFIG).compliance == ("cl-cobranza",)
