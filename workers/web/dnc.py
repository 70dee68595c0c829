"""The do-not-call lists in the admin API: an account's list (``/accounts/{id}/dnc``) and the global one (``/dnc``).

Writes need the admin token, reads the read-only token (or the admin token). A write checks every row
first and writes nothing when one is bad (422, each bad row named by ``index`` or ``line``); then it
waits ``PIPELINE_DIAL_GUARD_S`` before answering, so that no create whose check passed before the write
can still reach the provider once the answer is out (see :func:`add_numbers`). docs/web.md has the shapes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from shared.domain.phones import InvalidPhone, normalize_phone
from shared.domain.shapes import DncShape, body_fields
from shared.errors import NotFound
from shared.stores.accounts import validate_account_id
from shared.stores.contacts_import import CsvFormatError, split_lines
from shared.stores.dnc import (
    GLOBAL_SCOPE,
    MAX_NUMBERS,
    ParsedNumbers,
    entry_view,
    list_name,
    parse_csv,
    parse_numbers,
    scope_of,
)
from workers.web.admin import CSV_TYPES, DEFAULT_PAGE, MAX_PAGE, _region
from workers.web.context import WebContext, context
from workers.web.http import (
    ADMIN,
    READ,
    ApiError,
    access,
    invalid,
    is_json,
    iso,
    json_response,
    query_int,
    query_params,
    query_text,
    read_json_object,
    read_limited,
)

#: Fields of a JSON ``POST .../dnc`` body (declared by :class:`shared.domain.shapes.DncShape`).
DNC_FIELDS = body_fields(DncShape)


def _scope(request: web.Request) -> str | None:
    """The account of an ``/accounts/{id}/dnc`` route, or None for the global list's routes."""
    if "account_id" not in request.match_info:
        return None
    return validate_account_id(request.match_info["account_id"])


def _require_account(ctx: WebContext, account_id: str | None) -> None:
    if account_id is not None and ctx.runtime.accounts.get(account_id) is None:
        raise NotFound(f"account {account_id!r} not found (create it first with PUT /accounts/{{account_id}})")


def _region_of(ctx: WebContext, request: web.Request) -> str:
    """``?region=`` (checked whenever given, used or not), else ``PHONE_DEFAULT_REGION``."""
    raw = request.query.get("region")
    if raw is not None and not raw.strip():
        raise invalid([("region", "must be a region code (ISO 3166 alpha-2, e.g. CL), got an empty value")])
    return _region(request) or ctx.runtime.config.phone_default_region


def _refused(parsed: ParsedNumbers) -> ApiError:
    first = parsed.errors[0]
    where = f"line {first['line']}" if "line" in first else f"numbers[{first['index']}]"
    more = f" (and {parsed.errors_total - 1} more)" if parsed.errors_total > 1 else ""
    return ApiError(422, "validation_failed",
                    f"{where}: {first['message']}{more}; nothing was written (fix every row and send it again)",
                    extra={"errors": parsed.errors, "errors_total": parsed.errors_total,
                           "errors_truncated": parsed.errors_total > len(parsed.errors), "written": 0})


async def _parse(ctx: WebContext, request: web.Request, region: str) -> ParsedNumbers:
    loop = asyncio.get_running_loop()
    if request.content_type in CSV_TYPES:
        body = await read_limited(request, ctx.settings.max_contacts_json_bytes)
        lines, tail = split_lines(b"", body)
        if tail:
            lines.append(tail)
        reason = query_text(request, "reason")
        try:
            return await loop.run_in_executor(ctx.import_pool,
                                              lambda: parse_csv(lines, region=region, reason=reason))
        except CsvFormatError as exc:
            raise invalid(exc.errors) from None
    if request.headers.get("Content-Type") and not is_json(request):
        raise ApiError(415, "unsupported_media_type", f"send application/json or text/csv (got {request.content_type})")
    if query_text(request, "reason") is not None:
        raise invalid([("reason", "goes in the JSON body; the query parameter is for CSV uploads")])
    doc = await read_json_object(request, limit=ctx.settings.max_contacts_json_bytes, allowed=DNC_FIELDS)
    if isinstance(doc.get("numbers"), list) and len(doc["numbers"]) > MAX_NUMBERS:
        raise invalid([("numbers", f"at most {MAX_NUMBERS} numbers per request, got {len(doc['numbers'])}")])
    return await loop.run_in_executor(ctx.import_pool,
                                      lambda: parse_numbers(doc.get("numbers"), doc.get("reason"), region=region))


@access(ADMIN)
@query_params("region", "reason")
async def add_numbers(request: web.Request) -> web.Response:
    """Add numbers to a list (JSON ``{"numbers": [...], "reason": "..."}`` or a CSV with a ``number`` column).

    Every row is checked before anything is written: one bad row and the answer is 422 listing the bad
    rows, with nothing written. After the write the answer waits ``PIPELINE_DIAL_GUARD_S``: a dial whose
    check right before its send ran before the write reaches the provider within that time (the same
    bound the calling window relies on), so once this answer is out no create to these numbers can reach
    the provider.
    """
    ctx = context(request)
    rt = ctx.runtime
    account_id = _scope(request)
    await ctx.run(_require_account, ctx, account_id)
    parsed = await _parse(ctx, request, _region_of(ctx, request))
    if parsed.errors:
        raise _refused(parsed)
    scope = scope_of(account_id)
    written = await ctx.run(rt.dnc.add, scope, parsed.entries)
    await asyncio.sleep(rt.config.pipeline_dial_guard_s)
    return json_response({"list": list_name(scope), **written, "numbers": len(parsed.entries), "rows": parsed.rows})


def _number(ctx: WebContext, request: web.Request, raw: str) -> str:
    try:
        return normalize_phone(raw, _region_of(ctx, request))
    except InvalidPhone as exc:
        raise invalid([("number", exc.reason)]) from None


@access(ADMIN)
@query_params("region")
async def remove_number(request: web.Request) -> web.Response:
    """Take a number off a list; ``removed`` says whether it was on it (removing twice is harmless)."""
    ctx = context(request)
    account_id = _scope(request)
    number = _number(ctx, request, request.match_info["number"])
    await ctx.run(_require_account, ctx, account_id)
    scope = scope_of(account_id)
    removed = await ctx.run(ctx.runtime.dnc.remove, scope, number)
    return json_response({"list": list_name(scope), "number": number, "removed": removed})


def _lookup(ctx: WebContext, account_id: str | None, number: str) -> dict[str, Any]:
    _require_account(ctx, account_id)
    found = ctx.runtime.dnc.entries(account_id, [number])
    found.sort(key=lambda d: d.get("scope") == GLOBAL_SCOPE)
    return {"number": number, "listed": bool(found), "lists": [entry_view(d, iso) for d in found]}


def _page(ctx: WebContext, account_id: str | None, after: str | None, limit: int) -> dict[str, Any]:
    _require_account(ctx, account_id)
    scope = scope_of(account_id)
    docs = ctx.runtime.dnc.page(scope, after=after, limit=limit)
    return {"list": list_name(scope), "entries": [entry_view(d, iso) for d in docs], "count": len(docs),
            "next_after": docs[-1]["number"] if len(docs) == limit else None}


@access(READ)
@query_params("number", "region", "after", "limit")
async def get_numbers(request: web.Request) -> web.Response:
    """``?number=``: whether the number is listed, and on which list(s) (an account's route also answers for
    the global list); without it, the list page by page (``after`` = the previous page's ``next_after``)."""
    ctx = context(request)
    account_id = _scope(request)
    _region_of(ctx, request)
    raw = query_text(request, "number")
    if raw is not None:
        return json_response(await ctx.run(_lookup, ctx, account_id, _number(ctx, request, raw)))
    after = query_text(request, "after")
    if after is not None:
        after = _number(ctx, request, after)
    limit = query_int(request, "limit", default=DEFAULT_PAGE, low=1, high=MAX_PAGE)
    return json_response(await ctx.run(_page, ctx, account_id, after, limit))


#: ``(method, path, handler, name)`` of the do-not-call routes.
ROUTES = (
    ("POST", "/accounts/{account_id}/dnc", add_numbers, "add_account_dnc"),
    ("GET", "/accounts/{account_id}/dnc", get_numbers, "get_account_dnc"),
    ("DELETE", "/accounts/{account_id}/dnc/{number}", remove_number, "remove_account_dnc"),
    ("POST", "/dnc", add_numbers, "add_global_dnc"),
    ("GET", "/dnc", get_numbers, "get_global_dnc"),
    ("DELETE", "/dnc/{number}", remove_number, "remove_global_dnc"),
)
