"""Compliance profiles in the admin API: the profiles in force (built-in and the operator's) and the operator's own.

- ``GET /compliance-profiles`` (read access): every profile in force, by id, each with ``builtin``, ``overridden``
  (an operator's profile that replaces a built-in one) and its ``document`` (the JSON form a ``PUT`` takes), and the
  stored profiles that no longer validate (``problems``).
- ``GET /compliance-profiles/{profile_id}`` (read access): one of them.
- ``PUT /compliance-profiles/{profile_id}`` (admin): store an operator's profile (the id of a built-in one replaces
  it). The body is the JSON form (docs/compliance.md); its ``id`` may be left out, and when given must be the
  path's. 422 names every bad field; 201 when the id is new to the store, 200 when it replaced a stored profile.

Every read takes the stored profiles afresh and installs them in this process's
:data:`shared.domain.compliance.REGISTRY`, so each web dyno shows what is stored now.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from shared.cache.invalidation import publish_invalidate_all
from shared.domain.compliance import REGISTRY, ComplianceProfile, InvalidProfile, parse_profile
from shared.domain.shapes import PROFILE_ID_PATTERN
from shared.errors import NotFound
from shared.logs import event, get_logger
from workers.web.context import WebContext, context
from workers.web.http import ADMIN, READ, access, invalid, iso, json_response, read_json_object

log = get_logger(__name__)

_PROFILE_ID = re.compile(PROFILE_ID_PATTERN)
_ID_RULE = "2-40 lowercase letters, digits or '-', starting with a letter or digit"


def _installed(ctx: WebContext) -> dict[str, Mapping[str, Any]]:
    """The stored profiles by id, after installing them in this process's registry."""
    docs = ctx.runtime.compliance_profiles.all()
    REGISTRY.install(docs)
    return {str(d.get("_id")): d for d in docs}


def profile_view(profile: ComplianceProfile, stored: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A profile in force as the API shows it."""
    doc = stored.get(profile.id) if not profile.builtin else None
    return {"id": profile.id, "builtin": profile.builtin, "overridden": REGISTRY.overridden(profile.id),
            "updated_at": iso(doc.get("updated_at")) if doc is not None else None,
            "document": profile.to_document()}


def _path_id(request: web.Request) -> str:
    """The path's profile id, or "" when it cannot be one."""
    profile_id = request.match_info["profile_id"]
    return profile_id if _PROFILE_ID.fullmatch(profile_id) else ""


@access(READ)
async def list_profiles(request: web.Request) -> web.Response:
    ctx = context(request)
    stored = await ctx.run(_installed, ctx)
    profiles = [profile_view(p, stored) for p in REGISTRY.all()]
    problems = [{"id": pid, "message": message} for pid, message in REGISTRY.problems()]
    return json_response({"profiles": profiles, "count": len(profiles), "problems": problems})


@access(READ)
async def get_profile(request: web.Request) -> web.Response:
    ctx = context(request)
    profile_id = _path_id(request)
    stored = await ctx.run(_installed, ctx)
    profile = REGISTRY.get(profile_id) if profile_id else None
    if profile is None:
        raise NotFound(f"compliance profile {request.match_info['profile_id'][:60]!r} not found")
    return json_response(profile_view(profile, stored))


def _store(ctx: WebContext, profile: ComplianceProfile) -> tuple[bool, dict[str, Mapping[str, Any]]]:
    created = ctx.runtime.compliance_profiles.put(profile.to_document())
    return created, _installed(ctx)


@access(ADMIN)
async def put_profile(request: web.Request) -> web.Response:
    """Store an operator's profile; every problem of the body is named at once (422)."""
    ctx = context(request)
    profile_id = _path_id(request)
    if not profile_id:
        raise invalid([("id", f"the path's id must be {_ID_RULE}, got {request.match_info['profile_id'][:60]!r}")])
    body = await read_json_object(request, limit=ctx.settings.max_json_bytes)
    errors: list[tuple[str, str]] = []
    given = body.get("id", profile_id)
    if given != profile_id:
        errors.append(("id", f"must be the path's id {profile_id!r} (or be left out), got {str(given)[:60]!r}"))
    try:
        profile = parse_profile({**body, "id": profile_id})
    except InvalidProfile as exc:
        raise invalid(errors + exc.errors) from None
    if errors:
        raise invalid(errors)
    created, stored = await ctx.run(_store, ctx, profile)
    # Every process reads the profiles again with its batch cache's next load: clear them all.
    await ctx.run(publish_invalidate_all, ctx.runtime.redis)
    event(log, "compliance_profile_stored", profile_id=profile.id, version=profile.version, new=created,
          overrides_builtin=REGISTRY.overridden(profile.id))
    current = REGISTRY.get(profile.id) or profile
    headers = {"Location": f"/compliance-profiles/{profile.id}"} if created else None
    return json_response(profile_view(current, stored), status=201 if created else 200, headers=headers)


ROUTES = (
    ("GET", "/compliance-profiles", list_profiles, "list_compliance_profiles"),
    ("GET", "/compliance-profiles/{profile_id}", get_profile, "get_compliance_profile"),
    ("PUT", "/compliance-profiles/{profile_id}", put_profile, "put_compliance_profile"),
)
