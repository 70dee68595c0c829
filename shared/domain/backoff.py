"""Capped exponential backoff: the one formula behind every growing wait (provider retries, the cache listener's
reconnections, stops, safety-net polls, sends again, free retries)."""

from __future__ import annotations

from collections.abc import Callable


def capped_exponential(attempt: int, *, base: float, cap: float, jitter: Callable[[], float] | None = None) -> float:
    """``base`` doubled ``attempt`` times (a negative ``attempt`` counts as 0), at most ``cap``; then, when
    ``jitter`` is given, multiplied by the factor it draws (read once, after the cap)."""
    wait: float = min(cap, base * 2.0 ** max(0, attempt))
    if jitter is not None:
        wait *= jitter()
    return wait
