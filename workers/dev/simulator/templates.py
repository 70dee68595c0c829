"""Time templates in a scenario's ``custom_analysis_data``, rendered relative to the call's end.

A scenario cannot name an absolute callback time when the shared clock runs many times faster
than real time, so a string value (at any depth of objects and lists) may hold templates that are
replaced when the call's analysis is produced:

- ``{{end}}``, ``{{end+2h}}``, ``{{end-30m@America/Santiago}}``: an ISO-8601 instant with its offset,
  seconds precision (UTC unless a zone is given), e.g. ``2026-03-10T15:04:05+00:00``;
- ``{{local+2h@America/Santiago}}``: that zone's wall clock, ``YYYY-MM-DD HH:MM`` (no offset);
- ``{{date+1d}}``, ``{{date+1d@America/Santiago}}``: a date, ``YYYY-MM-DD``.

Offsets are terms of an integer and a unit (``s``, ``m``, ``h``, ``d``) each with ``+`` or ``-``
(``{{end+1d+2h}}``); they move the instant by exact durations (a day is 24 hours, also across a
daylight-saving change), and the zone only decides how the moved instant is written. A template
may be the whole string or part of it. :func:`check_templates` refuses an unknown template or zone
when the scenario is parsed, so :func:`render_templates` never fails.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pytz

__all__ = ["TemplateError", "check_templates", "render_templates"]

_TEMPLATE = re.compile(r"\{\{(.*?)\}\}")
_INNER = re.compile(r"(?P<kind>end|local|date)(?P<offsets>(?:[+-]\d+[smhd])*)(?:@(?P<zone>[^\s@{}]+))?")
_TERM = re.compile(r"([+-])(\d+)([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: Offsets of one template may add up to at most this many seconds either way (ten years).
MAX_OFFSET_S = 3650 * 86400
_FORMATS = {"end": None, "local": "%Y-%m-%d %H:%M", "date": "%Y-%m-%d"}
_USAGE = "use {{end}}, {{local}} or {{date}}, optional offsets such as +2h or -30m, optional @Zone"


class TemplateError(ValueError):
    """A template that cannot be rendered; the message names the field."""


def _parse(inner: str, where: str) -> tuple[str, int, Any]:
    """``(kind, offset_s, zone)`` of a template's text between the braces."""
    match = _INNER.fullmatch(inner.strip())
    if match is None:
        raise TemplateError(f"{where}: unknown template {{{{{inner}}}}} ({_USAGE})")
    offset_s = sum((1 if sign == "+" else -1) * int(n) * _UNIT_S[unit]
                   for sign, n, unit in _TERM.findall(match["offsets"]))
    if abs(offset_s) > MAX_OFFSET_S:
        raise TemplateError(f"{where}: the offsets of {{{{{inner}}}}} exceed 3650 days")
    zone: Any = pytz.utc
    if match["zone"] is not None:
        try:
            zone = pytz.timezone(match["zone"])
        except pytz.UnknownTimeZoneError:
            raise TemplateError(f"{where}: unknown time zone {match['zone']!r} in {{{{{inner}}}}}") from None
    return match["kind"], offset_s, zone


def check_templates(value: Any, where: str) -> None:
    """Raise :class:`TemplateError` naming the field (``where`` plus the path inside) of a bad template."""
    if isinstance(value, str):
        for inner in _TEMPLATE.findall(value):
            _parse(inner, where)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            check_templates(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            check_templates(item, f"{where}[{i}]")


def _render_one(inner: str, end_ms: int) -> str:
    kind, offset_s, zone = _parse(inner, "template")
    at = datetime.fromtimestamp(end_ms // 1000 + offset_s, tz=pytz.utc).astimezone(zone)
    fmt = _FORMATS[kind]
    return at.isoformat(timespec="seconds") if fmt is None else at.strftime(fmt)


def render_templates(value: Any, end_ms: int) -> Any:
    """``value`` with every template in its strings replaced, relative to ``end_ms`` (shared-clock ms).

    Objects and lists are copied; other values are returned as they are.
    """
    if isinstance(value, str):
        if "{{" not in value:
            return value
        return _TEMPLATE.sub(lambda m: _render_one(m[1], end_ms), value)
    if isinstance(value, Mapping):
        return {key: render_templates(item, end_ms) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [render_templates(item, end_ms) for item in value]
    return value
