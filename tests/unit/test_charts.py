"""The results page's SVG charts (workers/web/charts.py) and the hours its window shades, read back as XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.config import Config
from shared.domain.call_settings import parse_call_settings
from workers.web import charts
from workers.web.results_page import charge_text, duration_text, window_hours

NS = {"svg": "http://www.w3.org/2000/svg"}


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert root.get("role") == "img" and root.get("aria-label")
    assert root.find("svg:title", NS) is not None and root.find("svg:title", NS).text
    return root


def rects(root: ET.Element, cls: str) -> list[ET.Element]:
    return [r for r in root.iter("{http://www.w3.org/2000/svg}rect") if cls in (r.get("class") or "").split()]


def texts(root: ET.Element) -> str:
    return " ".join("".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text"))


# -- outcomes -------------------------------------------------------------------------------------------


def test_the_outcome_bar_stacks_segments_proportional_to_the_counts_with_a_legend():
    counts = {"answered": 6, "voicemail": 2, "no_answer": 1, "provider_fault": 1}
    root = parse(charts.outcomes_bar(counts))
    segs = {r.get("data-outcome"): r for r in rects(root, "seg")}
    assert set(segs) == {"answered", "voicemail", "no_answer", "other"}     # provider_fault folds into other
    assert float(segs["answered"].get("width")) == pytest.approx(600.0)
    assert float(segs["voicemail"].get("width")) == pytest.approx(200.0)
    assert float(segs["other"].get("width")) == pytest.approx(100.0)
    xs = [float(r.get("x")) for r in rects(root, "seg")]
    assert xs == sorted(xs) and xs[0] == 0
    words = texts(root)
    assert "completed conversation: 6 (60%)" in words and "other: 1 (10%)" in words
    assert "busy: 0 (0%)" in words                                          # every outcome in the legend
    assert "10 calls" in root.get("aria-label")


@given(st.dictionaries(st.sampled_from([*charts.OUTCOME_KEYS, "provider_fault", "account_problem"]),
                       st.integers(min_value=0, max_value=100_000), min_size=1))
def test_segment_widths_are_proportional_and_fill_the_bar(counts):
    total = sum(counts.values())
    root = parse(charts.outcomes_bar(counts))
    segs = rects(root, "seg")
    if not total:
        assert not segs and charts.NO_CALLS in texts(root)
        return
    assert sum(int(r.get("data-count")) for r in segs) == total
    assert sum(float(r.get("width")) for r in segs) == pytest.approx(charts.BAR_WIDTH, abs=0.05)
    for r in segs:
        assert float(r.get("width")) == pytest.approx(charts.BAR_WIDTH * int(r.get("data-count")) / total, abs=0.006)


def test_an_empty_outcome_bar_says_no_calls_yet():
    root = parse(charts.outcomes_bar({}))
    assert not rects(root, "seg") and charts.NO_CALLS in texts(root) and charts.NO_CALLS in root.get("aria-label")


def test_text_is_escaped():
    assert charts.outcome_counts({"<b>": 2}) == {**dict.fromkeys(charts.OUTCOME_KEYS, 0), "other": 2}
    parse(charts.attempts_histogram({3: 1}))


# -- hours ----------------------------------------------------------------------------------------------


def test_hour_bars_are_proportional_and_the_window_hours_are_shaded():
    hours = [0] * 24
    hours[9], hours[10], hours[17], hours[22] = 4, 8, 2, 1
    root = parse(charts.hours_chart(hours, {9, 10, 11, 12, 13, 14, 15, 16, 17}))
    bars = {int(r.get("data-hour")): r for r in rects(root, "hour-bar")}
    assert sorted(bars) == list(range(24))
    tallest = float(bars[10].get("height"))
    assert tallest > 0
    for h, n in enumerate(hours):
        assert int(bars[h].get("data-count")) == n
        assert float(bars[h].get("height")) == pytest.approx(tallest * n / 8, abs=0.01)
    shaded = sorted(int(r.get("data-hour")) for r in rects(root, "window-hour") if r.get("data-hour"))
    assert shaded == list(range(9, 18))
    assert "off-window" in bars[22].get("class") and "in-window" in bars[9].get("class")
    assert "calling window: 09-18" in texts(root) and "15 calls" in root.get("aria-label")


def test_an_empty_hours_chart_still_shades_the_window_and_says_no_calls_yet():
    root = parse(charts.hours_chart([0] * 24, {22, 23, 0, 1}))
    assert charts.NO_CALLS in texts(root)
    assert sorted(int(r.get("data-hour")) for r in rects(root, "window-hour") if r.get("data-hour")) == [0, 1, 22, 23]
    assert "calling window: 00-02, 22-24" in texts(root)
    with pytest.raises(ValueError, match="24 counts"):
        charts.hours_chart([1, 2], set())


# -- calls per contact ----------------------------------------------------------------------------------


def test_the_histogram_has_one_column_per_count_of_calls_and_folds_the_tail():
    root = parse(charts.attempts_histogram({0: 2, 1: 8, 3: 4, 12: 1, 10: 1}))
    bars = [(r.get("data-calls"), int(r.get("data-count")), float(r.get("height"))) for r in rects(root, "count-bar")]
    labels = [b[0] for b in bars]
    assert labels == ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10+"]
    counts = dict((b[0], b[1]) for b in bars)
    assert counts["0"] == 2 and counts["1"] == 8 and counts["2"] == 0 and counts["10+"] == 2
    peak = max(b[2] for b in bars)
    for _, n, h in bars:
        assert h == pytest.approx(peak * n / 8, abs=0.01)
    assert "16 contacts" in root.get("aria-label")


def test_histogram_empty_and_without_calls():
    assert "no contacts yet" in texts(parse(charts.attempts_histogram({})))
    root = parse(charts.attempts_histogram({0: 5}))
    assert [int(r.get("data-count")) for r in rects(root, "count-bar")] == [5]
    assert charts.NO_CALLS in texts(root)


# -- the window's hours and the figures ---------------------------------------------------------------------


CONFIG = Config()


@pytest.mark.parametrize(("raw", "hours"), [
    (None, set(range(24))),                                                         # no window: any hour
    ({"days_of_week": [1, 2, 3, 4, 5], "allowed_hours": {"start": "09:00", "end": "18:00"}}, set(range(9, 18))),
    ({"allowed_hours": {"start": "09:30", "end": "18:15"}}, set(range(9, 19))),      # partial hours count
    ({"windows": [{"days": [1], "start": "22:00", "end": "02:00"}]}, {22, 23, 0, 1}),  # overnight wraps
    ({"windows": [{"days": [1, 2], "start": "08:00", "end": "10:00"},
                  {"days": [6], "start": "12:00", "end": "24:00"}]}, {8, 9, *range(12, 24)}),   # union of the days
])
def test_window_hours_are_the_union_of_the_hours_any_day_allows(raw, hours):
    assert window_hours(parse_call_settings(raw, config=CONFIG)) == hours


def test_durations_and_charges_read_in_the_plans_unit():
    from shared.stores.accounts import Plan

    assert duration_text(0) == "0s" and duration_text(754_000) == "12m 34s" and duration_text(3_725_000) == "1h 02m"
    assert charge_text(90, Plan(type="minutes")) == "1.50 min"
    assert charge_text(2500, Plan(type="credits")) == "2.50 credits"
    assert charge_text(0, Plan(type="unlimited")).startswith("—")
