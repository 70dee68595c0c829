"""The per-process batch cache: every read of a batch by the pipeline goes through here.

A :class:`BatchCache` keeps recently read batches in a :class:`cachetools.TTLCache` whose time is
the shared clock (a sped-up test clock expires entries sooner in real time). It is bounded,
thread-safe and single-flight: when 16 threads ask for a batch that is not cached, one of them
reads MongoDB and the others wait for that read. A batch that does not exist is remembered for
a shorter time (a negative entry), so a job pointing at a deleted batch does not cost a query
per message. Each entry parses the batch's ``call_settings`` once, so a dial never re-parses.

The TTL is only a safety net: :mod:`shared.invalidation` evicts a batch from every process the
moment it changes. While that listener is not subscribed the cache is *suspended*: it stores
nothing and every read goes to MongoDB (invalidations could be missed meanwhile), with
concurrent reads of one batch still sharing one query.

Every cache registers itself (weakly) in :data:`PROCESS_CACHES`, the :class:`CacheGroup` the
process's listener keeps fresh, so the cache and the listener can be created in any order.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from time import perf_counter
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from cachetools import TTLCache

from shared.call_settings import CallSettings, InvalidCallSettings, default_call_settings
from shared.calling_window import validate_call_settings
from shared.clock import Clock, get_clock
from shared.config import DEFAULT_BATCH_CACHE_TTL, Config, get_config
from shared.errors import NotFound, StoreError
from shared.metrics import BATCH_LOAD, CACHE_EVICTIONS, CACHE_HITS, CACHE_MISSES

if TYPE_CHECKING:
    from shared.batches import BatchStore

#: Most batches one process keeps (least recently used go first beyond it).
DEFAULT_MAXSIZE = 10_000
#: How long a batch that does not exist is remembered, seconds on the shared clock.
DEFAULT_NEGATIVE_TTL_S = 30.0
#: Most unknown batch ids remembered at once.
DEFAULT_NEGATIVE_MAXSIZE = 10_000
#: Longest a thread waits for another thread's read of the same batch before reading itself, real seconds.
DEFAULT_LOAD_WAIT_S = 30.0

#: Eviction causes (label ``cause`` of ``outdial_batch_cache_evictions``).
CAUSE_MESSAGE = "message"      # an invalidation message named the batch
CAUSE_ALL = "all"              # an all-batches invalidation message
CAUSE_DISCONNECT = "disconnect"  # the listener lost (or had not yet) its subscription
CAUSE_MANUAL = "manual"        # a direct evict()/clear() call
CAUSE_EXPIRED = "expired"      # the TTL ran out
CAUSE_SIZE = "size"            # pushed out by newer entries when full
EVICTION_CAUSES = (CAUSE_MESSAGE, CAUSE_ALL, CAUSE_DISCONNECT, CAUSE_MANUAL, CAUSE_EXPIRED, CAUSE_SIZE)

_EVICTIONS = {cause: CACHE_EVICTIONS.labels(cause=cause) for cause in EVICTION_CAUSES}
_LOAD_FROM_CACHE = BATCH_LOAD.labels(source="cache")
_LOAD_FROM_MONGODB = BATCH_LOAD.labels(source="mongodb")

Loader = Callable[[str], Mapping[str, Any] | None]
SettingsParser = Callable[[Any], CallSettings]


@dataclass(frozen=True, slots=True)
class CachedBatch:
    """One batch as the cache holds it. Shared by every thread: do not mutate ``doc``.

    :param doc: the batch document as MongoDB returned it (a read-only view).
    :param settings: the parsed ``call_settings`` with every default applied, or None when the stored
        settings no longer validate (``settings_error`` says why).
    :param settings_error: why the stored settings are invalid, else None.
    :param loaded_at_ms: shared-clock instant of the MongoDB read, ms since the epoch.
    """

    doc: Mapping[str, Any]
    settings: CallSettings | None
    settings_error: str | None
    loaded_at_ms: int

    @property
    def batch_id(self) -> str:
        return str(self.doc["_id"])

    @property
    def status(self) -> str | None:
        return self.doc.get("status")

    @property
    def account_id(self) -> str | None:
        return self.doc.get("account_id")


@dataclass(frozen=True, kw_only=True)
class CacheStats:
    """Counters of one :class:`BatchCache` since it was built (the Prometheus metrics sum all caches)."""

    hits: int
    misses: int
    loads: int
    load_errors: int
    evictions: Mapping[str, int]
    size: int
    negative_size: int
    suspended: bool

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class Evictable(Protocol):
    """What the invalidation listener drives: a :class:`BatchCache` or a :class:`CacheGroup`."""

    def evict(self, batch_id: str, *, cause: str = CAUSE_MANUAL) -> int: ...

    def clear(self, *, cause: str = CAUSE_MANUAL) -> int: ...

    def suspend(self) -> None: ...

    def resume(self) -> None: ...


def clock_timer(clock: Clock) -> Callable[[], float]:
    """A TTL timer reading ``clock``: simulated seconds since the Unix epoch."""

    def timer() -> float:
        return clock.now().timestamp()

    return timer


class _Entries(TTLCache):  # type: ignore[type-arg]
    """A TTLCache that reports what it drops on its own (expiry, size) to ``on_drop(cause, n)``."""

    def __init__(self, maxsize: int, ttl: float, *, timer: Callable[[], float],
                 on_drop: Callable[[str, int], None]) -> None:
        super().__init__(maxsize, ttl, timer=timer)
        self._on_drop = on_drop

    def expire(self, time: float | None = None) -> list[tuple[Any, Any]]:
        expired = list(super().expire(time))
        if expired:
            self._on_drop(CAUSE_EXPIRED, len(expired))
        return expired

    def popitem(self) -> tuple[Any, Any]:
        item = super().popitem()
        self._on_drop(CAUSE_SIZE, 1)
        return item


class _Flight:
    """One MongoDB read in progress; threads asking for the same batch wait on ``done``."""

    __slots__ = ("done", "error", "result", "stale")

    def __init__(self, *, stale: bool) -> None:
        self.done = threading.Event()
        self.result: CachedBatch | None = None
        self.error: BaseException | None = None
        #: True once an eviction or a clear happened during the read: the result must not be stored.
        self.stale = stale


_ABSENT = object()


class CacheGroup:
    """The caches of one process that one invalidation listener keeps fresh (held weakly).

    A cache added while the group is suspended starts suspended.
    """

    def __init__(self) -> None:
        self._caches: weakref.WeakSet[BatchCache] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._suspended = False

    def add(self, cache: BatchCache) -> None:
        with self._lock:
            self._caches.add(cache)
            if self._suspended:
                cache.suspend()

    def discard(self, cache: BatchCache) -> None:
        with self._lock:
            self._caches.discard(cache)

    def __iter__(self) -> Iterator[BatchCache]:
        with self._lock:
            return iter(list(self._caches))

    def __len__(self) -> int:
        with self._lock:
            return len(self._caches)

    @property
    def suspended(self) -> bool:
        return self._suspended

    def evict(self, batch_id: str, *, cause: str = CAUSE_MANUAL) -> int:
        return sum(cache.evict(batch_id, cause=cause) for cache in self)

    def clear(self, *, cause: str = CAUSE_MANUAL) -> int:
        return sum(cache.clear(cause=cause) for cache in self)

    def suspend(self) -> None:
        with self._lock:
            self._suspended = True
            caches = list(self._caches)
        for cache in caches:
            cache.suspend()

    def resume(self) -> None:
        with self._lock:
            self._suspended = False
            caches = list(self._caches)
        for cache in caches:
            cache.resume()


#: Every cache of this process; the process's invalidation listener drives this group.
PROCESS_CACHES = CacheGroup()


class BatchCache:
    """Batches by id, read through from MongoDB, thread-safe and single-flight.

    :param loader: reads one batch by id, returns its document or None when it does not exist
        (e.g. ``BatchStore.get``; see :meth:`for_store`). Called without the cache's lock held.
    :param clock: the shared clock the TTLs are measured on.
    :param ttl_s: how long an entry lives, simulated seconds; default ``BATCH_CACHE_TTL`` (300).
        0 disables caching (every read goes to MongoDB, still single-flight).
    :param maxsize: most batches kept; default :data:`DEFAULT_MAXSIZE`.
    :param negative_ttl_s: how long a missing batch is remembered, simulated seconds; default
        :data:`DEFAULT_NEGATIVE_TTL_S` (30), capped at ``ttl_s``.
    :param negative_maxsize: most missing ids remembered; default :data:`DEFAULT_NEGATIVE_MAXSIZE`.
    :param load_wait_s: real seconds a thread waits for another thread's read of the same batch
        before reading itself; default :data:`DEFAULT_LOAD_WAIT_S`.
    :param parse_settings: turns a stored ``call_settings`` value into :class:`CallSettings`;
        default :func:`~shared.calling_window.validate_call_settings` with ``config``
        (:func:`~shared.call_settings.default_call_settings` for a batch without call_settings).
    :param config: configuration for the default parser; default the process's.
    :param group: the group the process's listener keeps fresh; default :data:`PROCESS_CACHES`;
        None keeps the cache out of every group (it then lives by its TTL and direct evictions).
    """

    def __init__(self, *, loader: Loader, clock: Clock, ttl_s: float = DEFAULT_BATCH_CACHE_TTL,
                 maxsize: int = DEFAULT_MAXSIZE, negative_ttl_s: float = DEFAULT_NEGATIVE_TTL_S,
                 negative_maxsize: int = DEFAULT_NEGATIVE_MAXSIZE, load_wait_s: float = DEFAULT_LOAD_WAIT_S,
                 parse_settings: SettingsParser | None = None, config: Config | None = None,
                 group: CacheGroup | None = PROCESS_CACHES) -> None:
        if ttl_s < 0 or negative_ttl_s < 0:
            raise ValueError("ttl_s and negative_ttl_s must be >= 0")
        if maxsize < 1 or negative_maxsize < 1:
            raise ValueError("maxsize and negative_maxsize must be >= 1")
        self.loader = loader
        self.clock = clock
        self.ttl_s = float(ttl_s)
        self.negative_ttl_s = float(min(negative_ttl_s, ttl_s))
        self.maxsize = maxsize
        self.load_wait_s = load_wait_s
        if parse_settings is None:
            def parse_settings(raw: Any) -> CallSettings:
                if raw is None:
                    return default_call_settings(config or get_config())
                return validate_call_settings(raw, config=config or get_config())
        self._parse_settings = parse_settings
        timer = clock_timer(clock)
        self._entries = _Entries(maxsize, self.ttl_s, timer=timer, on_drop=self._count)
        self._negative = _Entries(negative_maxsize, self.negative_ttl_s, timer=timer, on_drop=self._count)
        self._lock = threading.Lock()
        self._flights: dict[str, _Flight] = {}
        self._suspended = False
        self._hits = 0
        self._misses = 0
        self._loads = 0
        self._load_errors = 0
        self._evictions = dict.fromkeys(EVICTION_CAUSES, 0)
        if group is not None:
            group.add(self)

    @classmethod
    def for_store(cls, store: BatchStore, *, config: Config | None = None, clock: Clock | None = None,
                  **options: Any) -> BatchCache:
        """A cache reading ``store``'s batches, TTL ``config.batch_cache_ttl``.

        A malformed id reads as a missing batch; a MongoDB failure raises :class:`StoreError`.
        ``options`` are passed on to the constructor.
        """
        config = config or store.config
        from pymongo.errors import PyMongoError

        def load(batch_id: str) -> Mapping[str, Any] | None:
            try:
                return store.get(batch_id)
            except NotFound:
                return None
            except PyMongoError as exc:
                raise StoreError(f"reading batch {batch_id} failed: {exc}") from None

        options.setdefault("ttl_s", config.batch_cache_ttl)
        return cls(loader=load, clock=clock or store.clock or get_clock(), config=config, **options)

    # -- reads --------------------------------------------------------------------------------

    def get(self, batch_id: str) -> CachedBatch | None:
        """The batch, from the cache or else from MongoDB; None when it does not exist.

        :param batch_id: the batch's id as stored (24 lowercase hex characters).
        :raises StoreError: (or whatever the loader raises) when the read failed; nothing is cached then.
        """
        started = perf_counter()
        with self._lock:
            found: Any = _ABSENT
            if not self._suspended:
                try:
                    found = self._entries[batch_id]
                except KeyError:
                    if batch_id in self._negative:
                        found = None
            if found is _ABSENT:
                self._misses += 1
                flight = self._flights.get(batch_id)
                leader = flight is None
                if flight is None:
                    flight = _Flight(stale=self._suspended or self.ttl_s == 0)
                    self._flights[batch_id] = flight
            else:
                self._hits += 1
        if found is not _ABSENT:
            CACHE_HITS.inc()
            _LOAD_FROM_CACHE.observe(perf_counter() - started)
            return found  # type: ignore[no-any-return]
        CACHE_MISSES.inc()
        if leader:
            return self._load(batch_id, flight, started)
        return self._follow(batch_id, flight, started)

    def require(self, batch_id: str) -> CachedBatch:
        """Like :meth:`get`, but a missing batch raises :class:`NotFound`."""
        found = self.get(batch_id)
        if found is None:
            raise NotFound(f"batch {batch_id} not found")
        return found

    def _entry(self, doc: Mapping[str, Any]) -> CachedBatch:
        try:
            settings: CallSettings | None = self._parse_settings(doc.get("call_settings"))
            error = None
        except InvalidCallSettings as exc:
            settings, error = None, str(exc)
        view = doc if isinstance(doc, MappingProxyType) else MappingProxyType(dict(doc))
        return CachedBatch(doc=view, settings=settings, settings_error=error, loaded_at_ms=self.clock.now_ms())

    def _load(self, batch_id: str, flight: _Flight, started: float) -> CachedBatch | None:
        try:
            doc = self.loader(batch_id)
            entry = None if doc is None else self._entry(doc)
        except BaseException as exc:
            with self._lock:
                self._load_errors += 1
                if self._flights.get(batch_id) is flight:
                    del self._flights[batch_id]
            flight.error = exc
            flight.done.set()
            raise
        with self._lock:
            self._loads += 1
            if self._flights.get(batch_id) is flight:
                del self._flights[batch_id]
            if not flight.stale:
                if entry is None:
                    self._entries.pop(batch_id, None)
                    self._negative[batch_id] = True
                else:
                    self._negative.pop(batch_id, None)
                    self._entries[batch_id] = entry
        flight.result = entry
        flight.done.set()
        _LOAD_FROM_MONGODB.observe(perf_counter() - started)
        return entry

    def _follow(self, batch_id: str, flight: _Flight, started: float) -> CachedBatch | None:
        if not flight.done.wait(self.load_wait_s):
            # The reading thread is stuck (a hung connection): read without it, store nothing.
            doc = self.loader(batch_id)
            _LOAD_FROM_MONGODB.observe(perf_counter() - started)
            return None if doc is None else self._entry(doc)
        if flight.error is not None:
            raise flight.error
        _LOAD_FROM_MONGODB.observe(perf_counter() - started)
        return flight.result

    # -- invalidation -------------------------------------------------------------------------

    def _count(self, cause: str, n: int) -> None:
        """Count ``n`` evictions for ``cause`` (called with the lock held)."""
        if n:
            self._evictions[cause] = self._evictions.get(cause, 0) + n
            counter = _EVICTIONS.get(cause) or CACHE_EVICTIONS.labels(cause=cause)
            counter.inc(n)

    def evict(self, batch_id: str, *, cause: str = CAUSE_MANUAL) -> int:
        """Drop ``batch_id`` (also a negative entry, and a read in progress is not stored).

        :returns: 1 when an entry was dropped, else 0.
        """
        with self._lock:
            removed = int(self._entries.pop(batch_id, _ABSENT) is not _ABSENT)
            removed |= int(self._negative.pop(batch_id, _ABSENT) is not _ABSENT)
            flight = self._flights.pop(batch_id, None)
            if flight is not None:
                flight.stale = True
            self._count(cause, removed)
        return removed

    def clear(self, *, cause: str = CAUSE_MANUAL) -> int:
        """Drop every entry (reads in progress are not stored). :returns: how many were dropped."""
        with self._lock:
            return self._clear_locked(cause)

    def _clear_locked(self, cause: str) -> int:
        dropped = len(self._entries) + len(self._negative)
        self._entries.clear()
        self._negative.clear()
        for flight in self._flights.values():
            flight.stale = True
        self._flights.clear()
        self._count(cause, dropped)
        return dropped

    def suspend(self) -> None:
        """Stop trusting the cache: drop everything, and until :meth:`resume` store nothing."""
        with self._lock:
            self._suspended = True
            self._clear_locked(CAUSE_DISCONNECT)

    def resume(self) -> None:
        """Trust the cache again (the listener is subscribed); drops anything read meanwhile."""
        with self._lock:
            self._clear_locked(CAUSE_DISCONNECT)
            self._suspended = False

    @property
    def suspended(self) -> bool:
        return self._suspended

    def __contains__(self, batch_id: object) -> bool:
        with self._lock:
            return batch_id in self._entries or batch_id in self._negative

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                hits=self._hits, misses=self._misses, loads=self._loads, load_errors=self._load_errors,
                evictions=dict(self._evictions), size=len(self._entries), negative_size=len(self._negative),
                suspended=self._suspended,
            )
