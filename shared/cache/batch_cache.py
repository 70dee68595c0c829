"""The per-process batch cache: every read of a batch by the pipeline goes through here.

A :class:`BatchCache` keeps recently read batches in a :class:`cachetools.TTLCache` whose time is
the shared clock (a sped-up test clock expires entries sooner in real time). It is bounded,
thread-safe and single-flight: when 16 threads ask for a batch that is not cached, one of them
reads MongoDB and the others wait for that read. A batch that does not exist is remembered for
a shorter time (a negative entry), so a job pointing at a deleted batch does not cost a query
per message. Each entry parses the batch's ``call_settings`` once, so a dial never re-parses.

A miss reads in bulk when the cache is cold (the first miss, the first one after a clear, then at
most once per TTL): the batch asked for and the newest active batches, up to 200, in ONE query
(``BatchStore.get_with_active``). A worker process dials every active campaign of the deployment,
so it needs them all soon; each process then pays one query per TTL for all its campaigns instead
of one per campaign (with 4 processes and 50 campaigns: 4 queries instead of 200 at start-up).
Other misses (an edited batch, a paused one, a new one) read their batch alone. Threads missing
any batch while a bulk load is in progress wait for it, then look again. A batch evicted while a
bulk load is in progress is not stored from it (nothing is, after a clear or a lost subscription),
and a bulk load never replaces an entry, a negative entry or a read in progress of the cache: it
never puts back a document older than a change this process has heard of. The counters count
per ``get``: a batch that came with another's bulk load is a hit when it is asked for.

The TTL is only a safety net: :mod:`shared.cache.invalidation` evicts a batch from every process the
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
from enum import Enum
from time import perf_counter
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from cachetools import TTLCache

from shared.clock import Clock
from shared.config import DEFAULT_BATCH_CACHE_TTL, Config
from shared.domain.call_settings import CallSettings, InvalidCallSettings, default_call_settings
from shared.domain.calling_window import validate_call_settings
from shared.errors import NotFound, StoreError
from shared.metrics import BATCH_LOAD, CACHE_EVICTIONS, CACHE_HITS, CACHE_MISSES

if TYPE_CHECKING:
    from shared.stores.batches import BatchStore

#: Most batches one process keeps (least recently used go first beyond it).
DEFAULT_MAXSIZE = 10_000
#: How long a batch that does not exist is remembered, seconds on the shared clock.
DEFAULT_NEGATIVE_TTL_S = 30.0
#: Most unknown batch ids remembered at once.
DEFAULT_NEGATIVE_MAXSIZE = 10_000
#: Longest a thread waits for another thread's read of the same batch before reading itself, real seconds.
DEFAULT_LOAD_WAIT_S = 30.0
#: Most batches one bulk load reads (the batch asked for and the newest active ones) in one query.
DEFAULT_BULK_LIMIT = 200

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
#: ``(batch_id, limit)`` -> that batch and other active ones, at most ``limit`` documents, in one query
#: (e.g. ``BatchStore.get_with_active``); the batch may be missing when ``limit`` documents came back.
BulkLoader = Callable[[str, int], list[Mapping[str, Any]]]
_V = TypeVar("_V")
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
    #: MongoDB queries made: one per single read, one per bulk load (two when it came back full without its batch).
    loads: int
    load_errors: int
    evictions: Mapping[str, int]
    size: int
    negative_size: int
    suspended: bool
    #: How many of ``loads`` were bulk loads.
    bulk_loads: int = 0
    #: Batches stored by bulk loads besides the one each was made for.
    bulk_stored: int = 0

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


class _Entries(TTLCache[str, _V]):
    """A TTLCache that reports what it drops on its own (expiry, size) to ``on_drop(cause, n)``."""

    def __init__(self, maxsize: int, ttl: float, *, timer: Callable[[], float],
                 on_drop: Callable[[str, int], None]) -> None:
        super().__init__(maxsize, ttl, timer=timer)
        self._on_drop = on_drop

    def expire(self, time: float | None = None) -> list[tuple[str, _V]]:
        expired = list(super().expire(time))
        if expired:
            self._on_drop(CAUSE_EXPIRED, len(expired))
        return expired

    def popitem(self) -> tuple[str, _V]:
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


class _Bulk:
    """One bulk load in progress: threads missing other batches wait on ``done``, then look again."""

    __slots__ = ("done", "evicted", "stale")

    def __init__(self) -> None:
        self.done = threading.Event()
        #: Batches evicted during the load: their documents in the answer must not be stored.
        self.evicted: set[str] = set()
        #: True once a clear happened during the load: none of its documents may be stored.
        self.stale = False


class _Absent(Enum):
    """Not in the cache (neither an entry nor a remembered missing batch)."""

    ABSENT = 0


_ABSENT = _Absent.ABSENT


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
    :param ttl_s: how long an entry lives, simulated seconds; default ``BATCH_CACHE_TTL`` (300). It only
        bounds staleness after a change that was not published (an edit made directly in MongoDB).
        0 disables caching (every read goes to MongoDB, still single-flight).
    :param maxsize: most batches kept; default :data:`DEFAULT_MAXSIZE`.
    :param negative_ttl_s: how long a missing batch is remembered, simulated seconds; default
        :data:`DEFAULT_NEGATIVE_TTL_S` (30), capped at ``ttl_s``.
    :param negative_maxsize: most missing ids remembered; default :data:`DEFAULT_NEGATIVE_MAXSIZE`.
    :param load_wait_s: real seconds a thread waits for another thread's read of the same batch
        (or for a bulk load) before reading itself; default :data:`DEFAULT_LOAD_WAIT_S`.
    :param bulk_loader: reads a batch and other active ones in one query (see :data:`BulkLoader`);
        None (the default, but :meth:`for_store` sets it) reads one batch per miss.
    :param bulk_limit: most documents one bulk load reads; default :data:`DEFAULT_BULK_LIMIT`, capped at
        ``maxsize``; 0 disables bulk loads.
    :param bulk_interval_s: shortest time between two bulk loads, simulated seconds; default ``ttl_s``
        (one per TTL: a miss within it reads its batch alone). A clear (resubscription, all-batches
        message) allows the next miss to bulk-load at once.
    :param parse_settings: turns a stored ``call_settings`` value into :class:`CallSettings`;
        default :func:`~shared.domain.calling_window.validate_call_settings` with ``config``
        (:func:`~shared.domain.call_settings.default_call_settings` for a batch without call_settings).
    :param config: configuration for the default parser.
    :param refresh: called before each bulk load (the first miss, the first after a clear, then once per
        ``bulk_interval_s``): what the batches' settings are judged against and may have changed with them (the
        compliance profiles in force), read again on the same schedule and by the same invalidations.
    :param group: the group the process's listener keeps fresh; default :data:`PROCESS_CACHES`;
        None keeps the cache out of every group (it then lives by its TTL and direct evictions).
    """

    def __init__(self, *, loader: Loader, clock: Clock, ttl_s: float = DEFAULT_BATCH_CACHE_TTL,
                 maxsize: int = DEFAULT_MAXSIZE, negative_ttl_s: float = DEFAULT_NEGATIVE_TTL_S,
                 negative_maxsize: int = DEFAULT_NEGATIVE_MAXSIZE, load_wait_s: float = DEFAULT_LOAD_WAIT_S,
                 bulk_loader: BulkLoader | None = None, bulk_limit: int = DEFAULT_BULK_LIMIT,
                 bulk_interval_s: float | None = None, parse_settings: SettingsParser | None = None,
                 config: Config, group: CacheGroup | None = PROCESS_CACHES,
                 refresh: Callable[[], None] | None = None) -> None:
        if ttl_s < 0 or negative_ttl_s < 0 or (bulk_interval_s is not None and bulk_interval_s < 0):
            raise ValueError("ttl_s, negative_ttl_s and bulk_interval_s must be >= 0")
        if maxsize < 1 or negative_maxsize < 1:
            raise ValueError("maxsize and negative_maxsize must be >= 1")
        if bulk_limit < 0:
            raise ValueError("bulk_limit must be >= 0")
        self.loader = loader
        self.refresh = refresh
        self.bulk_loader = bulk_loader
        self.bulk_limit = min(bulk_limit, maxsize) if bulk_loader is not None else 0
        self.bulk_interval_s = float(ttl_s if bulk_interval_s is None else bulk_interval_s)
        self.clock = clock
        self.ttl_s = float(ttl_s)
        self.negative_ttl_s = float(min(negative_ttl_s, ttl_s))
        self.maxsize = maxsize
        self.load_wait_s = load_wait_s
        if parse_settings is None:
            def parse_settings(raw: Any) -> CallSettings:
                if raw is None:
                    return default_call_settings(config)
                return validate_call_settings(raw, config=config)
        self._parse_settings = parse_settings
        timer = clock_timer(clock)
        self._timer = timer
        self._entries: _Entries[CachedBatch] = _Entries(maxsize, self.ttl_s, timer=timer, on_drop=self._count)
        self._negative: _Entries[bool] = _Entries(negative_maxsize, self.negative_ttl_s, timer=timer,
                                                  on_drop=self._count)
        self._lock = threading.Lock()
        self._flights: dict[str, _Flight] = {}
        self._bulk: _Bulk | None = None
        self._next_bulk_at = 0.0
        self._suspended = False
        self._hits = 0
        self._misses = 0
        self._loads = 0
        self._bulk_loads = 0
        self._bulk_stored = 0
        self._load_errors = 0
        self._evictions = dict.fromkeys(EVICTION_CAUSES, 0)
        if group is not None:
            group.add(self)

    @classmethod
    def for_store(cls, store: BatchStore, *, config: Config | None = None, clock: Clock | None = None,
                  **options: Any) -> BatchCache:
        """A cache reading ``store``'s batches, TTL ``config.batch_cache_ttl``, bulk loads with
        :meth:`BatchStore.get_with_active <shared.stores.batches.BatchStore.get_with_active>`.

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

        def load_many(batch_id: str, limit: int) -> list[Mapping[str, Any]]:
            try:
                return list(store.get_with_active(batch_id, limit))
            except NotFound:
                return []
            except PyMongoError as exc:
                raise StoreError(f"reading batch {batch_id} with the active batches failed: {exc}") from None

        options.setdefault("ttl_s", config.batch_cache_ttl)
        options.setdefault("bulk_loader", load_many)
        return cls(loader=load, clock=clock or store.clock, config=config, **options)

    # -- reads --------------------------------------------------------------------------------

    def get(self, batch_id: str) -> CachedBatch | None:
        """The batch, from the cache or else from MongoDB; None when it does not exist.

        :param batch_id: the batch's id as stored (24 lowercase hex characters).
        :raises StoreError: (or whatever the loader raises) when the read failed; nothing is cached then.
        """
        started = perf_counter()
        with self._lock:
            found = self._lookup(batch_id)
            if found is _ABSENT:
                self._misses += 1
            else:
                self._hits += 1
        if found is not _ABSENT:
            CACHE_HITS.inc()
            _LOAD_FROM_CACHE.observe(perf_counter() - started)
            return found
        CACHE_MISSES.inc()
        return self._miss(batch_id, started)

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

    def _lookup(self, batch_id: str) -> CachedBatch | Literal[_Absent.ABSENT] | None:
        """The entry (None for a negative one), or ``_ABSENT``; called with the lock held."""
        if self._suspended:
            return _ABSENT
        try:
            return self._entries[batch_id]
        except KeyError:
            return None if batch_id in self._negative else _ABSENT

    def _miss(self, batch_id: str, started: float) -> CachedBatch | None:
        """Read a batch that is not cached: follow the read in progress, wait for the bulk load in
        progress (then look again), or read, in bulk when one is due."""
        waited = False
        while True:
            with self._lock:
                found = self._lookup(batch_id) if waited else _ABSENT
                if found is not _ABSENT:
                    break
                flight = self._flights.get(batch_id)
                bulk = None
                if flight is not None:
                    role = "follow"
                elif self._bulk is not None and not waited:
                    role, bulk = "wait", self._bulk
                else:
                    flight = _Flight(stale=self._suspended or self.ttl_s == 0)
                    self._flights[batch_id] = flight
                    role = "load"
                    if not waited and self._bulk_due():
                        role, bulk = "bulk", _Bulk()
                        self._bulk = bulk
                        self._next_bulk_at = self._timer() + self.bulk_interval_s
            if role == "follow":
                assert flight is not None
                return self._follow(batch_id, flight, started)
            if role == "load":
                assert flight is not None
                return self._load(batch_id, flight, started)
            assert bulk is not None
            if role == "bulk":
                assert flight is not None
                return self._load_bulk(batch_id, flight, bulk, started)
            bulk.done.wait(self.load_wait_s)
            waited = True
        _LOAD_FROM_MONGODB.observe(perf_counter() - started)
        return found

    def _bulk_due(self) -> bool:
        """Whether this miss reads in bulk (called with the lock held)."""
        return (self.bulk_limit > 0 and not self._suspended and self.ttl_s > 0
                and self._timer() >= self._next_bulk_at)

    def _store(self, batch_id: str, flight: _Flight, entry: CachedBatch | None) -> None:
        """Store one read's answer unless it went stale meanwhile (called with the lock held)."""
        if self._flights.get(batch_id) is flight:
            del self._flights[batch_id]
        if flight.stale:
            return
        if entry is None:
            self._entries.pop(batch_id, None)
            self._negative[batch_id] = True
        else:
            self._negative.pop(batch_id, None)
            self._entries[batch_id] = entry

    def _failed(self, batch_id: str, flight: _Flight, exc: BaseException) -> None:
        with self._lock:
            self._load_errors += 1
            if self._flights.get(batch_id) is flight:
                del self._flights[batch_id]
        flight.error = exc
        flight.done.set()

    def _load(self, batch_id: str, flight: _Flight, started: float) -> CachedBatch | None:
        try:
            doc = self.loader(batch_id)
            entry = None if doc is None else self._entry(doc)
        except BaseException as exc:
            self._failed(batch_id, flight, exc)
            raise
        with self._lock:
            self._loads += 1
            self._store(batch_id, flight, entry)
        flight.result = entry
        flight.done.set()
        _LOAD_FROM_MONGODB.observe(perf_counter() - started)
        return entry

    def _load_bulk(self, batch_id: str, flight: _Flight, bulk: _Bulk, started: float) -> CachedBatch | None:
        """Read ``batch_id`` with the other active batches in one query and store them all, except those
        evicted during the read (all of them after a clear), and those the cache already knows."""
        queries = 0
        bulk_loader = self.bulk_loader
        assert bulk_loader is not None   # a bulk load is only due with one (bulk_limit > 0)
        try:
            if self.refresh is not None:
                self.refresh()
            docs = bulk_loader(batch_id, self.bulk_limit)
            queries = 1
            entries = {str(doc["_id"]): self._entry(doc) for doc in docs}
            entry = entries.pop(batch_id, None)
            if entry is None and len(docs) >= self.bulk_limit:
                # The answer was full without it (more active batches than the limit): read it alone.
                queries = 2
                doc = self.loader(batch_id)
                entry = None if doc is None else self._entry(doc)
        except BaseException as exc:
            with self._lock:
                self._loads += queries
                if self._bulk is bulk:
                    self._bulk = None
                    self._next_bulk_at = 0.0
            self._failed(batch_id, flight, exc)
            bulk.done.set()
            raise
        with self._lock:
            self._loads += queries
            self._bulk_loads += 1
            if self._bulk is bulk:
                self._bulk = None
            if not bulk.stale:
                for other, found in entries.items():
                    if (other in bulk.evicted or other in self._flights or other in self._entries
                            or other in self._negative):
                        continue
                    self._entries[other] = found
                    self._bulk_stored += 1
            self._store(batch_id, flight, entry)  # last: the most recently used if the cache is full
        flight.result = entry
        flight.done.set()
        bulk.done.set()
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
            if self._bulk is not None:
                self._bulk.evicted.add(batch_id)
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
        if self._bulk is not None:
            self._bulk.stale = True
            self._bulk = None
        self._next_bulk_at = 0.0  # an empty cache refills in one query
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
                suspended=self._suspended, bulk_loads=self._bulk_loads, bulk_stored=self._bulk_stored,
            )
