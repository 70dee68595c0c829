"""Contacts as operators send them: validation and normalisation before a job is written.

A contact is ``{"name", "phones": [...], "variables": {...}, "external_id"?, "timezone"?}``.
Every phone is normalised to E.164; a contact with any number that cannot be dialed is
rejected whole, with an error naming the contact and the number, so the operator can fix the
row (the other contacts of the same import are kept).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.domain.shapes import (
    CONTACT_FIELDS,
    MAX_EXTERNAL_ID,
    MAX_NAME,
    MAX_PHONES,
    MAX_VARIABLE_KEY,
    MAX_VARIABLE_VALUE,
    MAX_VARIABLES,
    ContactShape,
    validate_shape,
)

#: The contact's fields, in the order messages list them (declared by :class:`shared.domain.shapes.ContactShape`).
KNOWN_FIELDS = CONTACT_FIELDS
__all__ = ["KNOWN_FIELDS", "MAX_EXTERNAL_ID", "MAX_NAME", "MAX_PHONES", "MAX_VARIABLES", "MAX_VARIABLE_KEY",
           "MAX_VARIABLE_VALUE", "Contact", "InvalidContact", "parse_contact"]


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


def parse_contact(raw: Any, *, region: str = "CL") -> Contact:
    """Validate one contact with :class:`shared.domain.shapes.ContactShape`; :class:`InvalidContact` names the field and
    the problem (the first one, in the order of the fields).

    :param raw: the contact as sent (a dict).
    :param region: region assumed for numbers without ``+country``; default ``CL``.
    """
    shape = validate_shape(ContactShape, raw, context={"region": region})
    if isinstance(shape, list):
        raise InvalidContact(*shape[0])
    return Contact(shape.name or "", tuple(shape.phones), shape.variables, shape.external_id, shape.timezone)
