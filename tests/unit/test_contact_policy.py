"""The contact policy's validation and cap arithmetic, against a brute-force counter."""

from datetime import UTC, datetime, timedelta

import pytest
import pytz
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.domain.contact_policy import (
    ContactPolicy,
    Touch,
    capped_until,
    contact_keys,
    day_start,
    parse_contact_policy,
)
from shared.errors import ValidationError

REG_F = {"max_calls": {"count": 7, "days": 7}, "max_calls_per_day": 2, "quiet_days_after_answer": 7}
ZONES = ["UTC", "America/Santiago", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "Pacific/Apia",
         "Europe/London", "America/Sao_Paulo"]
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


def test_regulation_f_round_trips():
    policy = parse_contact_policy(REG_F)
    assert policy == ContactPolicy(max_calls=7, max_calls_days=7, max_calls_per_day=2, quiet_days_after_answer=7)
    assert policy.to_document() == REG_F
    assert ContactPolicy.from_document(policy.to_document()) == policy
    assert parse_contact_policy(None) is None and parse_contact_policy({}) is None


@pytest.mark.parametrize(("raw", "fields"), [
    ([], ["contact_policy"]),
    ({"max_calls": 7}, ["contact_policy.max_calls"]),
    ({"max_calls": {"count": 7}}, ["contact_policy.max_calls.days"]),
    ({"max_calls": {"count": 0, "days": 400, "per": 1}},
     ["contact_policy.max_calls.per", "contact_policy.max_calls.count", "contact_policy.max_calls.days"]),
    ({"max_calls_per_day": 1.5, "quiet_days_after_answer": True, "quiet": 3},
     ["contact_policy.quiet", "contact_policy.max_calls_per_day", "contact_policy.quiet_days_after_answer"]),
])
def test_every_bad_field_is_named(raw, fields):
    with pytest.raises(ValidationError) as caught:
        parse_contact_policy(raw)
    assert [name for name, _ in caught.value.errors] == fields


def test_keys_are_the_number_and_the_external_id():
    assert contact_keys({"phones": ["+1"]}, "+1") == ["n:+1"]
    assert contact_keys({"external_id": "D-7"}, "+1") == ["n:+1", "x:D-7"]


def _at(zone: str, *args: int) -> int:
    return int(pytz.timezone(zone).localize(datetime(*args)).timestamp() * 1000)


def test_two_calls_today_wait_for_tomorrow_midnight_local():
    policy = parse_contact_policy({"max_calls_per_day": 2})
    zone = pytz.timezone("America/Santiago")
    calls = [Touch(_at("America/Santiago", 2026, 3, 2, 9), "a"), Touch(_at("America/Santiago", 2026, 3, 2, 11), "b")]
    now = datetime.fromtimestamp(_at("America/Santiago", 2026, 3, 2, 15) / 1000, UTC)
    until, why = capped_until(policy, calls, now, zone)
    assert until == zone.localize(datetime(2026, 3, 3)).astimezone(UTC)
    assert "2 calls on 2026-03-02" in why.text()
    assert capped_until(policy, calls[:1], now, zone) is None


def test_a_conversation_starts_seven_quiet_days_counting_its_own():
    policy = parse_contact_policy(REG_F)
    zone = pytz.timezone("America/New_York")
    talk = _at("America/New_York", 2026, 3, 2, 10)
    now = datetime.fromtimestamp((talk + 3 * DAY_MS) / 1000, UTC)
    until, why = capped_until(policy, [Touch(talk, "a", answered_ms=talk + 60_000)], now, zone)
    assert until == zone.localize(datetime(2026, 3, 9)).astimezone(UTC)   # Monday 2nd is day 1 of 7
    assert "quiet days" in why.text()


def test_a_call_in_progress_holds_the_next_one_and_it_is_decided_again_a_minute_later():
    zone = pytz.timezone("UTC")
    now = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    now_ms = int(now.timestamp() * 1000)
    ongoing = Touch(now_ms - 60_000, "a", until_ms=now_ms + 600_000)
    until, why = capped_until(parse_contact_policy({"max_calls_per_day": 9}), [ongoing], now, zone)
    assert until == now + timedelta(minutes=1) and why.text() == "contact policy: a call to this person is in progress"
    closing = Touch(now_ms - 60_000, "a", until_ms=now_ms + 20_000)   # sooner than a minute: its latest end
    assert capped_until(parse_contact_policy({"max_calls_per_day": 9}), [closing], now, zone)[0] == (
        now + timedelta(seconds=20))
    ended = Touch(now_ms - 60_000, "a", until_ms=now_ms + 600_000, ended_ms=now_ms - 1000)
    assert capped_until(parse_contact_policy({"max_calls_per_day": 9}), [ended], now, zone) is None
    until, why = capped_until(parse_contact_policy({"max_calls_per_day": 1}), [ongoing], now, zone)
    assert until == datetime(2026, 3, 3, tzinfo=UTC) and "1 calls on 2026-03-02" in why.text()   # the later of the two


def test_a_day_that_starts_after_a_gap_starts_at_the_gap():
    zone = pytz.timezone("America/Santiago")   # 2026-09-06 00:00 does not exist: clocks go to 01:00
    start = day_start(datetime(2026, 9, 6).date(), zone)
    assert start.astimezone(zone).date().isoformat() == "2026-09-06"
    assert (start - timedelta(seconds=1)).astimezone(zone).date().isoformat() == "2026-09-05"


def _allowed(policy: ContactPolicy, touches: list[Touch], t_ms: int, zone) -> bool:
    """Brute force: count the touches by local day at ``t_ms``, as the policy's text says."""
    def day(ms):
        return datetime.fromtimestamp(ms / 1000, tz=zone).date()

    today = day(t_ms)
    days = [day(x.at_ms) for x in touches]
    if policy.max_calls_per_day is not None and days.count(today) >= policy.max_calls_per_day:
        return False
    if policy.max_calls is not None:
        span = {today - timedelta(days=k) for k in range(policy.max_calls_days)}
        if sum(d in span for d in days) >= policy.max_calls:
            return False
    quiet = timedelta(days=policy.quiet_days_after_answer or 0)
    return not any(x.answered_ms is not None and today < day(x.answered_ms) + quiet for x in touches)


def _busy_until(touches: list[Touch], t_ms: int) -> int | None:
    """The latest end of the calls that may still be going at ``t_ms`` (not ended, before ``until``)."""
    ends = [x.until_ms for x in touches
            if x.ended_ms is None and x.until_ms is not None and t_ms < x.until_ms]
    return max(ends) if ends else None


policies = st.builds(
    lambda count, days, per_day, quiet: ContactPolicy(
        max_calls=count, max_calls_days=days if count else None, max_calls_per_day=per_day,
        quiet_days_after_answer=quiet),
    st.none() | st.integers(1, 8), st.integers(1, 9), st.none() | st.integers(1, 4), st.none() | st.integers(1, 9))


@st.composite
def histories(draw):
    now_ms = draw(st.integers(_at("UTC", 2026, 1, 1), _at("UTC", 2027, 1, 1)))
    touches = []
    for i in range(draw(st.integers(0, 14))):
        at = now_ms - draw(st.integers(0, 12 * DAY_MS))
        answered = ended = None
        if draw(st.booleans()) and draw(st.booleans()):
            answered = ended = min(now_ms, at + draw(st.integers(0, HOUR_MS)))
        elif draw(st.booleans()):
            ended = min(now_ms, at + draw(st.integers(0, HOUR_MS)))
        until = at + draw(st.integers(0, 3 * HOUR_MS)) if draw(st.booleans()) else None
        touches.append(Touch(at, f"a{i}", answered, until_ms=until, ended_ms=ended))
    return now_ms, touches


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies, histories(), st.sampled_from(ZONES))
def test_capped_until_is_the_first_instant_the_brute_force_allows(policy, history, zone_name):
    now_ms, touches = history
    zone = pytz.timezone(zone_name)
    result = capped_until(policy, touches, datetime.fromtimestamp(now_ms / 1000, UTC), zone)
    busy = _busy_until(touches, now_ms)
    if result is None:
        assert busy is None and _allowed(policy, touches, now_ms, zone)
        return
    until_ms = round(result[0].timestamp() * 1000)
    assert until_ms > now_ms and result[1].text().startswith("contact policy: ")
    recheck = min(busy, now_ms + 60_000) if busy is not None else None
    if recheck is not None and _allowed(policy, touches, recheck, zone):
        assert until_ms == recheck and "in progress" in result[1].text()   # decided again when the call may be over
        return
    # the first instant the caps allow, found hour by hour and to the second
    assert _allowed(policy, touches, until_ms, zone)
    assert not _allowed(policy, touches, max(now_ms, until_ms - 1000), zone)
    assert recheck is None or until_ms > recheck
    t = now_ms
    while t < until_ms:
        assert not _allowed(policy, touches, t, zone)
        t += HOUR_MS


def test_a_call_placed_by_a_process_whose_time_reads_a_little_ahead_still_holds_the_next():
    zone = pytz.timezone("UTC")
    now = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    now_ms = int(now.timestamp() * 1000)
    ahead = Touch(now_ms + 5_000, "a", until_ms=now_ms + 600_000)   # placed "5 s from now" by another clock
    until, why = capped_until(parse_contact_policy({"max_calls_per_day": 9}), [ahead], now, zone)
    assert until == now + timedelta(minutes=1) and "in progress" in why.text()
