"""The one clock every process reads.

``now = START + (real now - ANCHOR) x SPEED``. With nothing set it is the real UTC time.
``OUTDIAL_CLOCK_START`` (ISO-8601 instant), ``OUTDIAL_CLOCK_SPEED`` (positive factor) and
``OUTDIAL_CLOCK_ANCHOR`` (the real Unix time at which the clock read START, set once by
whoever starts the processes) make every process agree on a simulated time, so a test can
start on a Saturday and run an hour per second. Delays handed to the broker or to a sleep
are simulated durations converted with :meth:`Clock.real_seconds`.

"Real now" is one server's time for every process that runs the pipeline: :class:`ServerTime`
reads Redis's ``TIME`` and keeps this process's offset to it, so leases, due times and the
calling-window check agree across machines whatever their own clocks say. A process that cannot
tell the server's time closely enough (:meth:`ServerTime.trusted`) does not dial.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.config import Config, get_config


@dataclass(frozen=True, kw_only=True)
class Clock:
    """A linear map from real time to simulated time.

    :param start: simulated instant at ``anchor`` (UTC); None means the real time.
    :param speed: simulated seconds per real second; default 1.
    :param anchor: real Unix time (s) at which the clock read ``start``.
    """

    start: datetime | None = None
    speed: float = 1.0
    anchor: float = 0.0
    #: Where real time comes from (Unix seconds): this machine's clock, or a :class:`ServerTime`.
    source: Callable[[], float] = field(default=time.time, compare=False, repr=False)

    @classmethod
    def from_config(cls, config: Config, *, real_now: float | None = None) -> Clock:
        """The clock the environment describes. A missing anchor is the current real time."""
        anchor = config.clock_anchor if config.clock_anchor is not None else (real_now or time.time())
        if config.clock_start is None and config.clock_speed == 1.0:
            return cls()
        start = config.clock_start or datetime.fromtimestamp(anchor, UTC)
        return cls(start=start, speed=config.clock_speed, anchor=anchor)

    @property
    def is_real(self) -> bool:
        return self.start is None

    def with_source(self, source: Callable[[], float]) -> Clock:
        """This clock reading real time from ``source`` (e.g. a :class:`ServerTime`)."""
        from dataclasses import replace

        return replace(self, source=source)

    def now(self) -> datetime:
        """The simulated time, timezone-aware UTC."""
        real = self.source()
        if self.start is None:
            return datetime.fromtimestamp(real, UTC)
        return self.start + timedelta(seconds=(real - self.anchor) * self.speed)

    def now_ms(self) -> int:
        """The simulated time as integer milliseconds since the epoch."""
        return to_ms(self.now())

    def real_seconds(self, simulated_seconds: float) -> float:
        """Real seconds that ``simulated_seconds`` take on this clock."""
        return simulated_seconds / self.speed

    def real_delay_ms(self, until: datetime) -> int:
        """Real milliseconds from now until the simulated instant ``until`` (0 if past)."""
        seconds = (until - self.now()).total_seconds()
        return max(0, math.ceil(self.real_seconds(seconds) * 1000))  # rounded up: never due before ``until``

    def simulated_seconds(self, real_seconds: float) -> float:
        """Simulated seconds that pass in ``real_seconds`` of real time."""
        return real_seconds * self.speed

    def env(self) -> dict[str, str]:
        """Environment variables that give a child process this same clock."""
        if self.start is None:
            return {}
        return {
            "OUTDIAL_CLOCK_START": self.start.isoformat(),
            "OUTDIAL_CLOCK_SPEED": repr(self.speed),
            "OUTDIAL_CLOCK_ANCHOR": repr(self.anchor),
        }


#: Real seconds between two readings of the server's time (the offset drifts slowly).
DEFAULT_RESYNC_S = 10.0
#: Real seconds to wait before trying again after the server did not answer.
RESYNC_RETRY_S = 1.0
#: Readings taken per synchronisation; the one with the shortest round trip is kept.
SYNC_SAMPLES = 3


class ServerTime:
    """Real time (Unix seconds) as one server tells it: Redis's ``TIME``, through this process's offset.

    Every ``resync_s`` real seconds the next reading measures the offset again (the reading with the
    shortest round trip of :data:`SYNC_SAMPLES`); its uncertainty is half that round trip. Between
    two measurements time is this machine's clock plus the offset, so a process whose own clock is
    minutes wrong still reads the same time as every other process. If the server does not answer, the
    last offset is kept and :meth:`trusted` turns false once it is older than its bound.

    :param redis: a ``redis.Redis`` client (the one the process already uses).
    :param resync_s: real seconds between measurements.
    :param local: this machine's clock.
    """

    def __init__(self, redis: Any, *, resync_s: float = DEFAULT_RESYNC_S,
                 local: Callable[[], float] | None = None) -> None:
        self.redis = redis
        self.resync_s = resync_s
        self.local = local or time.time
        #: Server time minus local time, seconds (positive: this machine's clock is behind).
        self.offset_s = 0.0
        #: Half the round trip of the kept reading, seconds; ``inf`` until the first measurement.
        self.uncertainty_s = math.inf
        self._synced_at = -math.inf   # monotonic time of the last measurement
        self._next_try = -math.inf    # monotonic time before which no new measurement is tried
        self._lock = threading.Lock()

    def __call__(self) -> float:
        if time.monotonic() >= self._next_try:
            self.try_sync()
        return self.local() + self.offset_s

    @property
    def age_s(self) -> float:
        """Real seconds since the last successful measurement (``inf``: never)."""
        return time.monotonic() - self._synced_at

    def try_sync(self) -> bool:
        """Measure the offset unless another thread is at it; False when the server did not answer."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            self.sync()
            return True
        except Exception as exc:  # noqa: BLE001 - any failure of the server: keep the last offset
            self._next_try = time.monotonic() + RESYNC_RETRY_S
            logging.getLogger(__name__).warning("server time unavailable: %s", type(exc).__name__)
            return False
        finally:
            self._lock.release()

    def sync(self) -> None:
        """Measure the offset now (raises what the Redis client raises)."""
        best: tuple[float, float] | None = None
        for _ in range(SYNC_SAMPLES):
            before = self.local()
            seconds, micros = self.redis.time()
            after = self.local()
            half_trip = max(0.0, after - before) / 2
            offset = seconds + micros / 1e6 - (before + half_trip)
            if best is None or half_trip < best[1]:
                best = (offset, half_trip)
        assert best is not None
        self.offset_s, self.uncertainty_s = best
        self._synced_at = time.monotonic()
        self._next_try = self._synced_at + self.resync_s

    def trusted(self, *, max_uncertainty_s: float, max_age_s: float) -> bool:
        """Whether this process knows the server's time within ``max_uncertainty_s``, measured at most
        ``max_age_s`` real seconds ago (a reading is attempted first when one is due)."""
        if time.monotonic() >= self._next_try:
            self.try_sync()
        return self.uncertainty_s <= max_uncertainty_s and self.age_s <= max_age_s


def started_at(start: datetime, *, speed: float = 1.0) -> Clock:
    """A clock that reads ``start`` now and runs ``speed`` times faster than real time."""
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    return Clock(start=start.astimezone(UTC), speed=speed, anchor=time.time())


def to_ms(instant: datetime) -> int:
    """Milliseconds since the Unix epoch of a timezone-aware instant (how MongoDB documents store instants)."""
    if instant.tzinfo is None:
        raise ValueError("instant must be timezone-aware")
    return round(instant.timestamp() * 1000)


def from_ms(ms: int | float) -> datetime:
    """The UTC instant ``ms`` milliseconds after the Unix epoch."""
    return datetime.fromtimestamp(ms / 1000, UTC)


_clock: Clock | None = None


def get_clock() -> Clock:
    """The process's clock, built from the configuration on first use."""
    global _clock
    if _clock is None:
        _clock = Clock.from_config(get_config())
    return _clock


def set_clock(clock: Clock | None) -> None:
    """Replace the process's clock (tests; commands that start a sped-up stack)."""
    global _clock
    _clock = clock


def now() -> datetime:
    """Shorthand for ``get_clock().now()``."""
    return get_clock().now()
