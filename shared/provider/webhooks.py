"""Retell webhook signatures: ``x-retell-signature: v=<timestamp_ms>,d=<hex>``.

The digest is HMAC-SHA256, keyed with the Retell API key (UTF-8), of the raw request body
exactly as received followed by the decimal timestamp, with no separator; lowercase hex.
A signature is accepted when the header is well formed, its timestamp is within
:data:`DEFAULT_TOLERANCE_MS` of now (either direction) and the digest matches (compared in
constant time). Re-serialised JSON does not verify: pass the bytes read from the request.

Which clock: the signature timestamp is a transport property (how fresh is this delivery),
not domain time, so signing and verifying both use the real Unix time, never the shared
clock. With the shared clock sped up (say an hour per second) a five-minute window on that
clock would be 83 real milliseconds, and any queued or retried delivery would be refused.
The call object inside the body keeps its own timestamps, which are on the shared clock.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from datetime import datetime

from shared.clock import to_ms

__all__ = ["DEFAULT_TOLERANCE_MS", "SIGNATURE_HEADER", "sign_webhook", "signature_digest", "verify_webhook"]

#: Header carrying the signature (HTTP header names are case-insensitive).
SIGNATURE_HEADER = "x-retell-signature"
#: Largest accepted distance between the signature timestamp and now, milliseconds (Retell: 5 minutes).
DEFAULT_TOLERANCE_MS = 5 * 60 * 1000

_HEADER = re.compile(r"v=(\d{1,16}),d=([0-9a-fA-F]{64})")


def _as_bytes(raw_body: bytes | bytearray | memoryview | str) -> bytes:
    if isinstance(raw_body, str):
        return raw_body.encode("utf-8")
    return bytes(raw_body)


def signature_digest(raw_body: bytes | str, api_key: str, timestamp_ms: int) -> str:
    """Lowercase hex HMAC-SHA256 of ``raw_body + str(timestamp_ms)`` keyed with ``api_key``."""
    message = _as_bytes(raw_body) + str(int(timestamp_ms)).encode("ascii")
    return hmac.new(api_key.encode("utf-8"), message, hashlib.sha256).hexdigest()


def sign_webhook(raw_body: bytes | str, api_key: str, timestamp_ms: int | None = None) -> str:
    """The ``x-retell-signature`` header value for ``raw_body``.

    :param raw_body: the exact bytes (or text, UTF-8) that will be sent as the request body.
    :param api_key: the Retell API key that signs it.
    :param timestamp_ms: signing instant, real Unix milliseconds; default now (real time).
    """
    if timestamp_ms is None:
        timestamp_ms = int(time.time() * 1000)
    return f"v={int(timestamp_ms)},d={signature_digest(raw_body, api_key, timestamp_ms)}"


def _now_ms(now: datetime | int | float | None) -> int:
    if now is None:
        return int(time.time() * 1000)
    if isinstance(now, datetime):
        return to_ms(now)
    return int(now)


def verify_webhook(raw_body: bytes | str, signature_header: str | None, api_key: str,
                   now: datetime | int | float | None = None, *, tolerance_ms: int = DEFAULT_TOLERANCE_MS) -> bool:
    """True when ``signature_header`` is a fresh, valid Retell signature of ``raw_body``.

    :param raw_body: the request body exactly as received (bytes, or text decoded as UTF-8).
    :param signature_header: the ``x-retell-signature`` value; None or malformed gives False.
    :param api_key: the Retell API key the provider signs with; empty gives False.
    :param now: the instant to judge freshness against, a timezone-aware datetime or Unix
        milliseconds; default the real time (see the module docstring for why not the shared clock).
    :param tolerance_ms: largest accepted |now - timestamp|, milliseconds; default 5 minutes.
    """
    if not signature_header or not api_key:
        return False
    match = _HEADER.fullmatch(signature_header.strip())
    if match is None:
        return False
    timestamp_ms = int(match.group(1))
    if abs(_now_ms(now) - timestamp_ms) > tolerance_ms:
        return False
    expected = signature_digest(raw_body, api_key, timestamp_ms)
    return hmac.compare_digest(expected, match.group(2).lower())
