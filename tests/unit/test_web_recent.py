"""RecentValues: kept values, one computation at a time per key, what reads get while one runs."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from workers.web.recent import RecentValues


class Timer:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Source:
    """Computations that end when the test says: ``release()`` ends the oldest one running with ``value``."""

    def __init__(self) -> None:
        self.started = 0
        self.waiting: list[asyncio.Future[Any]] = []

    async def compute(self) -> Any:
        self.started += 1
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting.append(done)
        return await done

    def release(self, value: Any = None, *, error: BaseException | None = None) -> None:
        done = self.waiting.pop(0)
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(value)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_burst_of_reads_without_a_value_shares_one_computation() -> None:
    async def scenario() -> None:
        cache: RecentValues[str, int] = RecentValues(max_age_s=2.0, timer=Timer())
        source = Source()
        reads = [asyncio.ensure_future(cache.get("b", source.compute)) for _ in range(32)]
        await settle()
        assert source.started == 1 and cache.computations == 1
        source.release(7)
        assert await asyncio.gather(*reads) == [7] * 32
        assert await cache.get("b", source.compute) == 7      # kept
        assert source.started == 1

    run(scenario())


def test_past_half_its_age_one_read_recomputes_and_the_others_get_the_kept_value_at_once() -> None:
    async def scenario() -> None:
        timer = Timer()
        cache: RecentValues[str, int] = RecentValues(max_age_s=2.0, timer=timer)
        source = Source()
        first = asyncio.ensure_future(cache.get("b", source.compute))
        await settle()
        source.release(1)
        assert await first == 1
        timer.now += 0.9
        assert await cache.get("b", source.compute) == 1
        assert source.started == 1
        timer.now += 0.2                                       # 1.1 s old: past half of 2 s
        leader = asyncio.ensure_future(cache.get("b", source.compute))
        await settle()
        assert source.started == 2 and not leader.done()       # the read that recomputes waits for it
        others = [await cache.get("b", source.compute) for _ in range(31)]
        assert others == [1] * 31 and source.started == 2      # the others do not wait, nor compute again
        source.release(2)
        assert await leader == 2
        assert await cache.get("b", source.compute) == 2

    run(scenario())


def test_a_value_as_old_as_max_age_is_never_returned() -> None:
    async def scenario() -> None:
        timer = Timer()
        cache: RecentValues[str, int] = RecentValues(max_age_s=2.0, timer=timer)
        source = Source()
        first = asyncio.ensure_future(cache.get("b", source.compute))
        await settle()
        source.release(1)
        await first
        timer.now += 1.5
        leader = asyncio.ensure_future(cache.get("b", source.compute))
        await settle()
        timer.now += 0.5                                       # the kept value is 2 s old now
        follower = asyncio.ensure_future(cache.get("b", source.compute))
        await settle()
        assert not follower.done() and source.started == 2     # it waits for the running computation
        source.release(2)
        assert await leader == 2 and await follower == 2

    run(scenario())


def test_forget_drops_the_value_and_a_computation_already_running() -> None:
    async def scenario() -> None:
        cache: RecentValues[str, int] = RecentValues(max_age_s=60.0, timer=Timer())
        source = Source()
        first = asyncio.ensure_future(cache.get("b", source.compute))
        await settle()
        source.release(1)
        await first
        cache.forget("b")
        assert "b" not in cache
        before = asyncio.ensure_future(cache.get("b", source.compute))   # starts before the change
        await settle()
        cache.forget("b")                                      # the change
        after = asyncio.ensure_future(cache.get("b", source.compute))    # does not share the earlier one
        await settle()
        assert source.started == 3
        source.release(2)
        source.release(3)
        assert await before == 2 and await after == 3
        assert await cache.get("b", source.compute) == 3       # the computation from before was not kept

    run(scenario())


def test_a_failed_computation_fails_its_readers_and_is_not_kept() -> None:
    async def scenario() -> None:
        cache: RecentValues[str, int] = RecentValues(max_age_s=60.0, timer=Timer())
        source = Source()
        reads = [asyncio.ensure_future(cache.get("b", source.compute)) for _ in range(3)]
        await settle()
        source.release(error=RuntimeError("down"))
        for read in reads:
            with pytest.raises(RuntimeError):
                await read
        again = asyncio.ensure_future(cache.get("b", source.compute))
        await settle()
        assert source.started == 2
        source.release(5)
        assert await again == 5

    run(scenario())


def test_a_cancelled_reader_leaves_the_computation_to_the_others() -> None:
    async def scenario() -> None:
        cache: RecentValues[str, int] = RecentValues(max_age_s=60.0, timer=Timer())
        source = Source()
        gone = asyncio.ensure_future(cache.get("b", source.compute))
        stays = asyncio.ensure_future(cache.get("b", source.compute))
        await settle()
        gone.cancel()
        await settle()
        source.release(4)
        assert await stays == 4
        assert await cache.get("b", source.compute) == 4 and source.started == 1

    run(scenario())


def test_max_age_zero_keeps_nothing_but_shares_a_running_computation() -> None:
    async def scenario() -> None:
        cache: RecentValues[str, int] = RecentValues(max_age_s=0, timer=Timer())
        source = Source()
        reads = [asyncio.ensure_future(cache.get("b", source.compute)) for _ in range(5)]
        await settle()
        assert source.started == 1
        source.release(1)
        assert await asyncio.gather(*reads) == [1] * 5
        later = asyncio.ensure_future(cache.get("b", source.compute))
        await settle()
        assert source.started == 2 and len(cache) == 0
        source.release(2)
        assert await later == 2

    run(scenario())


def test_keys_are_independent_and_bounded() -> None:
    async def scenario() -> None:
        cache: RecentValues[str, str] = RecentValues(max_age_s=60.0, maxsize=2, timer=Timer())

        async def value_of(key: str) -> str:
            return key.upper()

        assert [await cache.get(k, lambda k=k: value_of(k)) for k in ("a", "b", "c")] == ["A", "B", "C"]
        assert len(cache) == 2 and "a" not in cache
        assert cache.computations == 3

    run(scenario())
