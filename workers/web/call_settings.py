"""``GET /call-settings/schema`` and ``POST /call-settings/preview``: what a frontend needs to build and check
a campaign's call_settings before creating it (docs/frontend.md).

Both are read-level routes (the admin or read-only token, or a dashboard session): neither writes anything.
The preview validates with the batch store's own validation (the 422 ``errors`` are those of
``POST /batches``) and computes the times with :func:`shared.calling_window.upcoming_call_times`, the same
window logic the dialer uses.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from shared.call_settings import default_call_settings
from shared.call_settings_schema import call_settings_schema
from shared.calling_window import NoAllowedTime, describe_window, resolve_timezones, upcoming_call_times
from shared.config import parse_instant
from shared.phones import InvalidPhone, normalize_phone
from workers.web.context import WebContext, context
from workers.web.http import READ, access, invalid, iso, json_response, read_json_object, unknown_fields

#: Fields of ``POST /call-settings/preview``.
PREVIEW_FIELDS = ("call_settings", "phone", "from", "count")
#: Call times a preview lists by default, and at most.
DEFAULT_PREVIEW_COUNT = 5
MAX_PREVIEW_COUNT = 50



@access(READ)
async def schema(request: web.Request) -> web.Response:
    ctx = context(request)
    return json_response(call_settings_schema(ctx.runtime.config))


def _instant(value: Any, errors: list[tuple[str, str]]) -> datetime | None:
    if not isinstance(value, str) or not value.strip():
        errors.append(("from", "must be an ISO-8601 instant with its offset, such as 2026-03-03T13:00:00Z"))
        return None
    try:
        moment = parse_instant(value[:60])
    except ValueError as exc:
        errors.append(("from", str(exc)))
        return None
    if not 2000 <= moment.year <= 2200:
        errors.append(("from", "must be between the years 2000 and 2200"))
        return None
    return moment


def _preview(ctx: WebContext, body: dict[str, Any]) -> dict[str, Any]:
    rt = ctx.runtime
    config = rt.config
    errors = unknown_fields(body, PREVIEW_FIELDS)
    raw = body.get("call_settings")
    problems, parsed = rt.batches.check({"call_settings": raw}, partial=True)
    errors += problems
    phone = body.get("phone")
    if phone is not None:
        if not isinstance(phone, str):
            errors.append(("phone", "must be a phone number (a string), E.164 such as +56961234567"))
            phone = None
        else:
            try:
                phone = normalize_phone(phone, config.phone_default_region)
            except InvalidPhone as exc:
                errors.append(("phone", exc.reason))
                phone = None
    start = _instant(body["from"], errors) if body.get("from") is not None else rt.clock.now().astimezone(UTC)
    count = body.get("count", DEFAULT_PREVIEW_COUNT)
    if count is None:
        count = DEFAULT_PREVIEW_COUNT
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_PREVIEW_COUNT:
        errors.append(("count", f"must be a whole number from 1 to {MAX_PREVIEW_COUNT}, got {str(count)[:20]}"))
    if errors:
        raise invalid(errors)
    assert start is not None
    settings = parsed or default_call_settings(config)
    zones = resolve_timezones(settings, phone, config=config)
    try:
        times = upcoming_call_times(settings, start, count, phone, config=config)
    except NoAllowedTime as exc:
        raise invalid([("phone" if phone else "call_settings", str(exc))]) from None
    return {
        "from": iso(start),
        "timezone": settings.timezone,
        "zones": list(zones),
        "zone_source": _zone_source(settings, phone, zones, config),
        "window": describe_window(settings, config=config),
        "restricts_time": settings.restricts_time,
        "times": [{"at": iso(t["at"]), "local": t["local"].isoformat(timespec="seconds"),
                   "local_text": t["local"].strftime("%a %Y-%m-%d %H:%M"), "zone": t["zone"],
                   "rule_index": t["rule_index"], "rule": t["rule"]} for t in times],
    }


def _zone_source(settings: Any, phone: str | None, zones: tuple[str, ...], config: Any) -> str:
    """``batch`` (the settings' zone), ``phone`` (``auto``: the number's zones) or ``fallback``."""
    if settings.timezone != "auto":
        return "batch"
    return "phone" if phone and zones != resolve_timezones(settings, None, config=config) else "fallback"


@access(READ)
async def preview(request: web.Request) -> web.Response:
    ctx = context(request)
    body = await read_json_object(request, limit=ctx.settings.max_json_bytes)
    return json_response(await ctx.run(_preview, ctx, body))


#: ``(method, path, handler, name)`` of these routes.
ROUTES = (
    ("GET", "/call-settings/schema", schema, "call_settings_schema"),
    ("POST", "/call-settings/preview", preview, "call_settings_preview"),
)
