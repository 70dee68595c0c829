"""Compliance profiles as data: the built-in files, their validation, the registry and what "auto" chooses."""

from __future__ import annotations

import copy
import json
import threading
from datetime import UTC, datetime
from importlib import resources

import holidays as holidays_lib
import phonenumbers
import pytest

from shared.domain.calling_window import validate_call_settings
from shared.domain.compliance import (
    AREA_CODE_STATES,
    AUTO_TABLE,
    BUILTIN_IDS,
    PURPOSES,
    Cap,
    InvalidProfile,
    ProfileRegistry,
    auto_profile_ids,
    builtin_profiles,
    parse_profile,
    us_state,
)
from shared.domain.shapes import CAP_OUTCOMES, profile_path_exists
from shared.errors import ValidationError

CHECKED_ON = "2026-12-04"
LISTED_IDS = {"us-federal", "us-regf", "us-fl", "us-ok", "us-md", "us-ma", "us-wa", "us-tx", "us-la", "us-ms", "us-al",
              "us-ri", "us-pa", "cl-cobranza", "co-cobranza", "pe-cobranza", "mx-cobranza", "es-comercial"}
#: One area code of each state with profiles, and the state's own profiles by purpose.
STATES = {"FL": "305", "OK": "405", "MD": "410", "MA": "617", "WA": "206", "TX": "512", "LA": "504", "MS": "601",
          "AL": "205", "RI": "401", "PA": "215"}


def files() -> dict[str, dict]:
    folder = resources.files("shared.domain").joinpath("compliance_profiles")
    return {e.name.removesuffix(".json"): json.loads(e.read_text(encoding="utf-8"))
            for e in folder.iterdir() if e.name.endswith(".json")}


def us(area: str) -> str:
    return f"+1{area}2345678"


def test_the_built_in_ids_are_the_listed_ones_one_file_each():
    assert set(BUILTIN_IDS) == LISTED_IDS == set(files()) == set(builtin_profiles())
    assert list(builtin_profiles()) == sorted(LISTED_IDS)


@pytest.mark.parametrize("profile_id", sorted(LISTED_IDS))
def test_every_built_in_parses_and_its_file_is_its_canonical_document(profile_id, config):
    raw = files()[profile_id]
    profile = builtin_profiles()[profile_id]
    assert profile.builtin and profile.id == profile_id and profile.version >= 1
    assert profile.to_document() == raw == parse_profile(raw).to_document()
    assert not parse_profile(raw).builtin
    assert set(profile.purposes) <= set(PURPOSES) and profile.purposes
    assert profile.settings.windows, "every built-in profile has calling hours"
    assert profile.settings.timezone == (profile.fixed_zone or "UTC")
    # the window opens within a year, holidays included
    window = {k: raw[k] for k in ("windows", "holidays") if raw[k] is not None}
    validate_call_settings({**window, "timezone": profile.fixed_zone or "America/New_York"}, config=config,
                           now=datetime(2027, 1, 1, tzinfo=UTC))
    assert profile.country == raw["country"] and (profile.subdivision is None) == (profile.country != "US"
                                                                                  or profile_id in ("us-federal",
                                                                                                    "us-regf"))


@pytest.mark.parametrize("profile_id", sorted(LISTED_IDS))
def test_every_rule_has_its_source_and_the_date_it_was_read(profile_id):
    profile = builtin_profiles()[profile_id]
    assert profile.rules
    for rule in profile.rules:
        assert rule.rule.strip() and rule.source.strip() and rule.checked_on == CHECKED_ON
    for cap in profile.caps:
        assert cap.rule and (cap.days is None) != (cap.hours is None)


@pytest.mark.parametrize("profile_id", sorted(LISTED_IDS))
def test_unconfirmed_names_only_values_of_the_profile(profile_id):
    profile = builtin_profiles()[profile_id]
    assert len(set(profile.unconfirmed)) == len(profile.unconfirmed)
    for path in profile.unconfirmed:
        assert profile_path_exists(profile.document, path), path


@pytest.mark.parametrize("profile_id", sorted(LISTED_IDS))
def test_each_holiday_calendar_exists_in_the_holidays_package(profile_id):
    calendar = builtin_profiles()[profile_id].settings.holidays
    if calendar is None:
        return
    days = holidays_lib.country_holidays(calendar.country, subdiv=calendar.subdivision, years=2027)
    assert len(days) >= 5


def test_what_the_profiles_say():
    p = builtin_profiles()
    regf = p["us-regf"]
    assert regf.purposes == ("collection",) and regf.quiet_days_after_conversation == 7
    (cap,) = regf.caps
    assert (cap.count, cap.days, cap.hours, cap.per) == (7, 7, None, "debt")
    assert set(cap.counts or ()) == {"answered", "voicemail", "no_answer", "timeout", "dropped"}
    assert not any(cap.counted(o) for o in ("busy", "failed_dial", "invalid_number"))
    assert cap.counted("voicemail") and cap.counted(None)
    assert p["us-federal"].purposes == PURPOSES and not p["us-federal"].caps
    for state in ("us-fl", "us-ok", "us-md"):
        assert [(c.count, c.hours, c.days, c.per, c.counts) for c in p[state].caps] == [(3, 24, None, "person", None)]
        assert p[state].purposes == ("telemarketing",)
        assert p[state].settings.windows[0].end == "20:00"
    assert [(c.count, c.days, c.per) for c in p["us-ma"].caps] == [(2, 7, "debt")]
    assert p["us-wa"].settings.windows[0].start == "08:00" and "windows[0].start" in p["us-wa"].unconfirmed
    assert [(w.days, w.start, w.end) for w in p["us-tx"].settings.windows] == [
        ((1, 2, 3, 4, 5, 6), "09:00", "21:00"), ((7,), "12:00", "21:00")]
    assert p["us-ms"].fixed_zone == "America/Chicago" and 7 not in p["us-ms"].settings.windows[0].days
    assert [(w.days, w.start, w.end) for w in p["us-ri"].settings.windows] == [
        ((1, 2, 3, 4, 5), "09:00", "18:00"), ((6,), "10:00", "17:00")]
    for state in ("LA", "AL", "RI", "PA"):
        assert p[f"us-{state.lower()}"].settings.holidays.subdivision == state
    assert p["cl-cobranza"].caps[0] == Cap(count=1, days=7, per="person", counts=None, rule="1 call a week")
    assert set(p["cl-cobranza"].unconfirmed) == {"caps[0].counts", "caps[0].days"}
    assert [(w.days, w.start, w.end) for w in p["co-cobranza"].settings.windows] == [
        ((1, 2, 3, 4, 5), "07:00", "19:00"), ((6,), "08:00", "15:00")]
    assert [(c.count, c.days) for c in p["co-cobranza"].caps] == [(1, 1)]
    assert p["pe-cobranza"].settings.windows[0].days == (1, 2, 3, 4, 5)
    assert (p["mx-cobranza"].settings.windows[0].start, p["mx-cobranza"].settings.windows[0].end) == ("07:00", "22:00")
    assert p["es-comercial"].purposes == ("telemarketing",) and p["es-comercial"].settings.windows[0].days == (
        1, 2, 3, 4, 5)


def test_a_bad_profile_names_each_field():
    good = files()["cl-cobranza"]
    bad = {**copy.deepcopy(good), "id": "Bad Id", "version": 0, "country": "XX", "purposes": ["sales"],
           "windows": [{"days": [1], "start": "8", "end": "20:00"}], "holidays": {"country": "US", "subdivision": "ZZ"},
           "caps": [{"count": 1, "days": 7, "hours": 24}, {"count": 2, "days": 2, "per": "family",
                                                           "counts": ["answered", "ringing"]}],
           "rules": [{"rule": "x", "source": "", "checked_on": "yesterday"}], "color": "red"}
    with pytest.raises(InvalidProfile) as caught:
        parse_profile(bad)
    fields = [f for f, _ in caught.value.errors]
    assert fields == ["color", "id", "version", "country", "purposes[0]", "windows[0].start", "holidays.subdivision",
                      "caps[0].days", "caps[1].per", "caps[1].counts[1]", "rules[0].source", "rules[0].checked_on"]
    assert isinstance(caught.value, ValidationError) and all(m for _, m in caught.value.errors)
    with pytest.raises(InvalidProfile) as caught:
        parse_profile({**good, "unconfirmed": ["caps[3].counts", "windows[0].start", "rules"]})
    assert caught.value.errors == [("unconfirmed[0]", "names no value of this profile: caps[3].counts")]
    with pytest.raises(InvalidProfile) as caught:
        parse_profile({k: v for k, v in good.items() if k not in ("version", "purposes")})
    assert caught.value.errors == [("version", "is required"), ("purposes", "is required")]
    with pytest.raises(InvalidProfile):
        parse_profile([good])


def test_a_minimal_operator_profile_takes_the_defaults():
    profile = parse_profile({"id": "acme-quiet", "version": 1, "name": "ACME: two calls a day", "country": "cl",
                             "purposes": ["reminder", "collection"],
                             "caps": [{"count": 2, "days": 1, "counts": ["answered", "voicemail"]}]})
    assert profile.country == "CL" and profile.purposes == ("collection", "reminder") and not profile.builtin
    assert profile.caps == (Cap(count=2, days=1, counts=("answered", "voicemail")),)
    assert not profile.settings.windows and profile.settings.holidays is None and not profile.rules
    doc = profile.to_document()
    assert doc["windows"] is None and doc["caps"][0] == {"count": 2, "days": 1, "hours": None, "per": "person",
                                                          "counts": ["answered", "voicemail"], "rule": ""}
    assert parse_profile(doc).to_document() == doc


def test_the_auto_table_names_built_in_profiles():
    assert {row.profile for row in AUTO_TABLE} == LISTED_IDS
    for row in AUTO_TABLE:
        profile = builtin_profiles()[row.profile]
        assert (profile.country, profile.subdivision) == (row.country, row.subdivision)


@pytest.mark.parametrize(("phone", "purpose", "expected"), [
    (us("212"), "survey", ("us-federal",)),
    (us("212"), "collection", ("us-federal", "us-regf")),
    (us("305"), "telemarketing", ("us-federal", "us-fl")),
    (us("305"), "collection", ("us-federal", "us-regf")),
    (us("617"), "collection", ("us-federal", "us-regf", "us-ma")),
    (us("617"), "telemarketing", ("us-federal",)),
    (us("206"), "collection", ("us-federal", "us-regf", "us-wa")),
    (us("601"), "telemarketing", ("us-federal", "us-ms")),
    ("+56961234567", "collection", ("cl-cobranza",)),
    ("961234567", "collection", ("cl-cobranza",)),   # national: the region's
    ("+56961234567", "telemarketing", ()),
    ("+573001234567", "collection", ("co-cobranza",)),
    ("+51987654321", "collection", ("pe-cobranza",)),
    ("+525512345678", "collection", ("mx-cobranza",)),
    ("+34612345678", "telemarketing", ("es-comercial",)),
    ("+34612345678", "collection", ()),
    ("+14165550123", "collection", ()),   # Canada
    ("+18005550123", "collection", ("us-federal", "us-regf")),   # US, no state
    ("+5491123456789", "collection", ()),
    ("not a number", "survey", ()),
])
def test_auto_chooses_by_country_state_and_purpose(phone, purpose, expected):
    assert auto_profile_ids(phone, purpose) == expected


@pytest.mark.parametrize("state", sorted(STATES))
def test_auto_adds_the_state_profile_for_its_purposes_only(state):
    profile = builtin_profiles()[f"us-{state.lower()}"]
    for purpose in PURPOSES:
        chosen = auto_profile_ids(us(STATES[state]), purpose)
        assert (profile.id in chosen) == (purpose in profile.purposes), (state, purpose)
        assert chosen[0] == "us-federal"


def test_auto_reads_national_numbers_in_the_region_given():
    assert auto_profile_ids("(305) 234-5678", "telemarketing", region="US") == ("us-federal", "us-fl")
    with pytest.raises(ValueError):
        auto_profile_ids(us("305"), "sales")


def test_the_state_of_a_us_number_is_its_area_codes():
    for state, area in STATES.items():
        assert us_state(us(area)) == state
    assert us_state(us("800")) is None and us_state("+14165550123") is None and us_state("+56961234567") is None
    assert us_state("+1305") is None and us_state("13052345678") is None
    assert set(AREA_CODE_STATES.values()) >= set(STATES) and len(set(AREA_CODE_STATES.values())) == 51
    for area in AREA_CODE_STATES:   # every listed code is a US number (NANPA data, as phonenumbers carries it)
        number = phonenumbers.parse(us(area))
        assert phonenumbers.region_code_for_number(number) == "US", area
    known = {"FL": {"239", "305", "321", "352", "386", "407", "561", "727", "754", "772", "786", "813", "850", "863",
                    "904", "941", "954"},
             "OK": {"405", "539", "580", "918"}, "MD": {"240", "301", "410", "443", "667"},
             "MA": {"339", "351", "413", "508", "617", "774", "781", "857", "978"},
             "WA": {"206", "253", "360", "425", "509", "564"}, "LA": {"225", "318", "337", "504", "985"},
             "MS": {"228", "601", "662", "769"}, "AL": {"205", "251", "256", "334", "938"}, "RI": {"401"},
             "PA": {"215", "267", "412", "484", "570", "610", "717", "724", "814", "878"},
             "TX": {"210", "214", "281", "512", "713", "817", "832", "972"}}
    for state, codes in known.items():
        assert {a for a, s in AREA_CODE_STATES.items() if s == state} >= codes, state


def test_the_registry_overrides_and_extends_the_built_ins():
    registry = ProfileRegistry()
    assert [p.id for p in registry.all()] == sorted(LISTED_IDS) and registry.problems() == []
    override = {**files()["cl-cobranza"], "version": 2,
                "caps": [{"count": 2, "days": 7, "per": "person", "counts": ["answered"], "rule": "2 a week"}],
                "unconfirmed": [], "_id": "cl-cobranza", "updated_at": 1}
    extra = {"_id": "acme", "id": "acme", "version": 1, "name": "ACME", "country": "US", "purposes": ["survey"],
             "updated_at": 2}
    broken = {"_id": "us-fl", **files()["us-fl"], "version": "two"}
    elsewhere = {**files()["us-tx"], "_id": "us-tx-copy"}
    registry.install([override, extra, broken, elsewhere])
    assert registry.get("cl-cobranza").version == 2 and not registry.get("cl-cobranza").builtin
    assert registry.overridden("cl-cobranza") and not registry.overridden("acme") and not registry.overridden("us-fl")
    assert registry.get("acme").purposes == ("survey",)
    assert registry.get("us-fl").builtin   # a document that no longer parses leaves the built-in in force
    assert [pid for pid, _ in registry.problems()] == ["us-fl", "us-tx-copy"]
    assert "version" in registry.problems()[0][1]
    assert [p.id for p in registry.all()] == sorted(LISTED_IDS | {"acme"})
    registry.install([])
    assert registry.get("cl-cobranza").builtin and registry.get("acme") is None and registry.problems() == []


def test_auto_reads_the_purposes_of_the_profile_in_force():
    registry = ProfileRegistry()
    assert auto_profile_ids(us("205"), "collection", registry=registry) == ("us-federal", "us-regf")
    registry.install([{**files()["us-al"], "purposes": ["collection", "telemarketing"], "unconfirmed": []}])
    assert auto_profile_ids(us("205"), "collection", registry=registry) == ("us-federal", "us-regf", "us-al")


def test_readers_see_whole_installs():
    registry = ProfileRegistry()
    versions = [{**files()["cl-cobranza"], "version": v} for v in range(1, 30)]
    seen: list[int] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            snapshot = registry.all()
            assert len(snapshot) == len(LISTED_IDS)
            seen.append(registry.get("cl-cobranza").version)

    reader = threading.Thread(target=read)
    reader.start()
    for doc in versions:
        registry.install([doc])
    stop.set()
    reader.join()
    assert registry.get("cl-cobranza").version == 29 and seen


def test_cap_outcomes_are_outcomes_of_placed_calls():
    assert CAP_OUTCOMES == ("answered", "voicemail", "no_answer", "busy", "failed_dial", "invalid_number", "timeout",
                            "dropped")


def test_the_documentation_describes_every_profile_its_sources_and_the_auto_table():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "compliance.md").read_text()
    assert "not legal advice" in text
    for profile in builtin_profiles().values():
        section = " ".join(text.split(f"### `{profile.id}`", 1)[1].split("\n### ", 1)[0].split())
        for rule in profile.rules:
            assert rule.source in section, (profile.id, rule.source)
        for path in profile.unconfirmed:
            assert f"`{path}`" in section, (profile.id, path)
        if not profile.unconfirmed:
            assert "**Unconfirmed**: nothing." in section, profile.id
    for row in AUTO_TABLE:
        state = row.subdivision or ("any" if row.country == "US" else "—")
        purposes = ", ".join(builtin_profiles()[row.profile].purposes)
        assert f"| {row.country} | {state} | `{row.profile}` | {purposes} |" in text, row
