"""How results leave outdial: a batch's export (one row per contact, CSV or JSON lines) and a person's contact log
(one entry per attempt). Plain functions, no I/O.

Export columns (:data:`BASE_COLUMNS`), then one ``custom.<key>`` column per key of the post-call analysis's
``custom_analysis_data`` and one ``var.<key>`` column per contact variable seen among the exported contacts,
each sorted, at most :data:`MAX_KEYS` of each (:class:`ExportKeys`; the rest are left out and the export says so).
Values come from :func:`shared.domain.results.contact_result`.

A CSV cell is text a spreadsheet may run: a cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
return is neutralised with a leading ``'`` (:func:`neutralise`, after OWASP's advice on CSV injection). That includes
phone numbers (``+56...``): the ``phones`` cell then starts with ``'``. Numbers outdial writes itself (``calls``,
``talk_s``, ``charge``, ``callbacks``, ``wrong_numbers``, and a number in the analysis data) are numbers, not text,
and are written as they are. JSON lines are data, not a sheet, and are never changed.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytz

from shared.config import Config
from shared.domain.call_settings import CallSettings, InvalidCallSettings, parse_call_settings
from shared.domain.calling_window import resolve_timezones
from shared.domain.results import contact_result

#: The export's columns before the ``custom.<key>`` and ``var.<key>`` ones, in order.
BASE_COLUMNS = ("job_id", "external_id", "name", "phones", "status", "reason_code", "calls", "talk_s", "charge",
                "last_call_at", "last_call_local", "outcome", "call_successful", "summary", "sentiment",
                "recording_url", "after_call", "callbacks", "callback_at", "callback_local", "wrong_numbers")
#: Most ``custom.<key>`` columns, and most ``var.<key>`` columns, an export has (the first keys in sorted order).
MAX_KEYS = 200
#: Longest key kept as a column name, characters.
MAX_KEY_CHARS = 100
#: First characters that make a spreadsheet read a cell as a formula (OWASP: CSV injection).
DANGEROUS_FIRST = ("=", "+", "-", "@", "\t", "\r")
#: Separator of the numbers in the ``phones`` cell.
PHONE_SEPARATOR = ";"
#: The contact log's columns (its CSV; the JSON entries have the same fields, ``local`` split into ``local`` and
#: ``zone``).
LOG_COLUMNS = ("at", "local", "zone", "number", "batch_id", "batch_name", "job_id", "attempt_id", "outcome",
               "duration_s", "call_id", "charge")


# -- cells ------------------------------------------------------------------------------------------------------


def neutralise(text: str) -> str:
    """``text`` with a leading ``'`` when a spreadsheet would read it as a formula (it starts with one of
    :data:`DANGEROUS_FIRST`); any other text unchanged."""
    return "'" + text if text.startswith(DANGEROUS_FIRST) else text


def cell(value: Any) -> str | int | float:
    """One CSV cell: None is empty, a boolean ``true``/``false``, a number stays a number, text (and a list or object,
    written as JSON) is neutralised."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        return neutralise(value)
    return neutralise(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str))


def utc_iso(ms: int | float | None) -> str | None:
    """An instant (ms since the epoch) as ISO-8601 UTC with milliseconds (``2026-03-09T12:00:00.000Z``)."""
    if ms is None or isinstance(ms, bool) or not isinstance(ms, int | float):
        return None
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def local_iso(ms: int | float | None, zone: str) -> str | None:
    """An instant (ms) as the local time in ``zone``, ISO-8601 with its offset (``2026-03-09T09:00:00-03:00``)."""
    if ms is None or isinstance(ms, bool) or not isinstance(ms, int | float):
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(pytz.timezone(zone)).isoformat(timespec="seconds")


def slug(name: object, *, fallback: str = "batch", limit: int = 60) -> str:
    """A file-name-safe form of a batch's name: ASCII letters, digits and dashes, lower case."""
    text = unicodedata.normalize("NFKD", name if isinstance(name, str) else "")
    text = re.sub(r"[^a-z0-9]+", "-", text.encode("ascii", "ignore").decode("ascii").lower()).strip("-")
    return text[:limit].strip("-") or fallback


# -- the callee's zone ------------------------------------------------------------------------------------------


def batch_settings(call_settings: Mapping[str, Any] | None, config: Config) -> CallSettings:
    """A stored batch's settings, parsed; the defaults when it has none or they no longer parse."""
    try:
        return parse_call_settings(call_settings, config=config)
    except InvalidCallSettings:
        return parse_call_settings(None, config=config)


def callee_zone(contact: Mapping[str, Any] | None, settings: CallSettings, config: Config,
                number: str | None = None) -> str:
    """The zone the callee's local time is read in: the contact's ``timezone``, else the batch's zone (with
    ``"auto"``: the zone of ``number``, else the contact's first number; the first of several), else the default."""
    contact = contact or {}
    own = contact.get("timezone")
    if number is None:
        phones = contact.get("phones") or []
        number = phones[0] if phones and isinstance(phones[0], str) else None
    zones = resolve_timezones(settings, number, contact_timezone=own if isinstance(own, str) and own else None,
                              config=config)
    zone = zones[0] if zones else config.default_timezone
    try:
        pytz.timezone(zone)
    except pytz.UnknownTimeZoneError:
        return config.default_timezone
    return zone


# -- the export's keys ------------------------------------------------------------------------------------------


@dataclass
class ExportKeys:
    """The ``custom_analysis_data`` keys and variable names seen among the exported contacts, each capped at
    ``limit`` (the first in sorted order are kept; ``*_dropped`` says that some were left out)."""

    limit: int = MAX_KEYS
    custom: set[str] = field(default_factory=set)
    variables: set[str] = field(default_factory=set)
    custom_dropped: bool = False
    variables_dropped: bool = False

    def add(self, custom: Mapping[str, Any] | None, variables: Mapping[str, Any] | None) -> None:
        """Note one contact's keys."""
        if isinstance(custom, Mapping) and custom:
            self.custom_dropped |= _keep(self.custom, custom, self.limit)
        if isinstance(variables, Mapping) and variables:
            self.variables_dropped |= _keep(self.variables, variables, self.limit)

    def header(self) -> list[str]:
        """The CSV header: :data:`BASE_COLUMNS`, then ``custom.<key>`` and ``var.<key>`` columns, sorted."""
        return [*BASE_COLUMNS, *(f"custom.{k}" for k in sorted(self.custom)),
                *(f"var.{k}" for k in sorted(self.variables))]


def _keep(kept: set[str], names: Iterable[Any], limit: int) -> bool:
    """Add ``names`` to ``kept``, holding only the ``limit`` smallest; True when one was left out."""
    dropped = False
    for raw in names:
        name = str(raw)[:MAX_KEY_CHARS]
        if name in kept:
            continue
        kept.add(name)
        if len(kept) > limit:
            kept.discard(max(kept))
            dropped = True
    return dropped


# -- rows -------------------------------------------------------------------------------------------------------


def export_record(job: Mapping[str, Any], zone: str) -> dict[str, Any]:
    """One contact's export fields (the JSON line; the CSV row is :func:`csv_row` of it): the base columns, then
    ``custom`` (the last conversation's ``custom_analysis_data``) and ``variables``."""
    contact = job.get("contact") or {}
    result = contact_result(job)
    analysis = result["analysis"] or {}
    phones = [p for p in contact.get("phones") or [] if isinstance(p, str)]
    successful = analysis.get("call_successful")
    custom = analysis.get("custom_analysis_data")
    variables = contact.get("variables")
    return {
        "job_id": job.get("_id"),
        "external_id": contact.get("external_id"),
        "name": contact.get("name"),
        "phones": phones,
        "status": result["status"],
        "reason_code": result["reason_code"],
        "calls": result["calls"],
        "talk_s": result["talk_s"],
        "charge": result["charge"],
        "last_call_at": utc_iso(result["last_call_at"]),
        "last_call_local": local_iso(result["last_call_at"], zone),
        "outcome": result["last_outcome"],
        # The embedded server may hand a boolean back as 1 or 0.
        "call_successful": bool(successful) if isinstance(successful, bool | int) else None,
        "summary": analysis.get("call_summary"),
        "sentiment": analysis.get("user_sentiment"),
        "recording_url": result["recording_url"],
        "after_call": result["after_call"],
        "callbacks": result["callbacks"],
        "callback_at": utc_iso(result["callback_at"]),
        "callback_local": local_iso(result["callback_at"], zone),
        "wrong_numbers": result["wrong_numbers"],
        "custom": dict(custom) if isinstance(custom, Mapping) else {},
        "variables": dict(variables) if isinstance(variables, Mapping) else {},
    }


def csv_row(record: Mapping[str, Any], keys: ExportKeys, custom: Sequence[str] | None = None,
            variables: Sequence[str] | None = None) -> list[str | int | float]:
    """The CSV cells of :func:`export_record`'s ``record``, in :meth:`ExportKeys.header` order, neutralised."""
    custom = sorted(keys.custom) if custom is None else custom
    variables = sorted(keys.variables) if variables is None else variables
    row: list[str | int | float] = []
    for name in BASE_COLUMNS:
        value = record.get(name)
        if name == "phones":
            value = PHONE_SEPARATOR.join(value or [])
        row.append(cell(value))
    row.extend(cell(v) for v in _values(record.get("custom"), custom))
    row.extend(cell(v) for v in _values(record.get("variables"), variables))
    return row


def _values(data: Mapping[str, Any] | None, names: Sequence[str]) -> list[Any]:
    """The values of ``data`` under the column names ``names`` (keys cut to :data:`MAX_KEY_CHARS`, as the columns)."""
    if not data:
        return [None] * len(names)
    if any(len(str(k)) > MAX_KEY_CHARS for k in data):
        data = {str(k)[:MAX_KEY_CHARS]: v for k, v in data.items()}
    return [data.get(k) for k in names]


class CsvLines:
    """CSV text of many rows, built a chunk at a time (``csv.writer`` on one reused buffer)."""

    def __init__(self) -> None:
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, lineterminator="\r\n")

    def text(self, rows: Iterable[Sequence[Any]]) -> str:
        """The CSV lines of ``rows``."""
        self._buffer.seek(0)
        self._buffer.truncate()
        self._writer.writerows(rows)
        return self._buffer.getvalue()


def json_line(record: Mapping[str, Any]) -> str:
    """One JSON line (no neutralisation: JSON lines are data)."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str) + "\n"


# -- the contact log --------------------------------------------------------------------------------------------


def log_entry(attempt: Mapping[str, Any], *, batch_name: str | None, zone: str) -> dict[str, Any]:
    """One attempt in a person's contact log. ``at`` is when the call started, else when the attempt was made;
    ``outcome`` the call's, or the attempt's state when it never ended with one (``not_placed``, ...)."""
    at = attempt.get("started_at")
    if not isinstance(at, int | float) or isinstance(at, bool):
        at = attempt.get("created_at")
    duration = attempt.get("duration_ms")
    charge = attempt.get("charge")
    return {
        "at": utc_iso(at),
        "local": local_iso(at, zone),
        "zone": zone,
        "number": attempt.get("to_number"),
        "batch_id": attempt.get("batch_id"),
        "batch_name": batch_name,
        "job_id": attempt.get("job_id"),
        "attempt_id": attempt.get("_id"),
        "outcome": attempt.get("outcome") or attempt.get("state"),
        "duration_s": round(int(duration) / 1000, 1) if isinstance(duration, int | float) else None,
        "call_id": attempt.get("call_id"),
        "charge": int(charge) if isinstance(charge, int | float) and not isinstance(charge, bool) else None,
    }


def log_csv_row(entry: Mapping[str, Any]) -> list[str | int | float]:
    """The CSV cells of a contact-log entry, in :data:`LOG_COLUMNS` order, neutralised."""
    return [cell(entry.get(name)) for name in LOG_COLUMNS]


def encode_before(created_at: int, attempt_id: str) -> str:
    """The cursor of the entries older than this attempt (``next_before``): opaque, URL-safe."""
    raw = f"{int(created_at)}|{attempt_id}".encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_before(token: str) -> tuple[int, str]:
    """``(created_at ms, attempt id)`` of a cursor made by :func:`encode_before`; ValueError for anything else."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("is not a cursor given as next_before") from None
    at, sep, attempt_id = raw.partition("|")
    if not sep or not at.isdigit() or not attempt_id or len(attempt_id) > 200:
        raise ValueError("is not a cursor given as next_before")
    return int(at), attempt_id
