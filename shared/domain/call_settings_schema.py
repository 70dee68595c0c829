"""The JSON Schema (draft 2020-12) of ``call_settings``: the schema of the model that validates it.

:func:`call_settings_schema` is :class:`shared.domain.shapes.CallSettingsShape`'s own JSON Schema (its bounds, patterns,
descriptions, examples and cross-field rules), with what depends on the deployment or on a library added: the
defaults from the configuration (:func:`~shared.domain.call_settings.field_defaults`) and the holiday countries.
``GET /call-settings/schema`` serves it so a frontend can build its form from it.

The schema describes the canonical form (what a batch stores): ``"09:00"`` rather than ``" 9:00 "``,
``"CL"`` rather than ``"cl"``, ``"auto"`` rather than ``"AUTO"``; the validator also accepts those
spellings and normalises them. Some rules cannot be written in a JSON Schema; the validator's 422 is
the authority for them (:data:`VALIDATOR_ONLY_RULES`, also listed in the schema's ``$comment``).
"""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any

from shared.config import Config, get_config
from shared.domain.call_settings import field_defaults
from shared.domain.shapes import (
    DATE_PATTERN,
    END_PATTERN,
    START_PATTERN,
    VALIDATOR_ONLY_RULES,
    CallSettingsShape,
    json_schema,
)

__all__ = ["DATE_PATTERN", "END_PATTERN", "SCHEMA_ID", "START_PATTERN", "VALIDATOR_ONLY_RULES",
           "call_settings_schema"]

#: The schema's ``$id``.
SCHEMA_ID = "https://outdial.invalid/schemas/call_settings.json"


def _holiday_countries() -> list[str]:
    import holidays as holidays_lib

    return sorted(holidays_lib.list_supported_countries(include_aliases=False))


def call_settings_schema(config: Config | None = None) -> dict[str, Any]:
    """The JSON Schema of ``call_settings`` (draft 2020-12), with this deployment's defaults (a fresh copy)."""
    defaults = field_defaults(config or get_config())
    return copy.deepcopy(_schema(tuple(sorted(defaults.items()))))


@lru_cache(maxsize=8)
def _schema(default_items: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    schema = json_schema(CallSettingsShape)
    properties = schema["properties"]
    for name, value in default_items:
        properties[name]["default"] = value
    countries = _holiday_countries()
    text, calendar, _null = properties["holidays"]["anyOf"]
    text["enum"] = countries
    calendar["properties"]["country"]["enum"] = countries
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}
