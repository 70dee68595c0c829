"""Every lease and deadline figure of a call comes from :class:`shared.pipeline.timing.Timing`: each equals the
formula the pipeline wrote in place before."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from shared.clock import Clock
from shared.config import Config
from shared.domain.call_settings import default_call_settings
from shared.domain.decisions import attempt_deadline_ms
from shared.pipeline.timing import Timing

START = datetime(2025, 3, 3, 12, 0, tzinfo=UTC)

figures = dict(ring=st.integers(min_value=5, max_value=120), duration=st.integers(min_value=10, max_value=7200),
               speed=st.sampled_from([1.0, 2.0, 60.0, 0.5, 7.3]), grace=st.floats(min_value=0, max_value=120),
               margin=st.floats(min_value=0, max_value=600), stop=st.floats(min_value=0, max_value=300),
               created=st.integers(min_value=0, max_value=2 * 10**12))


def _setup(ring, duration, speed, grace, margin, stop):
    settings = replace(default_call_settings(Config()), ring_timeout=ring, max_call_duration=duration)
    timing = Timing(call_grace_sim_s=grace, poll_lease_margin_s=margin, stop_grace_s=stop)
    clock = Clock(start=START, speed=speed, anchor=1_000.0, source=lambda: 1_234.5)
    return settings, timing, clock


@given(**figures)
def test_the_figures_are_the_formulas_they_replace(ring, duration, speed, grace, margin, stop, created):
    settings, timing, clock = _setup(ring, duration, speed, grace, margin, stop)
    life_s = settings.ring_timeout + settings.max_call_duration + timing.call_grace_sim_s
    sim = lambda s: timedelta(seconds=clock.simulated_seconds(s))  # noqa: E731
    sim_ms = lambda s: int(clock.simulated_seconds(s) * 1000)  # noqa: E731
    assert timing.call_life_s(settings) == life_s
    # the slot's lease (Step._slot_lease_ms)
    assert timing.slot_lease_ms(settings, clock) == (sim_ms(timing.dialing_lease_s) + int(life_s * 1000)
                                                     + sim_ms(timing.poll_lease_margin_s))
    # a create sent at the dialing lease's last moment still holds its slot until its call's latest end
    assert timing.slot_lease_ms(settings, clock) >= sim_ms(timing.dialing_lease_s) + int(life_s * 1000)
    # the in-call lease (Poll._in_call_lease_ms)
    assert timing.in_call_lease_until_ms(settings, clock) == clock.now_ms() + int(
        (life_s + sim(timing.poll_lease_margin_s).total_seconds()) * 1000)
    # the attempt's deadline (poll, reconcile, the web's oldest job in progress)
    deadline = attempt_deadline_ms(created, ring_timeout_s=settings.ring_timeout,
                                   max_call_duration_s=settings.max_call_duration, grace_s=timing.call_grace_sim_s)
    assert timing.attempt_deadline_ms(created, settings) == deadline
    # the latest end a contact policy's turn counts (Dial._take_turn)
    assert timing.latest_end_ms(created, settings, clock) == deadline + sim_ms(
        timing.stop_grace_s + timing.poll_lease_margin_s)


def test_the_web_reads_the_same_grace_as_every_process():
    assert Timing().call_grace_sim_s == Timing.from_config(Config()).call_grace_sim_s
