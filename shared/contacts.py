"""Contacts as operators send them: validation and normalisation before a job is written.

A contact is ``{"name", "phones": [...], "variables": {...}, "external_id"?, "timezone"?}``.
Every phone is normalised to E.164; a contact with any number that cannot be dialed is
rejected whole, with an error naming the contact and the number, so the operator can fix the
row (the other contacts of the same import are kept).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytz

from shared.phones import InvalidPhone, normalize_phone
from shared.text import printable, unencodable

#: Limits that keep one job document small.
MAX_PHONES = 10
MAX_VARIABLES = 50
MAX_VARIABLE_KEY = 64
MAX_VARIABLE_VALUE = 2000
MAX_NAME = 200
MAX_EXTERNAL_ID = 200
KNOWN_FIELDS = ("name", "phones", "variables", "external_id", "timezone")


class InvalidContact(ValueError):
    """A contact that cannot be imported; ``field`` names the bad field."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class Contact:
    name: str
    phones: tuple[str, ...]
    variables: dict[str, str]
    external_id: str | None = None
    timezone: str | None = None

    def to_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": self.name, "phones": list(self.phones), "variables": dict(self.variables)}
        if self.external_id is not None:
            doc["external_id"] = self.external_id
        if self.timezone is not None:
            doc["timezone"] = self.timezone
        return doc


def _check_text(text: str, field: str) -> str:
    problem = unencodable(text)
    if problem:
        raise InvalidContact(printable(field), problem)
    return text


def _text(value: Any, field: str, limit: int, *, required: bool = False) -> str | None:
    """The trimmed text of ``value``; None when missing or blank (a blank ``external_id`` is none, never ``""``)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float | None):
        raise InvalidContact(field, f"must be a string, got {type(value).__name__}")
    text = "" if value is None else _check_text(str(value), field).strip()
    if not text:
        if required:
            raise InvalidContact(field, "is required")
        return None
    if len(text) > limit:
        raise InvalidContact(field, f"longer than {limit} characters")
    return text


def _variables(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidContact("variables", f"must be an object of name -> value, got {type(raw).__name__}")
    if len(raw) > MAX_VARIABLES:
        raise InvalidContact("variables", f"more than {MAX_VARIABLES} variables")
    out: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not key or len(key) > MAX_VARIABLE_KEY:
            raise InvalidContact("variables", f"names must be 1-{MAX_VARIABLE_KEY} characters")
        _check_text(key, f"variables.{key}")
        if key.startswith("$") or "." in key or "\x00" in key:
            raise InvalidContact(f"variables.{key[:MAX_VARIABLE_KEY]}", "names cannot start with '$' or contain '.'")
        if value is None:
            out[key] = ""
        elif isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            text = _check_text(str(value), f"variables.{key}")
            if len(text) > MAX_VARIABLE_VALUE:
                raise InvalidContact(f"variables.{key}", f"longer than {MAX_VARIABLE_VALUE} characters")
            out[key] = text
        else:
            raise InvalidContact(f"variables.{key}", f"must be a string or number, got {type(value).__name__}")
    return out


def parse_contact(raw: Any, *, region: str = "CL") -> Contact:
    """Validate one contact; :class:`InvalidContact` names the field and the problem.

    :param raw: the contact as sent (a dict).
    :param region: region assumed for numbers without ``+country``; default ``CL``.
    """
    if not isinstance(raw, dict):
        raise InvalidContact("contact", f"must be an object, got {type(raw).__name__}")
    unknown = sorted(printable(str(k)) for k in raw if k not in KNOWN_FIELDS)
    if unknown:
        raise InvalidContact(unknown[0], f"unknown field (known: {', '.join(KNOWN_FIELDS)})")
    name = _text(raw.get("name"), "name", MAX_NAME) or ""
    phones_raw = raw.get("phones")
    if isinstance(phones_raw, str):
        phones_raw = [p for p in phones_raw.replace(";", ",").split(",") if p.strip()]
    if not isinstance(phones_raw, list) or not phones_raw:
        raise InvalidContact("phones", "at least one phone number is required")
    if len(phones_raw) > MAX_PHONES:
        raise InvalidContact("phones", f"at most {MAX_PHONES} numbers per contact")
    phones: list[str] = []
    for index, number in enumerate(phones_raw):
        if isinstance(number, str):
            _check_text(number, f"phones[{index}]")
        try:
            e164 = normalize_phone(number, region)
        except InvalidPhone as exc:
            who = f" of {name!r}" if name else ""
            raise InvalidContact(f"phones[{index}]", f"{str(number)[:40]!r}{who}: {exc.reason}") from None
        if e164 not in phones:
            phones.append(e164)
    external_id = _text(raw.get("external_id"), "external_id", MAX_EXTERNAL_ID)
    timezone = _text(raw.get("timezone"), "timezone", 64)
    if timezone is not None and timezone not in pytz.all_timezones_set:
        raise InvalidContact("timezone", f"unknown IANA time zone {timezone!r}")
    return Contact(name, tuple(phones), _variables(raw.get("variables")), external_id, timezone)
