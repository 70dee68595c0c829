"""Dramatiq middleware of outdial, and the same listener lifecycle for the web process.

:class:`CacheInvalidationMiddleware` starts this process's batch-cache invalidation listener
(:func:`shared.cache.invalidation.start_process_listener`) when a worker process boots and stops it
after the worker has shut down, so the actors of every worker process read fresh batches.

Wiring (``workers/broker.py``)::

    from workers.middleware import CacheInvalidationMiddleware
    broker.add_middleware(CacheInvalidationMiddleware())

The web process calls :func:`start_cache_listener` / :func:`stop_cache_listener`, or appends
:func:`cache_listener_ctx` to its aiohttp application's ``cleanup_ctx``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from dramatiq import Broker, Middleware, Worker

from shared.cache.invalidation import (
    DEFAULT_STOP_TIMEOUT_S,
    InvalidationListener,
    process_listener,
    start_process_listener,
    stop_process_listener,
)
from shared.config import LOCAL_REDIS_URL, get_config
from shared.logs import event, get_logger

log = get_logger(__name__)


def start_cache_listener(*, redis_url: str | None = None, **options: Any) -> InvalidationListener:
    """Start this process's invalidation listener (idempotent); returns it without waiting for Redis.

    :param redis_url: default ``REDIS_URL``, else the local Redis.
    :param options: passed to :class:`~shared.cache.invalidation.InvalidationListener`.
    """
    if redis_url is None:
        redis_url = get_config().redis_url or LOCAL_REDIS_URL
    return start_process_listener(redis_url=redis_url, **options)


def stop_cache_listener(timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> bool:
    """Stop this process's listener if it runs; False when its thread did not end within ``timeout_s`` s."""
    return stop_process_listener(timeout_s)


async def cache_listener_ctx(app: Any) -> AsyncIterator[None]:
    """aiohttp ``cleanup_ctx`` entry: the listener runs while the application runs.

    ``app.cleanup_ctx.append(cache_listener_ctx)``. Stopping joins a thread for at most a poll
    interval (0.2 s), so it runs in the default executor rather than on the event loop.
    """
    start_cache_listener()
    try:
        yield
    finally:
        await asyncio.get_running_loop().run_in_executor(None, stop_cache_listener)


class CacheInvalidationMiddleware(Middleware):
    """Runs the batch-cache invalidation listener in every worker process.

    Started in ``after_process_boot`` (the ``dramatiq`` command, once per worker process) and
    in ``after_worker_boot`` (a :class:`dramatiq.Worker` built in code, as tests and the demo
    do); starting twice is a no-op. Stopped in ``after_worker_shutdown``, once the worker
    threads have finished their messages, so no actor runs without it.

    :param redis_url: the Redis the processes publish on; default ``REDIS_URL``, else the local Redis.
    """

    def __init__(self, *, redis_url: str | None = None) -> None:
        self.redis_url = redis_url

    def _start(self) -> None:
        running = process_listener()
        listener = start_cache_listener(redis_url=self.redis_url)
        if listener is not running:
            event(log, "cache_listener_started", redis=listener.where)

    def after_process_boot(self, broker: Broker) -> None:
        self._start()

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        self._start()

    def after_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        if not stop_cache_listener():
            event(log, "cache_listener_stop_timeout", level=logging.WARNING)
