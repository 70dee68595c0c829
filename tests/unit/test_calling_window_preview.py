"""``upcoming_call_times``: the next instants a call could start, as the preview route lists them."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.config import Config
from shared.domain.call_settings import parse_call_settings
from shared.domain.calling_window import is_allowed_time, next_allowed_time, upcoming_call_times

CONFIG = Config()
TUESDAY = datetime(2026, 3, 3, 13, 0, tzinfo=UTC)   # 10:00 in Santiago


def local(times):
    return [t["local"].isoformat() for t in times]


def test_each_opening_once_in_order_and_every_one_allowed():
    settings = parse_call_settings({"windows": [{"days": [1, 2, 3, 4, 5], "start": "09:00", "end": "12:00"},
                                                {"days": [1, 2, 3, 4, 5], "start": "14:00", "end": "18:00"}],
                                    "timezone": "America/Santiago", "blackout_dates": ["2026-03-04"]}, config=CONFIG)
    times = upcoming_call_times(settings, TUESDAY, 5, config=CONFIG)
    assert local(times) == ["2026-03-03T10:00:00-03:00", "2026-03-03T14:00:00-03:00", "2026-03-05T09:00:00-03:00",
                            "2026-03-05T14:00:00-03:00", "2026-03-06T09:00:00-03:00"]   # Wednesday is blacked out
    assert [t["rule_index"] for t in times] == [0, 1, 0, 1, 0]
    assert times[0]["at"] == next_allowed_time(settings, TUESDAY, config=CONFIG)
    assert all(is_allowed_time(settings, t["at"], config=CONFIG)[0] for t in times)


def test_an_overnight_window_is_one_opening_per_night():
    settings = parse_call_settings({"days_of_week": [6], "allowed_hours": {"start": "22:00", "end": "02:00"},
                                    "timezone": "UTC"}, config=CONFIG)
    times = upcoming_call_times(settings, datetime(2026, 3, 8, 1, 0, tzinfo=UTC), 2, config=CONFIG)
    assert local(times) == ["2026-03-08T01:00:00+00:00", "2026-03-14T22:00:00+00:00"]   # inside Saturday's night
    assert times[0]["rule"] == "Sat 22:00-02:00"


def test_any_time_is_one_entry_and_a_day_closed_by_a_holiday_moves_to_the_next_day():
    assert len(upcoming_call_times(parse_call_settings(None, config=CONFIG), TUESDAY, 5, config=CONFIG)) == 1
    holidays = parse_call_settings({"holidays": "CL", "timezone": "America/Santiago"}, config=CONFIG)
    times = upcoming_call_times(holidays,
                                datetime(2026, 9, 18, 12, 0, tzinfo=UTC), 2, config=CONFIG)
    assert local(times)[0] == "2026-09-20T00:00:00-03:00"     # 18 and 19 September are public holidays in Chile
