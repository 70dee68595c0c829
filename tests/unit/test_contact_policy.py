"""The contact policy's validation and cap arithmetic, against a brute-force counter."""

from datetime import UTC, datetime, timedelta

import pytest
import pytz
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.domain.compliance import REGISTRY, Cap
from shared.domain.contact_policy import (
    ContactPolicy,
    Limits,
    Touch,
    capped_until,
    contact_keys,
    day_start,
    limits_capped_until,
    limits_of,
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


# -- the caps of compliance profiles, with the account's policy ------------------------------------------------

NOON = datetime(2026, 3, 10, 17, 0, tzinfo=UTC)   # a Tuesday, 12:00 in New York


def _touch(at: datetime, n: int, *, outcome: str | None = "no_answer", talked: bool = False) -> Touch:
    ms = int(at.timestamp() * 1000)
    return Touch(at_ms=ms, attempt_id=f"a{n}", ended_ms=ms + 30_000, outcome=outcome,
                 answered_ms=ms + 30_000 if talked else None)


def test_a_rolling_hours_cap_frees_the_person_when_its_oldest_counted_call_leaves_the_span():
    cap = Limits(caps=(("us-fl", Cap(count=3, hours=24, rule="3 calls in 24 hours")),))
    calls = [_touch(NOON - timedelta(hours=h), i) for i, h in enumerate((20, 10, 2))]
    until, why = limits_capped_until(cap, calls, NOON, pytz.timezone("America/New_York"))
    assert until == NOON - timedelta(hours=20) + timedelta(seconds=30) + timedelta(hours=24)   # from its end
    assert why.code == "compliance" and why.text() == "us-fl: 3 calls in 24 hours"
    assert limits_capped_until(cap, calls[1:], NOON, pytz.UTC) is None


def test_a_cap_that_does_not_count_busy_calls_lets_them_through_but_counts_a_call_still_going():
    regf = REGISTRY.get("us-regf")
    assert regf is not None and regf.caps[0].counts is not None and "busy" not in regf.caps[0].counts
    limits = limits_of(None, [regf])
    assert limits is not None
    busy = [_touch(NOON - timedelta(hours=h), i, outcome="busy") for i, h in enumerate(range(1, 9))]
    assert limits_capped_until(limits, busy, NOON, pytz.timezone("America/New_York")) is None
    rang = [_touch(NOON - timedelta(hours=h), i) for i, h in enumerate(range(1, 8))]
    capped = limits_capped_until(limits, rang, NOON, pytz.timezone("America/New_York"))
    assert capped is not None and capped[1].params["profile"] == "us-regf"
    unknown = [*busy[:6], _touch(NOON - timedelta(minutes=5), 99, outcome=None)]   # not ended yet: counted
    assert limits_capped_until(limits, [*rang[:6], unknown[-1]], NOON, pytz.UTC) is not None


def test_the_quiet_days_count_the_conversation_day_as_day_one():
    regf = REGISTRY.get("us-regf")
    limits = limits_of(None, [regf])
    zone = pytz.timezone("America/New_York")
    talked = zone.localize(datetime(2026, 3, 12, 15, 0)).astimezone(UTC)   # Thursday the 12th
    until, why = limits_capped_until(limits, [_touch(talked, 1, outcome="answered", talked=True)],
                                     talked + timedelta(hours=2), zone)
    assert until == day_start(datetime(2026, 3, 19).date(), zone) and "7 days after" in why.text()


def test_a_cap_per_debt_counts_the_external_id_and_the_number_only_without_one():
    limits = Limits(caps=(("us-regf", Cap(count=7, days=7, per="debt")), ("x", Cap(count=1, days=1))))
    keys = contact_keys({"external_id": "D-1"}, "+12125550100")
    assert [c for _, c in limits.for_key("n:+12125550100", keys).caps] == [Cap(count=1, days=1)]
    assert len(limits.for_key("x:D-1", keys).caps) == 2
    alone = contact_keys({}, "+12125550100")
    assert len(limits.for_key("n:+12125550100", alone).caps) == 2


def test_the_stricter_of_the_policy_and_a_profile_wins():
    policy = ContactPolicy(max_calls_per_day=5)
    cl = REGISTRY.get("cl-cobranza")
    limits = limits_of(policy, [cl])
    zone = pytz.timezone("America/Santiago")
    one = [_touch(NOON - timedelta(days=2), 1)]
    until, why = limits_capped_until(limits, one, NOON, zone)
    assert until == day_start((NOON - timedelta(days=2)).astimezone(zone).date() + timedelta(days=7), zone)
    assert why.params["profile"] == "cl-cobranza"
    assert limits_of(None, []) is None and limits_of(policy, []) == Limits(policy=policy)
    assert limits.history_days >= 8


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(count=st.integers(1, 5), hours=st.integers(1, 72),
       ages=st.lists(st.integers(0, 100 * 60), max_size=12), outcomes=st.lists(st.sampled_from(
           [None, "no_answer", "busy", "answered"]), min_size=12, max_size=12))
def test_an_hours_cap_against_a_brute_force_counter(count, hours, ages, outcomes):
    cap = Cap(count=count, hours=hours, counts=("no_answer", "answered"))
    calls = [Touch(at_ms=int((NOON - timedelta(minutes=a)).timestamp() * 1000), attempt_id=f"a{i}",
                   ended_ms=int((NOON - timedelta(minutes=a)).timestamp() * 1000), outcome=outcomes[i])
             for i, a in enumerate(ages)]
    found = limits_capped_until(Limits(caps=(("p", cap),)), calls, NOON, pytz.UTC)

    def allowed(at: datetime) -> bool:
        span = at - timedelta(hours=hours)
        return sum(1 for c in calls if (c.outcome is None or c.outcome in cap.counts)
                   and span < datetime.fromtimestamp(c.ended_ms / 1000, UTC) <= at) < count

    if found is None:
        assert allowed(NOON)
        return
    until = found[0]
    assert not allowed(NOON) and allowed(until)
    assert not allowed(until - timedelta(seconds=1))
