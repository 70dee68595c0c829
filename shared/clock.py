"""The one clock every process reads.

``now = START + (real now - ANCHOR) x SPEED``. With nothing set it is the real UTC time.
``OUTDIAL_CLOCK_START`` (ISO-8601 instant), ``OUTDIAL_CLOCK_SPEED`` (positive factor) and
``OUTDIAL_CLOCK_ANCHOR`` (the real Unix time at which the clock read START, set once by
whoever starts the processes) make every process agree on a simulated time, so a test can
start on a Saturday and run an hour per second. Delays handed to the broker or to a sleep
are simulated durations converted with :meth:`Clock.real_seconds`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

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

    def now(self) -> datetime:
        """The simulated time, timezone-aware UTC."""
        real = time.time()
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
        return max(0, int(self.real_seconds(seconds) * 1000))

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
