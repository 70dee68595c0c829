"""The original worker's documents read as outdial's (:mod:`shared.domain.legacy`): pure rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from bson import ObjectId
from hypothesis import given
from hypothesis import strategies as st

from shared.domain import states
from shared.domain.legacy import STATE_TABLE, LegacyProblem, instant_ms, legacy_id, map_batch, map_job

NOW = 1_772_542_800_000          # 2026-03-03 13:00 UTC
HOLD = 15 * 60_000


def job(**fields):
    return {"_id": ObjectId(), "status": "pending", "contact": {"phones": ["+56961234567"]}, **fields}


def test_ids_become_their_lowercase_hex_and_strings_stay():
    oid = ObjectId()
    assert legacy_id(oid) == str(oid) and legacy_id(str(oid).upper()) == str(oid)
    assert legacy_id("batch-7") == "batch-7" and legacy_id(None) is None and legacy_id("  ") is None


@given(st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1)))
def test_a_naive_datetime_is_utc_and_an_aware_one_keeps_its_instant(moment):
    ms = instant_ms(moment, "next_try_at")
    assert ms == int(moment.replace(tzinfo=UTC).timestamp() * 1000)
    shifted = moment.replace(tzinfo=UTC).astimezone(timezone(timedelta(hours=-4)))
    assert instant_ms(shifted, "next_try_at") == ms
    assert instant_ms(shifted.isoformat(), "next_try_at") == ms


def test_numbers_are_milliseconds_or_seconds_and_anything_else_is_refused_by_name():
    assert instant_ms(NOW, "x") == NOW and instant_ms(NOW / 1000, "x") == NOW
    assert instant_ms(None, "x") is None and instant_ms("", "x") is None
    for bad in ("tomorrow", True, [1]):
        with pytest.raises(LegacyProblem) as info:
            instant_ms(bad, "reserved_until")
        assert info.value.field == "reserved_until"


def test_a_batch_takes_its_name_account_and_settings_as_they_are():
    oid = ObjectId()
    batch = map_batch({"_id": oid, "batch_name": " Cobranza ", "account_id": "acme",
                       "call_settings": {"max_attempts": 5}}, default_account=None)
    assert batch.legacy_id == str(oid)
    assert batch.body == {"name": "Cobranza", "account_id": "acme", "call_settings": {"max_attempts": 5}}
    plain = map_batch({"_id": oid, "name": "x"}, default_account="fallback")
    assert plain.body == {"name": "x", "account_id": "fallback"}          # no call_settings: the defaults
    for doc, field in (({"_id": oid}, "batch_name"), ({"_id": oid, "name": "x"}, "account_id"),
                       ({"name": "x", "account_id": "a"}, "_id")):
        with pytest.raises(LegacyProblem) as info:
            map_batch(doc, default_account=None)
        assert info.value.field == field


def test_final_statuses_stay_final_with_their_error():
    for status in ("done", "completed", "success", "DONE"):
        assert map_job(job(status=status), now_ms=NOW, in_progress_hold_ms=HOLD).status == states.COMPLETED
    failed = map_job(job(status="failed", last_error="Máximo de intentos", tries=3), now_ms=NOW,
                     in_progress_hold_ms=HOLD)
    assert (failed.status, failed.last_error, failed.tries, failed.next_try_at) == (states.FAILED,
                                                                                    "Máximo de intentos", 3, None)


def test_the_contact_keeps_its_phones_name_variables_and_an_external_id():
    doc = job(context={"deuda": 45000}, contact={"phones": ["+56961234567", "+56961234568"], "name": "Ana",
                                                 "rut": "1-9"})
    mapped = map_job(doc, now_ms=NOW, in_progress_hold_ms=HOLD)
    assert mapped.contact == {"phones": ["+56961234567", "+56961234568"], "name": "Ana",
                              "external_id": str(doc["_id"]), "variables": {"deuda": 45000, "rut": "1-9"}}
    with pytest.raises(LegacyProblem) as info:
        map_job(job(contact={}), now_ms=NOW, in_progress_hold_ms=HOLD)
    assert info.value.field == "contact.phones"


@given(status=st.text(max_size=12))
def test_an_unknown_status_is_refused_never_guessed(status):
    if status.strip().lower() in STATE_TABLE:
        return
    with pytest.raises(LegacyProblem) as info:
        map_job(job(status=status), now_ms=NOW, in_progress_hold_ms=HOLD)
    assert info.value.field == "status"


offsets = st.one_of(st.none(), st.integers(min_value=-30 * 86_400_000, max_value=30 * 86_400_000))


@given(status=st.sampled_from(["pending", "in_progress"]), due=offsets, reserved=offsets,
       tries=st.integers(min_value=0, max_value=20))
def test_an_open_job_is_never_due_before_its_reservation_ends_and_keeps_its_tries(status, due, reserved, tries):
    doc = job(status=status, tries=tries)
    if due is not None:
        doc["next_try_at"] = datetime.fromtimestamp((NOW + due) / 1000, UTC).replace(tzinfo=None)
    if reserved is not None:
        doc["reserved_until"] = datetime.fromtimestamp((NOW + reserved) / 1000, UTC).replace(tzinfo=None)
    mapped = map_job(doc, now_ms=NOW, in_progress_hold_ms=HOLD)
    assert mapped.status == states.PENDING and mapped.tries == tries
    assert mapped.next_try_at is not None
    if reserved is not None:
        assert mapped.next_try_at >= NOW + reserved // 1000 * 1000 - 1000
    if status == "in_progress":
        assert mapped.next_try_at >= NOW                              # a call may still be on its way
        if reserved is None:
            assert mapped.next_try_at == NOW + HOLD
    elif due is not None and (reserved is None or reserved <= due):
        assert abs(mapped.next_try_at - (NOW + due)) < 1000             # its own due time (datetimes hold ms)


def test_bad_tries_are_refused_by_name():
    for bad in (-1, "2", 1.5, True):
        with pytest.raises(LegacyProblem) as info:
            map_job(job(tries=bad), now_ms=NOW, in_progress_hold_ms=HOLD)
        assert info.value.field == "tries"
