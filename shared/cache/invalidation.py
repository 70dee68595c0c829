"""Batch cache invalidation across processes, over Redis pub/sub.

Whatever writes a batch calls :func:`publish_invalidation` after MongoDB accepted the write;
it publishes ``"1"`` on ``cache:invalidate:<batch_id>`` (the payload is ignored, as in the
original admin API). :func:`publish_invalidate_all` publishes on ``cache:invalidate:all``.

Every process runs one :class:`InvalidationListener`: a daemon thread pattern-subscribed to
``cache:invalidate:*`` that evicts the named batch from the process's caches
(:data:`shared.cache.batch_cache.PROCESS_CACHES` by default), clears them on the all-batches
channel, and ignores any other channel (malformed, oversized, not an id). Messages published
while it is not subscribed are lost, so the caches are *suspended* whenever it is not
subscribed (every read goes to MongoDB) and cleared again when it subscribes; it reconnects
with exponential backoff and keeps going until :meth:`InvalidationListener.stop`.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis as redis_lib
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared.cache.batch_cache import CAUSE_ALL, CAUSE_MESSAGE, PROCESS_CACHES, Evictable
from shared.domain.backoff import capped_exponential
from shared.errors import NotFound, ServiceError, ValidationError
from shared.logs import event, get_logger
from shared.metrics import CACHE_INVALIDATIONS, CACHE_LISTENER_CONNECTED, CACHE_SECONDS_SINCE_MESSAGE
from shared.redis_keys import (
    INVALIDATE_ALL,
    INVALIDATE_CHANNEL_PREFIX,
    INVALIDATE_PATTERN,
    invalidate_all_channel,
    invalidate_channel,
)
from shared.stores.mongo import parse_id

log = get_logger(__name__)

#: What an invalidation message carries (ignored by the listener; the original admin API sent "1").
PAYLOAD = "1"
#: Channel names longer than this many bytes are ignored without being decoded.
MAX_CHANNEL_LENGTH = len(INVALIDATE_CHANNEL_PREFIX) + 64
#: Longest the listener blocks on the socket before it checks whether to stop, real seconds.
DEFAULT_POLL_S = 0.2
#: Idle time after which the listener pings Redis, real seconds; silence for three of these = connection lost.
DEFAULT_PING_INTERVAL_S = 5.0
#: First wait before reconnecting, real seconds (doubles per failure, with jitter).
DEFAULT_BACKOFF_INITIAL_S = 0.1
#: Longest wait between reconnection attempts, real seconds.
DEFAULT_BACKOFF_MAX_S = 10.0
#: TCP connect and socket timeout of the listener's connection, real seconds.
DEFAULT_CONNECT_TIMEOUT_S = 2.0
#: How long :meth:`InvalidationListener.stop` waits for the thread, real seconds.
DEFAULT_STOP_TIMEOUT_S = 5.0
#: Log every this-many-th ignored channel (the first is always logged).
IGNORED_LOG_EVERY = 1000

_PUBLISHED = CACHE_INVALIDATIONS.labels(event="published")
_PUBLISH_FAILED = CACHE_INVALIDATIONS.labels(event="publish_failed")
_RECEIVED = CACHE_INVALIDATIONS.labels(event="received")
_IGNORED = CACHE_INVALIDATIONS.labels(event="ignored")


@dataclass(frozen=True, slots=True)
class Invalidation:
    """What one channel asks for: evict ``batch_id``, or everything when it is None."""

    batch_id: str | None

    @property
    def is_all(self) -> bool:
        return self.batch_id is None


def valid_batch_id(value: object) -> str | None:
    """``value`` as a batch id (24 hex characters, lowercased, as :func:`shared.stores.mongo.parse_id`), else None."""
    try:
        return parse_id(value, "batch id")
    except NotFound:
        return None


def parse_channel(channel: object) -> Invalidation | None:
    """The invalidation a channel name asks for, or None for anything else (never raises).

    :param channel: the channel as Redis delivered it (bytes) or a str.
    """
    if isinstance(channel, bytes | bytearray):
        if len(channel) > MAX_CHANNEL_LENGTH:
            return None
        try:
            text = bytes(channel).decode("ascii")
        except UnicodeDecodeError:
            return None
    elif isinstance(channel, str):
        if len(channel) > MAX_CHANNEL_LENGTH:
            return None
        text = channel
    else:
        return None
    if not text.startswith(INVALIDATE_CHANNEL_PREFIX):
        return None
    suffix = text[len(INVALIDATE_CHANNEL_PREFIX):]
    if suffix == INVALIDATE_ALL:
        return Invalidation(batch_id=None)
    batch_id = valid_batch_id(suffix)
    return None if batch_id is None else Invalidation(batch_id=batch_id)


# -- publishing ---------------------------------------------------------------------------------


def _checked_id(batch_id: object) -> str:
    found = valid_batch_id(batch_id)
    if found is None:
        raise ValidationError([("batch_id", f"{str(batch_id)[:40]!r} is not a batch id (24 hex characters)")])
    return found


def _published(channel: str, receivers: Any) -> int:
    _PUBLISHED.inc()
    count = int(receivers)
    event(log, "cache_invalidation_published", level=logging.DEBUG, channel=channel, receivers=count)
    return count


def _failed(channel: str, exc: Exception, strict: bool) -> None:
    _PUBLISH_FAILED.inc()
    if strict:
        raise ServiceError(f"publishing {channel} to Redis failed: {exc}") from None
    # Nothing is lost for long: a Redis that refuses a PUBLISH has (or soon has) dropped every
    # listener's subscription too, and a listener without a subscription suspends its caches.
    event(log, "cache_invalidation_publish_failed", level=logging.ERROR, channel=channel, error=str(exc))


def _publish(redis: Any, channel: str, strict: bool) -> int | None:
    try:
        receivers = redis.publish(channel, PAYLOAD)
    except (redis_lib.RedisError, OSError) as exc:
        _failed(channel, exc, strict)
        return None
    return _published(channel, receivers)


def publish_invalidation(redis: Any, batch_id: str, *, strict: bool = False) -> int | None:
    """Evict ``batch_id`` from every process's batch cache. Call it after the MongoDB write succeeded.

    :param redis: a ``redis.Redis`` client (any database index: pub/sub ignores it).
    :param batch_id: the batch's id, 24 hex characters.
    :param strict: raise :class:`ServiceError` when Redis fails; default False logs the failure
        (the write already happened; a caller should not fail because of it) and returns None.
    :returns: how many listeners (processes) received the message, or None when Redis failed.
    :raises ValidationError: ``batch_id`` is not a batch id.
    """
    return _publish(redis, invalidate_channel(_checked_id(batch_id)), strict)


def publish_invalidate_all(redis: Any, *, strict: bool = False) -> int | None:
    """Clear every process's batch cache. Parameters and result as :func:`publish_invalidation`."""
    return _publish(redis, invalidate_all_channel(), strict)


async def publish_invalidation_async(redis: Any, batch_id: str | None, *, strict: bool = False) -> int | None:
    """:func:`publish_invalidation` (or, ``batch_id`` None, the all-batches form) for a ``redis.asyncio`` client."""
    channel = invalidate_all_channel() if batch_id is None else invalidate_channel(_checked_id(batch_id))
    try:
        receivers = await redis.publish(channel, PAYLOAD)
    except (redis_lib.RedisError, OSError) as exc:
        _failed(channel, exc, strict)
        return None
    return _published(channel, receivers)


# -- listening ----------------------------------------------------------------------------------


def describe_url(url: str) -> str:
    """``host:port/db`` of a Redis URL, without credentials (for logs and messages)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname or '?'}:{parts.port or 6379}{parts.path or '/0'}"


class InvalidationListener:
    """A daemon thread that keeps ``cache`` fresh from ``cache:invalidate:*``.

    :param redis_url: the Redis the processes publish on.
    :param cache: what to keep fresh: a :class:`~shared.cache.batch_cache.BatchCache` or a
        :class:`~shared.cache.batch_cache.CacheGroup`; default :data:`~shared.cache.batch_cache.PROCESS_CACHES`.
    :param on_message: called (in the listener thread, after the eviction) with each applied
        :class:`Invalidation`; for tests and benchmarks. Its errors are logged and ignored.
    :param poll_s: longest block on the socket before checking for stop, real s; default :data:`DEFAULT_POLL_S`.
    :param ping_interval_s: keepalive ping after this much silence, real s; default :data:`DEFAULT_PING_INTERVAL_S`.
    :param backoff_initial_s: first reconnection wait, real s; default :data:`DEFAULT_BACKOFF_INITIAL_S`.
    :param backoff_max_s: longest reconnection wait, real s; default :data:`DEFAULT_BACKOFF_MAX_S`.
    :param connect_timeout_s: connect and socket timeout, real s; default :data:`DEFAULT_CONNECT_TIMEOUT_S`.
    """

    def __init__(self, *, redis_url: str, cache: Evictable | None = None,
                 on_message: Callable[[Invalidation], None] | None = None, poll_s: float = DEFAULT_POLL_S,
                 ping_interval_s: float = DEFAULT_PING_INTERVAL_S,
                 backoff_initial_s: float = DEFAULT_BACKOFF_INITIAL_S, backoff_max_s: float = DEFAULT_BACKOFF_MAX_S,
                 connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> None:
        self.redis_url = redis_url
        self.where = describe_url(redis_url)
        self.cache: Evictable = cache if cache is not None else PROCESS_CACHES
        self.on_message = on_message
        self.poll_s = poll_s
        self.ping_interval_s = ping_interval_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.connect_timeout_s = connect_timeout_s
        self._stop_event = threading.Event()
        self._connected = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_rx = time.monotonic()
        self._failures = 0
        #: Counters, for tests and ``outdial`` diagnostics.
        self.connects = 0
        self.disconnects = 0
        self.messages = 0
        self.ignored = 0

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> InvalidationListener:
        """Suspend the cache (nothing is trusted until subscribed) and start the thread."""
        if self._thread is not None:
            raise RuntimeError("listener already started")
        self.cache.suspend()
        self._thread = threading.Thread(target=self._run, name="outdial-cache-invalidation", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> bool:
        """Stop the thread and give the cache back its TTL-only behaviour (cleared, not suspended).

        :returns: True when the thread ended within ``timeout_s`` real seconds.
        """
        self._stop_event.set()
        ended = True
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
            ended = not self._thread.is_alive()
        self._set_connected(False)
        self.cache.resume()
        return ended

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def connected(self) -> bool:
        """True while subscribed (the cache's entries are trusted)."""
        return self._connected.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` real seconds for the subscription; True when subscribed."""
        return self._connected.wait(timeout_s)

    # -- messages -----------------------------------------------------------------------------

    def handle(self, message: Mapping[str, Any]) -> Invalidation | None:
        """Apply one pub/sub message (as ``redis-py`` returns it); the invalidation applied, if any."""
        self._last_rx = time.monotonic()
        if message.get("type") not in ("pmessage", "message"):
            return None  # subscription confirmations and keepalive pongs only prove liveness
        _RECEIVED.inc()
        self.messages += 1
        found = parse_channel(message.get("channel"))
        if found is None:
            self.ignored += 1
            _IGNORED.inc()
            if self.ignored % IGNORED_LOG_EVERY == 1:
                event(log, "cache_invalidation_ignored", level=logging.WARNING,
                      channel=repr(message.get("channel"))[:80], ignored=self.ignored)
            return None
        if found.batch_id is None:
            dropped = self.cache.clear(cause=CAUSE_ALL)
            event(log, "cache_cleared", dropped=dropped)
        else:
            self.cache.evict(found.batch_id, cause=CAUSE_MESSAGE)
        if self.on_message is not None:
            try:
                self.on_message(found)
            except Exception as exc:  # noqa: BLE001 - a hook must not stop the listener
                event(log, "cache_listener_hook_failed", level=logging.WARNING, error=str(exc))
        return found

    # -- the thread ---------------------------------------------------------------------------

    def _set_connected(self, value: bool) -> None:
        if value:
            self._connected.set()
        else:
            self._connected.clear()
        CACHE_LISTENER_CONNECTED.set(1 if value else 0)

    def _run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self._session()
            except Exception as exc:  # noqa: BLE001 - the listener must outlive any Redis failure
                self._lost(exc)
            if self._stop_event.is_set():
                break
            delay = capped_exponential(min(self._failures, 30), base=self.backoff_initial_s, cap=self.backoff_max_s,
                                       jitter=lambda: random.uniform(0.5, 1.0))
            self._failures += 1
            CACHE_SECONDS_SINCE_MESSAGE.set(time.monotonic() - self._last_rx)
            self._stop_event.wait(delay)

    def _lost(self, exc: Exception) -> None:
        was_connected = self.connected
        self._set_connected(False)
        if self._stop_event.is_set():
            return  # stop() already handed the cache back
        self.cache.suspend()
        if was_connected:
            self.disconnects += 1
        level = logging.WARNING if was_connected or self._failures == 0 else logging.INFO
        event(log, "cache_listener_disconnected", level=level, redis=self.where, error=str(exc)[:200],
              attempt=self._failures + 1, serving_from="mongodb")

    def _client(self) -> redis_lib.Redis:
        return redis_lib.Redis.from_url(
            self.redis_url, retry=Retry(NoBackoff(), 0), socket_connect_timeout=self.connect_timeout_s,
            socket_timeout=self.connect_timeout_s, socket_keepalive=True, health_check_interval=0)

    def _session(self) -> None:
        client = self._client()
        pubsub = client.pubsub()
        try:
            pubsub.psubscribe(INVALIDATE_PATTERN)
            if self._await_subscription(pubsub):
                self._subscribed()
                self._read(pubsub)
        finally:
            try:
                pubsub.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass
            client.close()

    def _await_subscription(self, pubsub: Any) -> bool:
        """True once Redis confirmed the subscription; False when stopped first."""
        deadline = time.monotonic() + self.connect_timeout_s
        while not self._stop_event.is_set():
            message = pubsub.get_message(timeout=self.poll_s)
            if message is not None and message.get("type") == "psubscribe":
                self._last_rx = time.monotonic()
                return True
            if message is not None:
                self.handle(message)
            if time.monotonic() > deadline:
                raise redis_lib.ConnectionError(f"no psubscribe confirmation within {self.connect_timeout_s} s")
        return False

    def _subscribed(self) -> None:
        # Anything published before the confirmation may have been missed: start from empty.
        self.cache.resume()
        self._set_connected(True)
        self.connects += 1
        event(log, "cache_listener_connected", redis=self.where, pattern=INVALIDATE_PATTERN,
              reconnect=self.connects > 1, attempts=self._failures + 1)
        self._failures = 0

    def _read(self, pubsub: Any) -> None:
        last_ping = 0.0
        while not self._stop_event.is_set():
            message = pubsub.get_message(timeout=self.poll_s)
            if message is not None:
                self.handle(message)
            now = time.monotonic()
            idle = now - self._last_rx
            CACHE_SECONDS_SINCE_MESSAGE.set(idle)
            if idle >= 3 * self.ping_interval_s:
                raise redis_lib.ConnectionError(f"no message or pong from Redis for {idle:.1f} s")
            if idle >= self.ping_interval_s and now - last_ping >= self.ping_interval_s:
                pubsub.ping()
                last_ping = now


# -- the process's listener ---------------------------------------------------------------------

_process_listener: InvalidationListener | None = None
_process_pid = 0
_process_lock = threading.Lock()


def start_process_listener(*, redis_url: str, **options: Any) -> InvalidationListener:
    """Start this process's listener on :data:`~shared.cache.batch_cache.PROCESS_CACHES` (idempotent).

    :param redis_url: the Redis the invalidations are published on.
    :param options: passed to :class:`InvalidationListener`.
    """
    global _process_listener, _process_pid
    with _process_lock:
        if _process_listener is not None and _process_pid == os.getpid() and _process_listener.running:
            return _process_listener
        _process_listener = InvalidationListener(redis_url=redis_url, **options).start()
        _process_pid = os.getpid()
        return _process_listener


def stop_process_listener(timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> bool:
    """Stop this process's listener, if it runs. :returns: False when its thread did not end in time."""
    global _process_listener
    with _process_lock:
        listener, _process_listener = _process_listener, None
    if listener is None or _process_pid != os.getpid():
        return True
    return listener.stop(timeout_s)


def process_listener() -> InvalidationListener | None:
    """This process's running listener, if any."""
    with _process_lock:
        if _process_listener is not None and _process_pid == os.getpid():
            return _process_listener
        return None
