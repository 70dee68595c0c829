"""Retell webhook signatures: the reference test vector, tampering, keys, headers, freshness."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.provider.webhooks import DEFAULT_TOLERANCE_MS, sign_webhook, signature_digest, verify_webhook

BODY = '{"event":"call_ended"}'
KEY = "test-api-key"
TS = 1_700_000_000_000
DIGEST = "07024cabe7dd8f6d1c6e4a8324ca92c812e6ad4a7ee506c04f7e462e3321823e"
HEADER = f"v={TS},d={DIGEST}"


def test_reference_vector_digest():
    assert signature_digest(BODY, KEY, TS) == DIGEST
    assert sign_webhook(BODY, KEY, TS) == HEADER


@pytest.mark.parametrize("body", [BODY, BODY.encode()])
def test_reference_vector_verifies_as_text_or_bytes(body):
    assert verify_webhook(body, HEADER, KEY, now=TS + 1_000)


def test_now_may_be_a_datetime():
    assert verify_webhook(BODY, HEADER, KEY, now=datetime.fromtimestamp(TS / 1000 + 60, UTC))
    assert not verify_webhook(BODY, HEADER, KEY, now=datetime.fromtimestamp(TS / 1000 + 301, UTC))


def test_tampered_body_fails():
    assert not verify_webhook('{"event":"call_started"}', HEADER, KEY, now=TS)
    assert not verify_webhook(BODY + " ", HEADER, KEY, now=TS)


def test_reserialised_json_fails():
    assert not verify_webhook('{"event": "call_ended"}', HEADER, KEY, now=TS)


@pytest.mark.parametrize("key", ["test-api-key2", "Test-api-key", "", "other"])
def test_wrong_key_fails(key):
    assert not verify_webhook(BODY, HEADER, key, now=TS)


@pytest.mark.parametrize("header", [
    None, "", "garbage", f"v={TS}", f"d={DIGEST}", f"d={DIGEST},v={TS}", f"v={TS},d={DIGEST[:-1]}",
    f"v={TS},d={DIGEST}0", f"v={TS},d={DIGEST},x=1", f"v=-{TS},d={DIGEST}", f"v={TS}.5,d={DIGEST}",
    f"v= {TS},d={DIGEST}", f"v={TS};d={DIGEST}", f"v={TS},d={'g' * 64}", f"t={TS},d={DIGEST}",
])
def test_malformed_header_fails(header):
    assert not verify_webhook(BODY, header, KEY, now=TS)


def test_uppercase_hex_and_surrounding_space_are_accepted():
    assert verify_webhook(BODY, f"  v={TS},d={DIGEST.upper()} ", KEY, now=TS)


@pytest.mark.parametrize("offset_ms,ok", [
    (0, True), (DEFAULT_TOLERANCE_MS, True), (-DEFAULT_TOLERANCE_MS, True),
    (DEFAULT_TOLERANCE_MS + 1, False), (-DEFAULT_TOLERANCE_MS - 1, False), (3_600_000, False),
])
def test_timestamp_window_is_five_minutes_both_ways(offset_ms, ok):
    assert verify_webhook(BODY, HEADER, KEY, now=TS + offset_ms) is ok


def test_default_now_is_the_real_time():
    header = sign_webhook(BODY, KEY)
    assert verify_webhook(BODY, header, KEY)
    stale = sign_webhook(BODY, KEY, int(time.time() * 1000) - DEFAULT_TOLERANCE_MS - 60_000)
    assert not verify_webhook(BODY, stale, KEY)


@given(body=st.binary(max_size=2048), key=st.text(min_size=1, max_size=64),
       ts=st.integers(min_value=0, max_value=10**15), flip=st.integers(min_value=0, max_value=2047))
def test_sign_then_verify_and_any_flipped_byte_fails(body, key, ts, flip):
    header = sign_webhook(body, key, ts)
    assert verify_webhook(body, header, key, now=ts)
    if body:
        i = flip % len(body)
        tampered = body[:i] + bytes([body[i] ^ 0x01]) + body[i + 1:]
        assert not verify_webhook(tampered, header, key, now=ts)
