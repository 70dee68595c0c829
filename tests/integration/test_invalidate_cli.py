"""``outdial invalidate``: real Redis (a server this test owns, so receiver counts are exact)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import pytest

from shared.cache.batch_cache import BatchCache, CacheGroup
from shared.cache.invalidation import Invalidation, InvalidationListener
from tests.fixtures.cache import PATIENCE_S
from tests.helpers import frozen_clock, service_env, wait_until
from workers.dev import embedded
from workers.invalidate import main

A = "65f1c0ffee0000000000aaaa"
B = "65f1c0ffee0000000000bbbb"
FROZEN = frozen_clock(datetime(2026, 3, 4, 15, 0, tzinfo=UTC))


@pytest.fixture
def listening(owned_redis, config):
    """A cache holding A and B, kept fresh by a listener on the owned Redis; yields (cache, seen messages)."""
    group = CacheGroup()
    cache = BatchCache(loader=lambda b: {"_id": b}, clock=FROZEN, config=config, group=group)
    seen: list[Invalidation] = []
    listener = InvalidationListener(redis_url=owned_redis.url, cache=group, on_message=seen.append,
                                    poll_s=0.05).start()
    assert listener.wait_connected(PATIENCE_S)
    cache.get(A)
    cache.get(B)
    yield cache, seen
    assert listener.stop()


def test_invalidate_one_batch(owned_redis, listening, capsys):
    cache, seen = listening
    assert main([A.upper(), "--redis-url", owned_redis.url]) == 0
    out = capsys.readouterr().out
    assert f"cache:invalidate:{A}" in out and "received by 1 listening process" in out
    assert wait_until(lambda: seen) == [Invalidation(batch_id=A)]
    assert A not in cache and B in cache


def test_invalidate_all(owned_redis, listening, capsys):
    cache, seen = listening
    assert main(["--all", "--redis-url", owned_redis.url]) == 0
    assert "cache:invalidate:all" in capsys.readouterr().out
    assert wait_until(lambda: seen) == [Invalidation(batch_id=None)]
    assert len(cache) == 0


def test_redis_url_comes_from_the_configuration(owned_redis, listening, config, capsys):
    from shared.config import use_config

    with use_config(config.with_overrides(redis_url=owned_redis.url)):
        assert main([B]) == 0
    assert "received by 1 listening process" in capsys.readouterr().out


@pytest.mark.parametrize("bad", ["xyz", A[:-1], A + "0", "g" * 24, ""])
def test_malformed_batch_id_exits_2_and_publishes_nothing(owned_redis, listening, bad, capsys):
    cache, seen = listening
    assert main([bad, "--redis-url", owned_redis.url]) == 2
    err = capsys.readouterr().err
    assert "batch_id" in err and "24 hex characters" in err
    assert main([A, "--redis-url", owned_redis.url]) == 0  # a good one afterwards is the first to arrive
    assert wait_until(lambda: seen) == [Invalidation(batch_id=A)]
    assert B in cache


@pytest.mark.parametrize("argv", [[], ["--all", A]])
def test_needs_exactly_one_target(argv, capsys):
    assert main(argv) == 2
    assert "batch_id" in capsys.readouterr().err


def test_unreachable_redis_exits_1_naming_it(capsys):
    port = embedded.free_port()
    assert main([A, "--redis-url", f"redis://127.0.0.1:{port}/0"]) == 1
    err = capsys.readouterr().err
    assert f"127.0.0.1:{port}" in err and "cache:invalidate:" in err


def test_through_the_outdial_command(owned_redis, listening, config):
    cache, seen = listening
    env = service_env(config.with_overrides(redis_url=owned_redis.url))
    done = subprocess.run([sys.executable, "-m", "workers.cli", "invalidate", B], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"published cache:invalidate:{B}" in done.stdout and "received by 1" in done.stdout
    assert wait_until(lambda: seen) == [Invalidation(batch_id=B)]
    assert B not in cache and A in cache
    bad = subprocess.run([sys.executable, "-m", "workers.cli", "invalidate", "nope"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "not a batch id" in bad.stderr


def test_no_listener_is_reported(owned_redis, capsys):
    assert main(["--all", "--redis-url", owned_redis.url]) == 0
    captured = capsys.readouterr()
    assert "received by 0 listening processes" in captured.out and "no process is listening" in captured.err


def test_publish_reaches_every_listener(owned_redis, listening, capsys, config):
    extra = InvalidationListener(redis_url=owned_redis.url, cache=CacheGroup(), poll_s=0.05).start()
    try:
        assert extra.wait_connected(PATIENCE_S)
        assert main([A, "--redis-url", owned_redis.url]) == 0
        assert "received by 2 listening processes" in capsys.readouterr().out
    finally:
        assert extra.stop()
