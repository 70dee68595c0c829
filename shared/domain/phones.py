"""Phone numbers: E.164 normalisation, validation and the zones a number may ring in."""

from __future__ import annotations

from functools import lru_cache

import phonenumbers
from phonenumbers import timezone as phone_timezone

from shared.logs import mask_phone

__all__ = ["InvalidPhone", "mask_phone", "normalize_phone", "numbered", "phone_timezones"]

#: Longest input accepted before parsing (E.164 has at most 15 digits; leave room for formatting).
MAX_PHONE_INPUT = 40


class InvalidPhone(ValueError):
    """A number that cannot be dialed. ``number`` is the input as given, ``reason`` why."""

    def __init__(self, number: object, reason: str) -> None:
        self.number = number
        self.reason = reason
        shown = mask_phone(number) if isinstance(number, str) else repr(number)
        super().__init__(f"invalid phone number {shown}: {reason}")


def normalize_phone(raw: object, region: str = "CL") -> str:
    """Return ``raw`` as E.164 (``+56912345678``) or raise :class:`InvalidPhone`.

    :param raw: the number as written by the operator; a string (ints are accepted too).
    :param region: ISO region assumed when the number has no ``+country`` prefix; default ``CL``.
    """
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise InvalidPhone(raw, "must be a string")
    text = str(raw).strip()
    if not text:
        raise InvalidPhone(raw, "empty")
    if len(text) > MAX_PHONE_INPUT:
        raise InvalidPhone(text[:MAX_PHONE_INPUT], f"longer than {MAX_PHONE_INPUT} characters")
    return _normalize(text, region)


@lru_cache(maxsize=65536)
def _normalize(text: str, region: str) -> str:
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhone(text, _PARSE_REASONS.get(exc.error_type, "not a phone number")) from None
    if not phonenumbers.is_possible_number(parsed):
        raise InvalidPhone(text, "wrong length for its country")
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidPhone(text, "not a valid number for its country")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


_PARSE_REASONS = {
    phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: "unknown country code",
    phonenumbers.NumberParseException.NOT_A_NUMBER: "not a phone number",
    phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
    phonenumbers.NumberParseException.TOO_SHORT_NSN: "too short",
    phonenumbers.NumberParseException.TOO_LONG: "too long",
}


@lru_cache(maxsize=65536)
def phone_timezones(e164: str) -> tuple[str, ...]:
    """IANA zones the number may ring in, from libphonenumber's data; empty when unknown."""
    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return ()
    zones = phone_timezone.time_zones_for_number(parsed)
    return tuple(z for z in zones if z != phone_timezone.UNKNOWN_TIMEZONE)


def numbered(prefix: str, count: int, *, length: int = 11) -> list[str]:
    """The first ``count`` valid numbers that extend ``prefix`` (``"+56961"``), for simulations and tests.

    :param prefix: ``+`` and the leading digits.
    :param length: digits after ``+`` (11: a Chilean mobile ``+569…`` or a NANP ``+1…`` number).
    """
    digits = length - len(prefix.lstrip("+"))
    out: list[str] = []
    for n in range(10**digits):
        candidate = f"{prefix}{n:0{digits}d}"
        try:
            valid = phonenumbers.is_valid_number(phonenumbers.parse(candidate))
        except phonenumbers.NumberParseException:
            valid = False
        if valid:
            out.append(candidate)
            if len(out) == count:
                return out
    raise ValueError(f"only {len(out)} valid numbers start with {prefix}")
