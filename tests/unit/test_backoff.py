"""One capped exponential backoff serves every growing wait; each caller's numbers are the formula it wrote before."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from shared.domain import decisions
from shared.domain.backoff import capped_exponential
from shared.provider import retell

attempts = st.integers(min_value=0, max_value=80)
seeds = st.integers(min_value=0, max_value=2**32)


@given(n=st.integers(min_value=-5, max_value=200), base=st.floats(min_value=0.001, max_value=100),
       cap=st.floats(min_value=0.001, max_value=10_000))
def test_the_wait_doubles_from_base_up_to_the_cap(n, base, cap):
    wait = capped_exponential(n, base=base, cap=cap)
    assert wait == min(cap, base * 2 ** max(0, n))
    assert wait <= cap
    assert capped_exponential(n + 1, base=base, cap=cap) >= wait


def test_the_jitter_multiplies_after_the_cap():
    assert capped_exponential(10, base=1.0, cap=8.0, jitter=lambda: 0.5) == 4.0


@given(n=attempts, seed=seeds)
def test_the_provider_client_retry(n, seed):
    old = min(8.0, 0.5 * (2 ** n)) * (1 - 0.25 * random.Random(seed).random())
    assert retell._backoff_s(n, base_s=0.5, max_s=8.0, rng=random.Random(seed)) == old


@given(failures=st.integers(min_value=0, max_value=10_000), seed=seeds)
def test_the_cache_listener_reconnection(failures, seed):
    old = min(10.0, 0.1 * 2 ** min(failures, 30)) * random.Random(seed).uniform(0.5, 1.0)
    rng = random.Random(seed)
    new = capped_exponential(min(failures, 30), base=0.1, cap=10.0, jitter=lambda: rng.uniform(0.5, 1.0))
    assert new == old


@given(n=st.integers(min_value=0, max_value=200))
def test_the_stop_retry(n):
    assert decisions.stop_retry_delay_s(n) == min(30.0, 1.0 * 2 ** max(0, n - 1))


@given(n=attempts, margin=st.floats(min_value=1, max_value=3600))
def test_the_safety_poll_spacing_far_from_the_deadline(n, margin):
    far = 10**15
    old = max(1.0, min(decisions.SAFETY_POLL_CAP_S, margin * decisions.SAFETY_POLL_SPACING * 2**n))
    assert decisions.next_safety_poll_delay_s(n, now_ms=0, deadline_ms=far, margin_s=margin) == old


@given(n=st.integers(min_value=-3, max_value=200), base=st.floats(min_value=0.1, max_value=30))
def test_the_replay_delay(n, base):
    assert decisions.replay_delay_s(n, base_s=base) == min(decisions.REPLAY_CAP_S, base * 2 ** max(0, n))


@given(used=st.integers(min_value=0, max_value=60), base=st.floats(min_value=0.1, max_value=60), seed=seeds,
       after=st.one_of(st.none(), st.floats(min_value=0, max_value=900)))
def test_the_free_retry(used, base, seed, after):
    wait = min(decisions.FREE_RETRY_CAP_S, base * 2 ** used)
    wait *= 1 + decisions.FREE_RETRY_JITTER * (2 * random.Random(seed).random() - 1)
    old = max(wait, after or 0.0)
    new = decisions.decide_free_retry(used, limit=100, retry_after_s=after, base_s=base, rng=random.Random(seed))
    assert new == old
