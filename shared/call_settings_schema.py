"""The JSON Schema (draft 2020-12) of ``call_settings``, built from the validator's own field table.

:func:`call_settings_schema` reads :data:`shared.call_settings.FIELDS` (descriptions, examples, numeric
bounds and whether a number is whole) and the validator's constants (:data:`~shared.call_settings.MAX_WINDOWS`,
:data:`~shared.call_settings.MAX_BLACKOUT_DATES`, the outcomes, the balance policies, the known zones
and holiday countries), and the defaults from the configuration (:func:`~shared.call_settings.field_defaults`).
``GET /call-settings/schema`` serves it so a frontend can build its form from it.

The schema describes the canonical form (what a batch stores): ``"09:00"`` rather than ``" 9:00 "``,
``"CL"`` rather than ``"cl"``, ``"auto"`` rather than ``"AUTO"``; the validator also accepts those
spellings and normalises them. Some rules cannot be written in a JSON Schema; the validator's 422 is
the authority for them (:data:`VALIDATOR_ONLY_RULES`, also listed in the schema's ``$comment``).
"""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any

import pytz

from shared.call_settings import (
    AUTO_TIMEZONE,
    BALANCE_POLICIES,
    FIELDS,
    MAX_BLACKOUT_DATES,
    MAX_WINDOWS,
    RETRY_DELAY_OUTCOMES,
    field_defaults,
)
from shared.config import Config, get_config

#: The schema's ``$id``.
SCHEMA_ID = "https://outdial.invalid/schemas/call_settings.json"
#: ``"HH:MM"`` from ``"00:00"`` to ``"23:59"`` (a window's start).
START_PATTERN = r"^([01]?[0-9]|2[0-3]):[0-5][0-9]$"
#: ``"HH:MM"`` from ``"00:00"`` to ``"24:00"`` (a window's end).
END_PATTERN = r"^(([01]?[0-9]|2[0-3]):[0-5][0-9]|24:00)$"
#: ``"YYYY-MM-DD"``.
DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"

#: What only the validator checks (the answer is its 422 naming the field).
VALIDATOR_ONLY_RULES = (
    "a window's start and end differ (allowed_hours, windows[i]): equal times would allow no time at all",
    "the settings allow at least one instant in the year from now (holidays and blackout dates can close every "
    "day the window opens)",
    "blackout_dates are real calendar dates (2026-02-30 is refused)",
    "a holidays subdivision is one the country has",
    "weekdays are written as JSON integers (1, not 1.0)",
)


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` or null (null counts as unset)."""
    return {"anyOf": [schema, {"type": "null"}]}


def _described(name: str, schema: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    spec = FIELDS[name]
    out: dict[str, Any] = {"title": name, "description": spec.description, **schema,
                           "examples": [spec.example]}
    if name in defaults:
        out["default"] = defaults[name]
    if spec.unit:
        out["x-unit"] = spec.unit
    return out


def _number(name: str) -> dict[str, Any]:
    spec = FIELDS[name]
    assert spec.bounds is not None
    low, high = spec.bounds
    if spec.integer:
        return {"type": "integer", "minimum": int(low), "maximum": int(high)}
    return {"type": "number", "minimum": low, "maximum": high}


def _days() -> dict[str, Any]:
    return {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 1, "maximum": 7},
            "description": "1 = Monday ... 7 = Sunday"}


def _holiday_countries() -> list[str]:
    import holidays as holidays_lib

    return sorted(holidays_lib.list_supported_countries(include_aliases=False))


def call_settings_schema(config: Config | None = None) -> dict[str, Any]:
    """The JSON Schema of ``call_settings`` (draft 2020-12), with this deployment's defaults (a fresh copy)."""
    defaults = field_defaults(config or get_config())
    return copy.deepcopy(_schema(tuple(sorted(defaults.items()))))


@lru_cache(maxsize=8)
def _schema(default_items: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    defaults = dict(default_items)
    zones = sorted(pytz.all_timezones_set)
    start = {"type": "string", "pattern": START_PATTERN, "examples": ["09:00"]}
    end = {"type": "string", "pattern": END_PATTERN, "examples": ["18:00"]}
    zone = {"type": "string", "enum": zones}
    countries = {"type": "string", "enum": _holiday_countries()}
    properties: dict[str, Any] = {}
    for name, spec in FIELDS.items():
        if spec.bounds is not None:
            properties[name] = _described(name, _nullable(_number(name)), defaults)
    retry = _number("retry_delay_hours")
    properties["retry_delay_by_outcome"] = _described("retry_delay_by_outcome", _nullable({
        "type": "object", "additionalProperties": False,
        "properties": {outcome: _nullable(retry) for outcome in RETRY_DELAY_OUTCOMES}}), defaults)
    properties["allowed_hours"] = _described("allowed_hours", _nullable({
        "type": "object", "additionalProperties": False,
        "properties": {"start": {**_nullable(start), "default": "00:00"},
                       "end": {**_nullable(end), "default": "24:00"}}}), defaults)
    properties["days_of_week"] = _described("days_of_week", _nullable(_days()), defaults)
    properties["timezone"] = _described("timezone", _nullable({"type": "string",
                                                                "enum": [AUTO_TIMEZONE, *zones]}), defaults)
    properties["fallback_timezone"] = _described("fallback_timezone", _nullable(zone), defaults)
    properties["windows"] = _described("windows", _nullable({
        "type": "array", "minItems": 1, "maxItems": MAX_WINDOWS,
        "items": {"type": "object", "additionalProperties": False, "required": ["days", "start", "end"],
                  "properties": {"days": _days(), "start": start, "end": end}}}), defaults)
    properties["holidays"] = _described("holidays", _nullable({"anyOf": [
        countries,
        {"type": "object", "additionalProperties": False, "required": ["country"],
         "properties": {"country": countries, "subdivision": _nullable({"type": "string"})}},
    ]}), defaults)
    properties["blackout_dates"] = _described("blackout_dates", _nullable({
        "type": "array", "maxItems": MAX_BLACKOUT_DATES,
        "items": {"type": "string", "format": "date", "pattern": DATE_PATTERN}}), defaults)
    properties["on_insufficient_balance"] = _described("on_insufficient_balance", _nullable(
        {"type": "string", "enum": list(BALANCE_POLICIES)}), defaults)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "call_settings",
        "description": "How long calls last, how often contacts are retried and when they may be called. Every "
                       "field is optional and null counts as unset; a field left out takes its default.",
        "$comment": "Rules only the server checks (its 422 answer names the field): " + "; ".join(VALIDATOR_ONLY_RULES),
        "type": "object",
        "additionalProperties": False,
        "properties": {name: properties[name] for name in FIELDS},
        "allOf": [
            {"$comment": "windows replaces the days_of_week + allowed_hours shorthand",
             "if": {"required": ["windows"], "properties": {"windows": {"type": "array"}}},
             "then": {"properties": {"days_of_week": {"type": "null"}, "allowed_hours": {"type": "null"}}}},
            {"$comment": 'fallback_timezone is only used with timezone "auto"',
             "if": {"required": ["fallback_timezone"], "properties": {"fallback_timezone": {"type": "string"}}},
             "then": {"required": ["timezone"], "properties": {"timezone": {"const": AUTO_TIMEZONE}}}},
        ],
        "examples": [
            {"max_attempts": 5, "retry_delay_hours": 2, "days_of_week": [1, 2, 3, 4, 5],
             "allowed_hours": {"start": "09:00", "end": "18:00"}, "timezone": "America/Santiago", "holidays": "CL"},
        ],
        "x-validator-only-rules": list(VALIDATOR_ONLY_RULES),
    }
