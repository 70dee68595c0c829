"""Provider concurrency slots on a real Redis."""

import threading

import pytest

from shared.stores.slots import EPOCH_KEY, Acquired, Slots


@pytest.fixture
def slots(redis_client):
    s = Slots(redis_client)
    s.rebuild({})
    return s


def test_limit_renew_release(slots):
    assert [slots.acquire("acc", f"a{i}", limit=2, now_ms=1000, lease_ms=500) for i in range(3)] == [
        Acquired.YES, Acquired.YES, Acquired.NO]
    assert slots.acquire("acc", "a0", limit=2, now_ms=1100, lease_ms=500) == Acquired.YES  # renewal of a holder
    assert slots.in_use("acc", now_ms=1100) == 2
    assert slots.release("acc", "a1") is True
    assert slots.release("acc", "a1") is False
    assert slots.acquire("acc", "a2", limit=2, now_ms=1200, lease_ms=500) == Acquired.YES


def test_expired_leases_free_their_slot(slots):
    slots.acquire("acc", "dead", limit=1, now_ms=0, lease_ms=100)
    assert slots.acquire("acc", "next", limit=1, now_ms=50, lease_ms=100) == Acquired.NO
    assert slots.acquire("acc", "next", limit=1, now_ms=101, lease_ms=100) == Acquired.YES
    assert slots.holders("acc") == {"next": 201}


def test_accounts_are_independent(slots):
    assert slots.acquire("a", "x", limit=1, now_ms=0, lease_ms=10**6) == Acquired.YES
    assert slots.acquire("b", "x", limit=1, now_ms=0, lease_ms=10**6) == Acquired.YES
    assert slots.in_use_many(["a", "b", "c"], now_ms=1) == {"a": 1, "b": 1, "c": 0}


def test_lost_redis_state_is_unknown_until_rebuilt(slots, redis_client):
    slots.acquire("acc", "x", limit=5, now_ms=0, lease_ms=10**6)
    redis_client.flushdb()  # what a restart without persistence does
    assert not slots.known()
    assert slots.acquire("acc", "y", limit=5, now_ms=1, lease_ms=10**6) == Acquired.UNKNOWN
    slots.rebuild({"acc": {"x": 10**6, "z": 10**6}})
    assert slots.known() and redis_client.exists(EPOCH_KEY)
    assert slots.holders("acc") == {"x": 10**6, "z": 10**6}
    assert slots.acquire("acc", "y", limit=3, now_ms=1, lease_ms=10**6) == Acquired.YES
    assert slots.acquire("acc", "w", limit=3, now_ms=1, lease_ms=10**6) == Acquired.NO


def test_many_threads_never_exceed_the_limit(slots, redis_url):
    import redis

    held: list[str] = []
    lock = threading.Lock()
    peak = [0]

    def worker(n):
        s = Slots(redis.Redis.from_url(redis_url))
        for i in range(200):
            holder = f"t{n}-{i}"
            if s.acquire("acc", holder, limit=7, now_ms=1, lease_ms=10**9) == Acquired.YES:
                with lock:
                    held.append(holder)
                    peak[0] = max(peak[0], len(held))
                with lock:
                    held.remove(holder)
                s.release("acc", holder)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] <= 7
    assert slots.in_use("acc", now_ms=2) == 0
