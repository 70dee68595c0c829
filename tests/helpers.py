"""Helpers shared by tests (fixtures live in conftest.py)."""

from __future__ import annotations

import os
from datetime import UTC, datetime

from shared import clock as clock_mod
from shared.clock import Clock
from shared.config import Config


def frozen_clock(at: datetime) -> Clock:
    """A clock that barely moves (one simulated second per 10^6 real ones) starting at ``at``."""
    return clock_mod.started_at(at.astimezone(UTC), speed=1e-6)


def service_env(config: Config, clock: Clock | None = None) -> dict[str, str]:
    """Environment for a child process that must see this test's services and clock."""
    env = dict(os.environ)
    env.update({
        "MONGODB_URI": config.mongodb_uri or "",
        "MONGODB_DB": config.mongodb_db,
        "REDIS_URL": config.redis_url or "",
        "RETELL_API_KEY": config.retell_api_key,
    })
    if config.retell_base_url:
        env["RETELL_BASE_URL"] = config.retell_base_url
    if clock is not None:
        env.update(clock.env())
    return env
