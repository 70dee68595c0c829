"""Helpers shared by tests (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from shared import clock as clock_mod
from shared.clock import Clock
from shared.config import Config

#: Real seconds one step of a running stack (a poll, a delayed message, a write, a process start) may be
#: late on a loaded 2-core machine. Tests on a sped-up clock check the system's recorded decisions
#: (``next_try_at``, an attempt's ``due_at``, ``stop_requested_at``) exactly, and allow this budget, in
#: simulated time (:func:`jitter_s`), only where they compare a decision with when it was carried out.
REAL_JITTER_BUDGET_S = 2.0


def jitter_s(clock: Clock) -> float:
    """:data:`REAL_JITTER_BUDGET_S` on ``clock``, in simulated seconds (120 s at 60x)."""
    return REAL_JITTER_BUDGET_S * clock.speed


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


def wait_until(predicate: Callable[[], Any], *, timeout_s: float = 30.0, interval_s: float = 0.05,
               message: str = "condition") -> Any:
    """Poll ``predicate`` until it returns a truthy value (returned); raise ``TimeoutError`` after ``timeout_s``
    real seconds."""
    gate = threading.Event()
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{message} not reached within {timeout_s} s")
        gate.wait(interval_s)
