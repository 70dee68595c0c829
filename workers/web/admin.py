"""The admin API: accounts, batches, contacts, jobs (JSON; ``Authorization: Bearer <ADMIN_TOKEN>``).

Handlers parse and check the request on the event loop, then run the store calls (blocking
pymongo) in the application's thread pool. Every route is listed in :data:`ROUTES` and described
in :mod:`workers.web.openapi`; docs/web.md is the reference.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

import phonenumbers
from aiohttp import web

from shared.cache.invalidation import publish_invalidation
from shared.clock import to_ms
from shared.domain import states
from shared.domain.call_settings import CallSettings
from shared.domain.shapes import BatchShape, TopUpShape, body_fields, validate_shape
from shared.errors import CallNotFound, Conflict, NotFound
from shared.logs import event, get_logger
from shared.redis_keys import invalidate_channel
from shared.stores.accounts import validate_account_id
from shared.stores.batch_controls import ControlResult, cancel_batch, pause_batch, reopen_batch, resume_batch
from shared.stores.batches import EDITABLE
from shared.stores.contacts_import import (
    MAX_LINE_BYTES,
    CheckSink,
    ContactSink,
    CsvFormatError,
    ImportInterrupted,
    ImportReport,
    import_contacts,
    import_csv,
    split_lines,
)
from shared.stores.mongo import parse_id
from workers.web.context import WebContext, context
from workers.web.http import (
    ADMIN,
    READ,
    ApiError,
    access,
    invalid,
    is_json,
    json_response,
    json_type,
    query_int,
    query_params,
    query_text,
    read_json_object,
    too_large,
    unknown_fields,
)
from workers.web.views import (
    account_view,
    batch_jobs,
    batch_view,
    in_progress_view,
    job_summary,
    job_view,
    window_view,
)

#: Fields of ``POST /batches`` (declared by :class:`shared.domain.shapes.BatchShape`).
BATCH_FIELDS = body_fields(BatchShape)
#: Fields of ``POST /accounts/{account_id}/top-up`` (declared by :class:`shared.domain.shapes.TopUpShape`).
TOP_UP_FIELDS = body_fields(TopUpShape)
#: Fields of ``PATCH /batches/{batch_id}``.
BATCH_UPDATE_FIELDS = EDITABLE
#: Contacts one JSON request may hold (larger uploads: CSV, which streams).
MAX_JSON_CONTACTS = 100_000
#: Page sizes of list routes.
DEFAULT_PAGE = 100
MAX_PAGE = 500

log = get_logger(__name__)

#: Content types read as CSV by ``POST /batches/{id}/contacts``.
CSV_TYPES = ("text/csv", "application/csv", "text/plain")
#: Lines in flight between the upload reader and the import thread, in 64 KiB chunks.
DEFAULT_FEED_CHUNKS = 8
#: Longest the import thread waits for the next chunk of an upload, seconds.
DEFAULT_FEED_WAIT_S = 300.0



def _path_id(request: web.Request, name: str, what: str) -> str:
    return parse_id(request.match_info[name], what)


def _account_id(request: web.Request) -> str:
    return validate_account_id(request.match_info["account_id"])


# -- accounts -----------------------------------------------------------------------------------------


@access(ADMIN)
async def put_account(request: web.Request) -> web.Response:
    ctx = context(request)
    account_id = _account_id(request)
    body = await read_json_object(request, limit=ctx.settings.max_json_bytes)
    view, created = await ctx.run(ctx.runtime.account_changes.apply, account_id, body)
    headers = {"Location": f"/accounts/{account_id}"} if created else None
    return json_response(account_view(view), status=201 if created else 200, headers=headers)


@access(ADMIN)
async def get_account(request: web.Request) -> web.Response:
    ctx = context(request)
    view = await ctx.run(ctx.runtime.billing.balance, _account_id(request))
    return json_response(account_view(view))


@access(ADMIN)
async def top_up(request: web.Request) -> web.Response:
    ctx = context(request)
    account_id = _account_id(request)
    body = await read_json_object(request, limit=ctx.settings.max_json_bytes, allowed=TOP_UP_FIELDS)
    shape = validate_shape(TopUpShape, body)
    if isinstance(shape, list):
        raise invalid(shape)
    view = await ctx.run(ctx.runtime.billing.top_up, account_id, body["amount"])
    return json_response(account_view(view))


# -- batches ------------------------------------------------------------------------------------------


def _batch_now(ctx: WebContext, batch_id: str, changed_at: int | None
               ) -> tuple[Mapping[str, Any], CallSettings | None, datetime, float]:
    """The batch (with its parsed call_settings when known), the shared time now (read here, in the thread
    pool: the clock may ask Redis) and the monotonic time it was read. The batch comes from the batch cache, or
    from MongoDB when this process changed it after the cache read it (its invalidation may not have arrived)."""
    rt = ctx.runtime
    cached = rt.cache.get(batch_id)
    if cached is None:
        raise NotFound(f"batch {batch_id} not found")
    if changed_at is not None and cached.loaded_at_ms <= changed_at:
        return rt.batches.require(batch_id), None, rt.clock.now(), time.monotonic()
    return cached.doc, cached.settings, rt.clock.now(), time.monotonic()


async def batch_detail(ctx: WebContext, batch_id: str) -> dict[str, Any]:
    """``GET /batches/{batch_id}``: the batch, with what its jobs say (counts, progress, failures, oldest in
    progress) as of at most ``batch_counts_max_age_s`` ago (:attr:`WebContext.batch_jobs`), and counted again
    at once when the batch's status changed since (a completed batch's counts are final).

    The batch comes from the batch cache, read in the thread pool and shared by the requests of the next
    moment (:data:`~workers.web.context.BATCH_MAX_AGE_S`; a change made through this process shows at once); its
    jobs are recounted by one request at a time, none while the kept count is fresh."""
    rt = ctx.runtime
    changed_at = ctx.changed_at(batch_id)
    doc, settings, read_at, read_mono = await ctx.batch_docs.get(
        batch_id, lambda: ctx.run(_batch_now, ctx, batch_id, changed_at))
    now = read_at + timedelta(seconds=(time.monotonic() - read_mono) * rt.clock.speed)
    status = doc.get("status")

    async def count() -> tuple[Any, Any]:
        return status, await ctx.run(batch_jobs, rt.jobs, batch_id, lang=rt.config.lang)

    counted_for, jobs = await ctx.batch_jobs.get(batch_id, count)
    if counted_for != status:
        # Counted before the batch changed state (it completed, was paused...): count again, so that a batch
        # shown as completed never shows jobs that were still open a moment ago.
        ctx.batch_jobs.forget(batch_id)
        _, jobs = await ctx.batch_jobs.get(batch_id, count)
    view = batch_view(doc, counts=jobs.counts,
                      window=window_view(doc.get("call_settings"), now, rt.config, parsed=settings))
    view["failures"] = [dict(f) for f in jobs.failures]
    view["oldest_in_progress"] = in_progress_view(jobs.oldest, doc.get("call_settings"), to_ms(now),
                                                  rt.config, rt.clock, parsed=settings)
    return view


def _create_batch(ctx: WebContext, body: dict[str, Any]) -> dict[str, Any]:
    rt = ctx.runtime
    problems, settings = rt.batches.check(body)
    errors = unknown_fields(body, BATCH_FIELDS) + problems
    account_id = body.get("account_id")
    name = account_id.strip() if isinstance(account_id, str) else ""
    if name and not any(f == "account_id" for f, _ in errors) and rt.accounts.get(name) is None:
        errors.append(("account_id", f"no account {name[:100]!r}: create it first with "
                                     f"PUT /accounts/{{account_id}}"))
    if errors:
        raise invalid(errors)
    doc = rt.batches.create(body, call_settings=settings)
    return batch_view(doc, counts=dict.fromkeys(states.JOB_STATES, 0),
                      window=window_view(doc.get("call_settings"), rt.clock.now(), rt.config, parsed=settings))


@access(ADMIN)
async def create_batch(request: web.Request) -> web.Response:
    ctx = context(request)
    body = await read_json_object(request, limit=ctx.settings.max_json_bytes)
    view = await ctx.run(_create_batch, ctx, body)
    return json_response(view, status=201, headers={"Location": f"/batches/{view['id']}"})


def _list_batches(ctx: WebContext, status: str | None, account_id: str | None, limit: int,
                  offset: int) -> dict[str, Any]:
    rt = ctx.runtime
    docs = rt.batches.list(status=status, account_id=account_id, limit=limit, skip=offset)
    counts = rt.jobs.counts_by_batch([d["_id"] for d in docs])
    batches = [batch_view(d, counts=counts[d["_id"]]) for d in docs]
    return {"batches": batches, "count": len(batches), "offset": offset,
            "next_offset": offset + limit if len(batches) == limit else None}


@access(ADMIN)
@query_params("status", "account_id", "limit", "offset")
async def list_batches(request: web.Request) -> web.Response:
    ctx = context(request)
    status = query_text(request, "status")
    if status is not None and status not in states.BATCH_STATES:
        raise invalid([("status", f"must be one of {', '.join(states.BATCH_STATES)}, got {status[:40]!r}")])
    account_id = query_text(request, "account_id")
    if account_id is not None:
        account_id = validate_account_id(account_id)
    limit = query_int(request, "limit", default=DEFAULT_PAGE, low=1, high=MAX_PAGE)
    offset = query_int(request, "offset", default=0, low=0, high=10_000_000)
    return json_response(await ctx.run(_list_batches, ctx, status, account_id, limit, offset))


@access(ADMIN)
async def get_batch(request: web.Request) -> web.Response:
    ctx = context(request)
    return json_response(await batch_detail(ctx, _path_id(request, "batch_id", "batch id")))


@access(ADMIN)
async def update_batch(request: web.Request) -> web.Response:
    ctx = context(request)
    batch_id = _path_id(request, "batch_id", "batch id")
    body = await read_json_object(request, limit=ctx.settings.max_json_bytes)

    def update() -> None:
        if "name" in body and body["name"] is None:
            rest = {k: v for k, v in body.items() if k != "name"}
            raise invalid([("name", "cannot be null (a batch always has a name)"),
                           *unknown_fields(rest, BATCH_UPDATE_FIELDS),
                           *ctx.runtime.batches.validate(rest, partial=True)])
        ctx.runtime.batches.update(batch_id, body)

    await ctx.change_batch(batch_id, update)
    return json_response(await batch_detail(ctx, batch_id))


def _control_view(result: ControlResult) -> dict[str, Any]:
    view: dict[str, Any] = {"id": result.batch["_id"], "status": result.status, "changed": result.changed}
    return view


@access(ADMIN)
async def pause(request: web.Request) -> web.Response:
    ctx = context(request)
    batch_id = _path_id(request, "batch_id", "batch id")
    result = await ctx.change_batch(batch_id, pause_batch, ctx.runtime.batches, batch_id)
    return json_response(_control_view(result))


@access(ADMIN)
async def resume(request: web.Request) -> web.Response:
    ctx = context(request)
    batch_id = _path_id(request, "batch_id", "batch id")
    result = await ctx.change_batch(batch_id, resume_batch, ctx.runtime.batches, batch_id)
    return json_response(_control_view(result))


@access(ADMIN)
async def cancel(request: web.Request) -> web.Response:
    ctx = context(request)
    batch_id = _path_id(request, "batch_id", "batch id")
    result = await ctx.change_batch(batch_id, cancel_batch, ctx.runtime.batches, ctx.runtime.jobs, batch_id)
    return json_response({**_control_view(result), "cancelled_jobs": result.cancelled_jobs})


@access(ADMIN)
async def invalidate_cache(request: web.Request) -> web.Response:
    ctx = context(request)
    batch_id = _path_id(request, "batch_id", "batch id")
    receivers = await ctx.run(publish_invalidation, ctx.runtime.redis, batch_id, strict=True)
    return json_response({"id": batch_id, "channel": invalidate_channel(batch_id), "receivers": receivers},
                         status=202)


# -- contacts -----------------------------------------------------------------------------------------


class LineFeed:
    """Byte lines from the upload (event loop) to the import thread, a few chunks at a time.

    The reader awaits :meth:`put` (back-pressure: at most ``maxsize`` chunks wait); the import
    thread iterates the lines. :meth:`close` ends the iteration.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, *, maxsize: int = DEFAULT_FEED_CHUNKS,
                 wait_s: float = DEFAULT_FEED_WAIT_S) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[list[bytes] | None] = asyncio.Queue(maxsize)
        self.wait_s = wait_s
        self._closing: asyncio.Future[None] | None = None

    async def put(self, lines: list[bytes], consumer: asyncio.Future[Any]) -> bool:
        """Hand ``lines`` over; False when the import thread stopped reading (it finished early)."""
        put = asyncio.ensure_future(self.queue.put(lines))
        done, _ = await asyncio.wait({put, consumer}, return_when=asyncio.FIRST_COMPLETED)
        if put in done:
            return True
        put.cancel()
        return False

    def close(self) -> None:
        try:
            self.queue.put_nowait(None)
        except asyncio.QueueFull:
            self._closing = asyncio.ensure_future(self.queue.put(None))

    def __iter__(self) -> Iterator[bytes]:
        while True:
            item = asyncio.run_coroutine_threadsafe(self.queue.get(), self.loop).result(self.wait_s)
            if item is None:
                return
            yield from item


async def _stream_csv(ctx: WebContext, request: web.Request, sink: ContactSink) -> ImportReport:
    limit = ctx.settings.max_csv_bytes
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit)
    loop = asyncio.get_running_loop()
    feed = LineFeed(loop)
    consumer = loop.run_in_executor(ctx.import_pool, lambda: import_csv(feed, sink))
    failure: ApiError | None = None
    size, rest = 0, b""
    try:
        async for chunk in request.content.iter_chunked(1 << 16):
            if size + len(chunk) > limit:
                failure = too_large(limit)
                chunk = chunk[: limit - size]
            size += len(chunk)
            lines, rest = split_lines(rest, chunk)
            if lines and not await feed.put(lines, consumer):
                break
            if len(rest) > MAX_LINE_BYTES:
                failure = ApiError(413, "line_too_long", f"a CSV line is longer than {MAX_LINE_BYTES} bytes")
            if failure is not None:
                break
        else:
            if rest:
                await feed.put([rest], consumer)
    finally:
        if not consumer.done():
            feed.close()
    if failure is None:
        return await consumer
    try:
        report = await consumer
    except CsvFormatError:
        raise failure from None
    failure.extra = {**report.to_api(), "note": "the complete lines before this point were imported"}
    raise failure


def _region(request: web.Request) -> str | None:
    raw = query_text(request, "region")
    if not raw:
        return None
    region = raw.upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise invalid([("region", f"unknown region code {raw[:10]!r} (ISO 3166 alpha-2, e.g. CL)")])
    return region


def _json_contacts(body: dict[str, Any]) -> list[Any]:
    contacts = body.get("contacts")
    if not isinstance(contacts, list):
        raise invalid([("contacts", f"must be an array of contacts, got {json_type(contacts)}")])
    if len(contacts) > MAX_JSON_CONTACTS:
        raise invalid([("contacts", f"at most {MAX_JSON_CONTACTS} contacts per JSON request, got {len(contacts)} "
                                    "(send larger uploads as text/csv)")])
    return contacts


@access(ADMIN)
@query_params("region")
async def add_contacts(request: web.Request) -> web.Response:
    ctx = context(request)
    rt = ctx.runtime
    batch_id = _path_id(request, "batch_id", "batch id")
    region = _region(request)
    is_csv = request.content_type in CSV_TYPES
    if not is_csv and request.headers.get("Content-Type") and not is_json(request):
        raise ApiError(415, "unsupported_media_type",
                       f"send application/json or text/csv (got {request.content_type})")
    batch = await ctx.run(rt.batches.require, batch_id)
    if batch["status"] == states.BATCH_CANCELLED:
        raise Conflict(f"batch {batch_id} is cancelled: contacts cannot be added")
    sink = ContactSink(jobs=rt.jobs, batch_id=batch_id, account_id=batch["account_id"], region=region)
    try:
        report = await _read_contacts(ctx, request, sink, is_csv=is_csv)
        if report.imported and (await ctx.run(rt.batches.require, batch_id))["status"] == states.BATCH_CANCELLED:
            # Cancelled while the contacts came in: what was imported is cancelled too (a cancel after this read
            # cancels them itself).
            await ctx.run(rt.jobs.cancel_batch, batch_id)
            raise Conflict(f"batch {batch_id} was cancelled during the import: the contacts imported were cancelled")
    except ImportInterrupted as exc:
        if exc.report.imported:
            try:   # the written contacts reopen a completed batch, as a finished import would
                await ctx.change_batch(batch_id, reopen_batch, rt.batches, batch_id)
            except Exception as reopen:  # noqa: BLE001 - the answer still says what was written
                event(log, "import_reopen_failed", level=logging.ERROR, batch_id=batch_id,
                      error=type(reopen).__name__, detail=str(reopen)[:200])
        raise _interrupted(exc) from None
    finally:
        ctx.jobs_changed(batch_id)
    status = batch["status"]
    if report.imported:
        status = (await ctx.change_batch(batch_id, reopen_batch, rt.batches, batch_id)).status
    return json_response({**report.to_api(), "batch_id": batch_id, "batch_status": status})


def _interrupted(exc: ImportInterrupted) -> ApiError:
    """503 for an import a failed write stopped, with its report: exactly what was written (or how many writes are
    unknown), so the operator knows what re-sending the upload will do (the written contacts come back as
    duplicates)."""
    unknown = (f"; the write of {exc.unconfirmed} contacts could not be confirmed" if exc.unconfirmed else "")
    error = ApiError(503, "service_unavailable",
                     f"the database failed during the import: {exc.report.imported} contacts were written{unknown}; "
                     "send the upload again (contacts already written are reported as duplicates)",
                     headers={"Retry-After": "5"})
    error.extra = {**exc.report.to_api(), "unconfirmed": exc.unconfirmed}
    return error


async def _read_contacts(ctx: WebContext, request: web.Request, sink: Any, *, is_csv: bool) -> Any:
    """Feed the request's contacts (a streamed CSV, or JSON ``{"contacts": [...]}``) to ``sink``; its report."""
    async with ctx.import_gate:
        if is_csv:
            try:
                return await _stream_csv(ctx, request, sink)
            except CsvFormatError as exc:
                raise invalid(exc.errors) from None
        body = await read_json_object(request, limit=ctx.settings.max_contacts_json_bytes, allowed=("contacts",))
        contacts = _json_contacts(body)
        return await asyncio.get_running_loop().run_in_executor(ctx.import_pool, import_contacts, contacts, sink)


@access(READ)
@query_params("region")
async def check_contacts(request: web.Request) -> web.Response:
    """Validate a contacts upload (JSON or CSV) row by row exactly as an import would, and write nothing."""
    ctx = context(request)
    region = _region(request) or ctx.runtime.config.phone_default_region
    is_csv = request.content_type in CSV_TYPES
    if not is_csv and request.headers.get("Content-Type") and not is_json(request):
        raise ApiError(415, "unsupported_media_type",
                       f"send application/json or text/csv (got {request.content_type})")
    report = await _read_contacts(ctx, request, CheckSink(region=region), is_csv=is_csv)
    answer = report.to_api()
    return json_response({"valid": answer.pop("imported"), **{k: v for k, v in answer.items() if k != "duplicates"}})


# -- jobs ---------------------------------------------------------------------------------------------


def _list_jobs(ctx: WebContext, batch_id: str, status: str | None, after: str | None, limit: int) -> dict[str, Any]:
    rt = ctx.runtime
    rt.batches.require(batch_id)
    docs = rt.jobs.page(batch_id, status=status, after=after, limit=limit)
    return {"jobs": [job_summary(d) for d in docs], "count": len(docs),
            "next_after": docs[-1]["_id"] if len(docs) == limit else None}


@access(ADMIN)
@query_params("status", "after", "limit")
async def list_jobs(request: web.Request) -> web.Response:
    ctx = context(request)
    batch_id = _path_id(request, "batch_id", "batch id")
    status = query_text(request, "status")
    if status is not None and status not in states.JOB_STATES:
        raise invalid([("status", f"must be one of {', '.join(states.JOB_STATES)}, got {status[:40]!r}")])
    after = query_text(request, "after")
    if after is not None:
        if not re.fullmatch(r"[0-9a-fA-F]{24}", after):
            raise invalid([("after", "must be a job id (24 hex characters) from next_after")])
        after = after.lower()
    limit = query_int(request, "limit", default=DEFAULT_PAGE, low=1, high=MAX_PAGE)
    return json_response(await ctx.run(_list_jobs, ctx, batch_id, status, after, limit))


def _job(ctx: WebContext, job_id: str) -> dict[str, Any]:
    rt = ctx.runtime
    doc = rt.jobs.get(job_id)
    if doc is None:
        raise NotFound(f"job {job_id} not found")
    return job_view(doc, rt.attempts.for_job(job_id))


@access(ADMIN)
async def get_job(request: web.Request) -> web.Response:
    ctx = context(request)
    return json_response(await ctx.run(_job, ctx, _path_id(request, "job_id", "job id")))


def _recording(ctx: WebContext, job_id: str, attempt_id: str | None) -> dict[str, Any]:
    rt = ctx.runtime
    doc = rt.jobs.get(job_id)
    if doc is None:
        raise NotFound(f"job {job_id} not found")
    if attempt_id is None:
        attempt_id = (doc.get("result") or {}).get("analysis_attempt_id")
        if attempt_id is None:
            raise NotFound(f"job {job_id} has no conversation with a recording")
    attempt = rt.attempts.get(attempt_id)
    if attempt is None or attempt.get("job_id") != job_id or not attempt.get("call_id"):
        raise NotFound(f"attempt {attempt_id[:80]} of job {job_id} has no call")
    try:
        call = rt.provider.get_call(str(attempt["call_id"]))
    except CallNotFound:
        raise NotFound(f"the provider no longer has call {attempt['call_id']}") from None
    url = call.raw.get("recording_url")
    if not isinstance(url, str) or not url:
        raise NotFound(f"call {attempt['call_id']} has no recording")
    return {"job_id": job_id, "attempt_id": attempt_id, "call_id": attempt["call_id"], "recording_url": url}


@access(ADMIN)
@query_params("attempt_id")
async def get_recording(request: web.Request) -> web.Response:
    """A fresh link to the recording of the job's last conversation (or of ``?attempt_id=``): the provider's links
    expire, so it is asked each time."""
    ctx = context(request)
    return json_response(await ctx.run(_recording, ctx, _path_id(request, "job_id", "job id"),
                                       query_text(request, "attempt_id")))


#: ``(method, path, handler, name)`` of every admin route.
ROUTES = (
    ("PUT", "/accounts/{account_id}", put_account, "put_account"),
    ("GET", "/accounts/{account_id}", get_account, "get_account"),
    ("POST", "/accounts/{account_id}/top-up", top_up, "top_up"),
    ("POST", "/batches", create_batch, "create_batch"),
    ("GET", "/batches", list_batches, "list_batches"),
    ("GET", "/batches/{batch_id}", get_batch, "get_batch"),
    ("PATCH", "/batches/{batch_id}", update_batch, "update_batch"),
    ("POST", "/batches/{batch_id}/contacts", add_contacts, "add_contacts"),
    ("POST", "/contacts/check", check_contacts, "check_contacts"),
    ("GET", "/batches/{batch_id}/jobs", list_jobs, "list_jobs"),
    ("POST", "/batches/{batch_id}/pause", pause, "pause_batch"),
    ("POST", "/batches/{batch_id}/resume", resume, "resume_batch"),
    ("POST", "/batches/{batch_id}/cancel", cancel, "cancel_batch"),
    ("POST", "/batches/{batch_id}/invalidate-cache", invalidate_cache, "invalidate_cache"),
    ("GET", "/jobs/{job_id}", get_job, "get_job"),
    ("GET", "/jobs/{job_id}/recording", get_recording, "get_recording"),
)
