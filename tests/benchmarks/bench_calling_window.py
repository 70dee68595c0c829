"""Microseconds per calling-window decision.

    python -m tests.benchmarks.bench_calling_window [--calls 20000]

Times each call of ``is_allowed_time`` and ``next_allowed_time`` separately (``perf_counter_ns``)
and prints the median and the 99th percentile, in microseconds, for: an instant inside the window;
one outside (the reason text is built); a dict parsed for every call (what a caller that does not
parse once at its door would pay: the parse and the window's compilation each time); the worst case
of ``next_allowed_time`` (the next window days away, across a DST change, with a holiday calendar);
a number with several zones; and the first call on a new settings object (compiling the window).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytz

from shared.config import Config
from shared.domain.call_settings import parse_call_settings
from shared.domain.calling_window import is_allowed_time, next_allowed_time

CONFIG = Config()
NEW_YORK = pytz.timezone("America/New_York")
#: The original design's collections batch (Mon-Sat 09:00-20:00, Santiago).
COLLECTIONS = {"max_attempts": 5, "retry_delay_hours": 2, "allowed_hours": {"start": "09:00", "end": "20:00"},
               "days_of_week": [1, 2, 3, 4, 5, 6], "timezone": "America/Santiago"}
#: A Tue-Thu survey in New York with US holidays: from Thursday evening the next window is five days
#: away, on the far side of the March DST change.
SURVEY_NY = {"allowed_hours": {"start": "10:00", "end": "18:00"}, "days_of_week": [2, 3, 4],
             "timezone": "America/New_York", "holidays": "US", "blackout_dates": ["2031-03-11"]}
AUTO = {"allowed_hours": {"start": "09:00", "end": "20:00"}, "days_of_week": [1, 2, 3, 4, 5], "timezone": "auto"}


def _dst_thursdays() -> list[datetime]:
    """Thursday 18:30 New York before each March DST change, 2025-2034."""
    found = []
    for t in NEW_YORK._utc_transition_times:
        if datetime(2025, 1, 1) <= t < datetime(2035, 1, 1) and t.month == 3:
            change = t.replace(tzinfo=UTC).astimezone(NEW_YORK)
            thursday = change.date() - timedelta(days=(change.weekday() - 3) % 7)
            found.append(NEW_YORK.localize(datetime(thursday.year, thursday.month, thursday.day, 18, 30)))
    return found


def _measure(calls: int, instants: list[datetime], fn: Callable[[datetime], object]) -> tuple[float, float]:
    for now in instants:
        fn(now)
    samples = []
    n = len(instants)
    clock = time.perf_counter_ns
    for i in range(calls):
        now = instants[i % n]
        start = clock()
        fn(now)
        samples.append(clock() - start)
    samples.sort()
    return statistics.median(samples) / 1000, samples[int(len(samples) * 0.99)] / 1000


def _cold(calls: int, raw: dict, now: datetime) -> tuple[float, float]:
    samples = []
    for _ in range(calls):
        settings = parse_call_settings(raw, config=CONFIG)
        start = time.perf_counter_ns()
        next_allowed_time(settings, now, config=CONFIG)
        samples.append(time.perf_counter_ns() - start)
    samples.sort()
    return statistics.median(samples) / 1000, samples[int(len(samples) * 0.99)] / 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    calls = args.calls
    collections = parse_call_settings(COLLECTIONS, config=CONFIG)
    survey = parse_call_settings(SURVEY_NY, config=CONFIG)
    auto = parse_call_settings(AUTO, config=CONFIG)
    inside = [datetime(2025, 1, 20, 15, tzinfo=UTC) + timedelta(days=7 * k, minutes=k) for k in range(50)]
    outside = [datetime(2025, 1, 26, 15, tzinfo=UTC) + timedelta(days=7 * k, minutes=k) for k in range(50)]
    worst = _dst_thursdays()
    for now in worst:
        found = next_allowed_time(survey, now, config=CONFIG)
        assert (found - now) > timedelta(days=4), (now, found)
    au_mobile = "+61412345678"   # eight Australian zones, Perth to Lord Howe

    rows: list[tuple[str, tuple[float, float]]] = [
        ("is_allowed_time, inside the window", _measure(calls, inside, lambda n: is_allowed_time(
            collections, n, config=CONFIG))),
        ("is_allowed_time, outside (reason text built)", _measure(calls, outside, lambda n: is_allowed_time(
            collections, n, config=CONFIG))),
        ("is_allowed_time, a dict parsed for every call", _measure(calls, inside, lambda n: is_allowed_time(
            parse_call_settings(COLLECTIONS, config=CONFIG), n, config=CONFIG))),
        ("is_allowed_time, auto zone, number with 8 zones", _measure(calls, inside, lambda n: is_allowed_time(
            auto, n, au_mobile, config=CONFIG))),
        ("next_allowed_time, allowed now", _measure(calls, inside, lambda n: next_allowed_time(
            collections, n, config=CONFIG))),
        ("next_allowed_time, Sunday -> Monday 09:00", _measure(calls, outside, lambda n: next_allowed_time(
            collections, n, config=CONFIG))),
        ("next_allowed_time, worst: 5 days away across DST, holidays", _measure(calls, worst, lambda n:
            next_allowed_time(survey, n, config=CONFIG))),
        ("next_allowed_time, worst case, a dict parsed for every call", _measure(calls, worst, lambda n:
            next_allowed_time(parse_call_settings(SURVEY_NY, config=CONFIG), n, config=CONFIG))),
        ("next_allowed_time, auto zone, number with 8 zones", _measure(calls, outside, lambda n: next_allowed_time(
            auto, n, au_mobile, config=CONFIG))),
        ("next_allowed_time, first call on new settings (compile)", _cold(min(calls, 2000), SURVEY_NY, worst[0])),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"{'operation'.ljust(width)}  median µs    p99 µs   ({calls} calls each)")
    for name, (median, p99) in rows:
        print(f"{name.ljust(width)}  {median:9.1f}  {p99:8.1f}")


if __name__ == "__main__":
    main()
