"""A batch's results page, ``GET /dashboard/batches/{batch_id}`` (read access, like the dashboard).

Server-rendered HTML (``templates/results.html``, ``static/results.css``), no script, under the dashboard's
Content-Security-Policy: summary figures (contacts, final, completed, calls placed, talk time, charge, success
rate; and what the after-call rules did: callbacks scheduled, opt-outs, wrong numbers, unsuccessful conversations,
when the batch has such rules or any of them is not zero), three inline SVG charts (:mod:`workers.web.charts`:
calls by outcome, calls by the callee's local hour with the calling window shaded, calls per contact), the latest
finished contacts with their analysis, and links to download the results (``/batches/{id}/results.csv``, its
``?excel=1`` variant, ``results.jsonl``).

The data (:class:`shared.stores.batch_results.BatchResultsStore`, plus the batch, its job counts and its account's
plan) is read in the thread pool and kept :data:`workers.web.context.BATCH_RESULTS_MAX_AGE_S` seconds per batch
for every viewer (``WebContext.batch_results``). An unknown batch gets a 404 page.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from string import Template
from typing import Any

from aiohttp import web

from shared.domain import states
from shared.domain.call_settings import CallSettings, InvalidCallSettings, default_call_settings, parse_call_settings
from shared.domain.calling_window import describe_window
from shared.errors import NotFound
from shared.stores.accounts import Plan, from_storage_units
from shared.stores.batch_results import MAX_CALLS, MAX_JOBS, BatchResults, BatchResultsStore
from workers.web import charts
from workers.web.context import context
from workers.web.dashboard import TEMPLATES, html_response
from workers.web.http import READ, access, iso
from workers.web.views import progress

#: Longest summary shown in the table, characters (the whole one is in the cell's tooltip).
SUMMARY_CHARS = 180

def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def window_hours(settings: CallSettings) -> frozenset[int]:
    """The local hours (0-23) that the calling window allows on at least one day: each hour any rule's
    ``[start, end)`` overlaps (an overnight rule wraps past midnight); every hour when the window is "any time"."""
    if not settings.windows:
        return frozenset(range(24))
    hours: set[int] = set()
    for rule in settings.windows:
        start, end = rule.start_minute, rule.end_minute
        spans = [(start, end)] if end > start else [(start, 24 * 60), (0, end)]
        for begin, finish in spans:
            hours.update(h for h in range(24) if h * 60 < finish and begin < h * 60 + 60)
    return frozenset(hours)


def _settings(raw: Mapping[str, Any] | None, config: Any) -> tuple[CallSettings, str | None]:
    """The batch's parsed settings, and the problem when the stored ones no longer validate (then the defaults)."""
    try:
        return parse_call_settings(raw, config=config), None
    except InvalidCallSettings as exc:
        return default_call_settings(config), str(exc)


def results_data(runtime: Any, batch_id: str) -> dict[str, Any]:
    """Everything the page shows (blocking); :class:`NotFound` for an unknown batch."""
    doc = runtime.batches.get(batch_id)
    if doc is None:
        raise NotFound(f"no batch with id {batch_id!r}")
    config = runtime.config
    settings, settings_error = _settings(doc.get("call_settings"), config)
    account = runtime.accounts.get(doc.get("account_id")) or {}
    results = BatchResultsStore(runtime.db, config=config).read(doc["_id"], settings)
    counts = runtime.jobs.counts(doc["_id"])
    return {"doc": doc, "counts": counts, "progress": progress(counts), "results": results,
            "plan": Plan.from_document(account.get("plan")), "window": describe_window(settings, config=config),
            "window_hours": window_hours(settings), "settings_error": settings_error, "now": runtime.clock.now(),
            "after_call_rules": settings.after_call.needs_analysis}


# -- rendering (pure) ----------------------------------------------------------------------------------


def duration_text(ms: int) -> str:
    """``3h 05m``, ``12m 30s``, ``45s``."""
    seconds = max(0, int(ms)) // 1000
    hours, rem = divmod(seconds, 3600)
    minutes, secs = divmod(rem, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def charge_text(charge: int, plan: Plan) -> str:
    """A charge in the account's storage unit, said in the plan's unit."""
    if not plan.metered:
        return "— (unlimited plan)"
    amount = from_storage_units(plan.type, charge)
    unit = "min" if plan.unit == "second" else "credits"
    return f"{amount:,.2f} {unit}".replace(".00 ", " ")


def _figure(label: str, value: str, key: str, note: str = "") -> str:
    extra = f'<span class="note">{_e(note)}</span>' if note else ""
    return f'<div class="figure" data-figure="{key}"><dt>{_e(label)}</dt><dd>{_e(value)}</dd>{extra}</div>'


def figures_html(data: Mapping[str, Any]) -> str:
    """The summary figures above the charts."""
    results: BatchResults = data["results"]
    prog = data["progress"]
    rate = (f"{100.0 * results.successful / results.conversations:.0f}%" if results.conversations else "—")
    rate_note = (f"{results.successful} of {results.conversations} analysed conversations" if results.conversations
                 else "no analysed conversation yet")
    return ('<dl class="figures">'
            + _figure("Contacts", f"{prog['total']:,}", "contacts")
            + _figure("Final", f"{prog['done']:,}", "final", f"{prog['percent']}% done")
            + _figure("Completed", f"{prog['completed']:,}", "completed")
            + _figure("Calls placed", f"{results.calls_placed:,}", "calls")
            + _figure("Talk time", duration_text(results.talk_ms), "talk")
            + _figure("Charge", charge_text(results.charge, data["plan"]), "charge")
            + _figure("Success rate", rate, "success", rate_note)
            + "</dl>" + after_call_html(data))


def after_call_html(data: Mapping[str, Any]) -> str:
    """What the batch's after-call rules did, when it has such rules or any of it is not zero: callbacks scheduled,
    opt-outs, wrong numbers and unsuccessful conversations ("" otherwise)."""
    results: BatchResults = data["results"]
    counts = (results.callbacks, results.opt_outs, results.wrong_numbers, results.unsuccessful)
    if not data.get("after_call_rules") and not any(counts):
        return ""
    return ('<dl class="figures after-call" data-field="after-call">'
            + _figure("Callbacks scheduled", f"{results.callbacks:,}", "callbacks", "asked to be called back")
            + _figure("Opt-outs", f"{results.opt_outs:,}", "opt_outs", "asked not to be called: do-not-call list")
            + _figure("Wrong numbers", f"{results.wrong_numbers:,}", "wrong_numbers", "never dialed again for them")
            + _figure("Unsuccessful", f"{results.unsuccessful:,}", "unsuccessful",
                      "contacts whose last conversation missed the success rule")
            + "</dl>")


def _cap_notes(results: BatchResults) -> str:
    notes = []
    if results.calls_capped:
        notes.append(f"The outcome and hour charts cover the most recent {MAX_CALLS:,} calls only.")
    if results.jobs_capped:
        notes.append(f"The per-contact figures cover {MAX_JOBS:,} of the contacts only.")
    return "".join(f'<p class="notice" data-field="capped">{_e(n)}</p>' for n in notes)


def _cell_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


_OUTCOME_LABELS = dict(charts.OUTCOMES)


def _finished_text(at_ms: Any) -> str:
    if not isinstance(at_ms, int | float) or isinstance(at_ms, bool):
        return ""
    return datetime.fromtimestamp(at_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def latest_html(rows: list[Mapping[str, Any]]) -> str:
    """The latest finished contacts: one row each, one column per custom analysis field seen among them."""
    if not rows:
        return '<p class="empty muted" data-field="no-results">No contact has finished yet.</p>'
    keys: list[str] = []
    for row in rows:
        for key in ((row["result"].get("analysis") or {}).get("custom_analysis_data") or {}):
            if key not in keys:
                keys.append(str(key))
    head = "".join(f"<th>{_e(h)}</th>" for h in ("Finished", "Contact", "Status", "Outcome", "Calls", "Summary",
                                                   "Sentiment"))
    head += "".join(f'<th class="custom" data-custom="{_e(k)}">{_e(k)}</th>' for k in keys)
    body = []
    for row in rows:
        result = row["result"]
        analysis = result.get("analysis") or {}
        custom = analysis.get("custom_analysis_data") or {}
        summary = str(analysis.get("call_summary") or "")
        if not summary and result.get("analysis_pending"):
            summary = "analysis pending"
        short = summary if len(summary) <= SUMMARY_CHARS else summary[:SUMMARY_CHARS - 1] + "…"
        status = str(result.get("status") or "")
        reason = f'<span class="reason">{_e(result.get("reason"))}</span>' if result.get("reason") else ""
        outcome = result.get("last_outcome")
        name = row.get("name") or row.get("external_id") or "—"
        cells = [
            f'<td class="when"><time datetime="{_e(iso(result.get("finished_at")))}">'
            f"{_e(_finished_text(result.get('finished_at')))}</time></td>",
            f'<td class="name">{_e(name)}</td>',
            f'<td><span class="status status-{_e(status)}">{_e(status)}</span>{reason}</td>',
            f"<td>{_e(_OUTCOME_LABELS.get(str(outcome), outcome or ''))}</td>",
            f'<td class="n">{result.get("calls", 0)}</td>',
            f'<td class="summary" title="{_e(summary)}">{_e(short)}</td>',
            f"<td>{_e(analysis.get('user_sentiment') or '')}</td>",
            *(f"<td>{_e(_cell_value(custom.get(k)))}</td>" for k in keys),
        ]
        body.append(f'<tr data-job-id="{_e(row["job_id"])}">{"".join(cells)}</tr>')
    return (f'<div class="table-wrap"><table class="latest" data-field="latest"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def page_html(data: Mapping[str, Any]) -> str:
    """The results page of one batch."""
    doc = data["doc"]
    results: BatchResults = data["results"]
    bid = doc["_id"]
    calls_note = f"{results.calls_read:,} calls" if results.calls_read else "no calls yet"
    window_note = (f'<p class="error">The stored call_settings no longer validate ({_e(data["settings_error"])}): '
                   "the window shown is the default one.</p>" if data.get("settings_error") else "")
    return Template((TEMPLATES / "results.html").read_text(encoding="utf-8")).substitute(
        batch_id=_e(bid), name=_e(doc.get("name") or bid), status=_e(doc.get("status")),
        account=_e(doc.get("account_id")), created=_e(iso(doc.get("created_at")) or ""),
        now=_e(iso(data["now"])), window=_e(data["window"]), window_note=window_note,
        figures=figures_html(data), capped=_cap_notes(results), calls_note=_e(calls_note),
        outcomes=charts.outcomes_bar({str(k): n for k, n in results.outcomes.items()}),
        hours=charts.hours_chart(results.hours, data["window_hours"]),
        attempts=charts.attempts_histogram(results.calls_per_contact),
        latest=latest_html(list(results.latest)), latest_n=len(results.latest),
        final_states=_e(", ".join(states.FINAL)))


def not_found_html(message: str) -> str:
    """The page of a batch that does not exist."""
    return ('<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="robots" content="noindex">'
            '<title>outdial · no such batch</title><link rel="icon" href="data:,">'
            '<link rel="stylesheet" href="/static/dashboard.css"><link rel="stylesheet" href="/static/results.css">'
            '</head><body class="results"><header class="top"><h1>outdial</h1>'
            '<a href="/">← All campaigns</a></header><main class="results-main"><section class="panel">'
            f'<h2>No such batch</h2><p data-field="not-found">{_e(message)}.</p></section></main></body></html>')


# -- handler -------------------------------------------------------------------------------------------


@access(READ)
async def results_page(request: web.Request) -> web.Response:
    ctx = context(request)
    batch_id = request.match_info["batch_id"].strip().lower()

    async def compute() -> dict[str, Any]:
        found: dict[str, Any] = await ctx.run(results_data, ctx.runtime, batch_id)
        return found

    try:
        data = await ctx.batch_results.get(batch_id, compute)
    except NotFound as exc:
        return html_response(not_found_html(str(exc)), status=404)
    return html_response(page_html(data))


results_page.outdial_html = True  # type: ignore[attr-defined]
