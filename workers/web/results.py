"""Results out of the admin API: a batch's export (``results.csv``, ``results.jsonl``) and a person's contact log.

An export streams: the answer's rows are written a chunk of jobs at a time as the jobs are read (in the thread
pool: one chunk read and turned into text per call, the next one read while the last is being sent), so memory does
not grow with the batch. The CSV's header needs the batch's ``custom_analysis_data`` keys and variable names first:
one pass reads only those (:meth:`shared.stores.results_read.ResultsRead.export_keys`). Columns, neutralised cells
and the callee's local time: :mod:`shared.domain.results_export`. docs/results.md is the reference.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from shared.config import parse_instant
from shared.domain import states
from shared.domain.phones import InvalidPhone, normalize_phone
from shared.domain.results_export import (
    LOG_COLUMNS,
    CsvLines,
    ExportKeys,
    batch_settings,
    callee_zone,
    csv_row,
    decode_before,
    encode_before,
    export_record,
    json_line,
    log_csv_row,
    log_entry,
    slug,
)
from shared.logs import event, get_logger, mask_phone
from shared.stores.accounts import validate_account_id
from shared.stores.results_read import JobChunks, ResultsRead
from workers.web.admin import _path_id
from workers.web.context import WebContext, context
from workers.web.http import ADMIN, READ, access, invalid, json_response, query_int, query_params, query_text

log = get_logger(__name__)

#: UTF-8 byte order mark, written first with ``?excel=1`` (Excel then reads the file as UTF-8).
BOM = "\ufeff"
#: Contact-log page sizes.
DEFAULT_LOG_PAGE = 100
MAX_LOG_PAGE = 1000
#: Values of ``?excel=``.
FLAGS = {"1": True, "true": True, "0": False, "false": False}
#: Values of the contact log's ``?format=``.
LOG_FORMATS = ("json", "csv")


def _reader(ctx: WebContext) -> ResultsRead:
    return ResultsRead(ctx.runtime.db)


# -- the query ----------------------------------------------------------------------------------------------


def _status(request: web.Request) -> str | None:
    status = query_text(request, "status")
    if status is not None and status not in states.JOB_STATES:
        raise invalid([("status", f"must be one of {', '.join(states.JOB_STATES)}, got {status[:40]!r}")])
    return status


def _updated_since(request: web.Request) -> int | None:
    """``?updated_since=``: an ISO-8601 instant with its offset, or integer ms since the epoch."""
    raw = query_text(request, "updated_since")
    if raw is None:
        return None
    text = raw.strip()
    if text.isascii() and text.isdigit():   # "¹" and other digits int() does not read are not milliseconds
        if len(text) > 15:
            raise invalid([("updated_since", f"milliseconds since the epoch out of range, got {raw[:40]!r}")])
        return int(text)
    try:
        return int(parse_instant(text).timestamp() * 1000)
    except (ValueError, OverflowError):
        raise invalid([("updated_since", "must be an ISO-8601 instant with its offset (2026-03-07T15:00:00Z) or "
                                         f"milliseconds since the epoch, got {raw[:40]!r}")]) from None


def _flag(request: web.Request, name: str) -> bool:
    raw = query_text(request, name)
    if raw is None:
        return False
    value = FLAGS.get(raw.strip().lower())
    if value is None:
        raise invalid([(name, f"must be 1 or 0, got {raw[:40]!r}")])
    return value


# -- exports ------------------------------------------------------------------------------------------------


class _Export:
    """One export in progress: its filter, the batch's settings and (for CSV) its keys; turns each chunk of jobs
    into text in the thread pool."""

    def __init__(self, ctx: WebContext, batch: dict[str, Any], *, status: str | None,
                 updated_since: int | None) -> None:
        self.ctx = ctx
        self.batch = batch
        self.status = status
        self.updated_since = updated_since
        self.config = ctx.runtime.config
        self.settings = batch_settings(batch.get("call_settings"), self.config)
        self.keys: ExportKeys | None = None
        self.chunks: JobChunks | None = None
        self.rows = 0
        self._lines = CsvLines()

    def read_keys(self) -> None:
        self.keys = _reader(self.ctx).export_keys(self.batch["_id"], status=self.status,
                                                  updated_since=self.updated_since)

    def header(self) -> str:
        assert self.keys is not None
        return self._lines.text([self.keys.header()])

    def _next(self) -> list[dict[str, Any]]:
        if self.chunks is None:
            self.chunks = _reader(self.ctx).export_jobs(self.batch["_id"], status=self.status,
                                                        updated_since=self.updated_since)
        jobs = self.chunks.next_chunk()
        self.rows += len(jobs)
        return jobs

    def _record(self, job: dict[str, Any]) -> dict[str, Any]:
        return export_record(job, callee_zone(job.get("contact"), self.settings, self.config))

    def csv_chunk(self) -> str:
        """The CSV lines of the next chunk of jobs; empty at the end."""
        assert self.keys is not None
        custom, variables = sorted(self.keys.custom), sorted(self.keys.variables)
        return self._lines.text(csv_row(self._record(job), self.keys, custom, variables) for job in self._next())

    def jsonl_chunk(self) -> str:
        """The JSON lines of the next chunk of jobs; empty at the end."""
        return "".join(json_line(self._record(job)) for job in self._next())

    def close(self) -> None:
        if self.chunks is not None:
            self.chunks.close()


async def _stream(request: web.Request, ctx: WebContext, export: _Export, response: web.StreamResponse,
                  first: str, chunk: Callable[[], str]) -> web.StreamResponse:
    """Send ``first``, then every ``chunk()`` until one is empty: each read in the thread pool while the one before
    is written. A failure after the answer began cannot change its status: it is logged and the connection closed,
    so the client sees a truncated transfer, never a complete-looking file."""
    await response.prepare(request)
    pending: asyncio.Future[str] | None = None
    try:
        if first:
            await response.write(first.encode("utf-8"))
        pending = asyncio.ensure_future(ctx.run(chunk))
        while True:
            text = await pending
            if not text:
                break
            pending = asyncio.ensure_future(ctx.run(chunk))
            await response.write(text.encode("utf-8"))
        await response.write_eof()
        event(log, "export_sent", batch_id=export.batch["_id"], rows=export.rows, status=export.status)
    except Exception as exc:  # noqa: BLE001 - the answer began: its status cannot change; logged, connection closed
        event(log, "export_failed", level=logging.WARNING, batch_id=export.batch["_id"], rows=export.rows,
              error=type(exc).__name__, detail=str(exc)[:200])
        if request.transport is not None:
            request.transport.close()
    finally:
        if pending is not None:
            await asyncio.wait([pending])   # the read in progress ends before its cursor is closed
            if not pending.cancelled():
                pending.exception()         # retrieved: a failed read is logged above, not again by asyncio
        await ctx.run(export.close)
    return response


def _export_response(batch: dict[str, Any], kind: str, content_type: str) -> web.StreamResponse:
    name = f"{slug(batch.get('name'))}-results.{kind}"
    return web.StreamResponse(headers={"Content-Type": f"{content_type}; charset=utf-8",
                                       "Content-Disposition": f'attachment; filename="{name}"',
                                       "Cache-Control": "no-store"})


@access(READ)   # the dashboard's download buttons: what the results page shows, as a file
@query_params("status", "updated_since", "excel")
async def results_csv(request: web.Request) -> web.StreamResponse:
    """``GET /batches/{batch_id}/results.csv``: one row per contact, in job id order."""
    ctx = context(request)
    batch_id = _path_id(request, "batch_id", "batch id")
    status, since, excel = _status(request), _updated_since(request), _flag(request, "excel")
    batch = await ctx.run(ctx.runtime.batches.require, batch_id)
    export = _Export(ctx, batch, status=status, updated_since=since)
    await ctx.run(export.read_keys)
    if export.keys is not None and (export.keys.custom_dropped or export.keys.variables_dropped):
        event(log, "export_keys_capped", batch_id=batch_id, limit=export.keys.limit)
    response = _export_response(batch, "csv", "text/csv")
    return await _stream(request, ctx, export, response, (BOM if excel else "") + export.header(), export.csv_chunk)


@access(READ)
@query_params("status", "updated_since")
async def results_jsonl(request: web.Request) -> web.StreamResponse:
    """``GET /batches/{batch_id}/results.jsonl``: one JSON object per line and contact, in job id order."""
    ctx = context(request)
    batch_id = _path_id(request, "batch_id", "batch id")
    status, since = _status(request), _updated_since(request)
    batch = await ctx.run(ctx.runtime.batches.require, batch_id)
    export = _Export(ctx, batch, status=status, updated_since=since)
    response = _export_response(batch, "jsonl", "application/x-ndjson")
    return await _stream(request, ctx, export, response, "", export.jsonl_chunk)


# -- the contact log ----------------------------------------------------------------------------------------


def _person(ctx: WebContext, request: web.Request) -> tuple[str | None, str | None]:
    """``(number, external_id)``: exactly one of ``?phone=`` (normalised to E.164) and ``?external_id=``."""
    phone, external_id = query_text(request, "phone"), query_text(request, "external_id")
    if (phone is None) == (external_id is None):
        message = "give exactly one of phone and external_id" + (", not both" if phone is not None else "")
        raise invalid([("phone", message), ("external_id", message)])
    if phone is not None:
        raw = phone.strip()
        if phone.startswith(" ") and raw[:1].isdigit():
            raw = "+" + raw   # a '+' sent unencoded in the query reads as a space
        try:
            return normalize_phone(raw, ctx.runtime.config.phone_default_region), None
        except InvalidPhone as exc:
            raise invalid([("phone", f"{exc.reason} (send + as %2B)")]) from None
    assert external_id is not None
    if len(external_id) > 200:
        raise invalid([("external_id", "longer than 200 characters")])
    return None, external_id.strip()


def _log_page(ctx: WebContext, account_id: str, number: str | None, external_id: str | None,
              before: tuple[int, str] | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the contact log: its entries, and the cursor of the next page (None on the last)."""
    reader = _reader(ctx)
    config = ctx.runtime.config
    attempts = reader.contact_attempts(account_id, number=number, external_id=external_id, before=before,
                                       limit=limit)
    batches = reader.batch_names(sorted({str(a.get("batch_id")) for a in attempts}))
    contacts = reader.job_contacts(sorted({str(a.get("job_id")) for a in attempts}))
    settings = {bid: batch_settings(doc.get("call_settings"), config) for bid, doc in batches.items()}
    fallback = batch_settings(None, config)
    entries = []
    for attempt in attempts:
        batch_id = str(attempt.get("batch_id"))
        zone = callee_zone(contacts.get(str(attempt.get("job_id"))), settings.get(batch_id, fallback), config,
                           attempt.get("to_number"))
        entries.append(log_entry(attempt, batch_name=(batches.get(batch_id) or {}).get("name"), zone=zone))
    following = None
    if len(attempts) == limit:
        last = attempts[-1]
        following = encode_before(int(last.get("created_at") or 0), str(last["_id"]))
    return entries, following


@access(ADMIN)
@query_params("phone", "external_id", "limit", "before", "format")
async def contact_log(request: web.Request) -> web.StreamResponse:
    """``GET /accounts/{account_id}/contact-log``: every attempt to one person across the account's batches, newest
    first, page by page (``before`` = the previous page's ``next_before``); ``format=csv`` streams every page."""
    ctx = context(request)
    account_id = validate_account_id(request.match_info["account_id"])
    number, external_id = _person(ctx, request)
    limit = query_int(request, "limit", default=DEFAULT_LOG_PAGE, low=1, high=MAX_LOG_PAGE)
    fmt = (query_text(request, "format") or "json").lower()
    if fmt not in LOG_FORMATS:
        raise invalid([("format", f"must be json or csv, got {fmt[:20]!r}")])
    raw_before = query_text(request, "before")
    before = None
    if raw_before is not None:
        try:
            before = decode_before(raw_before)
        except ValueError as exc:
            raise invalid([("before", str(exc))]) from None
    person = {"phone": number} if number is not None else {"external_id": external_id}
    if fmt == "json":
        entries, following = await ctx.run(_log_page, ctx, account_id, number, external_id, before, limit)
        event(log, "contact_log_read", account_id=account_id, entries=len(entries),
              **({"phone": mask_phone(number)} if number else {"external_id": True}))
        return json_response({"account_id": account_id, **person, "entries": entries, "next_before": following})
    return await _contact_log_csv(request, ctx, account_id, number, external_id, before, limit)


async def _contact_log_csv(request: web.Request, ctx: WebContext, account_id: str, number: str | None,
                           external_id: str | None, before: tuple[int, str] | None,
                           limit: int) -> web.StreamResponse:
    """The whole contact log from ``before`` on as CSV, read ``limit`` entries at a time."""
    lines = CsvLines()
    name = slug(account_id, fallback="account")
    response = web.StreamResponse(headers={"Content-Type": "text/csv; charset=utf-8",
                                           "Content-Disposition": f'attachment; filename="{name}-contact-log.csv"',
                                           "Cache-Control": "no-store"})
    await response.prepare(request)
    rows = 0
    try:
        await response.write(lines.text([LOG_COLUMNS]).encode("utf-8"))
        cursor: tuple[int, str] | None = before
        while True:
            entries, following = await ctx.run(_log_page, ctx, account_id, number, external_id, cursor, limit)
            rows += len(entries)
            if entries:
                await response.write(lines.text(log_csv_row(e) for e in entries).encode("utf-8"))
            if following is None:
                break
            cursor = decode_before(following)
        await response.write_eof()
    except Exception as exc:  # noqa: BLE001 - the answer began: its status cannot change; logged, connection closed
        event(log, "contact_log_failed", level=logging.WARNING, account_id=account_id, rows=rows,
              error=type(exc).__name__, detail=str(exc)[:200])
        if request.transport is not None:
            request.transport.close()
    return response


#: ``(method, path, handler, name)`` of the results routes.
ROUTES = (
    ("GET", "/batches/{batch_id}/results.csv", results_csv, "results_csv"),
    ("GET", "/batches/{batch_id}/results.jsonl", results_jsonl, "results_jsonl"),
    ("GET", "/accounts/{account_id}/contact-log", contact_log, "contact_log"),
)
