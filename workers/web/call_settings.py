"""``GET /call-settings/schema`` and ``POST /call-settings/preview``: what a frontend needs to build and check
a campaign's call_settings before creating it (docs/frontend.md).

Both are read-level routes (the admin or read-only token, or a dashboard session): neither writes anything.
The preview validates with the batch store's own validation (the 422 ``errors`` are those of
``POST /batches``) and computes the times with :func:`shared.domain.calling_window.upcoming_call_times`, the same
window logic the dialer uses. Its ``after_call`` lists the settings' after-call rules as sentences, in the order they
apply (:func:`shared.domain.after_call.describe_after_call`); settings without rules get the one sentence that
says every conversation completes its contact. With compliance profiles (``call_settings.compliance``), each time
names the profiles' rules that allow it, ``profiles`` lists the profiles that apply to the number, ``excluded`` the
times the batch's own window allows that a profile excludes (the profile and its rule), and ``warnings`` what will
really happen where the batch asks for more than a profile allows (:mod:`shared.domain.compliance_advice`).
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from aiohttp import web

from shared.domain.after_call import describe_after_call
from shared.domain.call_settings import default_call_settings
from shared.domain.call_settings_schema import call_settings_schema
from shared.domain.calling_window import (
    NoAllowedTime,
    applicable_profiles,
    describe_window,
    excluded_by_profiles,
    resolve_timezones,
    upcoming_call_times,
)
from shared.domain.compliance_advice import compliance_warnings
from shared.domain.shapes import DEFAULT_PREVIEW_COUNT, MAX_PREVIEW_COUNT, PreviewShape, body_fields, validate_shape
from workers.web.context import WebContext, context
from workers.web.http import READ, access, invalid, iso, json_response, read_json_object, unknown_fields

__all__ = ["DEFAULT_PREVIEW_COUNT", "MAX_PREVIEW_COUNT", "PREVIEW_FIELDS", "ROUTES", "preview", "schema"]

#: Fields of ``POST /call-settings/preview`` (declared by :class:`shared.domain.shapes.PreviewShape`).
PREVIEW_FIELDS = body_fields(PreviewShape)


@access(READ)
async def schema(request: web.Request) -> web.Response:
    ctx = context(request)
    return json_response(call_settings_schema(ctx.runtime.config))


def _preview(ctx: WebContext, body: dict[str, Any]) -> dict[str, Any]:
    rt = ctx.runtime
    config = rt.config
    errors = unknown_fields(body, PREVIEW_FIELDS)
    known = {name: body[name] for name in PREVIEW_FIELDS if name in body}
    shape = validate_shape(PreviewShape, known, context={"config": config})
    if isinstance(shape, list):
        errors += shape
    if errors or isinstance(shape, list):
        raise invalid(errors)
    phone, count = shape.phone, shape.count
    start = shape.from_ if shape.from_ is not None else rt.clock.now().astimezone(UTC)
    settings = shape.call_settings or default_call_settings(config)
    zones = resolve_timezones(settings, phone, config=config)
    try:
        times = upcoming_call_times(settings, start, count, phone, config=config)
    except NoAllowedTime as exc:
        raise invalid([("phone" if phone else "call_settings", str(exc))]) from None
    profiles = applicable_profiles(settings, phone, config=config)
    excluded = excluded_by_profiles(settings, start, count, phone, config=config)
    return {
        "from": iso(start),
        "timezone": settings.timezone,
        "zones": list(zones),
        "zone_source": _zone_source(settings, phone, zones, config),
        "window": describe_window(settings, config=config),
        "restricts_time": settings.restricts_time,
        "times": [{"at": iso(t["at"]), "local": t["local"].isoformat(timespec="seconds"),
                   "local_text": t["local"].strftime("%a %Y-%m-%d %H:%M"), "zone": t["zone"],
                   "rule_index": t["rule_index"], "rule": t["rule"], "profiles": t["profiles"]} for t in times],
        "after_call": describe_after_call(settings.after_call),
        "profiles": [p.id for p in profiles],
        "excluded": [{"at": iso(e["at"]), "local": e["local"].isoformat(timespec="seconds"),
                      "local_text": e["local"].strftime("%a %Y-%m-%d %H:%M"), "zone": e["zone"],
                      "profile": e["profile"], "why": e["why"]} for e in excluded],
        "warnings": compliance_warnings(settings, profiles, from_number=shape.from_number),
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
