"""A batch's call_settings: parsing, validation and defaults.

``parse_call_settings(raw)`` turns the stored dict (or None) into a :class:`CallSettings` with
every field filled from the global defaults; invalid input raises :class:`InvalidCallSettings`
naming every bad field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytz

from shared.config import Config, get_config

#: Bounds of the original fields.
MAX_CALL_DURATION_RANGE = (60, 7200)
RING_TIMEOUT_RANGE = (5, 300)
MAX_ATTEMPTS_RANGE = (1, 100)
RETRY_DELAY_HOURS_RANGE = (0.0, 720.0)

KNOWN_FIELDS = (
    "max_call_duration", "ring_timeout", "max_attempts", "retry_delay_hours",
    "allowed_hours", "days_of_week", "timezone",
)


class InvalidCallSettings(ValueError):
    """Rejected call_settings; ``errors`` lists ``(field, message)``, the message names each one."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("invalid call_settings: " + "; ".join(f"{f}: {m}" for f, m in errors))


@dataclass(frozen=True, kw_only=True)
class CallSettings:
    """Validated settings with every default applied. ``raw`` is the stored dict."""

    max_call_duration: int
    ring_timeout: int
    max_attempts: int
    retry_delay_hours: float
    timezone: str
    days_of_week: tuple[int, ...] | None = None
    allowed_hours: tuple[str, str] | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)

    def to_document(self) -> dict[str, Any]:
        """The dict to store: what the operator set, nothing filled in."""
        return dict(self.raw)


def _number(raw: Mapping[str, Any], name: str, bounds: tuple[float, float], errors: list[tuple[str, str]],
            *, integer: bool) -> Any:
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        errors.append((name, f"must be a number, got {type(value).__name__}"))
        return None
    if integer and value != int(value):
        errors.append((name, f"must be a whole number, got {value}"))
        return None
    if not bounds[0] <= value <= bounds[1]:
        errors.append((name, f"must be between {bounds[0]} and {bounds[1]}, got {value}"))
        return None
    return int(value) if integer else float(value)


def parse_call_settings(raw: Mapping[str, Any] | None, *, config: Config | None = None) -> CallSettings:
    """Validate ``raw`` and fill the defaults; None or ``{}`` gives the global defaults."""
    config = config or get_config()
    raw = {} if raw is None else raw
    if not isinstance(raw, Mapping):
        raise InvalidCallSettings([("call_settings", f"must be an object, got {type(raw).__name__}")])
    errors: list[tuple[str, str]] = []
    unknown = sorted(str(k) for k in raw if k not in KNOWN_FIELDS)
    for name in unknown:
        errors.append((name, f"unknown field (known fields: {', '.join(KNOWN_FIELDS)})"))
    duration = _number(raw, "max_call_duration", MAX_CALL_DURATION_RANGE, errors, integer=True)
    ring = _number(raw, "ring_timeout", RING_TIMEOUT_RANGE, errors, integer=True)
    attempts = _number(raw, "max_attempts", MAX_ATTEMPTS_RANGE, errors, integer=True)
    delay = _number(raw, "retry_delay_hours", RETRY_DELAY_HOURS_RANGE, errors, integer=False)
    timezone = raw.get("timezone", config.default_timezone)
    if not isinstance(timezone, str) or timezone not in pytz.all_timezones_set:
        errors.append(("timezone", f"unknown IANA time zone {timezone!r}"))
    if errors:
        raise InvalidCallSettings(errors)
    return CallSettings(
        max_call_duration=duration if duration is not None else int(config.call_max_duration_minutes * 60),
        ring_timeout=ring if ring is not None else config.ring_timeout_seconds,
        max_attempts=attempts if attempts is not None else config.max_tries,
        retry_delay_hours=delay if delay is not None else config.retry_delay_minutes / 60,
        timezone=timezone,
        raw=dict(raw),
    )
