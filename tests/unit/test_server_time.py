"""The shared clock's reading of the server's time (:class:`shared.clock.ServerTime`), on a simulated world:
a true server time, a Redis ``TIME`` that answers it after some latency, a monotonic clock, and a wall clock
that can be stepped at any moment."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.clock import Clock, ServerTime

SKEW_S = 2.0     # PIPELINE_MAX_SKEW_MS's default
MAX_AGE_S = 60.0
#: TIME answers in whole microseconds.
EPS = 2e-6


class World:
    """True time ``t`` (the server's); the machine's monotonic clock runs with it (unless suspended) and its
    wall clock reads ``t + wall_error``. Every ``TIME`` takes ``up`` seconds to reach the server and ``down``
    to come back."""

    def __init__(self, *, t: float = 1_770_000_000.0, wall_error: float = 0.0, up: float = 0.001,
                 down: float = 0.001) -> None:
        self.t, self.wall_error, self.up, self.down = t, wall_error, up, down
        self.mono_lag = 0.0      # seconds the monotonic clock stood still (a suspended machine)
        self.down_server = False

    def wall(self) -> float:
        return self.t + self.wall_error

    def monotonic(self) -> float:
        return self.t - 1_000_000.0 - self.mono_lag

    def time(self) -> tuple[int, int]:   # redis.Redis.time()
        if self.down_server:
            raise ConnectionError("down")
        self.t += self.up
        seconds, micros = int(self.t), int((self.t - int(self.t)) * 1e6)
        self.t += self.down
        return seconds, micros

    def server_time(self, **options: float) -> ServerTime:
        return ServerTime(self, local=self.wall, monotonic=self.monotonic, **options)


def trusted(server: ServerTime) -> bool:
    return server.trusted(max_uncertainty_s=SKEW_S, max_age_s=MAX_AGE_S)


def test_a_wrong_wall_clock_is_measured_away():
    world = World(wall_error=-1234.5, up=0.002, down=0.004)
    server = world.server_time()
    assert abs(server() - world.t) <= server.uncertainty_s + EPS
    assert math.isclose(server.uncertainty_s, 0.003, abs_tol=EPS) and abs(server.offset_s - 1234.5) <= 0.003 + EPS
    world.t += 5
    assert trusted(server) and abs(server() - world.t) <= server.uncertainty_s + EPS


def test_a_wall_clock_stepped_back_between_readings_is_not_followed_and_not_trusted_until_measured_again():
    world = World()
    server = world.server_time()
    server()
    world.t += 3
    world.wall_error = -300.0    # the machine's clock is set back five minutes, between two readings
    assert abs(server() - world.t) <= server.uncertainty_s + EPS   # the time read is still the server's
    assert not trusted(server)                                     # and the disagreement is noticed at once
    reading = server()   # the next reading measures again: the step is confirmed by the server
    assert abs(reading - world.t) <= server.uncertainty_s + EPS and abs(server.offset_s - 300) < 0.01
    assert trusted(server)


def test_a_step_within_the_allowed_skew_keeps_the_time_trusted():
    world = World()
    server = world.server_time()
    server()
    world.wall_error = SKEW_S / 2
    assert trusted(server) and abs(server() - world.t) <= server.uncertainty_s + EPS


def test_a_stepped_wall_clock_stays_untrusted_while_the_server_cannot_confirm_it():
    world = World()
    server = world.server_time()
    server()
    world.down_server = True
    world.wall_error = 300.0
    for _ in range(3):
        world.t += 0.5
        assert not trusted(server)
        assert abs(server() - world.t) <= server.uncertainty_s + EPS
    world.down_server = False
    world.t += 1.0                # past the retry delay after the failure
    server()
    assert trusted(server)


def test_a_suspended_machine_is_not_trusted_until_measured_again():
    # Its monotonic clock stood still for 30 s while the wall clock (and the world) went on.
    world = World()
    server = world.server_time()
    server()
    world.t += 30
    world.mono_lag = 30
    assert not trusted(server)
    assert abs(server() - world.t) <= server.uncertainty_s + EPS and trusted(server)


def test_an_old_reading_is_not_trusted():
    world = World()
    server = world.server_time(resync_s=10)
    server()
    world.down_server = True
    world.t += MAX_AGE_S + 1
    assert not trusted(server) and server.age_s > MAX_AGE_S


def test_a_sped_up_clock_reads_its_real_time_from_the_server():
    world = World(wall_error=-7200.0)
    server = world.server_time()
    start = datetime(2026, 3, 7, 15, tzinfo=UTC)
    clock = Clock(start=start, speed=60, anchor=world.t).with_source(server)
    first, at = clock.now(), world.t
    world.t += 10
    world.wall_error = -7500.0    # stepped back another five minutes: the simulated time does not move back
    elapsed = (clock.now() - first).total_seconds()
    assert abs(elapsed - (world.t - at) * 60) <= 60 * 2 * (server.uncertainty_s + EPS), elapsed
    assert elapsed >= 600


events = st.one_of(
    st.tuples(st.just("wait"), st.floats(min_value=0, max_value=30)),
    st.tuples(st.just("step"), st.floats(min_value=-86_400, max_value=86_400)),
    st.tuples(st.just("latency"), st.floats(min_value=0, max_value=0.5), st.floats(min_value=0, max_value=0.5)),
    st.tuples(st.just("server"), st.booleans()),
    st.tuples(st.just("read")),
    st.tuples(st.just("trusted")),
)


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=-86_400, max_value=86_400), st.lists(events, max_size=40))
def test_whatever_the_wall_clock_does_the_time_read_is_the_servers_within_its_uncertainty(wall_error, script):
    world = World(wall_error=wall_error)
    server = world.server_time()
    server()
    for event in script:
        kind = event[0]
        if kind == "wait":
            world.t += event[1]
        elif kind == "step":
            world.wall_error += event[1]
        elif kind == "latency":
            world.up, world.down = event[1], event[2]
        elif kind == "server":
            world.down_server = event[1]
        else:
            ok = trusted(server) if kind == "trusted" else None
            reading = server()
            # Whatever the steps, the time read is the server's within the uncertainty of the kept reading...
            assert abs(reading - world.t) <= server.uncertainty_s + EPS
            # ...and a trusted reading also has the wall clock agreeing with it.
            if ok:
                assert server.uncertainty_s <= SKEW_S and server.age_s <= MAX_AGE_S
                assert abs(world.wall() + server.offset_s - world.t) <= SKEW_S + server.uncertainty_s + EPS


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(min_value=0, max_value=30), st.floats(min_value=0, max_value=30)), max_size=20))
def test_a_trusted_reading_is_within_the_allowed_skew_even_when_the_monotonic_clock_stood_still(script):
    # A suspended machine: its monotonic clock misses ``pause`` seconds that the world and the wall clock saw.
    # (A pause and a wall-clock step that cancel out cannot be told from nothing without asking the server.)
    world = World()
    server = world.server_time()
    server()
    for wait, pause in script:
        world.t += wait + pause
        world.mono_lag += pause
        if trusted(server):
            assert abs(server() - world.t) <= SKEW_S + server.uncertainty_s + EPS
