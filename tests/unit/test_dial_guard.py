"""The dial guard: no call is started so close to a window's end that it reaches the provider after it."""

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.domain import states
from shared.domain.call_settings import parse_call_settings
from shared.domain.calling_window import is_allowed_time
from shared.domain.decisions import DialStep, decide_dial

COLLECTIONS = parse_call_settings({"days_of_week": [1, 2, 3, 4, 5, 6],
                                   "allowed_hours": {"start": "09:00", "end": "20:00"},
                                   "timezone": "America/Santiago", "max_attempts": 5})
#: Saturday 2026-07-04 19:50 in Santiago (UTC-4 in July).
SATURDAY_1950 = datetime(2026, 7, 4, 23, 50, tzinfo=UTC)
#: Monday 2026-07-06 09:00 in Santiago.
MONDAY_0900 = datetime(2026, 7, 6, 13, 0, tzinfo=UTC)
BATCH = {"_id": "b" * 24, "status": states.BATCH_ACTIVE}


def job():
    return {"_id": "j" * 24, "status": states.QUEUED, "lease_owner": "tok", "tries": 0, "phone_index": 0,
            "invalid_phones": [], "contact": {"phones": ["+56961234567"]}}


def decide(now, guard, lang="en"):
    return decide_dial(job(), lease_owner="tok", batch=BATCH, settings=COLLECTIONS, settings_error=None, now=now,
                       lang=lang, guard=guard)


def test_without_a_guard_the_last_minutes_are_dialed():
    assert decide(SATURDAY_1950, timedelta(0)).step == DialStep.PROCEED


def test_a_call_that_would_arrive_after_the_close_waits_for_the_next_opening():
    d = decide(SATURDAY_1950, timedelta(minutes=15))
    assert d.step == DialStep.OUTSIDE_WINDOW
    assert d.next_try_at == MONDAY_0900  # Sunday is not allowed
    assert d.reason.text().startswith("window closes within 900 s: outside allowed hours: Saturday 2026-07-04 20:05")


def test_the_reason_is_spanish_with_outdial_lang_es():
    d = decide(SATURDAY_1950, timedelta(minutes=15), lang="es")
    assert d.reason.text("es").startswith("la ventana cierra en menos de 900 s: fuera del horario permitido: sábado")


def test_a_guard_shorter_than_what_is_left_changes_nothing():
    assert decide(SATURDAY_1950, timedelta(minutes=9, seconds=59)).step == DialStep.PROCEED


def test_outside_the_window_the_guard_does_not_matter():
    d = decide(SATURDAY_1950 + timedelta(minutes=20), timedelta(minutes=15))
    assert d.step == DialStep.OUTSIDE_WINDOW and d.next_try_at == MONDAY_0900
    assert d.reason.text().startswith("outside allowed hours")


@settings(max_examples=300, deadline=None)
@given(minutes=st.integers(min_value=0, max_value=14 * 24 * 60), guard_s=st.integers(min_value=0, max_value=7200))
def test_every_decision_respects_the_guard(minutes, guard_s):
    now = datetime(2026, 7, 1, tzinfo=UTC) + timedelta(minutes=minutes)
    guard = timedelta(seconds=guard_s)
    d = decide(now, guard)
    if d.step == DialStep.PROCEED:
        assert is_allowed_time(COLLECTIONS, now)[0] and is_allowed_time(COLLECTIONS, now + guard)[0]
    else:
        assert d.step == DialStep.OUTSIDE_WINDOW
        assert d.next_try_at >= now and is_allowed_time(COLLECTIONS, d.next_try_at)[0]
        # at the instant it comes back, the guard is satisfied too (every window here is hours long)
        assert decide(d.next_try_at, guard).step == DialStep.PROCEED
