"""The result webhooks' deliveries in the admin API: an account's events and their delivery state, and a redelivery
asked by hand. The webhook itself is set with ``PUT /accounts/{account_id}`` (``result_webhook``); docs/results.md
describes the events, their signature and their retries."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from shared.domain.result_hooks import DELIVERY_STATES
from shared.errors import NotFound
from shared.stores.accounts import validate_account_id
from workers.web.context import WebContext, context
from workers.web.http import ADMIN, READ, access, invalid, iso, json_response, query_int, query_params, query_text

#: Page sizes of ``GET /accounts/{account_id}/webhook-deliveries``.
DEFAULT_PAGE = 50
MAX_PAGE = 200
#: What an event id looks like (``evt_`` and 24 hex characters).
EVENT_ID = re.compile(r"^evt_[0-9a-f]{24}$")


def delivery_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    """An event as the API shows it (never its body's secret: the body holds none; never a lease)."""
    return {"id": doc["_id"], "type": doc.get("type"), "state": doc.get("state"),
            "attempts": int(doc.get("attempts") or 0), "created_at": iso(doc.get("created_at")),
            "next_at": iso(doc.get("next_at")) if doc.get("state") == "pending" else None,
            "delivered_at": iso(doc.get("delivered_at")), "last_status": doc.get("last_status"),
            "last_error": doc.get("last_error")}


def _account(ctx: WebContext, request: web.Request) -> str:
    account_id = validate_account_id(request.match_info["account_id"])
    if ctx.runtime.accounts.get(account_id) is None:
        raise NotFound(f"account {account_id!r} not found")
    return account_id


def _event_id(raw: str) -> str:
    if not EVENT_ID.match(raw):
        raise NotFound(f"event {raw[:40]!r} not found (event ids are evt_ and 24 hex characters)")
    return raw


def _page(ctx: WebContext, request: web.Request, state: str | None, before: str | None,
          limit: int) -> dict[str, Any]:
    account_id = _account(ctx, request)
    store = ctx.runtime.result_event_store
    last = None
    if before is not None:
        last = store.of_account(account_id, before)
        if last is None:
            raise invalid([("before", f"no event {before[:40]!r} of this account (pass next_before of the previous "
                                      "page)")])
    docs = store.page(account_id, state=state, before=last, limit=limit)
    return {"deliveries": [delivery_view(d) for d in docs], "count": len(docs),
            "next_before": docs[-1]["_id"] if len(docs) == limit else None}


@access(READ)
@query_params("state", "before", "limit")
async def list_deliveries(request: web.Request) -> web.Response:
    """The account's result events, newest first, with their delivery state; ``?state=`` one state only,
    ``?before=`` the previous page's ``next_before``."""
    ctx = context(request)
    state = query_text(request, "state")
    if state is not None and state not in DELIVERY_STATES:
        raise invalid([("state", f"must be one of {', '.join(DELIVERY_STATES)}, got {state[:40]!r}")])
    before = query_text(request, "before")
    if before is not None and not EVENT_ID.match(before):
        raise invalid([("before", "must be an event id (evt_ and 24 hex characters)")])
    limit = query_int(request, "limit", default=DEFAULT_PAGE, low=1, high=MAX_PAGE)
    return json_response(await ctx.run(_page, ctx, request, state, before, limit))


def _redeliver(ctx: WebContext, request: web.Request, event_id: str) -> dict[str, Any]:
    account_id = _account(ctx, request)
    doc = ctx.runtime.result_event_store.redeliver(account_id, event_id, now_ms=ctx.runtime.clock.now_ms())
    if doc is None:
        raise NotFound(f"event {event_id!r} not found for account {account_id!r}")
    return delivery_view(doc)


@access(ADMIN)
async def redeliver(request: web.Request) -> web.Response:
    """Deliver an event again: pending, due now, its attempts counted from 0 and 24 fresh hours of tries."""
    ctx = context(request)
    event_id = _event_id(request.match_info["event_id"])
    return json_response(await ctx.run(_redeliver, ctx, request, event_id))


#: ``(method, path, handler, name)`` of the result webhooks' routes.
ROUTES = (
    ("GET", "/accounts/{account_id}/webhook-deliveries", list_deliveries, "list_webhook_deliveries"),
    ("POST", "/accounts/{account_id}/webhook-deliveries/{event_id}/redeliver", redeliver, "redeliver_webhook"),
)
