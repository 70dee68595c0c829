"""The dashboard at ``/``: every batch with a progress bar by state, its window, calls in progress, failures.

Server-rendered HTML (``workers/web/templates``), no build step. A small script
(``workers/web/static/dashboard.js``) re-fetches the batch list from ``/dashboard/batches`` every few
seconds (``?refresh=<seconds>``, default 5) and swaps it in place; without JavaScript the page
reloads itself. Pages are served under a strict Content-Security-Policy (no inline script or
style: the bars are SVG). ``/campaigns/new`` is the "New campaign" wizard (``workers/web/static/wizard.js``,
docs/frontend.md).

Access: the read-only token (or the admin token) as a bearer token, or the session cookie set
by ``POST /login``. A token is never taken from an address (``?token=`` is ignored): addresses end
up in browser histories, proxy logs and ``Referer`` headers. The session cookie holds the read-only
token only, HttpOnly and SameSite=Strict. Signing in with the admin token also sets the admin session
cookie (signed, one hour, no token in it: :func:`workers.web.http.new_admin_session`) and opens its session in
Redis (:class:`shared.stores.admin_sessions.AdminSessions`); its pages carry the session's CSRF token in a meta tag, and
the admin API accepts that cookie only with the token in ``X-CSRF-Token``. Signing out closes the session: any copy
of the cookie is refused (401; a page goes to the login). Without an admin session the wizard is disabled and the
batch controls stay disabled.
"""

from __future__ import annotations

import html
import time
from datetime import datetime
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import parse_qs

import pytz
from aiohttp import web

from shared.domain import states
from shared.stores.dnc import GLOBAL_SCOPE, list_name
from workers.web.context import context
from workers.web.http import (
    ADMIN_SESSION_COOKIE,
    ADMIN_SESSION_MAX_AGE_S,
    PUBLIC,
    READ,
    SESSION_COOKIE,
    ApiError,
    access,
    admin_session,
    admin_session_id,
    cross_site,
    csrf_token_for,
    iso,
    new_admin_session,
    open_admin_session,
    query_int,
    read_limited,
    same_token,
)
from workers.web.views import (
    do_not_call_failures,
    failure_reasons,
    in_progress_view,
    progress,
    window_view,
)

#: Batches shown: live ones (active, paused) first, then the newest finished ones.
DEFAULT_DASHBOARD_BATCHES = 100
#: Seconds between two refreshes of the page's batch list.
DEFAULT_REFRESH_S = 5
#: Seconds the data behind the page is reused between viewers.
DEFAULT_DASHBOARD_CACHE_S = 1.0
#: Lifetime of the session cookie, seconds.
SESSION_MAX_AGE_S = 12 * 3600

_HERE = Path(__file__).parent
TEMPLATES = _HERE / "templates"
STATIC = _HERE / "static"
#: Content-Security-Policy of the dashboard pages.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
_STATIC_TYPES = {".css": "text/css", ".js": "text/javascript"}


def _template(name: str) -> Template:
    return Template((TEMPLATES / name).read_text(encoding="utf-8"))


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


#: Batch statuses whose accounts' slots the page shows.
LIVE = (states.BATCH_ACTIVE, states.BATCH_HELD, states.BATCH_PAUSED)

# -- data (blocking) -----------------------------------------------------------------------------------


def dashboard_data(runtime: Any, *, limit: int = DEFAULT_DASHBOARD_BATCHES) -> dict[str, Any]:
    """Everything the page shows, read from MongoDB and Redis (blocking)."""
    rt = runtime
    live = [doc for status in (states.BATCH_ACTIVE, states.BATCH_HELD, states.BATCH_PAUSED)
            for doc in rt.batches.list(status=status, limit=limit)]
    seen = {d["_id"] for d in live}
    rest = [d for d in rt.batches.list(limit=limit) if d["_id"] not in seen]
    docs = (live + rest)[:limit]
    counts = rt.jobs.counts_by_batch([d["_id"] for d in docs])
    now = rt.clock.now()
    accounts = sorted({d["account_id"] for d in docs if d.get("status") in LIVE})
    slots = rt.slots.in_use_many(accounts, now_ms=rt.clock.now_ms()) if accounts else {}
    limits = {a: rt.accounts.concurrency_limit(rt.accounts.get(a)) for a in accounts}
    batches = []
    for doc in docs:
        batch_counts = counts[doc["_id"]]
        batches.append({
            "doc": doc,
            "counts": batch_counts,
            "progress": progress(batch_counts),
            "window": window_view(doc.get("call_settings"), now, rt.config),
            "failures": (failure_reasons(rt.jobs, doc["_id"], lang=rt.config.lang)
                         if batch_counts[states.FAILED] else []),
            "do_not_call": do_not_call_failures(rt.jobs, doc["_id"]) if batch_counts[states.FAILED] else 0,
            "slots": (slots.get(doc["account_id"]), limits.get(doc["account_id"])),
            "oldest": in_progress_view(rt.jobs.oldest_in_progress(doc["_id"])
                                       if sum(batch_counts[s] for s in states.LEASED) else None,
                                       doc.get("call_settings"), rt.clock.now_ms(), rt.config, rt.clock),
        })
    sizes = rt.dnc.sizes()
    dnc = [(list_name(GLOBAL_SCOPE), sizes.pop(GLOBAL_SCOPE, 0)),
           *((list_name(scope), n) for scope, n in sorted(sizes.items()))]
    return {"now": now, "batches": batches, "dnc": dnc}


# -- rendering (pure) ----------------------------------------------------------------------------------


def _relative(seconds: float) -> str:
    seconds = max(0, int(seconds))
    days, rem = divmod(seconds, 86400)
    hours, rem = divmod(rem, 3600)
    minutes = rem // 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m" if minutes else "<1m"


def _window_html(window: dict[str, Any], now: datetime) -> str:
    if window.get("error"):
        return f'<p class="window error">Window: {_e(window["error"])}</p>'
    text = f'Window: {_e(window["description"])} — '
    if window.get("open_now"):
        return f'<p class="window">{text}<span class="open" data-field="window">open now</span></p>'
    opens = window.get("next_open_at")
    if not opens:
        return f'<p class="window">{text}<span class="closed" data-field="window">closed</span></p>'
    at = datetime.fromisoformat(opens.replace("Z", "+00:00"))
    local = at.astimezone(pytz.timezone(window["timezone"]))
    return (f'<p class="window">{text}<span class="closed" data-field="window">closed</span>, opens '
            f'<time datetime="{_e(opens)}">{_e(local.strftime("%a %d %b %H:%M"))} {_e(window["timezone"])}</time> '
            f'(in {_e(_relative((at - now).total_seconds()))})</p>')


def _bar_html(counts: dict[str, int], total: int) -> str:
    parts = []
    x = 0.0
    for state in states.JOB_STATES:
        n = counts.get(state, 0)
        if not n or not total:
            continue
        width = 1000.0 * n / total
        parts.append(f'<rect class="seg-{state}" x="{x:.2f}" y="0" width="{width:.2f}" height="16">'
                     f"<title>{state}: {n}</title></rect>")
        x += width
    label = ", ".join(f"{s} {counts.get(s, 0)}" for s in states.JOB_STATES if counts.get(s, 0))
    return (f'<svg class="bar" viewBox="0 0 1000 16" preserveAspectRatio="none" role="img" '
            f'aria-label="{_e(label or "no contacts yet")}">{"".join(parts)}</svg>')


def _failures_html(failures: list[dict[str, Any]]) -> str:
    if not failures:
        return ""
    rows = "".join(f'<tr><td>{_e(f["reason"])}</td><td class="n">{f["count"]}</td></tr>' for f in failures)
    return f'<table class="failures"><tr><th>Failures by reason</th><th class="n">jobs</th></tr>{rows}</table>'


def batch_html(item: dict[str, Any], now: datetime) -> str:
    """One batch card."""
    doc, counts, prog = item["doc"], item["counts"], item["progress"]
    cells = "".join(f'<div class="st-{s}" data-state="{s}"><dt>{s.replace("_", " ")}</dt>'
                    f'<dd data-count="{s}">{counts.get(s, 0)}</dd></div>' for s in states.JOB_STATES)
    in_use, limit = item["slots"]
    slots = f' · provider slots <span data-field="slots">{in_use}</span>/{limit}' if in_use is not None else ""
    created = doc.get("created_at")
    return (
        f'<section class="batch" data-batch-id="{_e(doc["_id"])}" data-status="{_e(doc.get("status"))}">'
        f'<header><h2>{_e(doc.get("name"))}</h2>'
        f'<span class="status status-{_e(doc.get("status"))}">{_e(doc.get("status"))}</span>'
        f'<span class="ids muted">account {_e(doc.get("account_id"))} · batch {_e(doc["_id"])}'
        f'{" · created " + _e(iso(created)) if created else ""}</span></header>'
        f'{_bar_html(counts, prog["total"])}'
        f'<p class="progress"><span data-field="percent">{prog["percent"]}</span>% done · '
        f'<span data-field="done">{prog["done"]}</span> of <span data-field="total">{prog["total"]}</span> contacts'
        f' · <span data-field="completed">{prog["completed"]}</span> reached</p>'
        f'<dl class="counts">{cells}</dl>'
        f'{_window_html(item["window"], now)}'
        f'<p class="live">Calls in progress: <span data-field="calls">{prog["calls_in_progress"]}</span>'
        f' · analyzing <span data-field="analyzing">{prog["analyzing"]}</span>'
        f' · queued <span data-field="queued">{prog["queued"]}</span>{slots}</p>'
        f'{_failures_html(item["failures"])}'
        f'{_dnc_html(item.get("do_not_call", 0))}'
        f'{_settings_error_html(doc)}'
        f'{_held_html(doc)}{_stuck_html(item.get("oldest"))}'
        f'{_controls_html(doc)}'
        f'<p class="links"><a href="/dashboard/batches/{_e(doc["_id"])}" data-link="results">Results</a> · '
        f'<a href="/batches/{_e(doc["_id"])}/results.csv" download data-link="csv">Download CSV</a></p>'
        "</section>"
    )


#: The controls a batch card offers in each status: (action, label).
_CONTROLS: dict[str, tuple[tuple[str, str], ...]] = {
    states.BATCH_ACTIVE: (("pause", "Pause"), ("cancel", "Cancel")),
    states.BATCH_HELD: (("resume", "Resume"), ("cancel", "Cancel")),
    states.BATCH_PAUSED: (("resume", "Resume"), ("cancel", "Cancel")),
}


def _controls_html(doc: dict[str, Any]) -> str:
    """Pause / resume / cancel buttons, rendered disabled: the page's script enables them for an admin session
    (the list is shared by every viewer, read-only ones included) and asks for a confirmation before each."""
    controls = _CONTROLS.get(str(doc.get("status")), ())
    if not controls:
        return ""
    buttons = "".join(f'<button type="button" class="control" data-action="{action}" '
                      f'data-batch="{_e(doc["_id"])}" data-name="{_e(doc.get("name"))}" disabled>{label}</button>'
                      for action, label in controls)
    return f'<p class="controls">{buttons}</p>'


def _dnc_html(failed: int) -> str:
    if not failed:
        return ""
    return (f'<p class="dnc">Not called, every number on a do-not-call list: '
            f'<span data-field="do_not_call">{failed}</span> contacts</p>')


def dnc_lists_html(lists: list[tuple[str, int]]) -> str:
    """The size of each do-not-call list (the global one first)."""
    items = " · ".join(f'{_e(name)} <span data-list="{_e(name)}">{n}</span>' for name, n in lists)
    return f'<p class="dnc-lists muted" data-field="dnc_lists">Do-not-call lists: {items}</p>'


def _held_html(doc: dict[str, Any]) -> str:
    if doc.get("status") != states.BATCH_HELD:
        return ""
    return (f'<p class="error" data-field="held">Held: nothing is dialed until it is resumed. '
            f'{_e(doc.get("held_reason") or "")}</p>')


def _stuck_html(oldest: dict[str, Any] | None) -> str:
    if not oldest or not oldest.get("past_deadline"):
        return ""
    return (f'<p class="error" data-field="stuck">A job has been {_e(oldest["status"].replace("_", " "))} '
            f'for {_relative(oldest["age_s"])}, past its deadline ({_e(oldest["job_id"])}).</p>')


def _settings_error_html(doc: dict[str, Any]) -> str:
    if not doc.get("settings_error"):
        return ""
    return f'<p class="error">Settings problem (dialing held): {_e(doc["settings_error"])}</p>'


def batches_html(data: dict[str, Any]) -> str:
    """The list of batch cards (what the page's script swaps in)."""
    if not data["batches"]:
        return ('<p class="empty muted">No batches yet. Create one with <code>POST /batches</code> '
                "and add contacts with <code>POST /batches/{id}/contacts</code>.</p>")
    return "\n".join([dnc_lists_html(data.get("dnc") or []),
                      *(batch_html(item, data["now"]) for item in data["batches"])])


def page_html(data: dict[str, Any], *, refresh_s: int, csrf: str = "") -> str:
    """The dashboard page; ``csrf`` is the admin session's CSRF token (empty for a read-only viewer)."""
    return _template("dashboard.html").substitute(
        content=batches_html(data), refresh_ms=refresh_s * 1000, refresh_s=refresh_s,
        now=_e(iso(data["now"])), csrf=_e(csrf), admin="1" if csrf else "0")


def wizard_html(*, csrf: str, timezone: str) -> str:
    """The "New campaign" wizard; without ``csrf`` (no admin session) every field is disabled."""
    notice = "" if csrf else (
        '<p class="notice" id="read-only">This session is read-only: the wizard is disabled. Sign out and sign in '
        "with the admin token to create campaigns (the preview still works).</p>")
    return _template("wizard.html").substitute(csrf=_e(csrf), admin="1" if csrf else "0", notice=notice,
                                               disabled="" if csrf else "disabled", timezone=_e(timezone))


def login_html(message: str) -> str:
    return _template("login.html").substitute(message=_e(message))


# -- handlers ------------------------------------------------------------------------------------------



def html_response(text: str, *, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-store", "Content-Security-Policy": CSP})


class DashboardData:
    """The page's data, computed at most once per ``cache_s`` seconds for every viewer."""

    def __init__(self, runtime: Any, *, cache_s: float = DEFAULT_DASHBOARD_CACHE_S) -> None:
        self.runtime = runtime
        self.cache_s = cache_s
        self._value: dict[str, Any] | None = None
        self._at = 0.0

    async def get(self, run: Any) -> dict[str, Any]:
        if self._value is None or time.monotonic() - self._at >= self.cache_s:
            self._value = await run(dashboard_data, self.runtime)
            self._at = time.monotonic()
        return self._value


def _refresh(request: web.Request) -> int:
    return query_int(request, "refresh", default=DEFAULT_REFRESH_S, low=1, high=300)


def _csrf(request: web.Request) -> str:
    """The CSRF token of the request's admin session, or "" without one."""
    ctx = context(request)
    session = open_admin_session(request)
    return csrf_token_for(session, ctx.admin_token) if session and ctx.admin_token else ""


@access(READ)
async def dashboard(request: web.Request) -> web.Response:
    ctx = context(request)
    refresh = _refresh(request)
    return html_response(page_html(await ctx.dashboard.get(ctx.run), refresh_s=refresh, csrf=_csrf(request)))


dashboard.outdial_html = True  # type: ignore[attr-defined]


@access(READ)
async def new_campaign(request: web.Request) -> web.Response:
    ctx = context(request)
    return html_response(wizard_html(csrf=_csrf(request), timezone=ctx.runtime.config.default_timezone))


new_campaign.outdial_html = True  # type: ignore[attr-defined]


@access(READ)
async def dashboard_batches(request: web.Request) -> web.Response:
    ctx = context(request)
    return html_response(batches_html(await ctx.dashboard.get(ctx.run)))


def see_other(location: str) -> web.Response:
    """A 303 redirect to ``location`` (a path on this site)."""
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


def _with_session(response: web.StreamResponse, request: web.Request, token: str,
                  admin: str | None = None) -> web.StreamResponse:
    """Set the read-only session cookie, and the admin session cookie when ``admin`` is given (else clear it)."""
    secure = request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"
    response.set_cookie(SESSION_COOKIE, token, max_age=SESSION_MAX_AGE_S, httponly=True, samesite="Strict",
                        secure=secure, path="/")
    if admin:
        response.set_cookie(ADMIN_SESSION_COOKIE, admin, max_age=ADMIN_SESSION_MAX_AGE_S, httponly=True,
                            samesite="Strict", secure=secure, path="/")
    else:
        response.del_cookie(ADMIN_SESSION_COOKIE, path="/")
    return response


@access(PUBLIC)
async def login_page(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    if not ctx.admin_token:
        return html_response(login_html("ADMIN_TOKEN is not set on the server: the dashboard is disabled."),
                             status=401)
    return html_response(login_html("Sign in to see the campaigns."))


def _refuse_cross_site(request: web.Request) -> None:
    """The sign-in and sign-out forms are posted by this site's pages only (on top of SameSite=Strict)."""
    if cross_site(request):
        raise ApiError(403, "forbidden", "a form of another site cannot sign in or out here")


@access(PUBLIC)
async def login(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    _refuse_cross_site(request)
    raw = await read_limited(request, 4096)
    token = (parse_qs(raw.decode("utf-8", errors="replace")).get("token") or [""])[0].strip()
    admin_token, read_token = ctx.admin_token, ctx.read_token   # both set, or neither (same_token: False)
    if admin_token and read_token and same_token(token, admin_token):
        session = new_admin_session(admin_token, time.time())
        await ctx.run(ctx.runtime.admin_sessions.open, admin_session_id(session), ttl_s=ADMIN_SESSION_MAX_AGE_S)
        return _with_session(see_other("/"), request, read_token, session)
    if read_token and same_token(token, read_token):
        return _with_session(see_other("/"), request, read_token)
    message = ("ADMIN_TOKEN is not set on the server: the dashboard is disabled." if not ctx.admin_token
               else "That token is not valid.")
    return html_response(login_html(message), status=401)


@access(PUBLIC)
async def logout(request: web.Request) -> web.StreamResponse:
    """Sign out: the admin session is closed in Redis (every copy of its cookie, on every dyno, is refused from now
    on; a Redis that does not answer gets 503 and the cookies are kept, so the sign-out can be tried again), and
    the browser's cookies are cleared."""
    ctx = context(request)
    _refuse_cross_site(request)
    session = admin_session(request, ctx.admin_token)
    if session is not None:
        await ctx.run(ctx.runtime.admin_sessions.close, admin_session_id(session))
    response = see_other("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    response.del_cookie(ADMIN_SESSION_COOKIE, path="/")
    return response


def _static_handler(path: Path) -> Any:
    body = path.read_bytes()
    kind = _STATIC_TYPES[path.suffix]

    @access(PUBLIC)
    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=kind, charset="utf-8",
                            headers={"Cache-Control": "public, max-age=300"})

    return serve


def routes() -> list[tuple[str, str, Any, str]]:
    """``(method, path, handler, name)`` of the dashboard's routes."""
    from workers.web.results_page import results_page

    out: list[tuple[str, str, Any, str]] = [
        ("GET", "/", dashboard, "dashboard"),
        ("GET", "/dashboard/batches", dashboard_batches, "dashboard_batches"),
        ("GET", "/dashboard/batches/{batch_id}", results_page, "batch_results_page"),
        ("GET", "/campaigns/new", new_campaign, "new_campaign"),
        ("GET", "/login", login_page, "login_page"),
        ("POST", "/login", login, "login"),
        ("POST", "/logout", logout, "logout"),
    ]
    for path in sorted(STATIC.iterdir()):
        if path.suffix in _STATIC_TYPES:
            out.append(("GET", f"/static/{path.name}", _static_handler(path), f"static_{path.stem}_{path.suffix[1:]}"))
    return out

