"""The one clock every process reads.

``now = START + (real now - ANCHOR) x SPEED``. With nothing set it is the real UTC time.
``OUTDIAL_CLOCK_START`` (ISO-8601 instant), ``OUTDIAL_CLOCK_SPEED`` (positive factor) and
``OUTDIAL_CLOCK_ANCHOR`` (the real Unix time at which the clock read START, set once by
whoever starts the processes) make every process agree on a simulated time, so a test can
start on a Saturday and run an hour per second. Delays handed to the broker or to a sleep
are simulated durations converted with :meth:`Clock.real_seconds`.

"Real now" is one server's time for every process that runs the pipeline: :class:`ServerTime`
reads Redis's ``TIME`` and carries it between readings on this process's monotonic clock, so leases, due
times and the calling-window check agree across machines whatever their own clocks say or do. A process that cannot
tell the server's time closely enough (:meth:`ServerTime.trusted`) does not dial.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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

    def simulated_wait(self, real_seconds: float) -> timedelta:
        """A wait of ``real_seconds`` real seconds, as a span of this clock."""
        return timedelta(seconds=self.simulated_seconds(real_seconds))

    def simulated_ms(self, real_seconds: float) -> int:
        """Whole milliseconds of this clock that ``real_seconds`` of real time take."""
        return int(self.simulated_seconds(real_seconds) * 1000)

    def real_ms(self, simulated_seconds: float) -> int:
        """Real whole milliseconds (never negative) that ``simulated_seconds`` take on this clock."""
        return max(0, int(self.real_seconds(simulated_seconds) * 1000))

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
    """Real time (Unix seconds) as one server tells it: Redis's ``TIME``, carried between readings by this
    process's monotonic clock.

    Every ``resync_s`` real seconds the next reading measures the server's time again (the reading with the
    shortest round trip of :data:`SYNC_SAMPLES`, timed on the monotonic clock); its uncertainty is half that
    round trip. Between two measurements the time is the kept reading's server time plus the monotonic time
    elapsed since it, never this machine's wall clock, which can be stepped (by NTP, by hand) at any moment:
    a process whose clock is minutes wrong, or is set back or forward while it runs, still reads the same time
    as every other process.

    The wall clock still serves as a witness: :attr:`offset_s` is the server's time minus the wall clock's at
    the measurement, and :meth:`trusted` compares the wall clock plus that offset with the monotonic reckoning.
    A disagreement beyond the allowed uncertainty means one of them jumped (a step of the wall clock, or a
    suspended machine whose monotonic clock stood still): the time is not trusted until the next measurement,
    which is made at the next reading (so a legitimate step is accepted as soon as the server confirms it). If
    the server does not answer, the last reading is kept and :meth:`trusted` turns false once it is older than
    its bound.

    :param redis: a ``redis.Redis`` client (the one the process already uses).
    :param resync_s: real seconds between measurements.
    :param local: this machine's wall clock (Unix seconds).
    :param monotonic: this machine's monotonic clock (seconds, any origin).
    """

    def __init__(self, redis: Any, *, resync_s: float = DEFAULT_RESYNC_S,
                 local: Callable[[], float] | None = None, monotonic: Callable[[], float] | None = None) -> None:
        self.redis = redis
        self.resync_s = resync_s
        self.local = local or time.time
        self.monotonic = monotonic or time.monotonic
        #: Server time minus wall-clock time at the kept reading, seconds (positive: this machine's clock is behind).
        self.offset_s = 0.0
        #: Half the round trip of the kept reading, seconds; ``inf`` until the first measurement.
        self.uncertainty_s = math.inf
        #: The kept reading: (server time, the monotonic instant it stands for, the offset), replaced whole.
        self._anchor: tuple[float, float, float] | None = None
        self._next_try = -math.inf    # monotonic time before which no new measurement is tried
        self._retry_at = -math.inf    # monotonic time before which none is tried after the server failed
        self._lock = threading.Lock()

    def __call__(self) -> float:
        if self.monotonic() >= self._next_try:
            self.try_sync()
        return self._reckoned()

    def _reckoned(self) -> float:
        """The server's time now: the kept reading plus the monotonic time since (the wall clock before any)."""
        anchor = self._anchor
        if anchor is None:
            return self.local() + self.offset_s
        return anchor[0] + (self.monotonic() - anchor[1])

    @property
    def age_s(self) -> float:
        """Real seconds since the last successful measurement (``inf``: never)."""
        anchor = self._anchor
        return math.inf if anchor is None else self.monotonic() - anchor[1]

    @property
    def disagreement_s(self) -> float:
        """How far the wall clock (plus the measured offset) is from the monotonic reckoning, seconds."""
        anchor = self._anchor
        if anchor is None:
            return 0.0
        server_s, at, offset = anchor
        return abs(self.local() + offset - (server_s + (self.monotonic() - at)))

    def try_sync(self) -> bool:
        """Measure the server's time unless another thread is at it; False when the server did not answer."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            self.sync()
            return True
        except Exception as exc:  # noqa: BLE001 - any failure of the server: keep the last reading
            self._next_try = self._retry_at = self.monotonic() + RESYNC_RETRY_S
            logging.getLogger(__name__).warning("server time unavailable: %s", type(exc).__name__)
            return False
        finally:
            self._lock.release()

    def sync(self) -> None:
        """Measure the server's time now (raises what the Redis client raises)."""
        best: tuple[float, float, float, float] | None = None   # half trip, server time, monotonic, offset
        for _ in range(SYNC_SAMPLES):
            wall_before, before = self.local(), self.monotonic()
            seconds, micros = self.redis.time()
            after, wall_after = self.monotonic(), self.local()
            half_trip = max(0.0, after - before) / 2
            server_s = seconds + micros / 1e6
            offset = server_s - (wall_before + wall_after) / 2
            if best is None or half_trip < best[0]:
                best = (half_trip, server_s, before + half_trip, offset)
        assert best is not None
        half_trip, server_s, at, offset = best
        self._anchor = (server_s, at, offset)
        self.offset_s, self.uncertainty_s = offset, half_trip
        self._next_try = self.monotonic() + self.resync_s

    def trusted(self, *, max_uncertainty_s: float, max_age_s: float) -> bool:
        """Whether this process knows the server's time within ``max_uncertainty_s``, measured at most
        ``max_age_s`` real seconds ago, with its wall clock (plus the measured offset) agreeing with the
        monotonic reckoning within ``max_uncertainty_s`` (a reading is attempted first when one is due).

        A disagreement makes it false at once and the next reading measures again: a wall clock that was stepped
        is accepted as soon as the server confirms the new offset; one that is merely wrong never counted.
        """
        if self.monotonic() >= self._next_try:
            self.try_sync()
        if not (self.uncertainty_s <= max_uncertainty_s and self.age_s <= max_age_s):
            return False
        disagreement = self.disagreement_s
        if disagreement > max_uncertainty_s:
            self._next_try = min(self._next_try, self._retry_at)   # measure again at the next reading
            logging.getLogger(__name__).warning(
                "the wall clock moved %.3f s away from the server time since it was measured: measuring again",
                disagreement)
            return False
        return True


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


@contextmanager
def use_clock(clock: Clock | None) -> Iterator[Clock | None]:
    """Make ``clock`` the process's clock inside the block (None: built from the configuration on first use),
    then put back the one before it. Blocks nest: each restores what it found."""
    global _clock
    previous = _clock
    _clock = clock
    try:
        yield clock
    finally:
        _clock = previous


def now() -> datetime:
    """Shorthand for ``get_clock().now()``."""
    return get_clock().now()
