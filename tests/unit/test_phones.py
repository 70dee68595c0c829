import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.domain.phones import InvalidPhone, normalize_phone, phone_timezones
from shared.logs import mask_phone


@pytest.mark.parametrize(("raw", "region", "expected"), [
    ("+56 9 6123 4567", "CL", "+56961234567"),
    ("9 6123 4567", "CL", "+56961234567"),
    ("(212) 555-0123", "US", "+12125550123"),
    ("+54 9 11 2345-6789", "CL", "+5491123456789"),
    (56961234567, "ZZ", "+56961234567"),
])
def test_normalises_to_e164(raw, region, expected):
    if isinstance(raw, int):
        raw = "+" + str(raw)
    assert normalize_phone(raw, region) == expected


@pytest.mark.parametrize(("raw", "reason"), [
    ("", "empty"), ("hello", "not a phone number"), ("+999 1234567", "country code"),
    ("+56 1", "too short"), ("+1 555 0100", "not a valid number"), (None, "string"), (["+5691"], "string"),
    ("+" + "1" * 60, "longer than"),
])
def test_invalid_numbers_say_why(raw, reason):
    with pytest.raises(InvalidPhone) as info:
        normalize_phone(raw, "CL")
    assert reason in str(info.value)


def test_error_message_never_shows_the_whole_number():
    with pytest.raises(InvalidPhone) as info:
        normalize_phone("+56 2 1234 56789012", "CL")
    assert "56212345678901" not in str(info.value).replace(" ", "")


def test_mask_keeps_prefix_and_last_two():
    assert mask_phone("+56961234567") == "+569******67"


@given(st.text(alphabet="0123456789", min_size=8, max_size=15))
def test_mask_never_reveals_middle_digits(digits):
    masked = mask_phone("+" + digits)
    assert masked.count("*") == len(digits) - 5
    assert masked.endswith(digits[-2:])


def test_phone_timezones():
    assert phone_timezones("+12125550123") == ("America/New_York",)
    assert "America/Santiago" in phone_timezones("+56961234567")
    assert phone_timezones("not a number") == ()


def test_numbered_gives_valid_distinct_numbers_with_the_prefix():
    from shared.domain.phones import numbered

    got = numbered("+56961", 50)
    assert len(set(got)) == 50 and all(n.startswith("+56961") for n in got)
    assert all(normalize_phone(n, "CL") == n for n in got)
    with pytest.raises(ValueError, match="only"):
        numbered("+999", 1, length=6)
