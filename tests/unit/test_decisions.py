"""The pipeline's decisions, as plain functions."""

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from shared import states
from shared.call_settings import parse_call_settings
from shared.calling_window import is_allowed_time
from shared.decisions import (
    DialStep,
    PollStep,
    decide_dial,
    decide_poll,
    first_dialable_phone,
    next_poll_delay_s,
)

WEEKDAYS_9_18 = parse_call_settings({"days_of_week": [1, 2, 3, 4, 5],
                                     "allowed_hours": {"start": "09:00", "end": "18:00"},
                                     "timezone": "America/Santiago", "max_attempts": 3})
MONDAY_NOON = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)  # 12:00 in Santiago (UTC-3)
SATURDAY = datetime(2026, 3, 7, 18, 0, tzinfo=UTC)
PHONES = ["+56961234567", "+56961234568"]


def job(**over):
    doc = {"_id": "j" * 24, "status": states.QUEUED, "lease_owner": "tok", "tries": 0, "phone_index": 0,
           "invalid_phones": [], "contact": {"phones": list(PHONES)}}
    doc.update(over)
    return doc


BATCH = {"_id": "b" * 24, "status": states.BATCH_ACTIVE}


def decide(j=None, *, lease="tok", batch=BATCH, settings=WEEKDAYS_9_18, error=None, now=MONDAY_NOON):
    return decide_dial(job() if j is None else j, lease_owner=lease, batch=batch, settings=settings,
                       settings_error=error, now=now)


def test_proceed_inside_the_window():
    d = decide()
    assert d.step == DialStep.PROCEED and d.phone_index == 0


def test_stale_messages_do_nothing():
    assert decide_dial(None, lease_owner="tok", batch=BATCH, settings=WEEKDAYS_9_18, settings_error=None,
                       now=MONDAY_NOON).step == DialStep.STALE
    assert decide(job(status=states.DIALING)).step == DialStep.STALE
    assert decide(lease="other").step == DialStep.STALE


def test_batch_states():
    assert decide(batch=None).step == DialStep.BATCH_GONE
    assert decide(batch={**BATCH, "status": states.BATCH_PAUSED}).step == DialStep.PAUSED
    assert decide(batch={**BATCH, "status": states.BATCH_CANCELLED}).step == DialStep.CANCELLED
    d = decide(error="ring_timeout: must be between 5 and 300")
    assert d.step == DialStep.SETTINGS_INVALID and "ring_timeout" in d.reason


def test_outside_window_goes_to_monday_nine():
    d = decide(now=SATURDAY)
    assert d.step == DialStep.OUTSIDE_WINDOW
    assert d.next_try_at == datetime(2026, 3, 9, 12, 0, tzinfo=UTC)  # Monday 09:00 in Santiago
    assert "America/Santiago" in d.reason


def test_window_is_checked_before_attempts():
    assert decide(job(tries=3), now=SATURDAY).step == DialStep.OUTSIDE_WINDOW
    d = decide(job(tries=3))
    assert d.step == DialStep.MAX_ATTEMPTS and d.reason == "max attempts reached (3)"


def test_spanish_reasons():
    d = decide_dial(job(tries=3), lease_owner="tok", batch=BATCH, settings=WEEKDAYS_9_18, settings_error=None,
                    now=MONDAY_NOON, lang="es")
    assert d.reason == "máximo de intentos alcanzado (3)"


def test_invalid_phones_are_skipped_and_exhaustion_fails():
    assert decide(job(invalid_phones=[0])).phone_index == 1
    assert decide(job(invalid_phones=[0, 1])).step == DialStep.NO_PHONE
    assert first_dialable_phone(job(phone_index=1, invalid_phones=[1])) is None


def test_auto_zone_uses_the_number_dialed():
    auto = parse_call_settings({"allowed_hours": {"start": "09:00", "end": "18:00"}, "timezone": "auto"})
    new_york_noon = datetime(2026, 3, 2, 17, 0, tzinfo=UTC)  # 12:00 in New York, 14:00 in Santiago
    us = job(contact={"phones": ["+12125550123"]})
    assert decide(us, settings=auto, now=new_york_noon).step == DialStep.PROCEED
    early = datetime(2026, 3, 2, 12, 30, tzinfo=UTC)  # 07:30 in New York
    assert decide(us, settings=auto, now=early).step == DialStep.OUTSIDE_WINDOW


def test_contact_timezone_wins():
    tokyo = job(contact={"phones": list(PHONES), "timezone": "Asia/Tokyo"})
    assert decide(tokyo).step == DialStep.OUTSIDE_WINDOW  # 00:00 in Tokyo


@given(status=st.sampled_from(states.JOB_STATES), lease=st.sampled_from(["tok", "other"]),
       batch_status=st.sampled_from((*states.BATCH_STATES, "gone")), settings_ok=st.booleans(),
       tries=st.integers(0, 5), invalid=st.sets(st.integers(0, 1)),
       now=st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2028, 1, 1), timezones=st.just(UTC)))
def test_proceed_only_when_every_rule_allows(status, lease, batch_status, settings_ok, tries, invalid, now):
    j = job(status=status, tries=tries, invalid_phones=sorted(invalid))
    batch = None if batch_status == "gone" else {**BATCH, "status": batch_status}
    d = decide(j, lease=lease, batch=batch, settings=WEEKDAYS_9_18 if settings_ok else None, error="bad", now=now)
    ok_phone = first_dialable_phone(j)
    should = (status == states.QUEUED and lease == "tok" and batch_status == states.BATCH_ACTIVE and settings_ok
              and ok_phone is not None and tries < 3
              and is_allowed_time(WEEKDAYS_9_18, now, PHONES[ok_phone])[0])
    assert (d.step == DialStep.PROCEED) == should
    if d.step == DialStep.OUTSIDE_WINDOW:
        assert d.next_try_at > now
        assert is_allowed_time(WEEKDAYS_9_18, d.next_try_at, PHONES[ok_phone])[0]


def test_poll_decisions():
    common = {"created_ms": 0, "max_call_duration_s": 600, "ring_timeout_s": 30, "grace_s": 30, "stop_grace_s": 60}
    assert decide_poll(final=True, start_ms=1, now_ms=10, **common) == PollStep.FINALIZE
    assert decide_poll(final=True, start_ms=None, now_ms=10**9, **common) == PollStep.FINALIZE
    assert decide_poll(final=False, start_ms=0, now_ms=600_000, **common) == PollStep.WAIT
    assert decide_poll(final=False, start_ms=0, now_ms=630_001, **common) == PollStep.STOP
    assert decide_poll(final=False, start_ms=None, now_ms=600_000, **common) == PollStep.WAIT
    assert decide_poll(final=False, start_ms=None, now_ms=660_001, **common) == PollStep.STOP
    assert decide_poll(final=False, start_ms=0, now_ms=720_001, **common) == PollStep.FORCE_END
    assert decide_poll(final=False, start_ms=None, now_ms=720_001, **common) == PollStep.FORCE_END


@given(st.integers(min_value=0, max_value=10**7), st.one_of(st.none(), st.integers(min_value=0, max_value=400_000)),
       st.integers(min_value=60, max_value=7200), st.integers(min_value=5, max_value=300))
def test_no_attempt_outlives_its_deadline_by_more_than_the_stop_grace(now_ms, start_ms, longest_s, ring_s):
    # Whatever the provider says (still going, or nothing), the steps only move forward in time:
    # wait, then stop, then the forced end a stop grace after the deadline.
    common = {"created_ms": 0, "max_call_duration_s": longest_s, "ring_timeout_s": ring_s, "grace_s": 30,
              "stop_grace_s": 60}
    deadline = (ring_s + longest_s + 30) * 1000
    step = decide_poll(final=False, start_ms=start_ms, now_ms=now_ms, **common)
    if now_ms > deadline + 60_000:
        assert step == PollStep.FORCE_END
    elif now_ms > deadline:
        assert step == PollStep.STOP
    else:
        assert step in (PollStep.WAIT, PollStep.STOP)
        later = decide_poll(final=False, start_ms=start_ms, now_ms=deadline + 60_001, **common)
        assert later == PollStep.FORCE_END


def test_poll_delays_grow_to_a_cap():
    delays = [next_poll_delay_s(n) for n in range(6)]
    assert delays[0] == 10 and delays == sorted(delays) and delays[-1] == 30
