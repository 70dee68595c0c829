"""The pipeline's decisions, as plain functions."""

from datetime import UTC, datetime

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from shared.config import Config
from shared.domain import states
from shared.domain.call_settings import CallSettings, parse_call_settings
from shared.domain.calling_window import is_allowed_time
from shared.domain.decisions import (
    BalanceDecision,
    BalanceStep,
    DialStep,
    PollStep,
    balance_now_covers,
    decide_after_call,
    decide_dial,
    decide_failed_round,
    decide_insufficient_balance,
    decide_next_phone,
    decide_poll,
    first_dialable_phone,
    next_poll_delay_s,
)
from shared.domain.outcomes import Outcome, call_reason
from shared.domain.reasons import MAX_TEXT, because

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
    assert d.step == DialStep.SETTINGS_INVALID and "ring_timeout" in d.reason.text()


def test_outside_window_goes_to_monday_nine():
    d = decide(now=SATURDAY)
    assert d.step == DialStep.OUTSIDE_WINDOW
    assert d.next_try_at == datetime(2026, 3, 9, 12, 0, tzinfo=UTC)  # Monday 09:00 in Santiago
    assert "America/Santiago" in d.reason.text()


def test_window_is_checked_before_attempts():
    assert decide(job(tries=3), now=SATURDAY).step == DialStep.OUTSIDE_WINDOW
    d = decide(job(tries=3))
    assert d.step == DialStep.MAX_ATTEMPTS and d.reason.code == "max_attempts"
    assert d.reason.text() == "max attempts reached (3)"


def test_spanish_reasons():
    d = decide_dial(job(tries=3), lease_owner="tok", batch=BATCH, settings=WEEKDAYS_9_18, settings_error=None,
                    now=MONDAY_NOON, lang="es")
    assert d.reason.text("es") == "máximo de intentos alcanzado (3)"


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
    d = decide(j, lease=lease, batch=batch, settings=WEEKDAYS_9_18 if settings_ok else None,
               error=None if settings_ok else "bad", now=now)
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


# -- after a call: the job's next state --------------------------------------------------------------------

NOW_MS = 1_772_463_600_000
CONFIG = Config(max_tries=3, retry_delay_minutes=90)
DEFAULTS = parse_call_settings(None, config=CONFIG)


def after(j, reason=None, settings=None, **kw):
    reason = reason or because("text", text="no answer")
    if isinstance(reason, str):
        reason = because("text", text=reason)
    settings = settings if isinstance(settings, CallSettings) else parse_call_settings(settings, config=CONFIG)
    return decide_next_phone(j, reason, settings, now_ms=NOW_MS, config=CONFIG, **kw)


def apply(j, change):
    """The document after ``change`` is written (what ``JobStore.apply_decision`` does to it)."""
    assert all(j.get(k) == v for k, v in change.where.items()), "a write on what was read"
    doc = {**j, **change.set_, "status": change.status}
    for name in change.unset:
        doc.pop(name, None)
    return doc


def test_a_next_phone_is_due_now_in_the_same_round():
    change = after(job(), "busy")
    assert (change.status, change.set_["phone_index"], change.set_["next_try_at"]) == (states.PENDING, 1, NOW_MS)
    assert change.set_["last_error"] == "busy" and "tries" not in change.set_
    assert change.where == {"phone_index": 0, "tries": 0}


def test_the_round_fails_after_the_last_phone_and_waits_the_delay_of_its_outcome():
    settings = {"retry_delay_hours": 4, "max_attempts": 5, "retry_delay_by_outcome": {"busy": 0.25}}
    change = after(job(phone_index=1), "busy", settings, outcome="busy")
    assert change.status == states.RETRY_WAIT and change.set_["tries"] == 1 and change.set_["phone_index"] == 0
    assert change.set_["next_try_at"] == NOW_MS + 15 * 60_000
    assert after(job(phone_index=1), "no answer", settings, outcome="no_answer").set_["next_try_at"] \
        == NOW_MS + 4 * 3_600_000
    assert after(job(phone_index=1)).set_["next_try_at"] == NOW_MS + 90 * 60_000  # no settings: the configuration


def test_the_last_round_fails_the_job_now_and_says_why():
    change = decide_failed_round(job(tries=2), call_reason(Outcome.BUSY), WEEKDAYS_9_18, now_ms=NOW_MS, config=CONFIG)
    assert change.status == states.FAILED and change.set_["tries"] == 3
    assert change.set_["last_error"] == "max attempts reached (3): busy"
    # finished_at and the dropped due time are the job store's rule for every final state, not each decision's
    assert "finished_at" not in change.set_ and "next_try_at" not in change.set_


def test_every_number_invalid_fails_for_good():
    change = after(job(invalid_phones=[1]), "invalid number", invalid=True)
    assert change.status == states.FAILED and change.set_["invalid_phones"] == [0, 1]
    assert change.set_["last_error"] == "no valid phone number: invalid number"


def test_long_reasons_are_clipped():
    assert len(after(job(), "x" * 2000).set_["last_error"]) == MAX_TEXT


def test_after_call_by_effect():
    j = job(status=states.IN_CALL, call_id="c1")

    def ac(outcome):
        return decide_after_call(j, outcome, call_reason(outcome), DEFAULTS, now_ms=NOW_MS, config=CONFIG)

    done = ac(Outcome.ANSWERED)
    assert done.status == states.COMPLETED and done.where == {"call_id": "c1"}
    assert done.set_ == {"outcome": "answered"}
    assert ac(Outcome.VOICEMAIL).status == states.PENDING
    assert ac(Outcome.INVALID_NUMBER).set_["invalid_phones"] == [0]
    timeout = ac(Outcome.TIMEOUT)
    assert timeout.status == states.RETRY_WAIT and timeout.set_["tries"] == 1
    assert ac(Outcome.PROVIDER_FAULT) is None and ac(Outcome.ACCOUNT_PROBLEM) is None


def test_after_a_call_of_a_cancelled_batch_the_job_waits_for_nothing():
    """The batch was cancelled (or is gone) while the call went on: whatever would have made the job wait (the next
    phone, the next round, a free retry, a held workspace) cancels it; a conversation still completes it, and a
    call that ends the contact for good (its last round, its last valid number) still fails it."""
    j = job(status=states.IN_CALL, call_id="c1")
    cancelled, gone = because("batch_cancelled"), because("batch_not_found")

    def ac(outcome, stopped=cancelled, doc=j):
        return decide_after_call(doc, outcome, call_reason(outcome), DEFAULTS, now_ms=NOW_MS, config=CONFIG,
                                 stopped=stopped)

    for outcome in Outcome:
        change = ac(outcome)
        assert change is not None and change.where == {"call_id": "c1"}
        if outcome == Outcome.ANSWERED:
            assert change.status == states.COMPLETED
        else:
            assert change.status == states.CANCELLED, outcome
            assert change.set_ == cancelled.fields("en") and change.unset == ()
    assert ac(Outcome.NO_ANSWER, stopped=gone).set_["reason_code"] == "batch_not_found"
    assert ac(Outcome.TIMEOUT, doc={**j, "tries": 2}).status == states.FAILED   # its last round
    assert ac(Outcome.INVALID_NUMBER, doc={**j, "invalid_phones": [1]}).status == states.FAILED


def test_reasons_are_written_as_a_code_and_in_the_configured_language():
    change = decide_failed_round(job(tries=2), call_reason(Outcome.BUSY, "dial_busy"), WEEKDAYS_9_18,
                                 now_ms=NOW_MS, config=Config(lang="es"))
    assert change.set_["reason_code"] == "max_attempts_after"
    last = {"code": "call_outcome", "params": {"outcome": "busy", "provider": "dial_busy"}}
    assert change.set_["reason_params"] == {"limit": 3, "last": last}
    assert change.set_["last_error"] == "máximo de intentos alcanzado (3): ocupado (dial_busy)"


@given(phones=st.integers(1, 4), invalid=st.sets(st.integers(0, 3)), limit=st.integers(1, 5),
       marks=st.lists(st.booleans(), min_size=40, max_size=40))
def test_unanswered_calls_spend_the_rounds_then_fail(phones, invalid, limit, marks):
    """Calls that never reach the contact walk the numbers not known invalid, round after round; the job ends
    failed after ``max_attempts`` rounds (or at once when no valid number is left), never dialing an invalid
    number, and ``tries`` counts the rounds."""
    bad = sorted(i for i in invalid if i < phones)
    j = job(contact={"phones": [f"+5696123456{i}" for i in range(phones)]}, invalid_phones=bad)
    j["phone_index"] = first_dialable_phone(j)
    assume(j["phone_index"] is not None)  # no valid number at all: the dial decision fails the job (NO_PHONE)
    settings = {"max_attempts": limit, "retry_delay_hours": 1}
    calls = 0
    for mark in marks:
        if j["status"] == states.FAILED:
            break
        assert j["phone_index"] is not None and j["phone_index"] not in j["invalid_phones"]
        calls += 1
        change = after(j, "no answer", settings, invalid=mark)
        j = apply(j, change)
        if j["status"] == states.RETRY_WAIT:
            assert j["next_try_at"] == NOW_MS + 3_600_000 and j["tries"] < limit
            j["phone_index"] = first_dialable_phone(j)
        elif j["status"] == states.PENDING:
            assert j["next_try_at"] == NOW_MS
    else:
        return  # more calls than the sample of marks covers
    assert j["status"] == states.FAILED
    left = phones - len(j["invalid_phones"])
    if left:
        assert j["tries"] == limit and j["last_error"].startswith(f"max attempts reached ({limit})")
    else:
        assert j["last_error"].startswith("no valid phone number")
    assert calls <= limit * phones


# -- a reservation refused ------------------------------------------------------------------------------


def test_insufficient_balance_fails_unless_the_batch_waits():
    assert decide_insufficient_balance(parse_call_settings(None), unknown_account=False) == BalanceDecision(
        BalanceStep.FAIL, because("insufficient_balance"))
    waits = decide_insufficient_balance(parse_call_settings({"on_insufficient_balance": "wait"}), unknown_account=True)
    assert waits.step == BalanceStep.WAIT and waits.reason.text("es") == "cuenta no encontrada"
    fails = decide_insufficient_balance(parse_call_settings({"on_insufficient_balance": "fail"}), unknown_account=True)
    assert fails.step == BalanceStep.FAIL and fails.reason == because("unknown_account")



@pytest.mark.parametrize("policy", ["fail", "wait"])
def test_balance_held_by_calls_in_progress_is_tried_again_whatever_the_policy(policy):
    settings = parse_call_settings({"on_insufficient_balance": policy})
    held = decide_insufficient_balance(settings, unknown_account=False, held_by_calls=True)
    assert held == BalanceDecision(BalanceStep.RETRY, because("held_by_calls"))
    assert held.reason.text("es").startswith("el saldo restante está retenido por llamadas en curso")
    assert decide_insufficient_balance(settings, unknown_account=False).step == BalanceStep(policy)

def test_a_parked_job_goes_back_at_once_when_the_call_now_fits():
    assert balance_now_covers(metered=True, available=60, needed=60, unknown_account=False)
    assert not balance_now_covers(metered=True, available=59, needed=60, unknown_account=False)
    assert not balance_now_covers(metered=True, available=60, needed=0, unknown_account=False)
    assert balance_now_covers(metered=False, available=0, needed=60, unknown_account=False)
    assert balance_now_covers(metered=True, available=0, needed=60, unknown_account=True)


# -- an ambiguous create: sent again while its key protects it, not placed only once its last send settled ---------

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from shared.domain.decisions import (  # noqa: E402
    REPLAY_CAP_S,
    ReconcileStep,
    decide_reconcile,
    not_placed_settled,
    replay_delay_s,
)


@given(age=st.floats(0, 10_000), window=st.floats(1, 5_000), can_send=st.booleans())
def test_an_ambiguous_create_is_sent_again_exactly_while_its_key_protects_it(age, window, can_send):
    step = decide_reconcile(age_real_s=age, replay_window_s=window, can_send=can_send)
    assert (step == ReconcileStep.REPLAY) == (can_send and age < window)


@given(replays=st.integers(0, 1_000), base=st.floats(0.1, 10))
def test_sends_again_back_off_and_never_shrink_or_exceed_the_cap(replays, base):
    wait = replay_delay_s(replays, base_s=base)
    assert min(base, REPLAY_CAP_S) <= wait <= REPLAY_CAP_S
    assert replay_delay_s(replays + 1, base_s=base) >= wait


@given(last_sent=st.integers(0, 10**13), settle=st.integers(0, 10**7), after=st.integers(-10**7, 10**7))
def test_not_placed_never_before_the_last_send_settled(last_sent, settle, after):
    now = last_sent + settle + after
    assert not_placed_settled(now_ms=now, last_sent_ms=last_sent, settle_ms=settle) == (after >= 0)


def test_a_dial_result_is_the_string_it_always_was():
    from shared.domain.decisions import DialResult

    words = {"dialed", "no_slot", "held_by_calls", "capped", "reconcile", "orphaned", "recorded_elsewhere",
             "invalid_number", "held", "provider_error", "refused"}
    assert words <= {result.value for result in DialResult}
    assert all(DialResult(word) == word and str(DialResult(word)) == word for word in words)
    assert {f"aborted_{kind}" for kind in ("cancelled", "dnc", "clock", "fence", "window")} <= set(DialResult)
    assert {DialResult(status) for status in (states.FAILED, states.WAITING_BALANCE, states.PENDING)} <= set(DialResult)
