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
logic that reads them lives in :mod:`shared.domain.calling_window` (which imports this module, never the other
way), with :func:`~shared.domain.calling_window.validate_call_settings`: the parse plus the check that the window
opens within a year. The retry rule (:func:`choose_retry_delay`) reads a parsed
:class:`CallSettings`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from shared.config import Config, get_config
from shared.domain.shapes import (
    AUTO_TIMEZONE,
    BALANCE_POLICIES,
    DEFAULT_MAX_CALLBACKS,
    MAX_ATTEMPTS_RANGE,
    MAX_BLACKOUT_DATES,
    MAX_CALL_DURATION_RANGE,
    MAX_WINDOWS,
    RETRY_DELAY_HOURS_RANGE,
    RETRY_DELAY_OUTCOMES,
    RING_TIMEOUT_RANGE,
    AfterCallShape,
    CallSettingsShape,
    bounds_of,
    minutes,
    validate_shape,
)
from shared.errors import ValidationError

__all__ = [
    "ALL_DAYS", "AUTO_TIMEZONE", "BALANCE_POLICIES", "DEFAULT_BALANCE_POLICY", "FIELDS", "KNOWN_FIELDS",
    "MAX_ATTEMPTS_RANGE", "MAX_BLACKOUT_DATES", "MAX_CALL_DURATION_RANGE", "MAX_WINDOWS", "RETRY_DELAY_HOURS_RANGE",
    "RETRY_DELAY_OUTCOMES", "RING_TIMEOUT_RANGE", "AfterCall", "CallSettings", "FieldSpec", "HolidayCalendar",
    "InvalidCallSettings", "RetryDelay", "Window", "choose_retry_delay", "default_call_settings", "field_defaults",
    "parse_call_settings", "retry_delay",
]

#: Default ``on_insufficient_balance``.
DEFAULT_BALANCE_POLICY = "fail"
#: Every day of the week, 1 = Monday ... 7 = Sunday.
ALL_DAYS = (1, 2, 3, 4, 5, 6, 7)


@dataclass(frozen=True, kw_only=True)
class FieldSpec:
    """One field of ``call_settings`` as :class:`shared.domain.shapes.CallSettingsShape` declares it (a read-only view).

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


def _spec(name: str) -> FieldSpec:
    info = CallSettingsShape.model_fields[name]
    bounds = bounds_of(CallSettingsShape, name)
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    unit = extra.get("x-unit")
    return FieldSpec(name=name, description=info.description or "", example=(info.examples or [None])[0],
                     bounds=bounds, integer=bounds is not None and all(isinstance(b, int) for b in bounds),
                     unit=unit if isinstance(unit, str) else None)


#: Every field of ``call_settings``, in the order the documentation lists them (read from the model).
FIELDS: dict[str, FieldSpec] = {name: _spec(name) for name in CallSettingsShape.model_fields}

KNOWN_FIELDS = tuple(FIELDS)


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
        return minutes(self.start)

    @property
    def end_minute(self) -> int:
        """Minutes after local midnight at which the window closes (1440 for ``"24:00"``)."""
        return minutes(self.end)

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
class AfterCall:
    """``after_call``: what a conversation's post-call analysis decides (see :mod:`shared.domain.after_call`).

    :param success: ``"conversation"`` (any conversation completes the contact), ``"call_successful"``, or a rule on
        a custom field: ``{"field": key, "equals": value}`` / ``{"field": key, "in": [values]}``.
    :param callback_field: custom field with the time the person asked to be called back, or None.
    :param max_callbacks: callbacks scheduled per contact at most.
    :param opt_out_field: custom field that is true when the person asked not to be called, or None.
    :param opt_out_scope: ``"number"`` (the number called) or ``"contact"`` (all of the contact's numbers).
    :param wrong_number_field: custom field that is true when the agent reached the wrong person, or None.
    """

    success: str | Mapping[str, Any] = "conversation"
    callback_field: str | None = None
    max_callbacks: int = DEFAULT_MAX_CALLBACKS
    opt_out_field: str | None = None
    opt_out_scope: str = "number"
    wrong_number_field: str | None = None

    @property
    def needs_analysis(self) -> bool:
        """Whether a conversation's job waits for its analysis before it moves on (any rule besides the default)."""
        return bool(self.success != "conversation" or self.callback_field or self.opt_out_field
                    or self.wrong_number_field)

    @classmethod
    def of(cls, shape: AfterCallShape | None) -> AfterCall:
        if shape is None:
            return NO_AFTER_CALL
        return cls(success=shape.success or "conversation", callback_field=shape.callback_field,
                   max_callbacks=(shape.max_callbacks if shape.max_callbacks is not None else DEFAULT_MAX_CALLBACKS),
                   opt_out_field=shape.opt_out_field, opt_out_scope=shape.opt_out_scope or "number",
                   wrong_number_field=shape.wrong_number_field)


#: The rules of a batch without ``after_call``: every conversation completes the contact.
NO_AFTER_CALL = AfterCall()


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
    :param keep_transcripts: keep each call's transcript on its attempt (capped).
    :param after_call: what a conversation's analysis decides (:class:`AfterCall`).
    :param purpose: what the campaign is for (``collection``, ``telemarketing``, ``reminder``, ``survey``), or None.
    :param compliance: the compliance profiles applied: their ids, ``"auto"`` (chosen by the callee's number and
        ``purpose``: :mod:`shared.domain.compliance`), or ``()`` for none.
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
    keep_transcripts: bool = False
    after_call: AfterCall = NO_AFTER_CALL
    purpose: str | None = None
    compliance: tuple[str, ...] | str = ()
    raw: Mapping[str, Any] = field(default_factory=dict)
    document: Mapping[str, Any] = field(default_factory=dict, repr=False)
    #: Derived data computed once per object (the compiled calling window, see shared.domain.calling_window).
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
        stored: dict[str, Any] = _copy(self.document)
        return stored


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_copy(v) for v in value]
    return value


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


def parse_call_settings(raw: Mapping[str, Any] | None, *, config: Config | None = None) -> CallSettings:
    """Validate ``raw`` with :class:`shared.domain.shapes.CallSettingsShape` and fill the defaults; None or ``{}`` gives
    the global defaults.

    This is the only place defaults are resolved. Whether the window opens at all within a year needs the
    calling window's arithmetic: :func:`shared.domain.calling_window.validate_call_settings` is this plus that check,
    what every door (a write, the batch cache, a preview) uses.

    :param raw: the stored or submitted dict; None for a batch without call_settings.
    :param config: source of the defaults; default the process configuration.
    :raises InvalidCallSettings: naming every bad field and why.
    """
    config = config or get_config()
    raw = {} if raw is None else raw
    shape = validate_shape(CallSettingsShape, raw)
    if isinstance(shape, list):
        raise InvalidCallSettings(shape)
    defaults = field_defaults(config)
    document = _document(shape)
    hours = shape.allowed_hours.filled() if shape.allowed_hours is not None else None
    days = tuple(shape.days_of_week) if shape.days_of_week is not None else None
    if shape.windows is not None:
        windows = tuple(Window(days=tuple(w.days), start=w.start, end=w.end) for w in shape.windows)
    elif days is not None or hours is not None:
        start, end = hours or ("00:00", "24:00")
        windows = (Window(days=days or ALL_DAYS, start=start, end=end),)
    else:
        windows = ()
    holidays = shape.holidays
    calendar = None
    if isinstance(holidays, str):
        calendar = HolidayCalendar(country=holidays)
    elif holidays is not None:
        calendar = HolidayCalendar(country=holidays.country, subdivision=holidays.subdivision)
    by_outcome = (shape.retry_delay_by_outcome.model_dump(exclude_none=True)
                  if shape.retry_delay_by_outcome is not None else {})
    return CallSettings(
        max_call_duration=shape.max_call_duration or defaults["max_call_duration"],
        ring_timeout=shape.ring_timeout or defaults["ring_timeout"],
        max_attempts=shape.max_attempts or defaults["max_attempts"],
        retry_delay_hours=(shape.retry_delay_hours if shape.retry_delay_hours is not None
                           else defaults["retry_delay_hours"]),
        retry_delay_by_outcome=by_outcome,
        timezone=shape.timezone or defaults["timezone"],
        fallback_timezone=shape.fallback_timezone,
        days_of_week=days,
        allowed_hours=hours,
        windows=windows,
        holidays=calendar,
        blackout_dates=tuple(date.fromisoformat(d) for d in shape.blackout_dates or ()),
        on_insufficient_balance=shape.on_insufficient_balance or defaults["on_insufficient_balance"],
        keep_transcripts=bool(shape.keep_transcripts),
        after_call=AfterCall.of(shape.after_call),
        purpose=shape.purpose,
        compliance=(shape.compliance if isinstance(shape.compliance, str) else tuple(shape.compliance or ())),
        raw=dict(raw),
        document=document,
    )


def _document(shape: CallSettingsShape) -> dict[str, Any]:
    """The normalised form of each field the operator set (None-valued fields count as unset)."""
    doc = shape.model_dump(exclude_none=True)
    if shape.allowed_hours is not None:
        doc["allowed_hours"] = shape.allowed_hours.model_dump(exclude_none=True)
    return doc


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
