"""The dramatiq broker every actor module uses: Redis, with outdial's middleware."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from shared.config import get_config
from shared.embedded import LOCAL_REDIS_URL


def build_broker(url: str | None = None) -> RedisBroker:
    """A Redis broker on ``url`` (default ``REDIS_URL``, else the local Redis)."""
    return RedisBroker(url=url or get_config().redis_url or LOCAL_REDIS_URL)


broker = build_broker()
dramatiq.set_broker(broker)
