"""Values recomputed at most every so often, by one request at a time (the web dyno's event loop).

A :class:`RecentValues` keeps, per key, the last value its computation returned and the instant that
computation started. A read gets:

- the kept value, while it is younger than half of ``max_age_s``;
- else, when no computation of the key is running, a new one, which that read awaits;
- else (one is running) the kept value if it is younger than ``max_age_s``, or the running
  computation's result (every such read awaits the same one: a burst of reads runs one computation).

So a read gets a value whose computation started less than ``max_age_s`` before it (or the one it
awaited), a key is computed at most once per ``max_age_s / 2`` while it is read, and no read waits
behind more than one computation. Once the data has stopped changing for ``max_age_s`` (and a
computation running at that moment has ended), every read returns a value computed after the last
change. With ``max_age_s`` 0 nothing is kept: a read shares the computation of its key running when it
comes, else starts one (a burst of reads of one key costs a few computations, not one each).
:meth:`forget` drops a key's value and makes a computation already running not count (for a change this
process made itself).

Single-threaded: use it from one event loop only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from cachetools import LRUCache

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: Most keys kept (the least recently used go first beyond it).
DEFAULT_MAXSIZE = 10_000


class RecentValues(Generic[K, V]):
    """The last value computed per key, recomputed by one read at a time once it is half ``max_age_s`` old.

    :param max_age_s: the oldest value a read may return, seconds; 0 keeps nothing: a read shares the
        computation running when it comes, else starts one.
    :param maxsize: most keys kept.
    :param timer: seconds on a monotonic clock (default :func:`time.monotonic`).
    """

    def __init__(self, *, max_age_s: float, maxsize: int = DEFAULT_MAXSIZE,
                 timer: Callable[[], float] = time.monotonic) -> None:
        if max_age_s < 0:
            raise ValueError("max_age_s must be >= 0")
        self.max_age_s = float(max_age_s)
        self.timer = timer
        self._values: LRUCache[K, tuple[float, V]] = LRUCache(maxsize)
        self._flights: dict[K, asyncio.Task[V]] = {}
        #: Computations started since the cache was built.
        self.computations = 0

    async def get(self, key: K, compute: Callable[[], Awaitable[V]]) -> V:
        """The value of ``key``: kept, or computed by ``compute()`` (see the module's rules)."""
        now = self.timer()
        if self.max_age_s == 0:
            running = self._flights.get(key) or self._start(key, compute, now)
            return await asyncio.shield(running)
        kept = self._values.get(key)
        age = now - kept[0] if kept is not None else None
        if age is not None and age < self.max_age_s / 2:
            return kept[1]  # type: ignore[index]
        flight = self._flights.get(key)
        if flight is None:
            flight = self._start(key, compute, now)
        elif age is not None and age < self.max_age_s:
            return kept[1]  # type: ignore[index]
        # shield: a read that is cancelled (its client went away) leaves the computation to the others.
        return await asyncio.shield(flight)

    def _start(self, key: K, compute: Callable[[], Awaitable[V]], started: float) -> asyncio.Task[V]:
        self.computations += 1
        flight = asyncio.ensure_future(compute())

        def landed(task: asyncio.Task[V]) -> None:
            failed = task.cancelled() or task.exception() is not None  # (retrieves the exception)
            if self._flights.get(key) is not task:
                return  # forgotten while it ran: its value may predate the change
            del self._flights[key]
            if not failed and self.max_age_s > 0:
                self._values[key] = (started, task.result())

        self._flights[key] = flight
        flight.add_done_callback(landed)
        return flight

    def forget(self, key: K) -> None:
        """Drop ``key``'s value; a computation of it already running is not kept (the next read starts another)."""
        self._values.pop(key, None)
        self._flights.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __len__(self) -> int:
        return len(self._values)
