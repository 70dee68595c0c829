"""What every handler of the web dyno shares: its settings (:class:`WebSettings`) and its context
(:class:`WebContext`: the runtime, the thread pools, the webhook processor, the metrics and dashboard data),
reached from a request with :func:`context`."""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from aiohttp import web
from cachetools import TTLCache

from shared.config import DEFAULT_BATCH_COUNTS_MAX_AGE_S, DEFAULT_WEBHOOK_READ_TIMEOUT_S, Config
from workers.web.http import (
    DEFAULT_MAX_CONTACTS_JSON_BYTES,
    DEFAULT_MAX_CSV_BYTES,
    DEFAULT_MAX_JSON_BYTES,
    DEFAULT_MAX_WEBHOOK_BYTES,
    DEFAULT_MAX_WEBHOOK_READS,
    read_token_for,
)
from workers.web.recent import RecentValues

if TYPE_CHECKING:
    from shared.pipeline import Pipeline
    from workers.runtime import Runtime

#: Threads running admin and dashboard store calls.
DEFAULT_DB_THREADS = 32

#: Contact imports running at once (each holds one thread while it reads its upload).
DEFAULT_IMPORT_THREADS = 4
#: Oldest, in real seconds, a batch read from the batch cache may be when ``GET /batches/{id}`` shows it: each
#: read from the thread pool is shared by the requests of the next moment (a hop to the thread pool per request
#: cost about 15% more CPU per read, measured, and tail latency). A change made by another process shows within
#: this (after the cache's invalidation); one made through this process at once.
BATCH_MAX_AGE_S = 0.2
#: Oldest a batch's results page may be when shown, real seconds (one read for every viewer meanwhile).
BATCH_RESULTS_MAX_AGE_S = 5.0
#: Real seconds a batch this process changed is read from MongoDB rather than from the batch cache (by then the
#: cache's invalidation message has long arrived).
CHANGED_BATCH_S = 10.0
#: Longest ``/readyz`` waits for MongoDB or Redis, seconds.
DEFAULT_READY_TIMEOUT_S = 3.0


@dataclass(frozen=True, kw_only=True)
class WebSettings:
    """Settings of one web application; :meth:`from_config` reads the process configuration.

    :param admin_token: ``ADMIN_TOKEN``; None refuses every admin, dashboard and metrics request.
    :param webhook_api_key: the key Retell signs webhooks with (``RETELL_API_KEY``).
    :param max_json_bytes: largest ordinary JSON body, bytes.
    :param max_contacts_json_bytes: largest JSON contacts upload, bytes.
    :param max_csv_bytes: largest CSV contacts upload, bytes (streamed).
    :param max_webhook_bytes: largest webhook body, bytes (checked before the signature).
    :param webhook_max_reads: webhook bodies read and verified at once; more are refused (503) unread.
    :param webhook_read_timeout_s: longest a webhook body may take to arrive, seconds (``WEBHOOK_READ_TIMEOUT_S``);
        then 408, the connection is closed and the read slot freed.
    :param webhook_wait_s: longest a webhook answer waits for its finalize, seconds (then 202).
    :param webhook_threads: threads applying webhooks.
    :param webhook_max_pending: finalizations queued or running above which webhooks get 503.
    :param db_threads: threads for admin and dashboard store calls.
    :param import_threads: contact imports running at once.
    :param dashboard_cache_s: seconds the dashboard's data is shared between viewers.
    :param batch_counts_max_age_s: oldest a batch's counts (and the rest ``GET /batches/{id}`` computes from its
        jobs) may be, real seconds (``BATCH_COUNTS_MAX_AGE_S``); 0 counts on every read.
    :param metrics_cache_s: seconds the scrape-time gauges are reused.
    :param metrics_timeout_s: longest a scrape waits for MongoDB/Redis before answering without their gauges.
    :param ready_timeout_s: longest ``/readyz`` waits per service, seconds.
    :param start_cache_listener: run the batch-cache invalidation listener (the process's; default True).
    :param publish_metrics: publish this process's metrics to Redis for the other web dynos (default True).
    """

    admin_token: str | None
    webhook_api_key: str
    max_json_bytes: int = DEFAULT_MAX_JSON_BYTES
    max_contacts_json_bytes: int = DEFAULT_MAX_CONTACTS_JSON_BYTES
    max_csv_bytes: int = DEFAULT_MAX_CSV_BYTES
    max_webhook_bytes: int = DEFAULT_MAX_WEBHOOK_BYTES
    webhook_max_reads: int = DEFAULT_MAX_WEBHOOK_READS
    webhook_read_timeout_s: float = DEFAULT_WEBHOOK_READ_TIMEOUT_S
    webhook_wait_s: float = 5.0
    webhook_threads: int = 16
    webhook_max_pending: int = 2000
    db_threads: int = DEFAULT_DB_THREADS
    import_threads: int = DEFAULT_IMPORT_THREADS
    dashboard_cache_s: float = 1.0
    batch_counts_max_age_s: float = DEFAULT_BATCH_COUNTS_MAX_AGE_S
    metrics_cache_s: float = 5.0
    metrics_timeout_s: float = 10.0
    ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S
    start_cache_listener: bool = True
    publish_metrics: bool = True

    @classmethod
    def from_config(cls, config: Config, **overrides: Any) -> WebSettings:
        base = cls(admin_token=config.admin_token or None, webhook_api_key=config.retell_api_key,
                   batch_counts_max_age_s=config.batch_counts_max_age_s,
                   webhook_read_timeout_s=config.webhook_read_timeout_s)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown web settings: {', '.join(unknown)}")
        return replace(base, **overrides)


class WebContext:
    """What the handlers share: the runtime, the settings, the thread pools, the webhook processor.

    :param runtime: the process's :class:`workers.runtime.Runtime`.
    :param settings: the application's :class:`WebSettings`.
    :param pipeline: returns the process's pipeline (built on the first webhook).
    """

    def __init__(self, *, runtime: Runtime, settings: WebSettings, pipeline: Callable[[], Pipeline]) -> None:
        from workers.web.dashboard import DashboardData
        from workers.web.metrics import MetricsEndpoint
        from workers.web.webhooks import WebhookProcessor

        self.runtime = runtime
        self.settings = settings
        self.admin_token = settings.admin_token
        self.read_token = read_token_for(settings.admin_token)
        self.db_pool = ThreadPoolExecutor(max_workers=settings.db_threads, thread_name_prefix="outdial-web")
        self.import_pool = ThreadPoolExecutor(max_workers=settings.import_threads,
                                              thread_name_prefix="outdial-import")
        self.import_gate = asyncio.Semaphore(settings.import_threads)
        self.webhooks = WebhookProcessor(runtime=runtime, pipeline=pipeline, api_key=settings.webhook_api_key,
                                         wait_s=settings.webhook_wait_s, threads=settings.webhook_threads,
                                         max_pending=settings.webhook_max_pending)
        self.metrics = MetricsEndpoint(runtime, cache_s=settings.metrics_cache_s, timeout_s=settings.metrics_timeout_s)
        self.dashboard = DashboardData(runtime, cache_s=settings.dashboard_cache_s)
        #: What ``GET /batches/{id}`` shows from a batch's jobs (:func:`workers.web.views.batch_jobs`), by batch id.
        self.batch_jobs: RecentValues[str, Any] = RecentValues(max_age_s=settings.batch_counts_max_age_s)
        #: What a batch's results page shows (:func:`workers.web.results_page.results_data`), by batch id.
        self.batch_results: RecentValues[str, Any] = RecentValues(max_age_s=BATCH_RESULTS_MAX_AGE_S)
        #: Batches (and the time) read in the thread pool, kept :data:`BATCH_MAX_AGE_S`, by batch id.
        self.batch_docs: RecentValues[str, Any] = RecentValues(max_age_s=BATCH_MAX_AGE_S)
        #: Batches this process changed lately: id -> shared-clock ms after the write (sys.maxsize: unknown yet).
        #: Event loop only.
        self._changed: TTLCache[str, int] = TTLCache(maxsize=10_000, ttl=CHANGED_BATCH_S)

    async def change_batch(self, batch_id: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run the blocking write ``fn(*args)`` of batch ``batch_id`` (and of its jobs) in the thread pool; then
        (even when it failed) the batch's next reads show it at once: they read it from MongoDB until the batch
        cache holds a copy read after the write (its invalidation arrives over Redis a moment later), and
        its jobs are counted again."""
        clock = self.runtime.clock
        written: list[int] = []

        def write() -> Any:
            try:
                return fn(*args)
            finally:
                written.append(clock.now_ms())   # here, in the thread: the clock may ask Redis

        try:
            return await self.run(write)
        finally:
            # Not written yet (the request was cancelled while the write runs): skip the cache for a while.
            self._changed[batch_id] = written[0] if written else sys.maxsize
            self.batch_docs.forget(batch_id)
            self.batch_jobs.forget(batch_id)

    def jobs_changed(self, batch_id: str) -> None:
        """This process added or changed jobs of ``batch_id``: the next read counts them again."""
        self.batch_jobs.forget(batch_id)

    def changed_at(self, batch_id: str) -> int | None:
        """When this process last changed ``batch_id`` (shared-clock ms), if it did lately. Event loop only."""
        return self._changed.get(batch_id)

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run the blocking ``fn(*args, **kwargs)`` in the admin thread pool and await its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.db_pool, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        """Let running work finish, then stop the threads."""
        self.webhooks.close()
        self.import_pool.shutdown(wait=True)
        self.db_pool.shutdown(wait=True)


CONTEXT = web.AppKey("outdial_web", WebContext)


def context(request: web.Request) -> WebContext:
    return request.app[CONTEXT]
