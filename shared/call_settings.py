"""A batch's call_settings: parsing, validation and defaults.

``parse_call_settings(raw)`` turns the stored dict (or None) into a :class:`CallSettings` with
every field filled from the global defaults (the one place defaults are resolved;
:func:`default_call_settings` is the settings of a batch without any); invalid input raises
:class:`InvalidCallSettings` naming every bad field. ``CallSettings.to_document()`` is what a batch
stores: the fields the operator set, normalised, never the defaults (so a change of a global default
reaches old batches).

Fields (see ``docs/call_settings.md``): ``max_call_duration`` (s), ``ring_timeout`` (s),
``max_attempts``, ``retry_delay_hours``, ``retry_delay_by_outcome`` (hours per outcome of the call that ended
the round), ``timezone`` (IANA name or ``"auto"``),
``fallback_timezone``, the calling window as ``days_of_week`` + ``allowed_hours`` or as
``windows``, ``holidays``, ``blackout_dates`` and ``on_insufficient_balance``. The calling-window
logic that reads them lives in :mod:`shared.calling_window` (which imports this module, never the other
way), with :func:`~shared.calling_window.validate_call_settings`: the parse plus the check that the window
opens within a year. The retry rule (:func:`choose_retry_delay`) reads a parsed
:class:`CallSettings`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import pytz

from shared.config import Config, get_config
from shared.errors import ValidationError
from shared.outcomes import ROUND_ENDING

#: Bounds of ``max_call_duration``, seconds: Retell's ``max_call_duration_ms`` range [60 000, 7 200 000] ms.
MAX_CALL_DURATION_RANGE = (60, 7200)
#: Bounds of ``ring_timeout``, seconds: Retell's ``ring_duration_ms`` range [5 000, 300 000] ms.
RING_TIMEOUT_RANGE = (5, 300)
#: Bounds of ``max_attempts`` (rounds through the contact's phones).
MAX_ATTEMPTS_RANGE = (1, 100)
#: Bounds of ``retry_delay_hours`` (fractions allowed; 720 h = 30 days).
RETRY_DELAY_HOURS_RANGE = (0.0, 720.0)
#: Keys of ``retry_delay_by_outcome``: the outcomes that can end a round (see shared.outcomes.ROUND_ENDING).
RETRY_DELAY_OUTCOMES: tuple[str, ...] = tuple(o.value for o in ROUND_ENDING)
#: Most rules in ``windows``.
MAX_WINDOWS = 50
#: Most entries in ``blackout_dates``.
MAX_BLACKOUT_DATES = 1000
#: ``timezone`` value that takes the callee's zone from the phone number.
AUTO_TIMEZONE = "auto"
#: ``on_insufficient_balance`` values, for a balance that cannot cover one call: fail the contact (the original
#: behaviour, default) or wait for a top-up.
BALANCE_POLICIES = ("fail", "wait")
#: Default ``on_insufficient_balance``.
DEFAULT_BALANCE_POLICY = "fail"
#: Every day of the week, 1 = Monday ... 7 = Sunday.
ALL_DAYS = (1, 2, 3, 4, 5, 6, 7)



@dataclass(frozen=True, kw_only=True)
class FieldSpec:
    """One field of ``call_settings``: what the validator checks and what the JSON Schema says.

    :func:`parse_call_settings` reads the numeric bounds from :data:`FIELDS`, and
    :func:`shared.call_settings_schema.call_settings_schema` builds the schema from the same table, so
    the two cannot drift.

    :param name: the field's key.
    :param description: one sentence for people (the schema's ``description``).
    :param example: a valid value (the schema's ``examples``).
    :param bounds: ``(low, high)`` of a numeric field, inclusive; None for other fields.
    :param integer: a numeric field takes whole numbers only.
    :param unit: the unit of a numeric field (``"seconds"``, ``"hours"``).
    """

    name: str
    description: str
    example: Any
    bounds: tuple[float, float] | None = None
    integer: bool = False
    unit: str | None = None


#: Every field of ``call_settings``, in the order the documentation lists them.
FIELDS: dict[str, FieldSpec] = {spec.name: spec for spec in (
    FieldSpec(name="max_call_duration", bounds=MAX_CALL_DURATION_RANGE, integer=True, unit="seconds", example=600,
              description="Longest call, seconds; the call is ended past this."),
    FieldSpec(name="ring_timeout", bounds=RING_TIMEOUT_RANGE, integer=True, unit="seconds", example=45,
              description="How long a number rings before it counts as no answer, seconds."),
    FieldSpec(name="max_attempts", bounds=MAX_ATTEMPTS_RANGE, integer=True, example=5,
              description="Rounds through the contact's phones before the contact fails."),
    FieldSpec(name="retry_delay_hours", bounds=RETRY_DELAY_HOURS_RANGE, unit="hours", example=2,
              description="Wait after a failed round, hours (fractions allowed)."),
    FieldSpec(name="retry_delay_by_outcome", example={"busy": 0.25, "no_answer": 2, "voicemail": 24},
              description="Hours to wait after a round that a call with this outcome ended; outcomes not "
                          "listed wait retry_delay_hours."),
    FieldSpec(name="allowed_hours", example={"start": "09:00", "end": "18:00"},
              description="Local hours of the window, start inclusive, end exclusive; an end before the start "
                          "runs overnight. With days_of_week, the shorthand for one window."),
    FieldSpec(name="days_of_week", example=[1, 2, 3, 4, 5],
              description="Days the window opens on, 1 = Monday ... 7 = Sunday."),
    FieldSpec(name="timezone", example="America/Santiago",
              description='IANA zone the window is read in, or "auto": the zone of the number dialed.'),
    FieldSpec(name="fallback_timezone", example="America/New_York",
              description='With timezone "auto", the zone of numbers that map to no zone.'),
    FieldSpec(name="windows", example=[{"days": [1, 2, 3, 4, 5], "start": "07:00", "end": "19:00"},
                                       {"days": [6], "start": "08:00", "end": "15:00"}],
              description="Several weekly rules (a union), instead of days_of_week and allowed_hours."),
    FieldSpec(name="holidays", example="CL",
              description="No calls on this country's public holidays (the callee's local date): a country "
                          'code, or {"country", "subdivision"}.'),
    FieldSpec(name="blackout_dates", example=["2026-12-24", "2026-12-31"],
              description="Local dates with no calls."),
    FieldSpec(name="on_insufficient_balance", example="wait",
              description='When the account\'s balance cannot cover one call: "fail" the contact, or "wait" in '
                          "waiting_balance for a top-up. Balance held by calls in progress only delays a dial."),
)}

KNOWN_FIELDS = tuple(FIELDS)

_HHMM = re.compile(r"^(\d{1,2}):(\d{2})$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

Errors = list[tuple[str, str]]


class InvalidCallSettings(ValidationError):
    """Rejected call_settings (a ``ValueError``); ``errors`` lists ``(field, message)``, the message names each one."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        super().__init__(errors)
        self.args = ("invalid call_settings: " + "; ".join(f"{f}: {m}" for f, m in self.errors),)


@dataclass(frozen=True, kw_only=True)
class Window:
    """One weekly rule of the calling window: local wall-clock ``[start, end)`` on ``days``.

    :param days: ISO weekdays the window starts on (1 = Monday ... 7 = Sunday), sorted, unique.
    :param start: local start, ``"HH:MM"`` (inclusive).
    :param end: local end, ``"HH:MM"`` (exclusive); ``"24:00"`` is midnight at the end of the day.
        An end before the start runs overnight into the next day.
    """

    days: tuple[int, ...]
    start: str
    end: str

    @property
    def start_minute(self) -> int:
        """Minutes after local midnight at which the window opens."""
        return _minutes(self.start)

    @property
    def end_minute(self) -> int:
        """Minutes after local midnight at which the window closes (1440 for ``"24:00"``)."""
        return _minutes(self.end)

    @property
    def overnight(self) -> bool:
        """True when the window ends on the day after it starts."""
        return self.end_minute < self.start_minute

    def to_document(self) -> dict[str, Any]:
        return {"days": list(self.days), "start": self.start, "end": self.end}


@dataclass(frozen=True, kw_only=True)
class HolidayCalendar:
    """Public holidays of ``country`` (ISO 3166 alpha-2), optionally one ``subdivision``, per the ``holidays``
    package."""

    country: str
    subdivision: str | None = None

    def label(self) -> str:
        return self.country if self.subdivision is None else f"{self.country}-{self.subdivision}"


@dataclass(frozen=True, kw_only=True)
class CallSettings:
    """Validated settings with every default applied.

    :param max_call_duration: longest call, seconds.
    :param ring_timeout: ring time before giving up, seconds.
    :param max_attempts: rounds through the contact's phones before failing.
    :param retry_delay_hours: wait after a failed round, hours.
    :param retry_delay_by_outcome: wait after a round that the given outcome ended, hours, per outcome (only the
        outcomes the operator set; the others wait ``retry_delay_hours``).
    :param timezone: IANA zone of the calling window, or ``"auto"`` (the callee's zone from the number).
    :param fallback_timezone: zone for ``"auto"`` when a number maps to no zone (None: the global default).
    :param days_of_week: the shorthand's days as given (normalised), or None.
    :param allowed_hours: the shorthand's ``(start, end)`` as given (normalised), or None.
    :param windows: the calling window as weekly rules; empty means any time.
    :param holidays: public-holiday calendar with no calls, or None.
    :param blackout_dates: local dates with no calls.
    :param on_insufficient_balance: ``"fail"`` or ``"wait"``.
    :param raw: the dict as given.
    :param document: the normalised fields the operator set (what :meth:`to_document` returns).
    """

    max_call_duration: int
    ring_timeout: int
    max_attempts: int
    retry_delay_hours: float
    timezone: str
    retry_delay_by_outcome: Mapping[str, float] = field(default_factory=dict)
    fallback_timezone: str | None = None
    days_of_week: tuple[int, ...] | None = None
    allowed_hours: tuple[str, str] | None = None
    windows: tuple[Window, ...] = ()
    holidays: HolidayCalendar | None = None
    blackout_dates: tuple[date, ...] = ()
    on_insufficient_balance: str = DEFAULT_BALANCE_POLICY
    raw: Mapping[str, Any] = field(default_factory=dict)
    document: Mapping[str, Any] = field(default_factory=dict, repr=False)
    #: Derived data computed once per object (the compiled calling window, see shared.calling_window).
    _derived: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def max_call_duration_ms(self) -> int:
        """``max_call_duration`` in milliseconds (Retell's ``max_call_duration_ms``)."""
        return self.max_call_duration * 1000

    @property
    def ring_timeout_ms(self) -> int:
        """``ring_timeout`` in milliseconds (Retell's ``ring_duration_ms``)."""
        return self.ring_timeout * 1000

    @property
    def restricts_time(self) -> bool:
        """False when every instant is allowed (no window, holiday calendar or blackout date)."""
        return bool(self.windows or self.holidays or self.blackout_dates)

    def to_document(self) -> dict[str, Any]:
        """The dict to store: what the operator set, normalised, nothing filled in."""
        return _copy(self.document)


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_copy(v) for v in value]
    return value


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def _number(raw: Mapping[str, Any], name: str, bounds: tuple[float, float], errors: Errors,
            *, integer: bool, label: str | None = None) -> Any:
    """``raw[name]`` checked against ``bounds``; errors name ``label`` (default ``name``)."""
    value = raw.get(name)
    if value is None:
        return None
    name = label or name
    if isinstance(value, bool) or not isinstance(value, int | float):
        errors.append((name, f"must be a number, got {type(value).__name__}"))
        return None
    if value != value or value in (float("inf"), float("-inf")):
        errors.append((name, f"must be a finite number, got {value}"))
        return None
    if integer and value != int(value):
        errors.append((name, f"must be a whole number, got {value}"))
        return None
    if not bounds[0] <= value <= bounds[1]:
        errors.append((name, f"must be between {bounds[0]} and {bounds[1]}, got {value}"))
        return None
    return int(value) if integer else float(value)


def _retry_delay_by_outcome(raw: Mapping[str, Any], errors: Errors) -> dict[str, float] | None:
    """``{outcome: hours}``, each within the bounds of ``retry_delay_hours``; a null value counts as unset."""
    value = raw.get("retry_delay_by_outcome")
    if value is None:
        return None
    name = "retry_delay_by_outcome"
    if not isinstance(value, Mapping):
        errors.append((name, f'must be an object of outcome -> hours such as {{"busy": 0.25, "voicemail": 24}}, '
                             f"got {type(value).__name__}"))
        return None
    n = len(errors)
    out: dict[str, float] = {}
    for key in value:
        if key not in RETRY_DELAY_OUTCOMES:
            label = f"{name}.{str(key)[:40]}"
            errors.append((label, f"is not an outcome that ends a round (known: {', '.join(RETRY_DELAY_OUTCOMES)})"))
            continue
        spec = FIELDS["retry_delay_hours"]
        assert spec.bounds is not None
        hours = _number(value, key, spec.bounds, errors, integer=spec.integer, label=f"{name}.{key}")
        if hours is not None:
            out[key] = hours
    if len(errors) > n:
        return None
    return {key: out[key] for key in RETRY_DELAY_OUTCOMES if key in out}


def _zone(value: Any, name: str, errors: Errors, *, allow_auto: bool) -> str | None:
    if value is None:
        return None
    hint = ' or "auto" (the callee\'s zone from the phone number)' if allow_auto else ""
    if not isinstance(value, str):
        errors.append((name, f"must be an IANA time zone name such as America/Santiago{hint}, "
                             f"got {type(value).__name__}"))
        return None
    text = value.strip()
    if allow_auto and text.lower() == AUTO_TIMEZONE:
        return AUTO_TIMEZONE
    if text not in pytz.all_timezones_set:
        errors.append((name, f"unknown IANA time zone {value!r} (e.g. America/Santiago{hint})"))
        return None
    return text


def _time(value: Any, name: str, errors: Errors, *, is_end: bool) -> str | None:
    if not isinstance(value, str):
        errors.append((name, f'must be a local time "HH:MM", got {type(value).__name__}'))
        return None
    match = _HHMM.match(value.strip())
    hours, minutes = (int(match.group(1)), int(match.group(2))) if match else (-1, -1)
    if is_end and (hours, minutes) == (24, 0):
        return "24:00"
    if not match or hours > 23 or minutes > 59:
        latest = '"24:00"' if is_end else '"23:59"'
        errors.append((name, f'must be a local time "HH:MM" from "00:00" to {latest}, got {value!r}'))
        return None
    return f"{hours:02d}:{minutes:02d}"


def _days(value: Any, name: str, errors: Errors) -> tuple[int, ...] | None:
    if not isinstance(value, list | tuple):
        errors.append((name, f"must be a list of weekdays 1-7 (1 = Monday, 7 = Sunday), got {type(value).__name__}"))
        return None
    if not value:
        errors.append((name, "is empty: at least one weekday (1 = Monday ... 7 = Sunday) is needed, "
                             "otherwise no call could ever be placed"))
        return None
    bad = [d for d in value if isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= 7]
    if bad:
        errors.append((name, f"weekdays are whole numbers 1-7 (1 = Monday, 7 = Sunday), got {bad!r}"))
        return None
    return tuple(sorted(set(value)))


def _hours(start: str | None, end: str | None, name: str, errors: Errors) -> bool:
    """Reject a window that allows no time (start == end)."""
    if start is not None and end is not None and _minutes(start) == _minutes(end):
        errors.append((name, f"start and end are both {start}: the window allows no time at all "
                             '(use "00:00" to "24:00" for the whole day)'))
        return False
    return True


def _allowed_hours(raw: Mapping[str, Any], errors: Errors) -> tuple[str, str] | None:
    value = raw.get("allowed_hours")
    if value is None:
        return None
    if not isinstance(value, Mapping):
        errors.append(("allowed_hours", f'must be an object {{"start": "HH:MM", "end": "HH:MM"}}, '
                                        f"got {type(value).__name__}"))
        return None
    unknown = sorted(str(k) for k in value if k not in ("start", "end"))
    if unknown:
        errors.append(("allowed_hours", f"unknown keys {', '.join(unknown)} (known: start, end)"))
        return None
    n = len(errors)
    given_start, given_end = value.get("start"), value.get("end")
    start = _time("00:00" if given_start is None else given_start, "allowed_hours.start", errors, is_end=False)
    end = _time("24:00" if given_end is None else given_end, "allowed_hours.end", errors, is_end=True)
    if len(errors) > n or not _hours(start, end, "allowed_hours", errors):
        return None
    assert start is not None and end is not None
    return start, end


def _window(value: Any, name: str, errors: Errors) -> Window | None:
    if not isinstance(value, Mapping):
        errors.append((name, f'must be an object {{"days": [1, ...], "start": "HH:MM", "end": "HH:MM"}}, '
                             f"got {type(value).__name__}"))
        return None
    n = len(errors)
    unknown = sorted(str(k) for k in value if k not in ("days", "start", "end"))
    if unknown:
        errors.append((name, f"unknown keys {', '.join(unknown)} (known: days, start, end)"))
    for key in ("days", "start", "end"):
        if value.get(key) is None:
            errors.append((f"{name}.{key}", "is required"))
    if len(errors) > n:
        return None
    days = _days(value["days"], f"{name}.days", errors)
    start = _time(value["start"], f"{name}.start", errors, is_end=False)
    end = _time(value["end"], f"{name}.end", errors, is_end=True)
    if len(errors) > n or not _hours(start, end, name, errors):
        return None
    assert days is not None and start is not None and end is not None
    return Window(days=days, start=start, end=end)


def _windows(raw: Mapping[str, Any], errors: Errors) -> tuple[Window, ...] | None:
    value = raw.get("windows")
    if value is None:
        return None
    if raw.get("days_of_week") is not None or raw.get("allowed_hours") is not None:
        errors.append(("windows", "cannot be combined with days_of_week/allowed_hours (those two are the shorthand "
                                  "for one window): put every rule in windows"))
        return None
    if not isinstance(value, list | tuple):
        errors.append(("windows", f"must be a list of {{days, start, end}} rules, got {type(value).__name__}"))
        return None
    if not value:
        errors.append(("windows", "is empty: no call could ever be placed (leave windows out to allow any time)"))
        return None
    if len(value) > MAX_WINDOWS:
        errors.append(("windows", f"has {len(value)} rules, at most {MAX_WINDOWS} are allowed"))
        return None
    rules = [_window(item, f"windows[{i}]", errors) for i, item in enumerate(value)]
    if any(rule is None for rule in rules):
        return None
    return tuple(rule for rule in rules if rule is not None)


def _holidays(raw: Mapping[str, Any], errors: Errors) -> tuple[HolidayCalendar | None, Any]:
    """The calendar and its normalised document form."""
    value = raw.get("holidays")
    if value is None:
        return None, None
    import holidays as holidays_lib

    if isinstance(value, str):
        spec: Mapping[str, Any] = {"country": value}
    elif isinstance(value, Mapping):
        spec = value
        unknown = sorted(str(k) for k in spec if k not in ("country", "subdivision"))
        if unknown:
            errors.append(("holidays", f"unknown keys {', '.join(unknown)} (known: country, subdivision)"))
            return None, None
    else:
        errors.append(("holidays", 'must be a country code such as "CO" or {"country": "US", "subdivision": "CA"}, '
                                   f"got {type(value).__name__}"))
        return None, None
    country = spec.get("country")
    supported = holidays_lib.list_supported_countries(include_aliases=False)
    code = country.strip().upper() if isinstance(country, str) else None
    if code not in supported:
        errors.append(("holidays.country" if isinstance(value, Mapping) else "holidays",
                       f"unknown country {country!r}: an ISO 3166 alpha-2 code supported by the holidays "
                       f"package, e.g. CL, CO, US"))
        return None, None
    assert code is not None
    sub = spec.get("subdivision")
    if sub is None:
        return HolidayCalendar(country=code), (code if isinstance(value, str) else {"country": code})
    known = {s.upper(): s for s in supported[code]}
    if not isinstance(sub, str) or sub.strip().upper() not in known:
        listed = ", ".join(supported[code][:20]) + (", ..." if len(supported[code]) > 20 else "")
        errors.append(("holidays.subdivision", f"unknown subdivision {sub!r} of {code}"
                                               + (f" (known: {listed})" if listed else " (it has none)")))
        return None, None
    subdivision = known[sub.strip().upper()]
    return HolidayCalendar(country=code, subdivision=subdivision), {"country": code, "subdivision": subdivision}


def _blackout_dates(raw: Mapping[str, Any], errors: Errors) -> tuple[date, ...] | None:
    value = raw.get("blackout_dates")
    if value is None:
        return None
    if not isinstance(value, list | tuple):
        errors.append(("blackout_dates", f'must be a list of local dates "YYYY-MM-DD", got {type(value).__name__}'))
        return None
    if len(value) > MAX_BLACKOUT_DATES:
        errors.append(("blackout_dates", f"has {len(value)} dates, at most {MAX_BLACKOUT_DATES} are allowed"))
        return None
    found: set[date] = set()
    ok = True
    for i, item in enumerate(value):
        parsed = None
        if isinstance(item, str) and _ISO_DATE.match(item.strip()):
            try:
                parsed = date.fromisoformat(item.strip())
            except ValueError:
                parsed = None
        if parsed is None:
            errors.append((f"blackout_dates[{i}]", f'must be a local date "YYYY-MM-DD", got {item!r}'))
            ok = False
        else:
            found.add(parsed)
    return tuple(sorted(found)) if ok else None


def _choice(raw: Mapping[str, Any], name: str, choices: tuple[str, ...], errors: Errors) -> str | None:
    value = raw.get(name)
    if value is None:
        return None
    text = value.strip().lower() if isinstance(value, str) else None
    if text not in choices:
        errors.append((name, f"must be one of {', '.join(repr(c) for c in choices)}, got {value!r}"))
        return None
    return text


def _default_duration(config: Config) -> int:
    seconds = round(config.call_max_duration_minutes * 60)
    return min(max(seconds, MAX_CALL_DURATION_RANGE[0]), MAX_CALL_DURATION_RANGE[1])


def field_defaults(config: Config | None = None) -> dict[str, Any]:
    """The value each field takes when the operator leaves it out (from the global configuration)."""
    config = config or get_config()
    return {
        "max_call_duration": _default_duration(config),
        "ring_timeout": config.ring_timeout_seconds,
        "max_attempts": config.max_tries,
        "retry_delay_hours": config.retry_delay_minutes / 60,
        "timezone": config.default_timezone,
        "on_insufficient_balance": DEFAULT_BALANCE_POLICY,
    }


def _window_fields(raw: Mapping[str, Any], errors: Errors) -> dict[str, Any]:
    """``days_of_week``, ``allowed_hours`` and ``windows`` parsed, plus the rules they mean."""
    days = _days(raw["days_of_week"], "days_of_week", errors) if raw.get("days_of_week") is not None else None
    hours = _allowed_hours(raw, errors)
    windows = _windows(raw, errors)
    if windows is None and (days is not None or hours is not None):
        start, end = hours or ("00:00", "24:00")
        windows = (Window(days=days or ALL_DAYS, start=start, end=end),)
    return {"days_of_week": days, "allowed_hours": hours, "windows": windows or ()}


def _document(raw: Mapping[str, Any], values: Mapping[str, Any], holiday_doc: Any) -> dict[str, Any]:
    """The normalised form of each field the operator set (None-valued fields count as unset)."""
    doc: dict[str, Any] = {}
    for name in KNOWN_FIELDS:
        if raw.get(name) is None:
            continue
        if name == "allowed_hours":
            start, end = values["allowed_hours"]
            doc[name] = {k: v for k, v in (("start", start), ("end", end)) if raw[name].get(k) is not None}
        elif name == "windows":
            doc[name] = [w.to_document() for w in values["windows"]]
        elif name == "holidays":
            doc[name] = holiday_doc
        elif name == "blackout_dates":
            doc[name] = [d.isoformat() for d in values["blackout_dates"]]
        elif name == "days_of_week":
            doc[name] = list(values["days_of_week"])
        elif name == "retry_delay_by_outcome":
            doc[name] = dict(values[name])
        else:
            doc[name] = values[name]
    return doc


def parse_call_settings(raw: Mapping[str, Any] | None, *, config: Config | None = None) -> CallSettings:
    """Validate ``raw`` field by field and fill the defaults; None or ``{}`` gives the global defaults.

    This is the only place defaults are resolved. Whether the window opens at all within a year needs the
    calling window's arithmetic: :func:`shared.calling_window.validate_call_settings` is this plus that check,
    what every door (a write, the batch cache, a preview) uses.

    :param raw: the stored or submitted dict; None for a batch without call_settings.
    :param config: source of the defaults; default the process configuration.
    :raises InvalidCallSettings: naming every bad field and why.
    """
    config = config or get_config()
    raw = {} if raw is None else raw
    if not isinstance(raw, Mapping):
        raise InvalidCallSettings([("call_settings", f"must be an object, got {type(raw).__name__}")])
    errors: Errors = []
    unknown = sorted(str(k) for k in raw if k not in KNOWN_FIELDS)
    for name in unknown:
        errors.append((name, f"unknown field (known fields: {', '.join(KNOWN_FIELDS)})"))
    values: dict[str, Any] = {
        **{spec.name: _number(raw, spec.name, spec.bounds, errors, integer=spec.integer)
           for spec in FIELDS.values() if spec.bounds is not None},
        "retry_delay_by_outcome": _retry_delay_by_outcome(raw, errors),
        "timezone": _zone(raw.get("timezone"), "timezone", errors, allow_auto=True),
        "fallback_timezone": _zone(raw.get("fallback_timezone"), "fallback_timezone", errors, allow_auto=False),
        "on_insufficient_balance": _choice(raw, "on_insufficient_balance", BALANCE_POLICIES, errors),
    }
    if values["fallback_timezone"] is not None and values["timezone"] not in (AUTO_TIMEZONE, None):
        errors.append(("fallback_timezone", 'is only used with timezone "auto"'))
    if raw.get("fallback_timezone") is not None and raw.get("timezone") is None:
        errors.append(("fallback_timezone", 'is only used with timezone "auto"'))
    values.update(_window_fields(raw, errors))
    calendar, holiday_doc = _holidays(raw, errors)
    values["blackout_dates"] = _blackout_dates(raw, errors)
    if errors:
        raise InvalidCallSettings(errors)
    defaults = field_defaults(config)
    return CallSettings(
        max_call_duration=values["max_call_duration"] or defaults["max_call_duration"],
        ring_timeout=values["ring_timeout"] or defaults["ring_timeout"],
        max_attempts=values["max_attempts"] or defaults["max_attempts"],
        retry_delay_hours=(values["retry_delay_hours"] if values["retry_delay_hours"] is not None
                           else defaults["retry_delay_hours"]),
        retry_delay_by_outcome=values["retry_delay_by_outcome"] or {},
        timezone=values["timezone"] or defaults["timezone"],
        fallback_timezone=values["fallback_timezone"],
        days_of_week=values["days_of_week"],
        allowed_hours=values["allowed_hours"],
        windows=values["windows"],
        holidays=calendar,
        blackout_dates=values["blackout_dates"] or (),
        on_insufficient_balance=values["on_insufficient_balance"] or defaults["on_insufficient_balance"],
        raw=dict(raw),
        document=_document(raw, values, holiday_doc),
    )


_defaults: dict[int, tuple[Config, CallSettings]] = {}


def default_call_settings(config: Config | None = None) -> CallSettings:
    """The settings of a batch without call_settings: every field its global default. Parsed once per
    configuration and shared (a :class:`CallSettings` is immutable)."""
    config = config or get_config()
    entry = _defaults.get(id(config))
    if entry is None or entry[0] is not config:
        entry = (config, parse_call_settings(None, config=config))
        _defaults[id(config)] = entry
    return entry[1]


# --- what the settings say about retries ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryDelay:
    """The wait after a failed round, and the outcome whose ``retry_delay_by_outcome`` entry gave it (None:
    ``retry_delay_hours``)."""

    delay: timedelta
    outcome: str | None = None

    @property
    def hours(self) -> float:
        return self.delay.total_seconds() / 3600


def choose_retry_delay(settings: CallSettings, outcome: str | None = None) -> RetryDelay:
    """Delay after a failed round: ``retry_delay_by_outcome[outcome]`` when a call with that outcome ended the round
    and the batch sets one, else ``retry_delay_hours`` (its default is ``RETRY_DELAY_MINUTES``).

    :param outcome: the outcome of the call that ended the round; None when something else ended it (a refused
        create, the free-retry budget spent, an unknown create outcome).
    """
    hours = settings.retry_delay_by_outcome.get(str(outcome)) if outcome is not None else None
    if hours is not None:
        return RetryDelay(timedelta(hours=hours), str(outcome))
    return RetryDelay(timedelta(hours=settings.retry_delay_hours))


def retry_delay(settings: CallSettings, outcome: str | None = None) -> timedelta:
    """The delay of :func:`choose_retry_delay`."""
    return choose_retry_delay(settings, outcome).delay
