"""The dramatiq broker every actor module uses: Redis, with outdial's middleware.

Besides dramatiq's defaults (age and time limits, retries, callbacks, pipelines), each worker
process boots :class:`ProcessBoot` (logging in the project's format, its metrics published to
Redis for the web dyno's /metrics) and :class:`workers.middleware.CacheInvalidationMiddleware`
(the batch-cache invalidation listener).
"""

from __future__ import annotations

import contextlib
import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware

from shared.config import LOCAL_REDIS_URL, Config, get_config
from shared.errors import ConfigError
from shared.logs import configure_from, event, get_logger
from shared.metrics import SnapshotPublisher
from workers.middleware import CacheInvalidationMiddleware

log = get_logger(__name__)


class ProcessBoot(Middleware):
    """Per worker process: logging and the metrics snapshot publisher."""

    def __init__(self) -> None:
        self._publisher: SnapshotPublisher | None = None

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        from workers.runtime import get_runtime

        configure_from(get_config(), replace=True)
        runtime = get_runtime()
        self._publisher = SnapshotPublisher(runtime.redis)
        self._publisher.start()
        event(log, "worker_process_boot")

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if self._publisher is not None:
            self._publisher.stop()


#: Exit code of a worker process whose settings are refused (dramatiq's own for a module it cannot import).
REFUSED_SETTINGS_EXIT = 2


def checked_config() -> Config:
    """The process's configuration, checked for a deployment (``Config.check_deployment``). Refused settings end the
    process with their reason on one line (``outdial worker: invalid configuration: RETELL_API_KEY: ...``) written
    straight to the process's stderr: dramatiq relays a worker process's output to its main process through a pipe,
    and the main process may stop reading it before the last lines of a process that exits at once arrive."""
    try:
        config = get_config()
        config.check_deployment()
    except ConfigError as exc:
        with contextlib.suppress(OSError):
            os.write(2, f"outdial worker: {exc}\n".encode())
        raise SystemExit(REFUSED_SETTINGS_EXIT) from None
    return config


def build_broker(url: str | None = None) -> RedisBroker:
    """A Redis broker on ``url`` (default ``REDIS_URL``, else the local Redis) with outdial's middleware.

    Unsafe settings stop the worker here, before it takes a message (:func:`checked_config`).
    """
    config = checked_config()
    broker = RedisBroker(url=url or config.redis_url or LOCAL_REDIS_URL)
    broker.add_middleware(ProcessBoot())
    broker.add_middleware(CacheInvalidationMiddleware())
    return broker


broker = build_broker()
dramatiq.set_broker(broker)
