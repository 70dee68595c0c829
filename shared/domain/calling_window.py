"""Calling windows: may a contact be called at an instant, and when is the next instant that may.

The window is judged on the callee's local wall clock. An instant is allowed when, in its zone
(every zone, when a number maps to several), the local reading of that real instant

- falls in one of the weekly rules ``[start, end)`` of ``windows`` (or of the ``days_of_week`` +
  ``allowed_hours`` shorthand); a rule whose end is before its start runs overnight and belongs to
  the day it starts on;
- is on a local date that is neither a public holiday of the ``holidays`` calendar nor one of the
  ``blackout_dates``.

Daylight-saving time follows from judging real instants: a window edge inside a spring-forward gap
opens at the first instant after the gap; in a fall-back overlap both passes of a wall-clock minute
are judged by what the clock reads then. No instant outside the window is allowed and none inside
is refused.

The zone is the contact's own ``timezone`` when it has one; else the batch's ``timezone``; with
``timezone: "auto"`` the zones of the phone number (libphonenumber data), or ``fallback_timezone``
(else ``DEFAULT_TIMEZONE``) when the number maps to none.

Everything is computed on integer seconds since the epoch against the zone's transition table, so
``next_allowed_time`` jumps from edge to edge instead of walking. The compiled window is cached on
the :class:`~shared.domain.call_settings.CallSettings` object. Every function takes a parsed
:class:`~shared.domain.call_settings.CallSettings`: a stored or submitted dict is parsed once at the door, by
:func:`validate_call_settings` (the field checks of :func:`~shared.domain.call_settings.parse_call_settings` plus the
check that the window opens within a year).
"""

from __future__ import annotations

import bisect
import dataclasses
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from functools import cache, lru_cache, partial
from typing import Any

import pytz

from shared.config import Config, get_config
from shared.domain.call_settings import (
    AUTO_TIMEZONE,
    CallSettings,
    HolidayCalendar,
    InvalidCallSettings,
    Window,
    parse_call_settings,
)
from shared.domain.compliance import REGISTRY, ComplianceProfile, auto_profile_ids
from shared.domain.shapes import AUTO_COMPLIANCE
from shared.errors import OutdialError

__all__ = [
    "HORIZON_S",
    "NoAllowedTime",
    "applicable_profiles",
    "describe_window",
    "excluded_by_profiles",
    "first_allowed_within_year",
    "is_allowed_time",
    "next_allowed_time",
    "resolve_timezones",
    "upcoming_call_times",
    "validate_call_settings",
]

#: The Unix epoch, UTC.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_ONE_SECOND = timedelta(seconds=1)
#: Seconds in a day and in a week.
DAY_S = 86_400
WEEK_S = 7 * DAY_S
#: 1970-01-05, the first Monday after the epoch, in seconds: the origin of the weekly pattern.
_MONDAY_S = 4 * DAY_S
#: How far ahead :func:`next_allowed_time` looks, seconds (366 days: a leap year).
HORIZON_S = 366 * DAY_S
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_FOREVER = 1 << 62


class NoAllowedTime(OutdialError, ValueError):
    """No instant within a year is allowed, e.g. a number whose zones never share window time.

    Validation rejects settings that allow nothing; this is left for what depends on the contact.
    ``zones`` names the zones that were intersected.
    """

    def __init__(self, message: str, *, zones: Sequence[str]) -> None:
        self.zones = tuple(zones)
        super().__init__(message)


# --- zones -------------------------------------------------------------------------------------------------------


class _Zone:
    """A pytz zone as a sorted table of UTC transition instants (s) and the UTC offset (s) from each."""

    __slots__ = ("_offsets", "_trans", "name", "tz")

    def __init__(self, name: str) -> None:
        tz = pytz.timezone(name)
        self.name = name
        self.tz = tz
        times = getattr(tz, "_utc_transition_times", None)
        info = getattr(tz, "_transition_info", None)
        if times and info:
            self._trans = [(t - _NAIVE_EPOCH) // _ONE_SECOND for t in times]
            self._offsets = [int(i[0].total_seconds()) for i in info]
        else:
            offset = tz.utcoffset(datetime(2000, 1, 1))
            self._trans = [-_FOREVER]
            self._offsets = [int(offset.total_seconds()) if offset is not None else 0]

    def offset_at(self, t: int) -> tuple[int, int]:
        """``(UTC offset, s; next transition instant, s)`` at instant ``t`` (s since the epoch)."""
        i = bisect.bisect_right(self._trans, t) - 1
        if i < 0:
            i = 0
        following = self._trans[i + 1] if i + 1 < len(self._trans) else _FOREVER
        return self._offsets[i], following


@cache
def _zone(name: str) -> _Zone:
    try:
        return _Zone(name)
    except pytz.UnknownTimeZoneError:
        raise ValueError(f"unknown IANA time zone {name!r}") from None


@lru_cache(maxsize=65536)
def _phone_zone_names(phone: str, region: str) -> tuple[str, ...]:
    from shared.domain.phones import InvalidPhone, normalize_phone, phone_timezones

    try:
        e164 = phone if phone.startswith("+") else normalize_phone(phone, region)
    except InvalidPhone:
        return ()
    names: list[str] = []
    for name in phone_timezones(e164):
        if name in pytz.all_timezones_set and name not in names:
            names.append(name)
    return tuple(names)


def resolve_timezones(call_settings: CallSettings, phone: str | None = None, *, contact_timezone: str | None = None,
                      config: Config | None = None) -> tuple[str, ...]:
    """The zones whose local time decides the window for this contact and number.

    :param call_settings: parsed settings.
    :param phone: the number to be dialed (E.164, or national in ``PHONE_DEFAULT_REGION``); used by ``"auto"``.
    :param contact_timezone: the contact's own ``timezone``; when set it wins over everything else.
    :param config: source of ``DEFAULT_TIMEZONE`` and ``PHONE_DEFAULT_REGION``; default the process configuration.
    """
    if contact_timezone:
        return (contact_timezone,)
    if call_settings.timezone != AUTO_TIMEZONE:
        return (call_settings.timezone,)
    config = config or get_config()
    names = _phone_zone_names(phone, config.phone_default_region) if phone else ()
    return names or (call_settings.fallback_timezone or config.default_timezone,)


@lru_cache(maxsize=4096)
def _zones_named(names: tuple[str, ...]) -> tuple[_Zone, ...]:
    return tuple(_zone(name) for name in names)


# --- holidays ----------------------------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _holiday_days(country: str, subdivision: str | None, year: int) -> frozenset[int]:
    """Day indices (days since the epoch) of the calendar's public holidays in ``year``."""
    import holidays

    found = holidays.country_holidays(country, subdiv=subdivision, years=year)
    return frozenset(d.toordinal() - _EPOCH_ORDINAL for d in found if d.year == year)


@lru_cache(maxsize=1024)
def _holiday_names(country: str, subdivision: str | None, year: int, lang: str) -> Mapping[date, str]:
    import holidays

    probe = holidays.country_holidays(country, subdiv=subdivision)
    languages = tuple(getattr(probe, "supported_languages", ()) or ())
    language = next((x for x in languages if x == lang), None) or next(
        (x for x in languages if x.split("_")[0] == lang), None)
    return dict(holidays.country_holidays(country, subdiv=subdivision, years=year, language=language))


# --- texts -------------------------------------------------------------------------------------------------------

_DAY_NAMES = {
    "en": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "es": ("lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo"),
}
_DAY_ABBR = {
    "en": ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"),
    "es": ("lun", "mar", "mié", "jue", "vie", "sáb", "dom"),
}
_TEXTS = {
    "en": {
        "blackout": "blackout date: {stamp}",
        "holiday": "public holiday ({name}): {stamp}",
        "day": "day not allowed: {stamp}; allowed days: {days}",
        "hours": "outside allowed hours: {stamp}; allowed {ranges}",
        "every_day": "every day",
        "any_time": "any time",
        "auto": "the callee's local time (zone from the phone number, else {fallback})",
        "on_holidays": "no calls on {calendar} public holidays",
        "blackouts": "no calls on {count} blackout date(s)",
    },
    "es": {
        "blackout": "fecha bloqueada: {stamp}",
        "holiday": "día feriado ({name}): {stamp}",
        "day": "día no permitido: {stamp}; días permitidos: {days}",
        "hours": "fuera del horario permitido: {stamp}; permitido {ranges}",
        "every_day": "todos los días",
        "any_time": "a cualquier hora",
        "auto": "hora local del contacto (zona según su número; si no, {fallback})",
        "on_holidays": "sin llamadas en feriados de {calendar}",
        "blackouts": "sin llamadas en {count} fecha(s) bloqueada(s)",
    },
}


def _texts(lang: str) -> dict[str, str]:
    return _TEXTS.get(lang, _TEXTS["en"])


def _days_text(days: Sequence[int], lang: str) -> str:
    """``[1, 2, 3, 4, 5]`` -> ``Mon-Fri``; ``[1, 3]`` -> ``Mon, Wed``."""
    names = _DAY_ABBR.get(lang, _DAY_ABBR["en"])
    ordered = sorted(set(days))
    if len(ordered) == 7:
        return _texts(lang)["every_day"]
    runs: list[list[int]] = []
    for d in ordered:
        if runs and d == runs[-1][-1] + 1:
            runs[-1].append(d)
        else:
            runs.append([d])
    parts: list[str] = []
    for run in runs:
        if len(run) >= 3:
            parts.append(f"{names[run[0] - 1]}-{names[run[-1] - 1]}")
        else:
            parts.extend(names[d - 1] for d in run)
    return ", ".join(parts)


# --- the compiled window -----------------------------------------------------------------------------------------


def _weekly_pieces(windows: Sequence[Window]) -> list[tuple[int, int]]:
    """The rules as merged ``[start, end)`` second-of-week intervals (Monday 00:00 = 0), wrapped at the week end."""
    if not windows:
        return [(0, WEEK_S)]
    pieces: list[tuple[int, int]] = []
    for rule in windows:
        start_s, end_s = rule.start_minute * 60, rule.end_minute * 60
        for day in rule.days:
            base = (day - 1) * DAY_S
            begin = base + start_s
            finish = base + end_s if end_s > start_s else base + DAY_S + end_s
            if finish <= WEEK_S:
                pieces.append((begin, finish))
            else:
                pieces.append((begin, WEEK_S))
                pieces.append((0, finish - WEEK_S))
    pieces.sort()
    merged: list[tuple[int, int]] = []
    for begin, finish in pieces:
        if merged and begin <= merged[-1][1]:
            if finish > merged[-1][1]:
                merged[-1] = (merged[-1][0], finish)
        else:
            merged.append((begin, finish))
    return merged


class _Plan:
    """One settings object's window, compiled: weekly intervals plus excluded local dates.

    Wall-clock readings are handled as "local seconds": the local date and time written as if it were UTC,
    counted from the epoch, so day ``L // DAY_S`` is the local date and weekday arithmetic is integer.
    """

    __slots__ = ("_lock", "any_time", "blackout", "calendar", "ends", "excluded_years", "full_week",
                 "has_exclusions", "settings", "starts")

    def __init__(self, settings: CallSettings) -> None:
        self.settings = settings
        merged = _weekly_pieces(settings.windows)
        self.starts = [begin for begin, _ in merged]
        self.ends = [finish for _, finish in merged]
        self.full_week = merged == [(0, WEEK_S)]
        self.blackout = frozenset(d.toordinal() - _EPOCH_ORDINAL for d in settings.blackout_dates)
        self.calendar: HolidayCalendar | None = settings.holidays
        self.has_exclusions = bool(self.blackout) or self.calendar is not None
        self.any_time = self.full_week and not self.has_exclusions
        self.excluded_years: dict[int, frozenset[int]] = {}
        self._lock = threading.Lock()

    def holiday(self, day: int) -> bool:
        """True when local day ``day`` (days since the epoch) is a public holiday of the calendar."""
        calendar = self.calendar
        if calendar is None:
            return False
        year = date.fromordinal(day + _EPOCH_ORDINAL).year
        days = self.excluded_years.get(year)
        if days is None:
            days = _holiday_days(calendar.country, calendar.subdivision, year)
            with self._lock:
                self.excluded_years[year] = days
        return day in days

    def excluded(self, day: int) -> bool:
        return day in self.blackout or self.holiday(day)

    def allowed_wall(self, local_s: int) -> bool:
        """Is the local reading ``local_s`` (local seconds) inside the window?"""
        if self.has_exclusions and self.excluded(local_s // DAY_S):
            return False
        if self.full_week:
            return True
        pos = (local_s - _MONDAY_S) % WEEK_S
        i = bisect.bisect_right(self.starts, pos) - 1
        return i >= 0 and pos < self.ends[i]

    def next_wall(self, local_s: int, stop: int) -> int | None:
        """The smallest allowed reading in ``[local_s, stop)`` (local seconds), or None."""
        starts = self.starts
        while local_s < stop:
            day = local_s // DAY_S
            if self.has_exclusions and self.excluded(day):
                local_s = (day + 1) * DAY_S
                continue
            if self.full_week:
                return local_s
            pos = (local_s - _MONDAY_S) % WEEK_S
            i = bisect.bisect_right(starts, pos) - 1
            if i >= 0 and pos < self.ends[i]:
                return local_s
            j = i + 1
            following = local_s + (starts[j] - pos if j < len(starts) else WEEK_S - pos + starts[0])
            if self.has_exclusions and following >= (day + 1) * DAY_S:
                local_s = (day + 1) * DAY_S
                continue
            return following if following < stop else None
        return None

    def next_in_zone(self, zone: _Zone, t: int, limit: int) -> int | None:
        """The first allowed instant in ``[t, limit]`` (s since the epoch) in one zone, or None."""
        while t <= limit:
            offset, following = zone.offset_at(t)
            stop = following if following <= limit else limit + 1
            found = self.next_wall(t + offset, stop + offset)
            if found is not None:
                return found - offset
            t = following
        return None

    def next_allowed(self, zones: Sequence[_Zone], t: int, limit: int) -> int | None:
        """The first instant in ``[t, limit]`` allowed in every zone, or None."""
        if len(zones) == 1:
            return self.next_in_zone(zones[0], t, limit)
        return _first_common([partial(self.next_in_zone, zone, limit=limit) for zone in zones], t)

    def reason(self, zone: _Zone, t: int, now: datetime, lang: str) -> str:
        """Why instant ``t`` (s) is outside the window in ``zone``, naming the local time and the zone."""
        offset, _ = zone.offset_at(t)
        day = (t + offset) // DAY_S
        local = now.astimezone(zone.tz)
        weekday = (day - 4) % 7 + 1
        names = _DAY_NAMES.get(lang, _DAY_NAMES["en"])
        stamp = f"{names[weekday - 1]} {local:%Y-%m-%d %H:%M} {zone.name} ({local:%Z})"
        texts = _texts(lang)
        if day in self.blackout:
            return texts["blackout"].format(stamp=stamp)
        calendar = self.calendar
        if calendar is not None and self.holiday(day):
            local_date = date.fromordinal(day + _EPOCH_ORDINAL)
            name = _holiday_names(calendar.country, calendar.subdivision, local_date.year, lang).get(local_date, "")
            return texts["holiday"].format(name=name or calendar.label(), stamp=stamp)
        rules = self.settings.windows
        previous = (weekday - 2) % 7 + 1
        ranges = sorted(
            {f"{r.start}-{r.end}" for r in rules if weekday in r.days}
            | {f"00:00-{r.end}" for r in rules if r.overnight and r.end_minute > 0 and previous in r.days}
        )
        if not ranges:
            days = sorted({d for r in rules for d in r.days})
            return texts["day"].format(stamp=stamp, days=_days_text(days, lang))
        return texts["hours"].format(stamp=stamp, ranges=", ".join(ranges))


def _plan(settings: CallSettings) -> _Plan:
    plan: _Plan | None = settings._derived.get("plan")
    if plan is None:
        plan = settings._derived.setdefault("plan", _Plan(settings))
    return plan


# --- what callers pass -------------------------------------------------------------------------------------------


def _require(call_settings: CallSettings) -> CallSettings:
    """``call_settings`` itself; anything else (a stored dict, None) is a caller's mistake: parse at the door."""
    if not isinstance(call_settings, CallSettings):
        raise TypeError(f"call_settings must be a parsed CallSettings (parse_call_settings at the door), "
                        f"got {type(call_settings).__name__}")
    return call_settings


def _seconds(now: datetime) -> int:
    if not isinstance(now, datetime) or now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be a timezone-aware datetime, got {now!r}")
    return (now - EPOCH) // _ONE_SECOND


# --- compliance profiles -----------------------------------------------------------------------------------------


@lru_cache(maxsize=65536)
def _auto_ids(phone: str, purpose: str, region: str) -> tuple[str, ...]:
    return auto_profile_ids(phone, purpose, region=region)


def applicable_profiles(call_settings: CallSettings, phone: str | None, *,
                        config: Config | None = None) -> tuple[ComplianceProfile, ...]:
    """The compliance profiles that apply to a call to ``phone`` under these settings: those ``compliance`` names,
    or with ``"auto"`` those of the number's country (and US state) for the batch's ``purpose``
    (:func:`shared.domain.compliance.auto_profile_ids`); the profiles in force (:data:`REGISTRY`). ``()`` when the
    settings name none (or ``"auto"`` without a number: a preview without one)."""
    chosen = call_settings.compliance
    if not chosen:
        return ()
    if chosen == AUTO_COMPLIANCE:
        if not phone or not call_settings.purpose:
            return ()
        config = config or get_config()
        ids = _auto_ids(phone, call_settings.purpose, config.phone_default_region)
    else:
        ids = tuple(chosen)
    found = (REGISTRY.get(i) for i in ids)
    return tuple(p for p in found if p is not None)


def _profile_zone_names(call_settings: CallSettings, profile: ComplianceProfile, phone: str | None,
                        contact_timezone: str | None, config: Config) -> tuple[str, ...]:
    """The zones a profile's window is read in: its fixed zone; else every zone the callee may be in (the number's
    zones and the contact's own zone together: when they disagree, a call must be allowed in all of them), or the
    settings' zones when neither says anything."""
    if profile.fixed_zone:
        return (profile.fixed_zone,)
    names = ([contact_timezone] if contact_timezone else []) + list(
        _phone_zone_names(phone, config.phone_default_region) if phone else ())
    if not names:
        names = list(resolve_timezones(call_settings, phone, contact_timezone=contact_timezone, config=config))
    return tuple(dict.fromkeys(names))


def _constraints(settings: CallSettings, phone: str | None, contact_timezone: str | None,
                 config: Config) -> list[tuple[_Plan, tuple[_Zone, ...], ComplianceProfile | None]]:
    """Every rule that must allow an instant: the settings' own window in its zones, then each applicable profile's
    window in the callee's zones (the effective window is their intersection)."""
    names = resolve_timezones(settings, phone, contact_timezone=contact_timezone, config=config)
    out: list[tuple[_Plan, tuple[_Zone, ...], ComplianceProfile | None]] = [(_plan(settings), _zones_named(names),
                                                                             None)]
    for profile in applicable_profiles(settings, phone, config=config):
        zones = _zones_named(_profile_zone_names(settings, profile, phone, contact_timezone, config))
        out.append((_plan(profile.settings), zones, profile))
    return out


# --- public API --------------------------------------------------------------------------------------------------


def is_allowed_time(call_settings: CallSettings, now: datetime,
                    phone: str | None = None, *, contact_timezone: str | None = None,
                    config: Config | None = None, lang: str | None = None) -> tuple[bool, str | None]:
    """May the contact be called at ``now``? ``(True, None)``, or ``(False, reason)``.

    :param call_settings: the batch's parsed settings.
    :param now: the instant, timezone-aware.
    :param phone: the number about to be dialed; used when ``timezone`` is ``"auto"``.
    :param contact_timezone: the contact's own IANA zone; when set it decides instead of the batch's zone.
    :param config: defaults (zone, phone region, language); default the process configuration.
    :param lang: language of the reason, ``"en"`` or ``"es"``; default ``OUTDIAL_LANG``.
    :returns: the reason names the local time and zone and why: blackout date, public holiday, day not
        allowed or outside allowed hours ("día no permitido", "fuera del horario permitido" in Spanish).
    """
    config = config or get_config()
    settings = _require(call_settings)
    t = _seconds(now)
    plan = _plan(settings)
    if plan.any_time and not settings.compliance:
        return True, None
    for rule, zones, profile in _constraints(settings, phone, contact_timezone, config):
        refused = _refused_in(rule, zones, t)
        if refused is not None:
            why = rule.reason(refused, t, now, lang or config.lang)
            return False, why if profile is None else f"{profile.id}: {why}"
    return True, None


def _refused_in(rule: _Plan, zones: Sequence[_Zone], t: int) -> _Zone | None:
    """The first of ``zones`` whose wall clock ``rule`` does not allow at instant ``t`` (s), or None."""
    if rule.any_time:
        return None
    return next((zone for zone in zones if not rule.allowed_wall(t + zone.offset_at(t)[0])), None)


def next_allowed_time(call_settings: CallSettings, now: datetime,
                      phone: str | None = None, *, contact_timezone: str | None = None,
                      config: Config | None = None) -> datetime:
    """The earliest instant >= ``now`` at which :func:`is_allowed_time` is true, as an aware UTC datetime.

    ``now`` itself (in UTC) when it is allowed; otherwise the instant a window opens (whole seconds).
    Parameters as in :func:`is_allowed_time`.

    :raises NoAllowedTime: when no instant within :data:`HORIZON_S` (366 days) is allowed, which validation
        cannot rule out only for numbers mapping to several zones whose windows never overlap.
    """
    config = config or get_config()
    settings = _require(call_settings)
    t = _seconds(now)
    plan = _plan(settings)
    if plan.any_time and not settings.compliance:
        return now.astimezone(UTC)
    names = resolve_timezones(settings, phone, contact_timezone=contact_timezone, config=config)
    constraints = _constraints(settings, phone, contact_timezone, config)
    found = _next_in_all(constraints, t, t + HORIZON_S)
    if found is None:
        profiles = [p.id for _, _, p in constraints if p is not None]
        raise NoAllowedTime(
            f"no instant in the year after {now.astimezone(UTC):%Y-%m-%d %H:%M} UTC is inside the calling window "
            f"in {'every one of ' if len(names) > 1 else ''}{', '.join(names)}"
            + (f" and the window of {', '.join(profiles)}" if profiles else ""), zones=names)
    if found == t:
        return now.astimezone(UTC)
    return EPOCH + timedelta(seconds=found)


def _next_in_all(constraints: Sequence[tuple[_Plan, tuple[_Zone, ...], Any]], t: int, limit: int) -> int | None:
    """The first instant in ``[t, limit]`` every constraint allows: each moves ``t`` to its own next allowed
    instant until none moves it (each rule's allowed instants from ``t`` on are found in turn, so the first common
    one is never skipped)."""
    if len(constraints) == 1:
        rule, zones, _ = constraints[0]
        return rule.next_allowed(zones, t, limit)
    return _first_common([partial(rule.next_allowed, zones, limit=limit)
                          for rule, zones, _ in constraints if not rule.any_time], t)


def _first_common(finders: Sequence[Callable[[int], int | None]], t: int) -> int | None:
    """The first instant >= ``t`` that every finder accepts, each finder giving its own first accepted instant from
    the one it is asked (None: none within its limit): ``t`` moves to each answer in turn until none moves it, so
    no common instant is ever skipped."""
    while True:
        moved = False
        for find in finders:
            found = find(t)
            if found is None:
                return None
            if found != t:
                t, moved = found, True
        if not moved:
            return t


def first_allowed_within_year(call_settings: CallSettings, *, now: datetime | None = None,
                              config: Config) -> tuple[str, str] | None:
    """``(field, message)`` when the settings allow no instant in the year from ``now``, else None.

    Checked in the batch's zone (for ``"auto"``: ``fallback_timezone``, else ``DEFAULT_TIMEZONE``); used by
    :func:`validate_call_settings`.

    :param now: start of the year checked; default the shared clock's now.
    """
    if now is None:
        from shared.clock import get_clock

        now = get_clock().now()
    plan = _plan(call_settings)
    if plan.any_time:
        return None
    name = (call_settings.timezone if call_settings.timezone != AUTO_TIMEZONE
            else call_settings.fallback_timezone or config.default_timezone)
    t = _seconds(now)
    if plan.next_in_zone(_zone(name), t, t + HORIZON_S) is not None:
        return None
    start = now.astimezone(_zone(name).tz).date().isoformat()
    if plan.has_exclusions:
        field = "blackout_dates" if call_settings.blackout_dates else "holidays"
        return field, (f"no call could be placed in the year from {start} ({name}): every day the window opens "
                       "is a public holiday or a blackout date")
    field = next((name for name in ("windows", "allowed_hours", "days_of_week") if name in call_settings.document),
                 "windows")
    return field, f"the window allows no instant in the year from {start} ({name})"


def validate_call_settings(raw: Mapping[str, Any] | None, *, config: Config,
                           now: datetime | None = None) -> CallSettings:
    """The door of a batch's call_settings: :func:`~shared.domain.call_settings.parse_call_settings` (every field
    checked, defaults filled), then the check that the window lets at least one call start in the year from
    ``now`` (blackout dates and holidays could otherwise close every day it opens).

    :param raw: the submitted or stored dict; None for a batch without call_settings.
    :param config: source of the defaults.
    :param now: start of the year checked; default the shared clock's now.
    :raises InvalidCallSettings: naming every bad field and why.
    """
    settings = parse_call_settings(raw, config=config)
    if settings.restricts_time:
        problem = first_allowed_within_year(settings, now=now, config=config)
        if problem is not None:
            raise InvalidCallSettings([problem])
    if isinstance(settings.compliance, tuple):
        unknown = [(f"compliance[{i}]", f"no compliance profile {pid!r} (GET /compliance-profiles lists them)")
                   for i, pid in enumerate(settings.compliance) if not _known_profile(pid)]
        if unknown:
            raise InvalidCallSettings(unknown)
        _opens_with_profiles(settings, now, config)
    return settings


def _opens_with_profiles(settings: CallSettings, now: datetime | None, config: Config) -> None:
    """Refuse settings whose window and named profiles share no instant in the year from ``now`` (read in the
    batch's zone: with ``"auto"`` zones, each number decides at the dial)."""
    if now is None:
        from shared.clock import get_clock

        now = get_clock().now()
    try:
        next_allowed_time(settings, now, None, config=config)
    except NoAllowedTime:
        names = ", ".join(settings.compliance)
        raise InvalidCallSettings([("compliance", f"the batch's window and the window of {names} share no "
                                                  "instant in the year ahead: no call could be placed")]) from None


#: Reads the operator's profiles again (set by the process's runtime); used when a batch names an unknown one.
_profile_reloaders: list[Callable[[], None]] = []


def use_profile_reloader(reload: Callable[[], None] | None) -> None:
    """What :func:`validate_call_settings` calls once before refusing a profile id it does not know (another
    process may have just added it)."""
    _profile_reloaders[:] = [reload] if reload is not None else []


def _known_profile(profile_id: str) -> bool:
    if REGISTRY.get(profile_id) is not None:
        return True
    for reload in _profile_reloaders:
        reload()
    return REGISTRY.get(profile_id) is not None


def describe_window(call_settings: CallSettings, *, lang: str | None = None,
                    config: Config | None = None) -> str:
    """One line for people: ``Mon-Fri 09:00-18:00 (America/Santiago), no calls on CL public holidays``.

    :param call_settings: as for :func:`is_allowed_time`.
    :param lang: ``"en"`` or ``"es"``; default ``OUTDIAL_LANG``.
    :param config: defaults; default the process configuration.
    """
    config = config or get_config()
    lang = lang or config.lang
    texts = _texts(lang)
    settings = _require(call_settings)
    if not settings.restricts_time:
        return texts["any_time"]
    rules = "; ".join(f"{_days_text(r.days, lang)} {r.start}-{r.end}" for r in settings.windows)
    if settings.timezone == AUTO_TIMEZONE:
        zone = texts["auto"].format(fallback=settings.fallback_timezone or config.default_timezone)
    else:
        zone = settings.timezone
    parts = [f"{rules or texts['any_time']} ({zone})"]
    if settings.holidays is not None:
        parts.append(texts["on_holidays"].format(calendar=settings.holidays.label()))
    if settings.blackout_dates:
        parts.append(texts["blackouts"].format(count=len(settings.blackout_dates)))
    return ", ".join(parts)


def _rule_at(windows: Sequence[Window], local: datetime) -> tuple[int, Window, date] | None:
    """The first rule whose window holds the wall-clock reading ``local``, and the local date that occurrence
    started on (the day before for the overnight part of a rule)."""
    day = local.isoweekday()
    minute = local.hour * 60 + local.minute
    previous = 7 if day == 1 else day - 1
    for index, rule in enumerate(windows):
        start, end = rule.start_minute, rule.end_minute
        if rule.overnight:
            if day in rule.days and minute >= start:
                return index, rule, local.date()
            if previous in rule.days and minute < end:
                return index, rule, local.date() - timedelta(days=1)
        elif day in rule.days and start <= minute < end:
            return index, rule, local.date()
    return None


def upcoming_call_times(call_settings: CallSettings, start: datetime, count: int,
                        phone: str | None = None, *, contact_timezone: str | None = None,
                        config: Config, lang: str | None = None) -> list[dict[str, Any]]:
    """The next ``count`` instants from ``start`` at which a call could start: the first is
    :func:`next_allowed_time` of ``start``, each following one the next opening of the window after the
    occurrence the previous one fell in (holidays and blackout dates skipped, as the dialer would).

    Each entry: ``at`` (aware UTC datetime), ``local`` (the same instant in ``zone``), ``zone`` (the first zone of
    :func:`resolve_timezones`), ``rule_index`` (the rule of ``windows``, or 0 for the ``days_of_week`` +
    ``allowed_hours`` shorthand; None for any time), ``rule`` (that rule for people, ``Mon-Fri 09:00-18:00``) and
    ``profiles`` (each applicable compliance profile and its rule that allows the instant: ``{"id", "rule"}``).
    Settings that never restrict time give one entry, ``start`` itself. Fewer than ``count`` entries come back
    when the year after ``start`` holds fewer.

    :raises NoAllowedTime: when no instant within a year is allowed for this number.
    """
    lang = lang or config.lang
    settings = _require(call_settings)
    names = resolve_timezones(settings, phone, contact_timezone=contact_timezone, config=config)
    tz = _zone(names[0]).tz
    limit = start.astimezone(UTC) + timedelta(seconds=HORIZON_S)
    out: list[dict[str, Any]] = []
    search = start
    while len(out) < count and search < limit:
        try:
            found = next_allowed_time(settings, search, phone, contact_timezone=contact_timezone, config=config)
        except NoAllowedTime:
            if out:
                break
            raise
        local = found.astimezone(tz)
        entry: dict[str, Any] = {"at": found, "local": local, "zone": names[0], "rule_index": None,
                                 "rule": _texts(lang)["any_time"],
                                 "profiles": _profile_rules(settings, found, phone, contact_timezone, config, lang)}
        out.append(entry)
        if not settings.restricts_time:
            break
        matched = _rule_at(settings.windows, local) if settings.windows else None
        if matched is None:   # any time of day, some dates excluded: the next candidate is the next local day
            ends = tz.localize(datetime.combine(local.date() + timedelta(days=1), datetime.min.time()), is_dst=False)
        else:
            index, rule, opened = matched
            entry["rule_index"] = index
            entry["rule"] = f"{_days_text(rule.days, lang)} {rule.start}-{rule.end}"
            closes_on = opened + timedelta(days=1) if rule.overnight or rule.end_minute == 24 * 60 else opened
            minute = 0 if rule.end_minute == 24 * 60 else rule.end_minute
            naive = datetime.combine(closes_on, datetime.min.time()) + timedelta(minutes=minute)
            ends = tz.localize(naive, is_dst=False)
        search = max(ends.astimezone(UTC), found + _ONE_SECOND)
    return out


def _profile_rules(settings: CallSettings, at: datetime, phone: str | None, contact_timezone: str | None,
                   config: Config, lang: str) -> list[dict[str, str]]:
    """Each applicable profile with the rule of its window that allows ``at`` (read in its first zone)."""
    out = []
    for profile in applicable_profiles(settings, phone, config=config):
        zone = _zone(_profile_zone_names(settings, profile, phone, contact_timezone, config)[0])
        rules = profile.settings.windows
        matched = _rule_at(rules, at.astimezone(zone.tz)) if rules else None
        said = (f"{_days_text(matched[1].days, lang)} {matched[1].start}-{matched[1].end}" if matched is not None
                else _texts(lang)["any_time"])
        out.append({"id": profile.id, "rule": f"{said} ({zone.name})"})
    return out


def excluded_by_profiles(call_settings: CallSettings, start: datetime, count: int, phone: str | None, *,
                         contact_timezone: str | None = None, config: Config,
                         lang: str | None = None) -> list[dict[str, Any]]:
    """The call times among the next ``count`` that the batch's own window allows from ``start`` which an
    applicable compliance profile excludes: ``{"at", "local", "zone", "profile", "why"}`` each (``why``: the
    profile's rule that refuses it, said in ``lang``)."""
    lang = lang or config.lang
    settings = _require(call_settings)
    profiles = _constraints(settings, phone, contact_timezone, config)[1:]
    if not profiles:
        return []
    own = dataclasses.replace(settings, compliance=())
    try:
        times = upcoming_call_times(own, start, count, phone, contact_timezone=contact_timezone, config=config,
                                    lang=lang)
    except NoAllowedTime:
        return []
    out = []
    for entry in times:
        at = entry["at"]
        t = _seconds(at)
        for rule, zones, profile in profiles:
            refused = _refused_in(rule, zones, t)
            if refused is not None and profile is not None:
                out.append({"at": at, "local": entry["local"], "zone": entry["zone"], "profile": profile.id,
                            "why": f"{profile.id}: {rule.reason(refused, t, at, lang)}"})
                break
    return out
