"""With webhooks, polls are a safety net: when the first comes and how the next ones space out."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.domain.decisions import SAFETY_POLL_CAP_S, SAFETY_POLL_SPACING, next_safety_poll_delay_s, safety_poll_at_ms


def test_the_first_poll_comes_after_the_ring_timeout_plus_the_margin():
    assert safety_poll_at_ms(1_000_000, ring_timeout_s=30, margin_s=60) == 1_090_000


@given(n=st.integers(min_value=0, max_value=60), now=st.integers(min_value=0, max_value=10**9),
       left_ms=st.integers(min_value=-10**7, max_value=10**8), margin=st.floats(min_value=1, max_value=3600))
def test_safety_polls_space_out_but_never_skip_the_deadline(n, now, left_ms, margin):
    wait = next_safety_poll_delay_s(n, now_ms=now, deadline_ms=now + left_ms, margin_s=margin)
    assert wait >= 1.0 and wait <= SAFETY_POLL_CAP_S
    assert wait <= margin * SAFETY_POLL_SPACING * 2**n
    # the waits never shrink from one poll to the next, at the same distance from the deadline
    assert next_safety_poll_delay_s(n + 1, now_ms=now, deadline_ms=now + left_ms, margin_s=margin) >= wait
    if left_ms > 0:   # still before the deadline: the next poll comes by it (so a call past its limit is stopped)
        assert wait <= max(1.0, left_ms / 1000 + 1)


def test_the_waits_double_from_five_margins_up_to_the_cap():
    far = 10**12
    waits = [next_safety_poll_delay_s(n, now_ms=0, deadline_ms=far, margin_s=60) for n in range(5)]
    assert waits == [300, 600, 1200, 1800, 1800] and SAFETY_POLL_CAP_S == 1800
