"""The reference worker of ``outdial bench --baseline``: it dials a handful of answered calls against the
simulator, as a process of its own, and reports its figures; the bench's table compares them."""

from __future__ import annotations

import pytest

from workers.dev.bench import run_baseline, table

CONTACTS = 5
LIMIT = 3


@pytest.mark.slow
def test_baseline_worker_completes_its_calls_and_reports_figures(mongo_uri: str, redis_url: str) -> None:
    figures = run_baseline(contacts=CONTACTS, limit=LIMIT, speed=60.0, duration_s=5.0, mongo_uri=mongo_uri,
                           redis_url=redis_url, time_cap_s=120.0)

    assert figures["completed"] == CONTACTS, figures
    assert figures["failed"] == 0 and not figures["timed_out"]
    assert 0 < figures["max_simultaneous"] <= LIMIT  # a thread per call, a semaphore of the account's limit
    # per call: one claim and one update, plus the batch's settings once
    assert figures["mongo_commands_by_name"]["findAndModify"] >= CONTACTS
    assert figures["mongo_commands_by_name"]["update"] == CONTACTS
    assert figures["mongo_round_trips_per_call"] >= 2
    # per call: one create, then polls until the end (no webhooks)
    assert figures["provider_requests_by_endpoint"]["create_phone_call"] == CONTACTS
    assert figures["provider_requests_by_endpoint"]["get_call"] >= CONTACTS
    assert figures["cpu_ms_per_call"] is not None and figures["peak_rss_mb"] > 0
    assert figures["completed_calls_per_s"] > 0


def test_table_compares_each_figure_with_its_goal_and_the_baseline() -> None:
    ours = {"contacts": 10, "completed": 10, "timed_out": False,
            "completed_calls_per_s": 20.0, "avg_simultaneous_over_limit": 0.98, "cpu_ms_per_call": 6.0,
            "cpu_ms_per_call_workers": 4.0, "cpu_ms_per_call_web": 1.5, "cpu_ms_per_call_clock": 0.5,
            "mongo_round_trips_per_call": 9.0, "mongo_round_trips_per_call_workers": 7.0,
            "mongo_round_trips_per_call_web": 2.0,
            "mongo_round_trips_per_call_by_step": {"dial": 5.0, "finalize": 4.0, "poll": None},
            "provider_requests_per_call": 1.0, "webhooks": True, "peak_rss_mb_per_worker": 50.0,
            "peak_rss_mb_web": 60.0, "peak_rss_mb_clock": 30.0, "lag_p50_sim_s": 1.0, "lag_p99_sim_s": 2.0}
    theirs = {"contacts": 10, "completed": 10, "timed_out": False,
              "completed_calls_per_s": 10.0, "avg_simultaneous_over_limit": 0.9,
              "cpu_ms_per_call": 20.0, "mongo_round_trips_per_call": 2.0, "provider_requests_per_call": 3.0,
              "peak_rss_mb": 40.0, "lag_p50_sim_s": 3.0, "lag_p99_sim_s": 4.0}

    in_flight = {"contacts": 10_000, "completed": 7_000, "timed_out": True, "max_simultaneous": 10_000,
                 "peak_rss_mb_per_worker": 350.0, "lag_p50_sim_s": 100.0, "lag_p99_sim_s": 200.0,
                 "cpu_ms_per_call": 12.0}

    rows = {r["figure"]: r for r in table(ours, theirs, in_flight)}

    assert rows["completed calls per second"]["ratio"] == "2.00" and rows["completed calls per second"]["met"]
    assert rows["CPU per completed call, ms (all processes)"]["met"]
    assert rows["MongoDB round trips per completed call"]["met"] is False
    assert rows["  step dial"]["outdial"] == 5.0 and "  step poll" not in rows
    assert rows["in flight: most calls one process held (10,000 contacts)"]["met"]
    assert rows["in flight: peak RSS of that process, MiB"]["met"] is False
    assert rows["in flight: calls completed"]["outdial"] == "7,000 of 10,000 (time cap)"
    without = {r["figure"]: r for r in table(ours, None, None)}
    assert without["completed calls per second"]["baseline"] is None
    assert without["completed calls per second"]["ratio"] == ""
    assert without["completed calls per second"]["met"] is None
