"""The shape of each request body, once: pydantic v2 models that validate, and whose JSON Schema is served.

Each model is the one definition of its body: the parse functions of the domain validate through it
(:func:`validate_shape`), ``GET /call-settings/schema`` is its :meth:`~pydantic.BaseModel.model_json_schema`
(:func:`shared.domain.call_settings_schema.call_settings_schema`), and the OpenAPI document's components are the same
schemas in OpenAPI 3.0 form (:func:`openapi_schema`).

- :class:`CallSettingsShape`: a batch's ``call_settings`` (``docs/call_settings.md``).
- :class:`ContactPolicyShape`: an account's ``contact_policy``.
- :class:`AccountShape` (with :class:`PlanShape` and :class:`ResultWebhookShape`): a ``PUT /accounts/{account_id}``
  body.
- :class:`ContactShape`: one contact of an import (JSON or a CSV row).
- :class:`BatchShape`: a ``POST /batches`` body (and, without ``account_id``, a ``PATCH /batches/{batch_id}`` one).
- :class:`TopUpShape`: a ``POST /accounts/{account_id}/top-up`` body.
- :class:`DncShape`: the JSON body of ``POST /dnc`` and ``POST /accounts/{account_id}/dnc``.
- :class:`PreviewShape`: a ``POST /call-settings/preview`` body.

Every model forbids unknown fields, and null counts as unset. A field whose messages are domain-specific
(a time ``"HH:MM"``, an IANA zone, a country's holidays, a phone number, a plan's amounts) has its own
validator that raises the message the API has always given; :func:`problems` turns a
:class:`pydantic.ValidationError` into the ``(field, message)`` pairs of :class:`shared.errors.ValidationError`
(the 422 ``errors``), one translator for every model.

The validators normalise: the model's values are the canonical form a batch stores (``"09:00"``, ``"CL"``,
``"auto"``, sorted unique weekdays).
"""

from __future__ import annotations

import math
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal, TypeVar

import pytz
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from shared.domain.outcomes import ROUND_ENDING
from shared.domain.phones import InvalidPhone, normalize_phone
from shared.domain.result_hooks import EVENT_TYPES, SECRET_MAX, SECRET_MIN, URL_MAX
from shared.domain.text import printable, unencodable
from shared.errors import ValidationError as Invalid

M = TypeVar("M", bound=BaseModel)

__all__ = [
    "AccountShape",
    "AfterCallShape",
    "AllowedHoursShape",
    "BatchShape",
    "CallSettingsShape",
    "ContactPolicyShape",
    "ContactShape",
    "DncShape",
    "HolidaysShape",
    "MaxCallsShape",
    "PlanShape",
    "PreviewShape",
    "ResultWebhookShape",
    "TopUpShape",
    "WindowShape",
    "body_fields",
    "bounds_of",
    "openapi_schema",
    "problems",
    "validate_shape",
]

# --- the translator ----------------------------------------------------------------------------------------------

#: Error type of a problem raised by a validator of this module (its message is the API's message).
_PROBLEM = "outdial"
#: Error type of several problems found at once (``ctx["problems"]``: ``(suffix, message)`` pairs).
_PROBLEMS = "outdial_many"


def _problem(message: str, at: str = "") -> PydanticCustomError:
    """One problem with ``message`` exactly (no placeholder is filled), at the validated value's path plus
    ``at`` (``".start"``, ``"[2]"``, or ``""`` for the value itself)."""
    return PydanticCustomError(_PROBLEM, message, {"at": at})


def _many(found: Sequence[tuple[str, str]]) -> PydanticCustomError:
    """Several problems of one value: ``(suffix, message)`` pairs as in :func:`_problem`."""
    return PydanticCustomError(_PROBLEMS, "; ".join(m for _, m in found), {"problems": list(found)})


def _path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def problems(exc: ValidationError, model: type[BaseModel], *, prefix: str = "") -> list[tuple[str, str]]:
    """The ``(field, message)`` pairs of ``exc``, raised by ``model``: the one translation of pydantic's errors.

    Problems raised by this module's validators keep their message; an unknown field names the model's fields;
    a missing one "is required". ``prefix`` is put before each path (``contact_policy``).
    """
    out: list[tuple[str, str]] = []
    errors = exc.errors(include_url=False)
    # in each object, its unknown fields first, by name; then the others in the order of the fields
    first: dict[tuple[int | str, ...], int] = {}
    for n, error in enumerate(errors):
        for depth in range(1, len(error["loc"]) + 1):
            first.setdefault(tuple(error["loc"][:depth]), n)

    def order(error: Any) -> list[tuple[int, str, int]]:
        loc, extra = tuple(error["loc"]), error["type"] == "extra_forbidden"
        return [(0, str(loc[d]), 0) if extra and d == len(loc) - 1 else (1, "", first[loc[:d + 1]])
                for d in range(len(loc))]

    errors.sort(key=order)
    for error in errors:
        path = _path(error["loc"])
        ctx = error.get("ctx") or {}
        if error["type"] == _PROBLEMS:
            found = [(path + at, message) for at, message in ctx["problems"]]
        elif error["type"] == _PROBLEM:
            found = [(path + ctx.get("at", ""), error["msg"])]
        elif error["type"] == "extra_forbidden":
            known = _model_at(model, error["loc"][:-1]).model_fields
            found = [(path, f"unknown field (known fields: {', '.join(known)})")]
        elif error["type"] == "missing":
            found = [(path, "is required")]
        else:
            found = [(path, error["msg"])]
        whole = prefix or str(model.model_config.get("title") or "body")
        out += [(f"{prefix}.{p}" if prefix and p else (p or whole), m) for p, m in found]
    return out


def _model_at(model: type[BaseModel], loc: Sequence[int | str]) -> type[BaseModel]:
    """The model that validates the object at ``loc`` inside ``model`` (list indexes skipped)."""
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if isinstance(part, int):
            continue
        inner = _model_in(field.annotation) if field is not None else None
        if inner is None:
            return model
        model = inner
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def validate_shape(model: type[M], raw: Any, *, prefix: str = "",
                   context: Mapping[str, Any] | None = None) -> M | list[tuple[str, str]]:
    """``raw`` validated by ``model`` (its validators see ``context``), or the ``(field, message)`` pairs of every
    problem."""
    try:
        return model.model_validate(raw, context=context)
    except ValidationError as exc:
        return problems(exc, model, prefix=prefix)


def _merge(exc: ValidationError | None, more: Sequence[tuple[str, str]], title: str) -> ValidationError:
    """``exc``'s errors and ``more`` (``(top-level field, message)``) as one error."""
    lines: list[Any] = []
    for error in exc.errors(include_url=False) if exc is not None else ():
        ctx = error.get("ctx")
        kind = PydanticCustomError(error["type"], error["msg"], ctx) if ctx else PydanticCustomError(
            error["type"], error["msg"])
        lines.append({"type": kind, "loc": error["loc"], "input": error["input"]})
    for name, message in more:
        lines.append({"type": _problem(message), "loc": (name,), "input": None})
    return ValidationError.from_exception_data(title, lines)


def _mapping_checks(value: Any, handler: Any, checks: Callable[[Mapping[str, Any]], list[tuple[str, str]]],
                    title: str) -> Any:
    """Run ``handler`` (the fields) and the cross-field ``checks`` on the raw mapping: every problem at once."""
    more = checks(value) if isinstance(value, Mapping) else []
    try:
        result = handler(value)
    except ValidationError as exc:
        raise _merge(exc, more, title) from None
    if more:
        raise _merge(None, more, title)
    return result


# --- reusable field types ----------------------------------------------------------------------------------------
#
# A field is written ``name: Annotated[<its type>, *<metadata>]``: the type is what the model holds, the metadata
# (validators and the field's schema) comes from one of the functions below.


def _type(value: Any) -> str:
    return type(value).__name__


def _field(**kwargs: Any) -> FieldInfo:
    """``Field(**kwargs)``, typed as the FieldInfo it is (pydantic types ``Field(default=None)`` as None, for
    ``x: int | None = Field(default=None)``)."""
    info: FieldInfo = Field(**kwargs)
    return info


def _within(low: float, high: float) -> FieldInfo:
    """The bounds of a number, ``[low, high]`` (``Annotated[int, _within(1, 5)]``)."""
    return _field(ge=low, le=high)


def _number_check(low: float, high: float, *, integer: bool) -> Callable[[Any], Any]:
    """The check of a nullable number within ``[low, high]``: the API's messages, the canonical int or float."""

    def check(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _problem(f"must be a number, got {_type(value)}")
        if value != value or value in (float("inf"), float("-inf")):
            raise _problem(f"must be a finite number, got {value}")
        if integer and value != int(value):
            raise _problem(f"must be a whole number, got {value}")
        if not low <= value <= high:
            raise _problem(f"must be between {low} and {high}, got {value}")
        return int(value) if integer else float(value)

    return check


def _number(low: float, high: float, *, integer: bool, description: str, example: Any,
            unit: str | None = None) -> tuple[BeforeValidator, FieldInfo]:
    """The metadata of a nullable number within ``[low, high]`` (the bounds are in the schema and in the check):
    ``Annotated[Annotated[int, _within(low, high)] | None, *_number(low, high, integer=True, ...)]``."""
    extra: dict[str, Any] | None = {"x-unit": unit} if unit else None
    return (BeforeValidator(_number_check(low, high, integer=integer)),
            _field(default=None, description=description, examples=[example], json_schema_extra=extra))


def _checked(check: Callable[..., Any], schema: Any, **field: Any) -> tuple[PlainValidator, FieldInfo]:
    """The metadata of a field that ``check`` validates and converts entirely (``Annotated[Any, *_checked(...)]``:
    what the model holds is what ``check`` returns); ``schema`` is what the JSON Schema says of it."""
    return (PlainValidator(check, json_schema_input_type=schema),
            _field(default=None, validate_default=True, **field))


def bounds_of(model: type[BaseModel], name: str) -> tuple[float, float] | None:
    """``(low, high)`` of a numeric field of ``model``, or None."""
    low = high = None
    for meta in _inner_metadata(model, name):
        low = getattr(meta, "ge", low)
        high = getattr(meta, "le", high)
    return None if low is None or high is None else (low, high)


def _inner_metadata(model: type[BaseModel], name: str) -> list[Any]:
    annotation = model.model_fields[name].annotation
    found: list[Any] = []
    for arg in typing.get_args(annotation):
        found += list(getattr(arg, "__metadata__", ()))
    return found


# --- call_settings -------------------------------------------------------------------------------------------------

#: Bounds of ``max_call_duration``, seconds: Retell's ``max_call_duration_ms`` range [60 000, 7 200 000] ms.
MAX_CALL_DURATION_RANGE = (60, 7200)
#: Bounds of ``ring_timeout``, seconds: Retell's ``ring_duration_ms`` range [5 000, 300 000] ms.
RING_TIMEOUT_RANGE = (5, 300)
#: Bounds of ``max_attempts`` (rounds through the contact's phones).
MAX_ATTEMPTS_RANGE = (1, 100)
#: Bounds of ``retry_delay_hours`` (fractions allowed; 720 h = 30 days).
RETRY_DELAY_HOURS_RANGE = (0.0, 720.0)
#: Keys of ``retry_delay_by_outcome``: the outcomes that can end a round (see shared.domain.outcomes.ROUND_ENDING).
RETRY_DELAY_OUTCOMES: tuple[str, ...] = tuple(o.value for o in ROUND_ENDING)
#: Most rules in ``windows``.
MAX_WINDOWS = 50
#: Most entries in ``blackout_dates``.
MAX_BLACKOUT_DATES = 1000
#: ``timezone`` value that takes the callee's zone from the phone number.
AUTO_TIMEZONE = "auto"
#: ``on_insufficient_balance`` values: fail the contact (the original behaviour, default) or wait for a top-up.
BALANCE_POLICIES = ("fail", "wait")

#: ``"HH:MM"`` from ``"00:00"`` to ``"23:59"`` (a window's start, canonical form).
START_PATTERN = r"^([01]?[0-9]|2[0-3]):[0-5][0-9]$"
#: ``"HH:MM"`` from ``"00:00"`` to ``"24:00"`` (a window's end, canonical form).
END_PATTERN = r"^(([01]?[0-9]|2[0-3]):[0-5][0-9]|24:00)$"
#: ``"YYYY-MM-DD"``.
DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"

#: What only the validator checks, not the JSON Schema (the answer is its 422 naming the field).
VALIDATOR_ONLY_RULES = (
    "a window's start and end differ (allowed_hours, windows[i]): equal times would allow no time at all",
    "the settings allow at least one instant in the year from now (holidays and blackout dates can close every "
    "day the window opens)",
    "blackout_dates are real calendar dates (2026-02-30 is refused)",
    "a holidays subdivision is one the country has",
    "weekdays are written as JSON integers (1, not 1.0)",
)

_HHMM = re.compile(r"^(\d{1,2}):(\d{2})$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ZONES = sorted(pytz.all_timezones_set)


def minutes(hhmm: str) -> int:
    """Minutes after local midnight of a canonical ``"HH:MM"``."""
    hours, mins = hhmm.split(":")
    return int(hours) * 60 + int(mins)


def _time(value: Any, *, is_end: bool) -> str:
    if not isinstance(value, str):
        raise _problem(f'must be a local time "HH:MM", got {_type(value)}')
    match = _HHMM.match(value.strip())
    hours, mins = (int(match.group(1)), int(match.group(2))) if match else (-1, -1)
    if is_end and (hours, mins) == (24, 0):
        return "24:00"
    if not match or hours > 23 or mins > 59:
        latest = '"24:00"' if is_end else '"23:59"'
        raise _problem(f'must be a local time "HH:MM" from "00:00" to {latest}, got {value!r}')
    return f"{hours:02d}:{mins:02d}"


def _start(value: Any) -> Any:
    return None if value is None else _time(value, is_end=False)


def _end(value: Any) -> Any:
    return None if value is None else _time(value, is_end=True)


def _days(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, list | tuple):
        raise _problem(f"must be a list of weekdays 1-7 (1 = Monday, 7 = Sunday), got {_type(value)}")
    if not value:
        raise _problem("is empty: at least one weekday (1 = Monday ... 7 = Sunday) is needed, "
                       "otherwise no call could ever be placed")
    bad = [d for d in value if isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= 7]
    if bad:
        raise _problem(f"weekdays are whole numbers 1-7 (1 = Monday, 7 = Sunday), got {bad!r}")
    return sorted(set(value))


def _hours_differ(start: str | None, end: str | None) -> None:
    """Reject a window that allows no time (start == end)."""
    if start is not None and end is not None and minutes(start) == minutes(end):
        raise _problem(f"start and end are both {start}: the window allows no time at all "
                       '(use "00:00" to "24:00" for the whole day)')


def _known_keys(value: Any, known: tuple[str, ...]) -> None:
    unknown = sorted(str(k) for k in value if k not in known)
    if unknown:
        raise _problem(f"unknown keys {', '.join(unknown)} (known: {', '.join(known)})")


_Days = Annotated[list[Annotated[int, Field(ge=1, le=7)]], Field(min_length=1, description="1 = Monday ... 7 = Sunday")]
_Start = Annotated[str, Field(pattern=START_PATTERN, examples=["09:00"])]
_End = Annotated[str, Field(pattern=END_PATTERN, examples=["18:00"])]


class AllowedHoursShape(BaseModel):
    """``allowed_hours``: local ``[start, end)``; a missing start is ``"00:00"``, a missing end ``"24:00"``."""

    model_config = ConfigDict(extra="forbid", title="allowed_hours")

    start: Annotated[_Start | None, BeforeValidator(_start), Field(json_schema_extra={"default": "00:00"})] = None
    end: Annotated[_End | None, BeforeValidator(_end), Field(json_schema_extra={"default": "24:00"})] = None

    @model_validator(mode="before")
    @classmethod
    def _object(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            raise _problem(f'must be an object {{"start": "HH:MM", "end": "HH:MM"}}, got {_type(value)}')
        _known_keys(value, ("start", "end"))
        return value

    @model_validator(mode="after")
    def _some_time(self) -> AllowedHoursShape:
        _hours_differ(*self.filled())
        return self

    def filled(self) -> tuple[str, str]:
        """``(start, end)`` with the defaults of the missing ones."""
        return self.start or "00:00", self.end or "24:00"


class WindowShape(BaseModel):
    """One weekly rule of ``windows``."""

    model_config = ConfigDict(extra="forbid", title="window")

    days: Annotated[_Days, BeforeValidator(_days)]
    start: Annotated[_Start, BeforeValidator(_start)]
    end: Annotated[_End, BeforeValidator(_end)]

    @model_validator(mode="before")
    @classmethod
    def _object(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            raise _problem(f'must be an object {{"days": [1, ...], "start": "HH:MM", "end": "HH:MM"}}, '
                           f"got {_type(value)}")
        found: list[tuple[str, str]] = []
        unknown = sorted(str(k) for k in value if k not in cls.model_fields)
        if unknown:
            found.append(("", f"unknown keys {', '.join(unknown)} (known: days, start, end)"))
        found += [(f".{key}", "is required") for key in cls.model_fields if value.get(key) is None]
        if found:
            raise _many(found)
        return value

    @model_validator(mode="after")
    def _some_time(self) -> WindowShape:
        _hours_differ(self.start, self.end)
        return self


def _windows(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, list | tuple):
        raise _problem(f"must be a list of {{days, start, end}} rules, got {_type(value)}")
    if not value:
        raise _problem("is empty: no call could ever be placed (leave windows out to allow any time)")
    if len(value) > MAX_WINDOWS:
        raise _problem(f"has {len(value)} rules, at most {MAX_WINDOWS} are allowed")
    return list(value)


def _holiday_countries() -> dict[str, list[str]]:
    import holidays as holidays_lib

    return holidays_lib.list_supported_countries(include_aliases=False)


class HolidaysShape(BaseModel):
    """``holidays`` as an object: a country and one of its subdivisions."""

    model_config = ConfigDict(extra="forbid", title="holiday calendar")

    country: str
    subdivision: str | None = None


def _holidays(value: Any) -> Any:
    """The normalised calendar: ``"CL"`` stays a code, an object stays an object (upper-case, known names)."""
    if value is None:
        return None
    if isinstance(value, str):
        spec: Mapping[str, Any] = {"country": value}
    elif isinstance(value, Mapping):
        spec = value
        _known_keys(spec, ("country", "subdivision"))
    else:
        raise _problem('must be a country code such as "CO" or {"country": "US", "subdivision": "CA"}, '
                       f"got {_type(value)}")
    country = spec.get("country")
    supported = _holiday_countries()
    code = country.strip().upper() if isinstance(country, str) else None
    if code not in supported:
        raise _problem(f"unknown country {country!r}: an ISO 3166 alpha-2 code supported by the holidays "
                       f"package, e.g. CL, CO, US", ".country" if isinstance(value, Mapping) else "")
    sub = spec.get("subdivision")
    if sub is None:
        return code if isinstance(value, str) else {"country": code}
    known = {s.upper(): s for s in supported[code]}
    if not isinstance(sub, str) or sub.strip().upper() not in known:
        listed = ", ".join(supported[code][:20]) + (", ..." if len(supported[code]) > 20 else "")
        known_text = f" (known: {listed})" if listed else " (it has none)"
        raise _problem(f"unknown subdivision {sub!r} of {code}{known_text}", ".subdivision")
    return {"country": code, "subdivision": known[sub.strip().upper()]}


def _blackout_dates(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, list | tuple):
        raise _problem(f'must be a list of local dates "YYYY-MM-DD", got {_type(value)}')
    if len(value) > MAX_BLACKOUT_DATES:
        raise _problem(f"has {len(value)} dates, at most {MAX_BLACKOUT_DATES} are allowed")
    found: set[date] = set()
    bad: list[tuple[str, str]] = []
    for i, item in enumerate(value):
        parsed = None
        if isinstance(item, str) and _ISO_DATE.match(item.strip()):
            try:
                parsed = date.fromisoformat(item.strip())
            except ValueError:
                parsed = None
        if parsed is None:
            bad.append((f"[{i}]", f'must be a local date "YYYY-MM-DD", got {item!r}'))
        else:
            found.add(parsed)
    if bad:
        raise _many(bad)
    return [d.isoformat() for d in sorted(found)]


def _zone(*, allow_auto: bool) -> Callable[[Any], Any]:
    hint = ' or "auto" (the callee\'s zone from the phone number)' if allow_auto else ""

    def check(value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, str):
            raise _problem(f"must be an IANA time zone name such as America/Santiago{hint}, got {_type(value)}")
        text = value.strip()
        if allow_auto and text.lower() == AUTO_TIMEZONE:
            return AUTO_TIMEZONE
        if text not in pytz.all_timezones_set:
            raise _problem(f"unknown IANA time zone {value!r} (e.g. America/Santiago{hint})")
        return text

    return check


def _balance_policy(value: Any) -> Any:
    if value is None:
        return None
    text = value.strip().lower() if isinstance(value, str) else None
    if text not in BALANCE_POLICIES:
        raise _problem(f"must be one of {', '.join(repr(c) for c in BALANCE_POLICIES)}, got {value!r}")
    return text


def _flag(value: Any) -> Any:
    """A JSON boolean (a string or a number is refused, never read as one)."""
    if value is None or isinstance(value, bool):
        return value
    raise _problem(f"must be true or false, got {_type(value)}")


def _retry_delay_by_outcome(value: Any) -> Any:
    """``{outcome: hours}`` in the order of the outcomes, each within the bounds of ``retry_delay_hours``."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _problem(f'must be an object of outcome -> hours such as {{"busy": 0.25, "voicemail": 24}}, '
                       f"got {_type(value)}")
    found: list[tuple[str, str]] = []
    hours: dict[str, float] = {}
    for key in value:
        if key not in RETRY_DELAY_OUTCOMES:
            found.append((f".{str(key)[:40]}", "is not an outcome that ends a round (known: "
                                               f"{', '.join(RETRY_DELAY_OUTCOMES)})"))
            continue
        try:
            checked = _RETRY_HOURS_CHECK(value[key])
        except PydanticCustomError as exc:
            found.append((f".{key}", exc.message()))
            continue
        if checked is not None:
            hours[key] = checked
    if found:
        raise _many(found)
    return {key: hours[key] for key in RETRY_DELAY_OUTCOMES if key in hours}


#: The check of one ``retry_delay_hours`` value, shared by ``retry_delay_by_outcome``.
_RETRY_HOURS_CHECK = _number_check(*RETRY_DELAY_HOURS_RANGE, integer=False)

#: Hours of one outcome of ``retry_delay_by_outcome``, within the bounds of ``retry_delay_hours``.
_OutcomeHours = Annotated[float, _within(*RETRY_DELAY_HOURS_RANGE)] | None


class RetryDelayByOutcomeShape(BaseModel):
    # ``retry_delay_by_outcome``: one optional field per outcome that can end a round (RETRY_DELAY_OUTCOMES, in
    # its order). No docstring: the schema has no description of it.

    model_config = ConfigDict(extra="forbid", title="retry_delay_by_outcome")

    voicemail: _OutcomeHours = None
    no_answer: _OutcomeHours = None
    busy: _OutcomeHours = None
    failed_dial: _OutcomeHours = None
    invalid_number: _OutcomeHours = None
    timeout: _OutcomeHours = None
    dropped: _OutcomeHours = None
    unsuccessful: _OutcomeHours = None


if tuple(RetryDelayByOutcomeShape.model_fields) != RETRY_DELAY_OUTCOMES:  # pragma: no cover - a new outcome
    raise RuntimeError(f"RetryDelayByOutcomeShape declares {', '.join(RetryDelayByOutcomeShape.model_fields)}, "
                       f"the outcomes that end a round are {', '.join(RETRY_DELAY_OUTCOMES)}")


# --- call_settings.purpose and compliance -------------------------------------------------------------------------

#: ``call_settings.purpose``: what the campaign is for (the compliance profiles ``"auto"`` chooses depend on it).
PURPOSES = ("collection", "telemarketing", "reminder", "survey")
#: ``call_settings.compliance`` value that chooses the profiles by the callee's number and the batch's purpose.
AUTO_COMPLIANCE = "auto"
#: A compliance profile's id: lowercase letters, digits and ``-``, 2 to 40 characters, starting with a letter or
#: digit.
PROFILE_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{1,39}$"
_PROFILE_ID = re.compile(PROFILE_ID_PATTERN)
#: Most profiles one batch names.
MAX_BATCH_PROFILES = 20


def _purpose(value: Any) -> Any:
    if value is None:
        return None
    text = value.strip().lower() if isinstance(value, str) else None
    if text not in PURPOSES:
        raise _problem(f"must be one of {', '.join(repr(p) for p in PURPOSES)}, got {value!r}")
    return text


def _compliance(value: Any) -> Any:
    """``"auto"``, or a list of profile ids (unique, in the order given)."""
    if value is None:
        return None
    if isinstance(value, str):
        if value.strip().lower() == AUTO_COMPLIANCE:
            return AUTO_COMPLIANCE
        raise _problem(f'must be "auto" or a list of compliance profile ids, got {value!r}')
    if not isinstance(value, list) or len(value) > MAX_BATCH_PROFILES:
        raise _problem(f'must be "auto" or a list of at most {MAX_BATCH_PROFILES} compliance profile ids, '
                       f"got {_type(value)}")
    found = [(f"[{i}]", f"must be a profile id (lowercase letters, digits and -), got {str(v)[:50]!r}")
             for i, v in enumerate(value) if not isinstance(v, str) or not _PROFILE_ID.match(v)]
    if found:
        raise _many(found)
    return list(dict.fromkeys(value))


# --- call_settings.after_call ------------------------------------------------------------------------------------

#: ``after_call.success`` as a word: any conversation completes the contact (the default), or only one whose
#: analysis says ``call_successful``.
SUCCESS_WORDS = ("conversation", "call_successful")
#: ``after_call.opt_out_scope``: list the number that was called (default), or every number of the contact.
OPT_OUT_SCOPES = ("number", "contact")
#: Bounds and default of ``after_call.max_callbacks``.
MAX_CALLBACKS_RANGE = (0, 20)
DEFAULT_MAX_CALLBACKS = 2
#: A key of the analysis's ``custom_analysis_data`` named by a rule.
ANALYSIS_KEY_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"
_ANALYSIS_KEY = re.compile(ANALYSIS_KEY_PATTERN)
#: Most values in a success rule's ``in``.
MAX_SUCCESS_VALUES = 50
_SCALAR_SCHEMA: dict[str, Any] = {"type": ["string", "number", "boolean"]}


def _analysis_key(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, str) or not _ANALYSIS_KEY.match(value):
        shown = repr(value)[:70] if isinstance(value, str) else _type(value)
        raise _problem("must be a key of the analysis's custom_analysis_data: 1-64 letters, digits, _ . or - "
                       f"(not starting with . or -), got {shown}")
    return value


def _scalar_problem(value: Any) -> str | None:
    if isinstance(value, bool | str) or (isinstance(value, int | float) and math.isfinite(value)):
        return None
    return f"must be a string, a number or true/false, got {_type(value)}"


def _success(value: Any) -> Any:
    """``"conversation"``, ``"call_successful"``, ``{"field", "equals"}`` or ``{"field", "in"}``, normalised."""
    if value is None:
        return None
    if isinstance(value, str):
        word = value.strip().lower()
        if word not in SUCCESS_WORDS:
            raise _problem(f'must be "conversation", "call_successful" or an object {{"field": ..., "equals": '
                           f'...}} / {{"field": ..., "in": [...]}}, got {value!r}')
        return word
    if not isinstance(value, Mapping):
        raise _problem(f'must be "conversation", "call_successful" or an object, got {_type(value)}')
    found = _success_rule_problems(value)
    if found:
        raise _many(found)
    rule: dict[str, Any] = {"field": value["field"]}
    if value.get("equals") is not None:
        rule["equals"] = value["equals"]
    else:
        rule["in"] = list(value["in"])
    return rule


def _success_rule_problems(value: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What is wrong with a success rule on a custom field, as ``(suffix, message)`` pairs."""
    found: list[tuple[str, str]] = []
    unknown = sorted(str(k) for k in value if k not in ("field", "equals", "in"))
    if unknown:
        found.append(("", f"unknown keys {', '.join(unknown)} (known: field, equals, in)"))
    try:
        key = _analysis_key(value.get("field")) if value.get("field") is not None else None
        if key is None:
            found.append((".field", "is required"))
    except PydanticCustomError as exc:
        found.append((".field", exc.message()))
    has_equals, has_in = value.get("equals") is not None, value.get("in") is not None
    if has_equals == has_in:
        found.append(("", 'needs exactly one of "equals" (one value) or "in" (a list of values)'))
    elif has_equals:
        problem = _scalar_problem(value["equals"])
        if problem:
            found.append((".equals", problem))
    else:
        values = value["in"]
        if not isinstance(values, list) or not values or len(values) > MAX_SUCCESS_VALUES:
            found.append((".in", f"must be a list of 1 to {MAX_SUCCESS_VALUES} values"))
        else:
            found += [(f".in[{i}]", p) for i, v in enumerate(values) if (p := _scalar_problem(v))]
    return found


def _opt_out_scope(value: Any) -> Any:
    if value is None:
        return None
    text = value.strip().lower() if isinstance(value, str) else None
    if text not in OPT_OUT_SCOPES:
        raise _problem(f"must be one of {', '.join(repr(s) for s in OPT_OUT_SCOPES)}, got {value!r}")
    return text


_SUCCESS_SCHEMA: dict[str, Any] = {"anyOf": [
    {"type": "string", "enum": list(SUCCESS_WORDS)},
    {"type": "object", "additionalProperties": False, "required": ["field", "equals"],
     "properties": {"field": {"type": "string", "pattern": ANALYSIS_KEY_PATTERN}, "equals": _SCALAR_SCHEMA}},
    {"type": "object", "additionalProperties": False, "required": ["field", "in"],
     "properties": {"field": {"type": "string", "pattern": ANALYSIS_KEY_PATTERN},
                    "in": {"type": "array", "minItems": 1, "maxItems": MAX_SUCCESS_VALUES, "items": _SCALAR_SCHEMA}}},
]}
_AnalysisKey = Annotated[str, Field(pattern=ANALYSIS_KEY_PATTERN)]


class AfterCallShape(BaseModel):
    """``after_call``: what a conversation's analysis decides. Each rule is optional; with none, every conversation
    completes the contact (as without ``after_call``)."""

    model_config = ConfigDict(extra="forbid", title="after_call",
                              field_title_generator=lambda name, _info: name,
                              json_schema_extra={"examples": [
                                  {"success": {"field": "promise_to_pay", "equals": True},
                                   "callback_field": "call_me_back_at", "max_callbacks": 2,
                                   "opt_out_field": "do_not_call", "wrong_number_field": "wrong_person"}]})

    success: Annotated[Any, PlainValidator(_success), WithJsonSchema(_SUCCESS_SCHEMA), _field(
        default=None, description='When a conversation completes the contact: "conversation" (any, the default), '
                    '"call_successful" (the analysis says so), or a custom field that equals a value or is in a '
                    "list. A conversation that misses it has the outcome unsuccessful: a spent attempt.",
        examples=[{"field": "promise_to_pay", "equals": True}])]
    callback_field: Annotated[_AnalysisKey | None, *_nullable(
        _analysis_key, "Custom field holding the time the person asked to be called back: an ISO-8601 instant "
                       "with its offset, or local YYYY-MM-DD HH:MM or YYYY-MM-DD in the callee's zone.",
        "call_me_back_at")]
    max_callbacks: Annotated[
        Annotated[int, _within(*MAX_CALLBACKS_RANGE)] | None,
        *_number(*MAX_CALLBACKS_RANGE, integer=True, example=DEFAULT_MAX_CALLBACKS,
                 description=f"Callbacks scheduled per contact at most (default {DEFAULT_MAX_CALLBACKS}); a "
                             "callback spends no attempt.")]
    opt_out_field: Annotated[_AnalysisKey | None, *_nullable(
        _analysis_key, "Custom field that is true when the person asked not to be called: the number goes onto "
                       "the account's do-not-call list and the contact fails (opted_out).", "do_not_call")]
    opt_out_scope: Annotated[
        Annotated[str, Field(json_schema_extra={"enum": list(OPT_OUT_SCOPES)})] | None,
        *_nullable(_opt_out_scope, 'What an opt-out lists: "number" (the number called, the default) or '
                                   '"contact" (every number of the contact).', "contact")]
    wrong_number_field: Annotated[_AnalysisKey | None, *_nullable(
        _analysis_key, "Custom field that is true when the agent reached the wrong person: that number is never "
                       "dialed again for this contact, and the next one is dialed in the same round.",
        "wrong_person")]

    @model_validator(mode="before")
    @classmethod
    def _object(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            raise _problem(f"must be an object of after-call rules, got {_type(value)}")
        return value


def _nullable(check: Callable[[Any], Any], description: str, example: Any) -> tuple[BeforeValidator, FieldInfo]:
    """The metadata of a nullable field that ``check`` validates first:
    ``Annotated[<its type> | None, *_nullable(check, ...)]``."""
    return BeforeValidator(check), _field(default=None, description=description, examples=[example])


_Zone = Annotated[str, Field(json_schema_extra={"enum": _ZONES})]
_ZoneOrAuto = Annotated[str, Field(json_schema_extra={"enum": [AUTO_TIMEZONE, *_ZONES]})]
_Date = Annotated[str, Field(pattern=DATE_PATTERN, json_schema_extra={"format": "date"})]


class CallSettingsShape(BaseModel):
    """A batch's ``call_settings``: how long calls last, how often contacts are retried and when they may be
    called. Every field is optional and null counts as unset; a field left out takes its default."""

    model_config = ConfigDict(
        extra="forbid", title="call_settings", field_title_generator=lambda name, _info: name,
        json_schema_extra={
            "$comment": "Rules only the server checks (its 422 answer names the field): "
                        + "; ".join(VALIDATOR_ONLY_RULES),
            "allOf": [
                {"$comment": "windows replaces the days_of_week + allowed_hours shorthand",
                 "if": {"required": ["windows"], "properties": {"windows": {"type": "array"}}},
                 "then": {"properties": {"days_of_week": {"type": "null"}, "allowed_hours": {"type": "null"}}}},
                {"$comment": 'compliance "auto" chooses the profiles by the purpose',
                 "if": {"required": ["compliance"], "properties": {"compliance": {"const": AUTO_COMPLIANCE}}},
                 "then": {"required": ["purpose"], "properties": {"purpose": {"type": "string"}}}},
                {"$comment": 'fallback_timezone is only used with timezone "auto"',
                 "if": {"required": ["fallback_timezone"], "properties": {"fallback_timezone": {"type": "string"}}},
                 "then": {"required": ["timezone"], "properties": {"timezone": {"const": AUTO_TIMEZONE}}}},
            ],
            "examples": [
                {"max_attempts": 5, "retry_delay_hours": 2, "days_of_week": [1, 2, 3, 4, 5],
                 "allowed_hours": {"start": "09:00", "end": "18:00"}, "timezone": "America/Santiago",
                 "holidays": "CL"},
            ],
            "x-validator-only-rules": list(VALIDATOR_ONLY_RULES),
        })

    max_call_duration: Annotated[
        Annotated[int, _within(*MAX_CALL_DURATION_RANGE)] | None,
        *_number(*MAX_CALL_DURATION_RANGE, integer=True, unit="seconds", example=600,
                 description="Longest call, seconds; the call is ended past this.")]
    ring_timeout: Annotated[
        Annotated[int, _within(*RING_TIMEOUT_RANGE)] | None,
        *_number(*RING_TIMEOUT_RANGE, integer=True, unit="seconds", example=45,
                 description="How long a number rings before it counts as no answer, seconds.")]
    max_attempts: Annotated[
        Annotated[int, _within(*MAX_ATTEMPTS_RANGE)] | None,
        *_number(*MAX_ATTEMPTS_RANGE, integer=True, example=5,
                 description="Rounds through the contact's phones before the contact fails.")]
    retry_delay_hours: Annotated[
        Annotated[float, _within(*RETRY_DELAY_HOURS_RANGE)] | None,
        *_number(*RETRY_DELAY_HOURS_RANGE, integer=False, unit="hours", example=2,
                 description="Wait after a failed round, hours (fractions allowed).")]
    retry_delay_by_outcome: Annotated[
        RetryDelayByOutcomeShape | None,
        *_nullable(_retry_delay_by_outcome,
                   "Hours to wait after a round that a call with this outcome ended; outcomes not listed wait "
                   "retry_delay_hours.", {"busy": 0.25, "no_answer": 2, "voicemail": 24})]
    allowed_hours: Annotated[AllowedHoursShape | None, Field(
        default=None, examples=[{"start": "09:00", "end": "18:00"}],
        description="Local hours of the window, start inclusive, end exclusive; an end before the start runs "
                    "overnight. With days_of_week, the shorthand for one window.")]
    days_of_week: Annotated[_Days | None,
                            *_nullable(_days, "Days the window opens on, 1 = Monday ... 7 = Sunday.", [1, 2, 3, 4, 5])]
    timezone: Annotated[_ZoneOrAuto | None,
                        *_nullable(_zone(allow_auto=True),
                                   'IANA zone the window is read in, or "auto": the zone of the number dialed.',
                                   "America/Santiago")]
    fallback_timezone: Annotated[_Zone | None,
                                 *_nullable(_zone(allow_auto=False),
                                            'With timezone "auto", the zone of numbers that map to no zone.',
                                            "America/New_York")]
    windows: Annotated[Annotated[list[WindowShape], Field(min_length=1, max_length=MAX_WINDOWS)] | None,
                       *_nullable(_windows,
                                  "Several weekly rules (a union), instead of days_of_week and allowed_hours.",
                                  [{"days": [1, 2, 3, 4, 5], "start": "07:00", "end": "19:00"},
                                   {"days": [6], "start": "08:00", "end": "15:00"}])]
    holidays: Annotated[str | HolidaysShape | None,
                        *_nullable(_holidays,
                                   "No calls on this country's public holidays (the callee's local date): a country "
                                   'code, or {"country", "subdivision"}.', "CL")]
    blackout_dates: Annotated[Annotated[list[_Date], Field(max_length=MAX_BLACKOUT_DATES)] | None,
                              *_nullable(_blackout_dates, "Local dates with no calls.", ["2026-12-24", "2026-12-31"])]
    on_insufficient_balance: Annotated[
        Annotated[str, Field(json_schema_extra={"enum": list(BALANCE_POLICIES)})] | None,
        *_nullable(_balance_policy,
                   'When the account\'s balance cannot cover one call: "fail" the contact, or "wait" in '
                   "waiting_balance for a top-up. Balance held by calls in progress only delays a dial.", "wait")]
    keep_transcripts: Annotated[
        bool | None,
        *_nullable(_flag, "Keep each call's transcript with its analysis (at most 20,000 characters a call).", True)]
    purpose: Annotated[
        Annotated[str, Field(json_schema_extra={"enum": list(PURPOSES)})] | None,
        *_nullable(_purpose, "What the campaign is for: the compliance profiles \"auto\" applies depend on it.",
                   "collection")]
    compliance: Annotated[
        Annotated[str, Field(json_schema_extra={"const": AUTO_COMPLIANCE})]
        | Annotated[list[Annotated[str, Field(pattern=PROFILE_ID_PATTERN)]], Field(max_length=MAX_BATCH_PROFILES)]
        | None,
        *_nullable(_compliance, 'The calling law applied with these settings: a list of compliance profile ids, or '
                                '"auto" (the profiles of the callee number\'s country and US state for the '
                                "purpose). The effective window is the intersection; caps apply with the account's "
                                "contact policy.", ["cl-cobranza"])]
    after_call: Annotated[AfterCallShape | None, Field(
        default=None, examples=[{"success": "call_successful", "callback_field": "call_me_back_at",
                                 "opt_out_field": "do_not_call", "wrong_number_field": "wrong_person"}],
        description="What a conversation's analysis decides: when it completes the contact, callbacks "
                                  "at the asked time, opt-outs onto the do-not-call list, wrong numbers skipped.")]

    @model_validator(mode="wrap")
    @classmethod
    def _whole(cls, value: Any, handler: Any) -> Any:
        if not isinstance(value, Mapping):
            raise _problem(f"must be an object, got {_type(value)}")
        if value.get("windows") is not None and (value.get("days_of_week") is not None
                                                 or value.get("allowed_hours") is not None):
            value = {k: v for k, v in value.items() if k != "windows"}   # its rules are not read: it is refused
            windows_conflict = True
        else:
            windows_conflict = False

        def checks(raw: Mapping[str, Any]) -> list[tuple[str, str]]:
            found = []
            if windows_conflict:
                found.append(("windows", "cannot be combined with days_of_week/allowed_hours (those two are the "
                                         "shorthand for one window): put every rule in windows"))
            compliance = raw.get("compliance")
            if (isinstance(compliance, str) and compliance.strip().lower() == AUTO_COMPLIANCE
                    and raw.get("purpose") is None):
                found.append(("purpose", 'is required with compliance "auto" (it chooses the profiles)'))
            zone, fallback = raw.get("timezone"), raw.get("fallback_timezone")
            zone_text = zone.strip().lower() if isinstance(zone, str) else None
            if fallback is not None and (zone is None or (zone_text != AUTO_TIMEZONE and _zone_ok(zone)
                                                          and _zone_ok(fallback))):
                found.append(("fallback_timezone", 'is only used with timezone "auto"'))
            return found

        return _mapping_checks(value, handler, checks, "call_settings")


def _zone_ok(value: Any) -> bool:
    return isinstance(value, str) and value.strip() in pytz.all_timezones_set


# --- contact_policy ------------------------------------------------------------------------------------------------

#: Bounds of the counts and of the day spans of a contact policy.
COUNT_RANGE = (1, 1000)
DAYS_RANGE = (1, 366)


def _whole_check(low: int, high: int) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _problem(f"must be a whole number between {low} and {high}, got {value!r}")
        return value

    return check


def _whole(low: int, high: int) -> tuple[BeforeValidator]:
    """The metadata of a required whole number within ``[low, high]``:
    ``Annotated[Annotated[int, _within(low, high)], *_whole(low, high)]``."""
    return (BeforeValidator(_whole_check(low, high)),)


def _whole_or_null(low: int, high: int) -> tuple[BeforeValidator, FieldInfo]:
    """The metadata of a whole number within ``[low, high]`` or null (unset):
    ``Annotated[Annotated[int, _within(low, high)] | None, *_whole_or_null(low, high)]``."""
    check = _whole_check(low, high)
    return BeforeValidator(lambda v: None if v is None else check(v)), _field(default=None)


class MaxCallsShape(BaseModel):
    """At most ``count`` calls in any ``days`` consecutive local days."""

    model_config = ConfigDict(extra="forbid", title="max_calls")

    count: Annotated[Annotated[int, _within(*COUNT_RANGE)], *_whole(*COUNT_RANGE)]
    days: Annotated[Annotated[int, _within(*DAYS_RANGE)], *_whole(*DAYS_RANGE)]

    @model_validator(mode="before")
    @classmethod
    def _object(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            raise _problem(f"must be an object {{\"count\": n, \"days\": d}}, got {_type(value)}")
        found = [(f".{name}", "unknown field (known fields: count, days)")
                 for name in sorted(str(k) for k in value if k not in cls.model_fields)]
        missing = [name for name in cls.model_fields if name not in value]
        if found or missing:   # the present fields are checked too: every problem at once
            for name, bounds in (("count", COUNT_RANGE), ("days", DAYS_RANGE)):
                if name in missing:
                    found.append((f".{name}", "is required"))
                    continue
                try:
                    _whole_check(*bounds)(value[name])
                except PydanticCustomError as exc:
                    found.append((f".{name}", exc.message()))
            raise _many(found)
        return value


class ContactPolicyShape(BaseModel):
    """How often one person (a number, or a contact's external_id) may be called across every batch of the
    account; days are the callee's local days."""

    model_config = ConfigDict(extra="forbid", title="contact_policy",
                              json_schema_extra={"example": {"max_calls": {"count": 7, "days": 7},
                                                             "max_calls_per_day": 2, "quiet_days_after_answer": 7}})

    max_calls: MaxCallsShape | None = None
    max_calls_per_day: Annotated[Annotated[int, _within(*COUNT_RANGE)] | None, *_whole_or_null(*COUNT_RANGE)]
    quiet_days_after_answer: Annotated[Annotated[int, _within(*DAYS_RANGE)] | None, *_whole_or_null(*DAYS_RANGE)]

    @model_validator(mode="before")
    @classmethod
    def _object(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            raise _problem(f"must be an object or null, got {_type(value)}")
        return value


# --- the account: PUT /accounts/{account_id} ---------------------------------------------------------------------

PLAN_UNLIMITED = "unlimited"
PLAN_MINUTES = "minutes"
PLAN_CREDITS = "credits"
PLAN_TYPES = (PLAN_UNLIMITED, PLAN_MINUTES, PLAN_CREDITS)
#: Bill every started second of a connected call.
GRANULARITY_SECOND = "second"
#: Bill every started minute of a connected call (61 s cost 2 minutes).
GRANULARITY_MINUTE = "minute"
GRANULARITIES = (GRANULARITY_SECOND, GRANULARITY_MINUTE)
#: Granularity of a plan that names none (the provider itself bills per second).
DEFAULT_GRANULARITY = GRANULARITY_SECOND
#: Storage units per API unit: 60 seconds per minute, 1000 milli-credits per credit.
UNITS_PER_API_UNIT = {PLAN_MINUTES: 60, PLAN_CREDITS: 1000}
#: Largest balance, top-up or adjustment accepted, in API units (minutes or credits).
MAX_AMOUNT = {PLAN_MINUTES: 10**9, PLAN_CREDITS: 10**12}
#: Largest ``price_per_minute`` of a credits plan, credits.
MAX_PRICE_PER_MINUTE = 10**6
#: Allowed ``concurrency_limit`` (provider slots).
CONCURRENCY_LIMIT_RANGE = (1, 100_000)


def _decimal(value: object) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    try:
        return Decimal(value) if isinstance(value, int) else Decimal(repr(value))
    except InvalidOperation:  # pragma: no cover - repr of a finite float always parses
        return None


def to_storage_units(plan_type: str, amount: object, field: str, *, allow_zero: bool = True,
                     maximum: int | None = None) -> int:
    """``amount`` in API units (minutes or credits) as exact storage units (seconds or milli-credits).

    Fractions are allowed as long as the result is whole: 1.5 minutes = 90 s, 2.125 credits =
    2125 milli-credits; 0.01 minutes (0.6 s) and 0.0001 credits are rejected, never rounded.

    :param plan_type: ``minutes`` or ``credits``.
    :param field: the field named in the error.
    :param allow_zero: whether 0 is accepted (a balance) or not (a top-up, a price).
    :param maximum: largest accepted amount in API units; default :data:`MAX_AMOUNT` of the plan type.
    :raises shared.errors.ValidationError: naming ``field``.
    """
    per = UNITS_PER_API_UNIT[plan_type]
    what = "minutes" if plan_type == PLAN_MINUTES else "credits"
    number = _decimal(amount)
    if number is None:
        raise Invalid([(field, f"must be a finite number of {what}, got {type(amount).__name__}")])
    if number < 0 or (number == 0 and not allow_zero):
        raise Invalid([(field, f"must be {'>= 0' if allow_zero else '> 0'} {what}, got {amount}")])
    limit = MAX_AMOUNT[plan_type] if maximum is None else maximum
    if number > limit:
        raise Invalid([(field, f"must be at most {limit} {what}, got {amount}")])
    units = number * per
    if units != units.to_integral_value():
        hint = "a whole number of seconds (minutes x 60)" if plan_type == PLAN_MINUTES else "at most 3 decimals"
        raise Invalid([(field, f"must be {hint}, got {amount}")])
    return int(units)


def _plan_type(value: Any) -> Any:
    if value not in PLAN_TYPES:
        raise _problem(f"must be one of {', '.join(PLAN_TYPES)}, got {value!r}")
    return value


def _as_is(schema: Any, description: str) -> tuple[PlainValidator, FieldInfo]:
    """The metadata of a plan field whose rules depend on the plan's type: :func:`_plan_rules` checks it, this is
    its schema. The value is kept as sent: ``Annotated[Any, *_as_is(...)]``."""
    return (PlainValidator(lambda v: v, json_schema_input_type=schema),
            _field(default=None, description=description))


def _plan_rules(raw: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The plan's rules that depend on its type (none when the type itself is wrong)."""
    kind = raw.get("type")
    if kind not in PLAN_TYPES:
        return []
    if kind == PLAN_UNLIMITED:
        return [(name, "not used by unlimited plans") for name in ("balance", "price_per_minute", "granularity")
                if raw.get(name) is not None]
    found: list[tuple[str, str]] = []
    granularity = raw.get("granularity", DEFAULT_GRANULARITY)
    if granularity not in GRANULARITIES:
        found.append(("granularity", f"must be one of {', '.join(GRANULARITIES)}, got {granularity!r}"))
    price, balance = raw.get("price_per_minute"), raw.get("balance")
    if kind != PLAN_CREDITS and price is not None:
        found.append(("price_per_minute", "only credits plans have a price per minute"))
    elif kind == PLAN_CREDITS and price is None:
        found.append(("price_per_minute", "is required for credits plans (credits per minute)"))
    amounts = [(PLAN_CREDITS, price, "price_per_minute", False, MAX_PRICE_PER_MINUTE)] if kind == PLAN_CREDITS else []
    for plan_type, amount, name, allow_zero, maximum in [*amounts, (kind, balance, "balance", True, None)]:
        try:
            if amount is not None:
                to_storage_units(plan_type, amount, name, allow_zero=allow_zero, maximum=maximum)
        except Invalid as exc:
            found += exc.errors
    return found


class PlanShape(BaseModel):
    """An account's plan as the admin API sets it (amounts in minutes or credits)."""

    model_config = ConfigDict(extra="forbid", title="plan", json_schema_extra={"required": ["type"]})

    type: Annotated[Any, PlainValidator(_plan_type, json_schema_input_type=Literal[PLAN_TYPES]),
                    Field(default=None, validate_default=True)]
    balance: Annotated[Any, *_as_is(Annotated[float, Field(ge=0)] | None,
                                    "Absolute balance: minutes or credits (not for unlimited)")]
    price_per_minute: Annotated[Any, *_as_is(Annotated[float, Field(gt=0, le=MAX_PRICE_PER_MINUTE)] | None,
                                             "Credits per minute (credits plans only, required there)")]
    granularity: Annotated[Any, *_as_is(Literal[GRANULARITIES] | None, "How a call's duration is rounded up")]

    @model_validator(mode="wrap")
    @classmethod
    def _whole(cls, value: Any, handler: Any) -> Any:
        if not isinstance(value, Mapping):
            raise _problem(f"must be an object, got {_type(value)}")
        return _mapping_checks(value, handler, _plan_rules, "plan")


def _concurrency_limit(value: Any) -> Any:
    low, high = CONCURRENCY_LIMIT_RANGE
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high):
        raise _problem(f"must be a whole number between {low} and {high} (or null), got {value!r}")
    return value


def _webhook_url(value: Any) -> Any:
    if not isinstance(value, str) or not value:
        raise _problem(f"must be a URL such as https://example.com/outdial, got {_type(value)}")
    if len(value) > URL_MAX:
        raise _problem(f"is longer than {URL_MAX} characters")
    if not value.lower().startswith(("https://", "http://")):
        raise _problem("must be an https:// URL")
    return value


def _webhook_secret(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _problem(f"must be a string of {SECRET_MIN} to {SECRET_MAX} characters, got {_type(value)}")
    if not SECRET_MIN <= len(value) <= SECRET_MAX:
        raise _problem(f"must be {SECRET_MIN} to {SECRET_MAX} characters long, got {len(value)}")
    if any(ord(c) < 32 or ord(c) == 127 for c in value) or unencodable(value):
        raise _problem("must hold printable characters only")
    return value


def _webhook_events(value: Any) -> Any:
    if value is None:
        return list(EVENT_TYPES)
    if not isinstance(value, list) or not value:
        raise _problem(f"must be a non-empty list of {', '.join(EVENT_TYPES)}, got "
                       f"{'an empty list' if isinstance(value, list) else _type(value)}")
    bad = [str(v)[:40] for v in value if v not in EVENT_TYPES]
    if bad:
        raise _problem(f"unknown event types {', '.join(repr(b) for b in bad)} (known: {', '.join(EVENT_TYPES)})")
    return [kind for kind in EVENT_TYPES if kind in value]


def _hook_field(check: Callable[..., Any], schema: Any, **field: Any) -> tuple[PlainValidator, FieldInfo]:
    """The metadata of a ``result_webhook`` field that ``check`` validates and converts (its default, None, too)."""
    return (PlainValidator(check, json_schema_input_type=schema),
            _field(default=None, validate_default=True, **field))


class ResultWebhookShape(BaseModel):
    """An account's ``result_webhook``: where its signed result events go (docs/results.md). The secret is
    write-only; a change that leaves it out keeps the one stored."""

    model_config = ConfigDict(extra="forbid", title="result_webhook",
                              json_schema_extra={"example": {"url": "https://example.com/outdial",
                                                             "secret": "a-long-random-secret-0123456789",
                                                             "events": list(EVENT_TYPES)}})

    url: Annotated[Any, PlainValidator(_webhook_url, json_schema_input_type=Annotated[str, Field(
        max_length=URL_MAX, pattern="^[Hh][Tt][Tt][Pp][Ss]?://")]), Field(
        description="https:// URL the events are POSTed to (http:// and private addresses only where "
                    "RESULT_WEBHOOKS_ALLOW_PRIVATE is set)")]
    secret: Annotated[Any, *_hook_field(_webhook_secret, Annotated[str, Field(min_length=SECRET_MIN,
                                                                           max_length=SECRET_MAX)] | None,
                                     description="HMAC-SHA256 key of Outdial-Signature (write-only; left out: "
                                                 "the stored one is kept)")]
    events: Annotated[Any, *_hook_field(_webhook_events, Annotated[list[Literal[EVENT_TYPES]], Field(min_length=1)]
                                     | None,
                                     description="Event types to send; default all three")]

    @model_validator(mode="before")
    @classmethod
    def _object(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            raise _problem(f'must be an object {{"url", "secret", "events"}} or null, got {_type(value)}')
        return value


class AccountShape(BaseModel):
    """A ``PUT /accounts/{account_id}`` body; every field is optional (a new account needs ``plan``)."""

    model_config = ConfigDict(extra="forbid", title="body")

    plan: PlanShape | None = None
    concurrency_limit: Annotated[Annotated[int, Field(ge=CONCURRENCY_LIMIT_RANGE[0], le=CONCURRENCY_LIMIT_RANGE[1])]
                                 | None, BeforeValidator(_concurrency_limit),
                                 Field(default=None, description="Provider slots; null: the global default")]
    contact_policy: ContactPolicyShape | None = None
    result_webhook: ResultWebhookShape | None = None

    @model_validator(mode="before")
    @classmethod
    def _object(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            raise _problem(f"must be a JSON object, got {_type(value)}")
        return value


# --- a contact ----------------------------------------------------------------------------------------------------

#: Limits that keep one job document small.
MAX_PHONES = 10
MAX_VARIABLES = 50
MAX_VARIABLE_KEY = 64
MAX_VARIABLE_VALUE = 2000
MAX_NAME = 200
MAX_EXTERNAL_ID = 200
MAX_TIMEZONE = 64
#: A contact's fields in the order its messages list them (it validates them in :class:`ContactShape`'s order).
CONTACT_FIELDS = ("name", "phones", "variables", "external_id", "timezone")


def _encodable(text: str, at: str = "") -> str:
    problem = unencodable(text)
    if problem:
        raise _problem(problem, printable(at))
    return text


def _contact_text(limit: int) -> Callable[[Any], Any]:
    """The trimmed text of a value; None when missing or blank (a blank ``external_id`` is none, never ``""``)."""

    def check(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, str | int | float | None):
            raise _problem(f"must be a string, got {_type(value)}")
        text = "" if value is None else _encodable(str(value)).strip()
        if not text:
            return None
        if len(text) > limit:
            raise _problem(f"longer than {limit} characters")
        return text

    return check


def _contact_phones(value: Any, info: ValidationInfo) -> Any:
    """Each number in E.164 (duplicates dropped); a string holds numbers separated by ``,`` or ``;``."""
    if isinstance(value, str):
        value = [p for p in value.replace(";", ",").split(",") if p.strip()]
    if not isinstance(value, list) or not value:
        raise _problem("at least one phone number is required")
    if len(value) > MAX_PHONES:
        raise _problem(f"at most {MAX_PHONES} numbers per contact")
    region = (info.context or {}).get("region", "CL")
    name = info.data.get("name")
    phones: list[str] = []
    for index, number in enumerate(value):
        if isinstance(number, str):
            _encodable(number, f"[{index}]")
        try:
            e164 = normalize_phone(number, region)
        except InvalidPhone as exc:
            who = f" of {name!r}" if name else ""
            raise _problem(f"{str(number)[:40]!r}{who}: {exc.reason}", f"[{index}]") from None
        if e164 not in phones:
            phones.append(e164)
    return phones


def _contact_timezone(value: Any) -> Any:
    zone = _contact_text(MAX_TIMEZONE)(value)
    if zone is not None and zone not in pytz.all_timezones_set:
        raise _problem(f"unknown IANA time zone {zone!r}")
    return zone


def _contact_variables(value: Any) -> Any:
    """``{name: text}``: numbers and booleans as text, null as ``""``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _problem(f"must be an object of name -> value, got {_type(value)}")
    if len(value) > MAX_VARIABLES:
        raise _problem(f"more than {MAX_VARIABLES} variables")
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key or len(key) > MAX_VARIABLE_KEY:
            raise _problem(f"names must be 1-{MAX_VARIABLE_KEY} characters")
        _encodable(key, f".{key}")
        if key.startswith("$") or "." in key or "\x00" in key:
            raise _problem("names cannot start with '$' or contain '.'", f".{key[:MAX_VARIABLE_KEY]}")
        if item is None:
            out[key] = ""
        elif isinstance(item, bool):
            out[key] = "true" if item else "false"
        elif isinstance(item, str | int | float):
            text = _encodable(str(item), f".{key}")
            if len(text) > MAX_VARIABLE_VALUE:
                raise _problem(f"longer than {MAX_VARIABLE_VALUE} characters", f".{key}")
            out[key] = text
        else:
            raise _problem(f"must be a string or number, got {_type(item)}", f".{key}")
    return out


_Text = Annotated[str, Field(max_length=MAX_NAME)] | None


class ContactShape(BaseModel):
    """One contact: its numbers (E.164, or national ones of the import's region), a name, the variables of the
    agent's prompt, an external_id and a time zone."""

    # The numbers are normalised with the validation context's "region". The fields are checked in this order:
    # a contact's first problem is the one reported.

    model_config = ConfigDict(extra="forbid", title="contact", json_schema_extra={"required": ["phones"]})

    name: Annotated[Any, *_checked(_contact_text(MAX_NAME), _Text)]
    phones: Annotated[Any, *_checked(
        _contact_phones, Annotated[list[str], Field(min_length=1, max_length=MAX_PHONES)]
        | Annotated[str, Field(min_length=1, description="numbers separated by ',' or ';'")])]
    external_id: Annotated[Any, *_checked(_contact_text(MAX_EXTERNAL_ID),
                                          Annotated[str, Field(max_length=MAX_EXTERNAL_ID)] | None)]
    timezone: Annotated[Any, *_checked(_contact_timezone, str | None)]
    variables: Annotated[Any, *_checked(_contact_variables,
                                        Annotated[dict[str, str | None], Field(max_length=MAX_VARIABLES)] | None)]

    @model_validator(mode="before")
    @classmethod
    def _object(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise _problem(f"must be an object, got {_type(value)}")
        unknown = sorted(printable(str(k)) for k in value if k not in CONTACT_FIELDS)
        if unknown:
            raise _problem(f"unknown field (known: {', '.join(CONTACT_FIELDS)})", unknown[0])
        return value


# --- a batch: POST /batches and PATCH /batches/{batch_id} ------------------------------------------------------

#: Longest batch name, agent id and caller id, characters.
MAX_BATCH_TEXT = 200
#: Longest account id, characters.
MAX_ACCOUNT_ID = 100
#: What a batch's call_settings validator reads from the validation context: ``config`` (the defaults, the
#: caller id and phone region), ``partial`` (an update: nothing is required), ``present`` (the body's keys) and
#: ``call_settings`` (the body's call_settings already parsed at the door: not parsed again).
BATCH_CONTEXT = ("config", "partial", "present", "call_settings")

_REQUIRED_CALLER_ID = ("required: the caller id (E.164) the calls come from; CALL_FROM_NUMBER, the default, "
                       "is not set")


def _text_problems(value: Any, *, required: bool) -> list[tuple[str, str]]:
    if value is None:
        return [("", "is required")] if required else []
    if not isinstance(value, str) or not value.strip():
        return [("", "must be a non-empty string")]
    if len(value) > MAX_BATCH_TEXT:
        return [("", f"longer than {MAX_BATCH_TEXT} characters")]
    return []


def _batch_text(*, required: bool) -> Callable[[Any, ValidationInfo], Any]:
    """A non-blank text of at most :data:`MAX_BATCH_TEXT` characters; ``required`` on a create (null is missing)."""

    def check(value: Any, info: ValidationInfo) -> Any:
        found = _text_problems(value, required=required and not (info.context or {}).get("partial"))
        if found:
            raise _many(found)
        return value

    return check


def _from_number(value: Any, info: ValidationInfo) -> Any:
    """The caller id: a text and a phone number; required when the configuration has no default
    (``CALL_FROM_NUMBER``), on an update only when the body names it."""
    context = info.context or {}
    config = context["config"]
    found = _text_problems(value, required=False)
    named = not context.get("partial") or "from_number" in context.get("present", ())
    if named and not value and not config.call_from_number:
        # Without a caller id no call can be created: refusing the batch beats failing every contact later.
        found.append(("", _REQUIRED_CALLER_ID))
    if isinstance(value, str) and value:
        try:
            normalize_phone(value, config.phone_default_region)
        except InvalidPhone as exc:
            found.append(("", exc.reason))
    if found:
        raise _many(found)
    return value


def _call_settings(value: Any, info: ValidationInfo) -> Any:
    """The body's call_settings parsed (a :class:`shared.domain.call_settings.CallSettings`), or None when absent or
    null: :func:`shared.domain.calling_window.validate_call_settings`, its problems under ``call_settings``."""
    from shared.domain.call_settings import InvalidCallSettings
    from shared.domain.calling_window import validate_call_settings

    context = info.context or {}
    if context.get("call_settings") is not None:
        return context["call_settings"]
    if value is None:
        return None
    try:
        return validate_call_settings(value, config=context["config"])
    except InvalidCallSettings as exc:
        raise _many([("" if name == "call_settings" else f".{name}", message) for name, message in exc.errors]) \
            from None


_BatchText = Annotated[str, Field(min_length=1, max_length=MAX_BATCH_TEXT, pattern=r"\S")]


class BatchShape(BaseModel):
    """A ``POST /batches`` body: a campaign's name and account, the agent and caller id (defaults: the
    configuration's) and its call_settings."""

    # PATCH /batches/{batch_id} sends the same fields but account_id, each optional (validated with "partial" in
    # the context; see BATCH_CONTEXT); call_settings becomes the parsed settings. Unknown fields are named by the
    # routes: a create lists them, an update says they cannot be changed.

    model_config = ConfigDict(extra="forbid", title="body", json_schema_extra={"required": ["name", "account_id"]})

    name: Annotated[Any, *_checked(_batch_text(required=True), _BatchText)]
    account_id: Annotated[Any, *_checked(_batch_text(required=True),
                                         Annotated[str, Field(min_length=1, max_length=MAX_ACCOUNT_ID, pattern=r"\S")])]
    agent_id: Annotated[Any, *_checked(_batch_text(required=False), _BatchText | None)]
    from_number: Annotated[Any, *_checked(_from_number, _BatchText | None)]
    call_settings: Annotated[Any, *_checked(_call_settings, CallSettingsShape | None)]


#: The fields of a batch an update may change (every field of :class:`BatchShape` but its account).
BATCH_EDITABLE = tuple(name for name in BatchShape.model_fields if name != "account_id")


# --- POST /accounts/{account_id}/top-up ---------------------------------------------------------------------------


class TopUpShape(BaseModel):
    """A top-up: ``amount`` minutes or credits, per the plan (whose rules :meth:`shared.stores.billing.Billing.top_up`
    checks: a positive number of whole storage units)."""

    model_config = ConfigDict(extra="forbid", title="body", json_schema_extra={"required": ["amount"]})

    amount: Annotated[Any, PlainValidator(lambda v: v, json_schema_input_type=Annotated[float, Field(gt=0)]),
                      Field(default=None, description="Minutes or credits to add")]

    @model_validator(mode="before")
    @classmethod
    def _object(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            raise _problem(f"must be a JSON object, got {_type(value)}")
        if "amount" not in value:
            raise _problem("is required (minutes or credits, per the plan)", "amount")
        return value


# --- a do-not-call list's JSON body: POST /dnc, POST /accounts/{account_id}/dnc --------------------------------

#: Numbers one request may add (JSON or CSV).
MAX_DNC_NUMBERS = 100_000
#: Longest reason kept, characters.
MAX_DNC_REASON = 200


def dnc_reason_problem(reason: object) -> str | None:
    """What is wrong with a do-not-call reason (the body's, or a CSV row's), or None."""
    if reason is None:
        return None
    if not isinstance(reason, str):
        return "must be a string"
    if len(reason) > MAX_DNC_REASON:
        return f"at most {MAX_DNC_REASON} characters"
    return None


def _dnc_numbers(value: Any) -> Any:
    if not isinstance(value, list) or not value:
        raise _problem("must be a non-empty array of phone numbers")
    return value


def _dnc_reason(value: Any) -> Any:
    problem = dnc_reason_problem(value)
    if problem:
        raise _problem(problem)
    return value


class DncShape(BaseModel):
    """Numbers to add to a do-not-call list, and why. Each number is checked as a row of its own
    (:func:`shared.stores.dnc.parse_numbers`: E.164, or national ones of the request's region)."""

    model_config = ConfigDict(extra="forbid", title="body", json_schema_extra={"required": ["numbers"]})

    numbers: Annotated[Any, *_checked(_dnc_numbers,
                                      Annotated[list[str], Field(min_length=1, max_length=MAX_DNC_NUMBERS)],
                                      examples=[["+56961234567", "9 6123 4568"]])]
    reason: Annotated[Any, *_checked(_dnc_reason, Annotated[str, Field(max_length=MAX_DNC_REASON)] | None,
                                     examples=["asked not to be called"])]


# --- POST /call-settings/preview ----------------------------------------------------------------------------------

#: Call times a preview lists by default, and at most.
DEFAULT_PREVIEW_COUNT = 5
MAX_PREVIEW_COUNT = 50


def _preview_phone(value: Any, info: ValidationInfo) -> Any:
    """The number to be dialed, in E.164 (None: none given)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise _problem("must be a phone number (a string), E.164 such as +56961234567")
    try:
        return normalize_phone(value, (info.context or {})["config"].phone_default_region)
    except InvalidPhone as exc:
        raise _problem(exc.reason) from None


def _preview_from(value: Any) -> Any:
    """The instant to start from, an aware UTC datetime (None: now)."""
    from shared.config import parse_instant

    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _problem("must be an ISO-8601 instant with its offset, such as 2026-03-03T13:00:00Z")
    try:
        moment = parse_instant(value[:60])
    except ValueError as exc:
        raise _problem(str(exc)) from None
    if not 2000 <= moment.year <= 2200:
        raise _problem("must be between the years 2000 and 2200")
    return moment


def _preview_count(value: Any) -> Any:
    if value is None:
        return DEFAULT_PREVIEW_COUNT
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PREVIEW_COUNT:
        raise _problem(f"must be a whole number from 1 to {MAX_PREVIEW_COUNT}, got {str(value)[:20]}")
    return value


class PreviewShape(BaseModel):
    """A ``POST /call-settings/preview`` body: call_settings as a batch would have them, a number to dial, an
    instant to start from and how many call times to list."""

    # The validation context's "config" gives the defaults of call_settings and the region of national numbers.

    model_config = ConfigDict(extra="forbid", title="body", populate_by_name=True)

    call_settings: Annotated[Any, *_checked(_call_settings, CallSettingsShape | None)]
    phone: Annotated[Any, *_checked(_preview_phone, Annotated[str, Field(max_length=40)] | None,
                                    examples=["+56961234567"],
                                    description="The number to be dialed; with timezone auto its zone decides")]
    from_: Annotated[Any, *_checked(_preview_from, datetime | None, alias="from",
                                    description="The instant to start from (default now on the shared clock)")]
    count: Annotated[Any, *_checked(_preview_count, Annotated[int, Field(ge=1, le=MAX_PREVIEW_COUNT)] | None,
                                    json_schema_extra={"default": DEFAULT_PREVIEW_COUNT})]
    from_number: Annotated[Any, *_checked(_preview_phone, Annotated[str, Field(max_length=40)] | None,
                                          examples=["+56600123456"],
                                          description="The batch's caller id: a compliance profile that asks for a "
                                                      "caller id prefix warns when it lacks it")]


def body_fields(model: type[BaseModel]) -> tuple[str, ...]:
    """The fields of a body as sent (``from``, not ``from_``), in the model's order."""
    return tuple(field.alias or name for name, field in model.model_fields.items())


# --- schemas ------------------------------------------------------------------------------------------------------


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON Schema (draft 2020-12) in one piece: its definitions inlined, no ``"default": null``
    (a field left out is unset)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, list):
            return [inline(n) for n in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            return inline({**defs[node["$ref"].rsplit("/", 1)[1]], **{k: v for k, v in node.items() if k != "$ref"}})
        return {k: inline(v) for k, v in node.items() if not (k == "default" and v is None)}

    inlined: dict[str, Any] = inline(schema)
    return inlined


#: JSON Schema keywords OpenAPI 3.0 does not have (``examples`` becomes ``example``).
_NOT_OPENAPI = ("$schema", "$id", "$comment", "title", "examples", "allOf", "x-validator-only-rules")


def openapi_schema(model: type[BaseModel], *, lenient: Sequence[str] = ()) -> dict[str, Any]:
    """``model``'s JSON Schema in OpenAPI 3.0 form: ``nullable`` instead of a null branch, ``example``.

    :param lenient: ``pattern``/``enum`` are left out under these property names: the server also accepts
        other spellings there and normalises them (``" 9:00"``, ``"cl"``, ``"Wait"``), and the document must not
        call what the server accepts invalid.
    """

    def convert(node: Any, name: str | None = None) -> Any:
        if isinstance(node, list):
            return [convert(n, name) for n in node]
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _NOT_OPENAPI:
                continue
            if key == "properties":
                out[key] = {k: convert(v, k) for k, v in value.items()}
            elif key in ("additionalProperties", "items", "anyOf", "oneOf"):
                out[key] = convert(value, name)
            elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
                out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
                out[key] = True
            else:
                out[key] = value
        if node.get("examples"):
            out["example"] = node["examples"][0]
        branches = out.get("anyOf")
        if branches is not None and {"type": "null"} in branches:
            kept = [b for b in branches if b != {"type": "null"}]
            out.pop("anyOf")
            out = {**kept[0], **out} if len(kept) == 1 else {**out, "oneOf": kept}
            out["nullable"] = True
        if name in lenient:
            out.pop("pattern", None)
            out.pop("enum", None)
        return out

    converted: dict[str, Any] = convert(json_schema(model))
    return converted


# --- compliance profiles: PUT /compliance-profiles/{profile_id} ---------------------------------------------------

#: What a call is for; a compliance profile binds some of these (``call_settings.purpose`` names one).
COMPLIANCE_PURPOSES = PURPOSES
#: Call outcomes a cap may count (the outcomes of a placed call; see shared.domain.outcomes).
CAP_OUTCOMES = ("answered", "voicemail", "no_answer", "busy", "failed_dial", "invalid_number", "timeout", "dropped")
#: Whom a cap counts: a person (per number and per external_id, each on its own) or a debt (per external_id).
CAP_SCOPES = ("person", "debt")
#: Bounds of a cap's ``hours`` (a rolling duration: up to a leap year).
CAP_HOURS_RANGE = (1, 8784)
#: Bounds of a profile's ``version``.
PROFILE_VERSION_RANGE = (1, 1_000_000)
#: Most caps, rules and unconfirmed paths in one profile.
MAX_PROFILE_CAPS = 20
MAX_PROFILE_RULES = 50
MAX_PROFILE_UNCONFIRMED = 50
#: Longest profile name, cap or rule text, rule source.
MAX_PROFILE_NAME = 200
MAX_RULE_TEXT = 500
MAX_RULE_SOURCE = 300
#: A path into a profile's document, as ``unconfirmed`` names it: ``caps[0].counts``, ``windows[1].start``.
PROFILE_PATH_PATTERN = r"^[a-z_]+(\[[0-9]+\])?(\.[a-z_]+(\[[0-9]+\])?)*$"
_PROFILE_PATH = re.compile(PROFILE_PATH_PATTERN)
_PATH_PART = re.compile(r"([a-z_]+)(?:\[([0-9]+)\])?")

if not set(CAP_OUTCOMES) <= {o.value for o in ROUND_ENDING} | {"answered"}:  # pragma: no cover - renamed outcome
    raise RuntimeError(f"CAP_OUTCOMES names an outcome that does not exist: {CAP_OUTCOMES}")


def _profile_text(limit: int, *, required: bool = True) -> Callable[[Any], Any]:
    """A non-blank text of at most ``limit`` characters (surrounding blanks dropped); unset allowed unless
    ``required``."""

    def check(value: Any) -> Any:
        if value is None or (not required and value == ""):
            if required:
                raise _problem("is required")
            return None
        if not isinstance(value, str) or not value.strip():
            raise _problem("must be a non-empty string")
        if len(value) > limit:
            raise _problem(f"longer than {limit} characters")
        return value.strip()

    return check


def _profile_id(value: Any) -> Any:
    if not isinstance(value, str) or not _PROFILE_ID.fullmatch(value):
        shown = repr(value)[:60] if isinstance(value, str) else _type(value)
        raise _problem(f"must be 2-40 lowercase letters, digits or '-' (starting with a letter or digit), got {shown}")
    return value


def _country_code(value: Any) -> Any:
    import phonenumbers

    code = value.upper() if isinstance(value, str) else None
    if code is None or len(code) != 2 or code not in phonenumbers.SUPPORTED_REGIONS:
        shown = repr(value)[:20] if isinstance(value, str) else _type(value)
        raise _problem(f"must be an ISO 3166 alpha-2 country code such as CL, US or ES, got {shown}")
    return code


def _subdivision(value: Any) -> Any:
    if value is None:
        return None
    text = value.upper() if isinstance(value, str) else ""
    if not re.fullmatch(r"[A-Z0-9]{1,6}", text):
        shown = repr(value)[:20] if isinstance(value, str) else _type(value)
        raise _problem(f"must be a subdivision code such as FL (1-6 letters or digits), got {shown}")
    return text


def _purposes(value: Any) -> Any:
    if not isinstance(value, list | tuple) or not value:
        raise _problem(f"must be a non-empty list of purposes ({', '.join(COMPLIANCE_PURPOSES)})")
    bad = [(f"[{i}]", f"is not a purpose (known: {', '.join(COMPLIANCE_PURPOSES)})")
           for i, p in enumerate(value) if p not in COMPLIANCE_PURPOSES]
    if bad:
        raise _many(bad)
    return [p for p in COMPLIANCE_PURPOSES if p in value]


def _cap_counts(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, list | tuple) or not value:
        raise _problem("must be null (every placed call counts) or a non-empty list of outcomes "
                       f"({', '.join(CAP_OUTCOMES)})")
    bad = [(f"[{i}]", f"is not an outcome a cap counts (known: {', '.join(CAP_OUTCOMES)})")
           for i, o in enumerate(value) if o not in CAP_OUTCOMES]
    if bad:
        raise _many(bad)
    return [o for o in CAP_OUTCOMES if o in value]


def _cap_scope(value: Any) -> Any:
    if value is None:
        return "person"
    if value not in CAP_SCOPES:
        raise _problem(f"must be one of {', '.join(repr(s) for s in CAP_SCOPES)}, got {str(value)[:40]!r}")
    return value


def _checked_on(value: Any) -> Any:
    parsed = None
    if isinstance(value, str) and _ISO_DATE.match(value):
        try:
            parsed = date.fromisoformat(value)
        except ValueError:
            parsed = None
    if parsed is None:
        shown = repr(value)[:20] if isinstance(value, str) else _type(value)
        raise _problem(f'must be the date the source was read, "YYYY-MM-DD", got {shown}')
    return parsed.isoformat()


def _listed(limit: int, what: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value is None:
            return []
        if not isinstance(value, list | tuple):
            raise _problem(f"must be a list of {what}, got {_type(value)}")
        if len(value) > limit:
            raise _problem(f"has {len(value)} entries, at most {limit} are allowed")
        return list(value)

    return check


def _object_of(title: str, known: tuple[str, ...], value: Any) -> Any:
    if not isinstance(value, Mapping):
        raise _problem(f"must be an object ({title}: {', '.join(known)}), got {_type(value)}")
    return value


class CapShape(BaseModel):
    """One cap of a compliance profile: at most ``count`` calls in any ``days`` consecutive local days of the callee,
    or in any ``hours`` hours."""

    model_config = ConfigDict(extra="forbid", title="cap")

    count: Annotated[Annotated[int, _within(*COUNT_RANGE)], *_whole(*COUNT_RANGE)]
    days: Annotated[Annotated[int, _within(*DAYS_RANGE)] | None, *_whole_or_null(*DAYS_RANGE)]
    hours: Annotated[Annotated[int, _within(*CAP_HOURS_RANGE)] | None, *_whole_or_null(*CAP_HOURS_RANGE)]
    per: Annotated[Annotated[str, Field(json_schema_extra={"enum": list(CAP_SCOPES)})] | None,
                   BeforeValidator(_cap_scope), _field(default="person", validate_default=True)]
    counts: Annotated[list[Annotated[str, Field(json_schema_extra={"enum": list(CAP_OUTCOMES)})]] | None,
                      BeforeValidator(_cap_counts), _field(default=None)]
    rule: Annotated[Annotated[str, Field(max_length=MAX_RULE_TEXT)] | None,
                    BeforeValidator(_profile_text(MAX_RULE_TEXT, required=False)), _field(default=None)]

    @model_validator(mode="wrap")
    @classmethod
    def _cap(cls, value: Any, handler: Any) -> Any:
        value = _object_of("cap", tuple(cls.model_fields), value)

        def checks(raw: Mapping[str, Any]) -> list[tuple[str, str]]:
            if (raw.get("days") is None) == (raw.get("hours") is None):
                return [("days", 'needs exactly one of "days" (consecutive local days of the callee) or "hours" '
                                 "(a rolling duration)")]
            return []

        return _mapping_checks(value, handler, checks, "cap")


class RuleSourceShape(BaseModel):
    """One rule of a compliance profile: what it says, the official text it comes from and when that was read."""

    model_config = ConfigDict(extra="forbid", title="rule")

    rule: Annotated[str, BeforeValidator(_profile_text(MAX_RULE_TEXT)), Field(max_length=MAX_RULE_TEXT)]
    source: Annotated[str, BeforeValidator(_profile_text(MAX_RULE_SOURCE)), Field(max_length=MAX_RULE_SOURCE)]
    checked_on: Annotated[_Date, BeforeValidator(_checked_on)]

    @model_validator(mode="before")
    @classmethod
    def _object(cls, value: Any) -> Any:
        return _object_of("rule", tuple(cls.model_fields), value)


def _unconfirmed_path(value: Any) -> Any:
    if not isinstance(value, str) or not _PROFILE_PATH.fullmatch(value):
        shown = repr(value)[:60] if isinstance(value, str) else _type(value)
        raise _problem(f"must be a path into this profile such as caps[0].counts, got {shown}")
    return value


def profile_path_exists(document: Mapping[str, Any], path: str) -> bool:
    """Whether ``path`` (``caps[0].counts``, ``windows[1].start``, ``holidays``) names a value of ``document``
    (one that is present, null included)."""
    node: Any = document
    for part in path.split("."):
        match = _PATH_PART.fullmatch(part)
        if match is None or not isinstance(node, Mapping) or match.group(1) not in node:
            return False
        node = node[match.group(1)]
        if match.group(2) is not None:
            index = int(match.group(2))
            if not isinstance(node, list) or index >= len(node):
                return False
            node = node[index]
    return True


class ComplianceProfileShape(BaseModel):
    """A compliance profile as stored and served: the calling law of a country or state, applied with a batch's
    call_settings (docs/compliance.md). ``windows`` and ``holidays`` are read as in call_settings, in the callee's
    zone (or ``fixed_zone``)."""

    model_config = ConfigDict(extra="forbid", title="body", field_title_generator=lambda name, _i: name)

    id: Annotated[str, PlainValidator(_profile_id, json_schema_input_type=Annotated[
        str, Field(pattern=PROFILE_ID_PATTERN)]), Field(description="The profile's id", examples=["cl-cobranza"])]
    version: Annotated[Annotated[int, _within(*PROFILE_VERSION_RANGE)], *_whole(*PROFILE_VERSION_RANGE)]
    name: Annotated[str, BeforeValidator(_profile_text(MAX_PROFILE_NAME)), Field(max_length=MAX_PROFILE_NAME)]
    country: Annotated[str, PlainValidator(_country_code, json_schema_input_type=Annotated[
        str, Field(pattern=r"^[A-Za-z]{2}$")]), Field(description="ISO 3166 alpha-2", examples=["CL"])]
    subdivision: Annotated[Annotated[str, Field(pattern=r"^[A-Za-z0-9]{1,6}$")] | None,
                           *_nullable(_subdivision, "A state or region of the country (US: FL, TX...)", "FL")]
    purposes: Annotated[list[Annotated[str, Field(json_schema_extra={"enum": list(COMPLIANCE_PURPOSES)})]],
                        BeforeValidator(_purposes), Field(min_length=1)]
    fixed_zone: Annotated[_Zone | None, *_nullable(
        _zone(allow_auto=False), "Read the windows in this zone instead of the callee's", "America/Chicago")]
    windows: Annotated[Annotated[list[WindowShape], Field(min_length=1, max_length=MAX_WINDOWS)] | None,
                       *_nullable(_windows, "When calls may start, as call_settings' windows (null: any hour)",
                                  [{"days": [1, 2, 3, 4, 5, 6], "start": "08:00", "end": "20:00"}])]
    holidays: Annotated[str | HolidaysShape | None,
                        *_nullable(_holidays, "Public holidays with no calls, as call_settings' holidays",
                                   {"country": "CL"})]
    caps: Annotated[Annotated[list[CapShape], Field(max_length=MAX_PROFILE_CAPS)] | None,
                    BeforeValidator(_listed(MAX_PROFILE_CAPS, "caps")), _field(default_factory=list)]
    quiet_days_after_conversation: Annotated[Annotated[int, _within(*DAYS_RANGE)] | None,
                                             *_whole_or_null(*DAYS_RANGE)]
    rules: Annotated[Annotated[list[RuleSourceShape], Field(max_length=MAX_PROFILE_RULES)] | None,
                     BeforeValidator(_listed(MAX_PROFILE_RULES, "rules")), _field(default_factory=list)]
    unconfirmed: Annotated[Annotated[list[Annotated[Annotated[str, Field(pattern=PROFILE_PATH_PATTERN)],
                                                    BeforeValidator(_unconfirmed_path)]],
                                     Field(max_length=MAX_PROFILE_UNCONFIRMED)] | None,
                           BeforeValidator(_listed(MAX_PROFILE_UNCONFIRMED, "paths")), _field(default_factory=list)]

    @model_validator(mode="before")
    @classmethod
    def _object(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            raise _problem(f"must be an object (a compliance profile), got {_type(value)}")
        return value

    @model_validator(mode="after")
    def _paths(self) -> ComplianceProfileShape:
        document = self.document()
        found: list[tuple[str, str]] = []
        for i, path in enumerate(self.unconfirmed or ()):
            if path in ("id", "unconfirmed") or path.startswith("unconfirmed[") or not profile_path_exists(
                    document, path):
                found.append((f"unconfirmed[{i}]", f"names no value of this profile: {path}"))
        if self.fixed_zone is not None and self.windows is None:
            found.append(("fixed_zone", "is only read with windows"))
        if found:
            raise _many(found)
        return self

    def document(self) -> dict[str, Any]:
        """The profile as stored and served: every field, normalised."""
        holidays: Any = self.holidays
        if isinstance(holidays, HolidaysShape):
            holidays = holidays.model_dump(exclude_none=True)
        return {
            "id": self.id, "version": self.version, "name": self.name, "country": self.country,
            "subdivision": self.subdivision, "purposes": list(self.purposes), "fixed_zone": self.fixed_zone,
            "windows": None if self.windows is None else [w.model_dump() for w in self.windows],
            "holidays": holidays,
            "caps": [{"count": c.count, "days": c.days, "hours": c.hours, "per": c.per,
                      "counts": None if c.counts is None else list(c.counts), "rule": c.rule or ""}
                     for c in self.caps or ()],
            "quiet_days_after_conversation": self.quiet_days_after_conversation,
            "rules": [r.model_dump() for r in self.rules or ()],
            "unconfirmed": list(self.unconfirmed or ()),
        }


__all__ += ["CAP_OUTCOMES", "CAP_SCOPES", "COMPLIANCE_PURPOSES", "CapShape", "ComplianceProfileShape",
            "RuleSourceShape", "profile_path_exists"]
