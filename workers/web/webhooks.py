"""``POST /webhooks/retell``: signed call events from Retell, applied through the pipeline.

1. The raw body (at most :data:`~workers.web.http.DEFAULT_MAX_WEBHOOK_BYTES`, 1 MiB, refused before it is
   buffered; at most :data:`~workers.web.http.DEFAULT_MAX_WEBHOOK_READS` read at once, each within
   ``WEBHOOK_READ_TIMEOUT_S``, 5 s: a body still arriving then is refused with 408, its connection closed and its
   read slot freed, so slow senders hold the slots for that long at most) is verified against
   ``x-retell-signature`` with ``RETELL_API_KEY`` (:func:`shared.provider.webhooks.verify_webhook`: HMAC of the
   exact bytes, timestamp within 5 minutes of the real time). Unsigned, forged or stale: 401 and
   nothing else happens.
2. ``call_ended`` and ``call_analyzed`` carry the call: its job is found by ``metadata.job_id``
   (set when the call was created) or, failing that, by ``call_id``, and the ended call goes to
   :meth:`shared.pipeline.Pipeline.finalize` with ``source="webhook"`` — the same function the
   poll actor calls. Its conditional updates make a second delivery, the other event of the pair,
   or a poll that got there first a no-op (``"duplicate"``).
3. ``call_started`` and other events are acknowledged (204) and change nothing; calls that are
   not outdial's (no job) too.

Answering within Retell's 10 s: the finalize runs in its own thread pool, and the handler waits
for it at most ``webhook_wait_s`` (5 s by default). If it is not done by then the answer is 202
and the finalize goes on; if the pool already holds ``webhook_max_pending`` finalizations the
answer is 503 at once (Retell retries up to 3 times, then gives up). Neither can lose or
double-apply an outcome: the poll actor keeps polling every call in progress until its job is
finalized by whichever path comes first, so the webhook only makes outcomes arrive sooner. Two
deliveries of the same call while its finalize runs share that one finalize.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web
from cachetools import LRUCache

from shared import metrics
from shared.errors import NotFound
from shared.logs import event, get_logger
from shared.provider.retell import Call
from shared.provider.webhooks import SIGNATURE_HEADER, verify_webhook
from shared.stores.mongo import parse_id
from workers.web.context import context
from workers.web.http import PUBLIC, ApiError, access, bad_request, json_response, parse_json, read_limited

log = get_logger(__name__)

#: Events that carry an ended call.
FINAL_EVENTS = ("call_ended", "call_analyzed")
#: Call statuses a ``call_ended``/``call_analyzed`` call must have to be finalized.
ENDED_STATUSES = ("ended", "not_connected", "error")
#: Longest the handler waits for the finalize before answering 202, seconds (Retell waits 10).
DEFAULT_WEBHOOK_WAIT_S = 5.0
#: Threads applying webhooks.
DEFAULT_WEBHOOK_THREADS = 16
#: Finalizations queued or running above which new deliveries get 503 at once.
DEFAULT_WEBHOOK_MAX_PENDING = 2000
#: Calls remembered as finalized here, so their later events read nothing.
RECENTLY_FINISHED = 20_000
#: Finalize results that applied nothing (the slot was not freed by this delivery).
NOT_APPLIED = ("duplicate", "unknown_call", "stale")
#: Results counted under their own name (a finalize that applied an outcome is counted as ``finalized``).
ANSWERED_WITHOUT_FINALIZE = ("duplicate", "unknown_call", "analyzed", "not_ready", "not_ended")
#: Seconds between two log lines about refused signatures (the metric counts every one).
DEFAULT_REJECTION_LOG_INTERVAL_S = 1.0


class LogThrottle:
    """At most one log line per ``interval_s`` seconds for a repeated event (a flood of forged webhooks
    must not flood the logs); :meth:`admit` returns how many were skipped since the last line, or None."""

    def __init__(self, interval_s: float = DEFAULT_REJECTION_LOG_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._last = -1e18
        self._skipped = 0

    def admit(self) -> int | None:
        now = time.monotonic()
        if now - self._last < self.interval_s:
            self._skipped += 1
            return None
        skipped, self._skipped, self._last = self._skipped, 0, now
        return skipped


class WebhookProcessor:
    """Applies verified call events; one per application.

    :param runtime: the process runtime (the job store, to find a job by call id).
    :param pipeline: returns the process's :class:`shared.pipeline.Pipeline` (built on first use).
    :param api_key: the key webhooks are signed with (``RETELL_API_KEY``).
    :param wait_s: see :data:`DEFAULT_WEBHOOK_WAIT_S`.
    :param threads: see :data:`DEFAULT_WEBHOOK_THREADS`.
    :param max_pending: see :data:`DEFAULT_WEBHOOK_MAX_PENDING`.
    """

    def __init__(self, *, runtime: Any, pipeline: Callable[[], Any], api_key: str,
                 wait_s: float = DEFAULT_WEBHOOK_WAIT_S, threads: int = DEFAULT_WEBHOOK_THREADS,
                 max_pending: int = DEFAULT_WEBHOOK_MAX_PENDING) -> None:
        self.runtime = runtime
        self._pipeline = pipeline
        self.api_key = api_key
        self.wait_s = wait_s
        self.max_pending = max_pending
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="outdial-webhook")
        self.pending = 0
        #: Bodies being read and verified now (before anything is known about the sender).
        self.reading = 0
        self.rejections = LogThrottle()
        self.slow_bodies = LogThrottle()
        self._inflight: dict[str, asyncio.Future[str]] = {}
        #: Calls this process finalized lately: a later event of the same call is a duplicate, read nothing.
        self._finished: LRUCache[str, bool] = LRUCache(maxsize=RECENTLY_FINISHED)
        self._finished_lock = threading.Lock()

    # -- the blocking part (a pool thread) ----------------------------------------------------------

    def find_job(self, call: Call) -> dict[str, Any] | None:
        """The job of ``call``: the one ``metadata.job_id`` names when it exists, else the job holding ``call_id``
        (one read either way, the document itself, handed to the finalize)."""
        jobs = self.runtime.jobs
        job_id = call.metadata.get("job_id")
        if isinstance(job_id, str):
            try:
                named = parse_id(job_id, "job id")
            except NotFound:
                named = None
            job = jobs.get(named) if named is not None else None
            if job is not None:
                return job
        return jobs.of_call(call.call_id)

    def apply(self, call: Call, name: str = "call_ended") -> str:
        """Find the job and finalize it; ``"unknown_call"`` when no job has this call.

        A call this process finalized a moment ago (``call_ended`` then ``call_analyzed``) is a duplicate
        without a read, except that a ``call_analyzed`` then keeps the call's analysis (:meth:`analyzed`). The
        freed slot is refilled after the answer, in the same pool: the next call is dialed from here, with no
        broker hop, while the provider already has its acknowledgement.
        """
        with self._finished_lock:
            if call.call_id in self._finished:
                return self.analyzed(call) if name == "call_analyzed" else "duplicate"
        started = time.perf_counter()
        job = self.find_job(call)
        if job is None:
            return self.analyzed(call) if name == "call_analyzed" else "unknown_call"
        pipeline = self._pipeline()
        result = str(pipeline.finalize(job["_id"], call, job=job, source="webhook", refill=False))
        if result == "duplicate" and name == "call_analyzed":
            return self.analyzed(call)
        metrics.WEBHOOK_FINALIZE.observe(time.perf_counter() - started)
        if result not in NOT_APPLIED:
            with self._finished_lock:
                self._finished[call.call_id] = True
            self.pool.submit(self._refill, pipeline, str(job["account_id"]))
        return result

    def analyzed(self, call: Call) -> str:
        """Keep the analysis a ``call_analyzed`` brings for a call already finalized (``"analyzed"``), or say why
        not (:meth:`shared.pipeline.analysis.Analysis.record_analysis`)."""
        return str(self._pipeline().record_analysis(call, source="webhook"))

    @staticmethod
    def _refill(pipeline: Any, account_id: str) -> None:
        try:
            pipeline.refill(account_id)
        except Exception as exc:  # noqa: BLE001 - the periodic dispatch fills the slot instead
            event(log, "webhook_refill_failed", level=logging.ERROR, account_id=account_id,
                  error=type(exc).__name__, detail=str(exc)[:200])

    # -- the event loop part ------------------------------------------------------------------------

    def _submit(self, call: Call, name: str) -> tuple[asyncio.Future[str], bool]:
        """The finalize of ``call``: a new one (``True``), or the one already running for it (``False``)."""
        running = self._inflight.get(call.call_id)
        if running is not None:
            return running, False
        loop = asyncio.get_running_loop()
        self.pending += 1
        future = loop.run_in_executor(self.pool, self.apply, call, name)
        self._inflight[call.call_id] = future

        def done(f: asyncio.Future[str]) -> None:
            self.pending -= 1
            self._inflight.pop(call.call_id, None)
            if not f.cancelled() and f.exception() is not None:
                exc = f.exception()
                event(log, "webhook_finalize_failed", level=logging.ERROR, call_id=call.call_id,
                      error=type(exc).__name__, detail=str(exc)[:200])

        future.add_done_callback(done)
        return future, True

    async def finalize(self, call: Call, name: str = "call_ended") -> tuple[int, str]:
        """``(status, result)``: 200 with the pipeline's answer, 202 if still running, 503 when overloaded.

        A delivery that joins a finalize already running for the same call (``call_ended`` and
        ``call_analyzed`` close together, or a retried delivery) waits for it but did not apply anything
        itself: its result is ``"duplicate"``, so each applied outcome is counted once. A ``call_analyzed`` that
        joined one then keeps its analysis, once that finalize is done.
        """
        if call.call_id not in self._inflight and self.pending >= self.max_pending:
            return 503, "overloaded"
        future, fresh = self._submit(call, name)
        try:
            result = await asyncio.wait_for(asyncio.shield(future), self.wait_s)
        except TimeoutError:
            return 202, "accepted"
        if fresh:
            return 200, result
        if name == "call_analyzed":
            return 200, await asyncio.get_running_loop().run_in_executor(self.pool, self.analyzed, call)
        return 200, "duplicate"

    def close(self) -> None:
        """Let running finalizations end (their conditional writes are short) and stop the threads."""
        self.pool.shutdown(wait=True, cancel_futures=False)


def _count(result: str) -> None:
    metrics.WEBHOOKS.labels(result).inc()


def _call_of(body: Any) -> Call:
    if not isinstance(body, dict):
        raise bad_request("the webhook body must be a JSON object")
    try:
        return Call.from_api(body.get("call"))
    except ValueError as exc:
        raise bad_request(f"call: {exc}", "call") from None


@access(PUBLIC)
async def retell_webhook(request: web.Request) -> web.StreamResponse:
    """Verify, then acknowledge or finalize (see the module docstring)."""
    ctx = context(request)
    processor: WebhookProcessor = ctx.webhooks
    if processor.reading >= ctx.settings.webhook_max_reads:
        _count("overloaded")
        raise ApiError(503, "overloaded", "too many webhooks are being read; retry later", headers={"Retry-After": "5"})
    processor.reading += 1   # one event loop: no lock needed
    try:
        deadline = ctx.settings.webhook_read_timeout_s
        try:
            raw = await asyncio.wait_for(read_limited(request, ctx.settings.max_webhook_bytes), deadline)
        except TimeoutError:
            _count("read_timeout")
            suppressed = processor.slow_bodies.admit()
            if suppressed is not None:
                event(log, "webhook_rejected", level=logging.WARNING, reason="read_timeout", timeout_s=deadline,
                      remote=request.remote, not_logged_since_last=suppressed)
            raise ApiError(408, "request_timeout", f"the webhook body did not arrive within {deadline:g} s",
                           close=True) from None
        signed = verify_webhook(raw, request.headers.get(SIGNATURE_HEADER), processor.api_key)
    finally:
        processor.reading -= 1
    if not signed:
        _count("rejected_signature")
        suppressed = processor.rejections.admit()
        if suppressed is not None:
            event(log, "webhook_rejected", level=logging.WARNING, reason="signature",
                  signed=SIGNATURE_HEADER in request.headers, remote=request.remote, not_logged_since_last=suppressed)
        raise ApiError(401, "invalid_signature", f"missing, forged or stale {SIGNATURE_HEADER} header",
                       headers={"WWW-Authenticate": "Retell-Signature"})
    try:
        body = parse_json(raw, forbid_dollar_keys=False)
        name = body.get("event") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name:
            raise bad_request("the webhook body has no 'event'", "event")
        if name not in FINAL_EVENTS:
            _count("acknowledged")
            return web.Response(status=204)
        call = _call_of(body)
    except ApiError:
        _count("malformed")
        raise
    if call.call_status not in ENDED_STATUSES:
        _count("not_ended")
        event(log, "webhook_call_not_ended", call_id=call.call_id, webhook=name, call_status=call.call_status)
        return web.Response(status=204)
    status, result = await processor.finalize(call, name)
    _count(result if status == 200 and result in ANSWERED_WITHOUT_FINALIZE else
           {200: "finalized", 202: "accepted", 503: "overloaded"}[status])
    event(log, "webhook_applied", call_id=call.call_id, webhook=name, result=result, status=status)
    if status == 503:
        raise ApiError(503, "overloaded", "too many webhooks are being applied; retry later",
                       headers={"Retry-After": "5"})
    return json_response({"event": name, "call_id": call.call_id, "result": result}, status=status)
