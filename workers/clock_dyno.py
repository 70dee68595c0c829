"""``outdial clock``: the clock dyno. Every few seconds it sends ``maintain``, ``schedule_due`` and ``sweep_results``.

It holds no state; several clocks at once are harmless (claims are atomic, and the scheduler
serialises each account's dispatch with a short Redis lock).
"""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Sequence

from shared.config import get_config
from shared.logs import configure_from, event, get_logger

log = get_logger(__name__)

#: Real seconds between two ticks.
DEFAULT_INTERVAL_S = 2.0


def run(*, interval_s: float = DEFAULT_INTERVAL_S, stop: threading.Event | None = None,
        ticks: int | None = None) -> int:
    """Send ``maintain``, ``schedule_due`` and ``sweep_results`` every ``interval_s`` until ``stop`` is set (or
    ``ticks`` sent)."""
    from workers.actors import maintain, schedule_due, sweep_results

    stop = stop or threading.Event()
    sent = 0
    while not stop.is_set() and (ticks is None or sent < ticks):
        try:
            maintain.send()
            schedule_due.send(None)
            sweep_results.send()
            sent += 1
        except Exception as exc:  # noqa: BLE001 - Redis down: keep ticking, the next tick retries
            event(log, "clock_tick_failed", error=str(exc))
        stop.wait(interval_s)
    return sent


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="outdial clock", description=__doc__)
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL_S,
                        help=f"real seconds between ticks (default {DEFAULT_INTERVAL_S})")
    args = parser.parse_args(argv)
    if args.interval <= 0:
        parser.error("--interval must be > 0")
    configure_from(get_config())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    event(log, "clock_started", interval_s=args.interval)
    run(interval_s=args.interval, stop=stop)
    return 0
