import time
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from shared.clock import Clock, started_at
from shared.config import load_config


def test_real_clock_is_utc_now():
    c = Clock()
    assert c.is_real
    assert abs((c.now() - datetime.now(UTC)).total_seconds()) < 1
    assert c.now().tzinfo is not None


def test_formula_start_plus_scaled_elapsed():
    start = datetime(2026, 3, 7, 15, tzinfo=UTC)  # a Saturday
    c = Clock(start=start, speed=3600, anchor=time.time() - 2)
    elapsed = (c.now() - start).total_seconds()
    assert 2 * 3600 <= elapsed < 2.5 * 3600


def test_from_config_shares_one_timeline():
    env = {"OUTDIAL_CLOCK_START": "2026-03-07T15:00:00Z", "OUTDIAL_CLOCK_SPEED": "60",
           "OUTDIAL_CLOCK_ANCHOR": str(time.time() - 10)}
    a = Clock.from_config(load_config(env))
    b = Clock.from_config(load_config(env))
    assert abs((a.now() - b.now()).total_seconds()) < 1
    assert (a.now() - datetime(2026, 3, 7, 15, tzinfo=UTC)).total_seconds() >= 600


def test_env_round_trip():
    c = started_at(datetime(2026, 3, 7, 15, tzinfo=UTC), speed=120)
    again = Clock.from_config(load_config(c.env()))
    assert again.start == c.start and again.speed == c.speed and again.anchor == c.anchor


def test_speed_without_start_starts_at_anchor():
    anchor = time.time()
    c = Clock.from_config(load_config({"OUTDIAL_CLOCK_SPEED": "10", "OUTDIAL_CLOCK_ANCHOR": str(anchor)}))
    assert c.start == datetime.fromtimestamp(anchor, UTC)


@given(st.floats(min_value=0.01, max_value=100_000), st.floats(min_value=0, max_value=10**7))
def test_real_and_simulated_durations_invert(speed, seconds):
    c = Clock(start=datetime(2026, 1, 1, tzinfo=UTC), speed=speed, anchor=time.time())
    assert abs(c.simulated_seconds(c.real_seconds(seconds)) - seconds) <= 1e-6 * max(1.0, seconds)


def test_real_delay_ms_scales_and_clamps():
    c = started_at(datetime(2026, 3, 7, 15, tzinfo=UTC), speed=3600)
    assert c.real_delay_ms(c.now() - timedelta(hours=1)) == 0
    delay = c.real_delay_ms(c.now() + timedelta(hours=2))
    assert 1900 <= delay <= 2000
