"""The original worker's documents, read as outdial's: ids, instants and the state of each job (no I/O).

The original worker keeps ``batches`` (``batch_name`` or ``name``, ``call_settings`` with its seven fields or none,
the account) and ``jobs`` (``status``, ``tries``, ``reserved_until``, ``next_try_at``, ``last_error``,
``contact.phones``, ``batch_id`` as an ObjectId or its string, and the contact's context variables), with ObjectId
ids and datetime instants. :func:`map_job` decides what each job becomes here (:data:`STATE_TABLE`, documented in
the README); an unknown status is refused and listed, never guessed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.domain import states

#: Legacy statuses, what each becomes, and why (the README's table).
STATE_TABLE: dict[str, tuple[str, str]] = {
    "done": (states.COMPLETED, "final: the contact was reached"),
    "completed": (states.COMPLETED, "final: the contact was reached"),
    "success": (states.COMPLETED, "final: the contact was reached"),
    "failed": (states.FAILED, "final, with its last_error as the reason"),
    "pending": (states.PENDING, "due at its next_try_at, else its reserved_until, else now; its tries are spent "
                                "attempts"),
    "in_progress": (states.PENDING, "due only once its reservation (reserved_until) ends, or, without one, once a "
                                    "call placed at the import could have rung and talked its longest"),
}
#: Fields of a legacy contact that are not variables passed to the agent.
CONTACT_FIELDS = ("phones", "phone", "name", "external_id", "timezone", "context", "variables")


class LegacyProblem(ValueError):
    """A legacy document that cannot be imported: ``field`` and the reason."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


def legacy_id(value: Any) -> str | None:
    """An id as the original worker wrote it (an ObjectId, or its string) as text: the ObjectId's 24 hex characters,
    lowercase; None when absent."""
    if value is None:
        return None
    text = str(value).strip()
    if len(text) == 24 and all(c in "0123456789abcdefABCDEF" for c in text):
        return text.lower()
    return text or None


def instant_ms(value: Any, field_name: str) -> int | None:
    """An instant the original worker wrote (a ``datetime``, naive meaning UTC as pymongo reads them; an ISO-8601
    string; or milliseconds) as integer milliseconds since the epoch; None when absent.

    :raises LegacyProblem: a value that is not an instant.
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return int(moment.timestamp() * 1000)
    if isinstance(value, bool):
        raise LegacyProblem(field_name, f"must be an instant, got {value!r}")
    if isinstance(value, int | float):
        return int(value if value > 10**11 else value * 1000)   # seconds, as some writers store them
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise LegacyProblem(field_name, f"must be an instant, got {value[:40]!r}") from None
        return instant_ms(moment, field_name)
    raise LegacyProblem(field_name, f"must be an instant, got {type(value).__name__}")


@dataclass(frozen=True)
class LegacyBatch:
    """A legacy batch as ``POST /batches`` takes it (``body``), and its legacy id."""

    legacy_id: str
    body: dict[str, Any]


def map_batch(doc: Mapping[str, Any], *, default_account: str | None) -> LegacyBatch:
    """The ``POST /batches`` body of a legacy batch: its name (``name`` or ``batch_name``), its account
    (``account_id`` or ``account``, else ``default_account``), agent and caller id when it has them, and its
    ``call_settings`` as they are (validated by the batch store like any request; none keeps the defaults).

    :raises LegacyProblem: no id, no name or no account.
    """
    ident = legacy_id(doc.get("_id"))
    if ident is None:
        raise LegacyProblem("_id", "is missing")
    name = doc.get("name") or doc.get("batch_name")
    if not isinstance(name, str) or not name.strip():
        raise LegacyProblem("batch_name", "is missing (neither name nor batch_name is set)")
    account = doc.get("account_id") or doc.get("account") or default_account
    account = legacy_id(account) if account is not None else None
    if not account:
        raise LegacyProblem("account_id", "is missing: the batch names no account; pass --account")
    body: dict[str, Any] = {"name": name.strip()[:200], "account_id": account}
    for key in ("agent_id", "from_number"):
        if isinstance(doc.get(key), str) and doc[key].strip():
            body[key] = doc[key].strip()
    settings = doc.get("call_settings")
    if settings:
        body["call_settings"] = dict(settings)
    return LegacyBatch(legacy_id=ident, body=body)


@dataclass(frozen=True)
class LegacyJob:
    """What a legacy job becomes: the contact row (as ``POST /batches/{id}/contacts`` takes it) and the state fields
    written with it (``status``, ``tries``, ``next_try_at`` or ``finished_at``, ``last_error``)."""

    legacy_id: str
    contact: dict[str, Any]
    status: str
    tries: int
    next_try_at: int | None
    last_error: str | None


def map_job(doc: Mapping[str, Any], *, now_ms: int, in_progress_hold_ms: int) -> LegacyJob:
    """What a legacy job becomes here (:data:`STATE_TABLE`).

    :param now_ms: the import's time (shared clock).
    :param in_progress_hold_ms: how long after ``now_ms`` a job ``in_progress`` without a reservation waits: long
        enough for a call the original worker may still be placing to have rung and talked its longest.
    :raises LegacyProblem: no id, an unknown status, bad tries or instants, no phone.
    """
    ident = legacy_id(doc.get("_id"))
    if ident is None:
        raise LegacyProblem("_id", "is missing")
    raw_status = doc.get("status")
    status_text = raw_status.strip().lower() if isinstance(raw_status, str) else None
    if status_text not in STATE_TABLE:
        raise LegacyProblem("status", f"unknown status {raw_status!r} (known: {', '.join(STATE_TABLE)})")
    status = STATE_TABLE[status_text][0]
    tries = doc.get("tries", 0)
    if tries is None:
        tries = 0
    if isinstance(tries, bool) or not isinstance(tries, int) or tries < 0:
        raise LegacyProblem("tries", f"must be a whole number >= 0, got {tries!r}")
    reserved = instant_ms(doc.get("reserved_until"), "reserved_until")
    due = instant_ms(doc.get("next_try_at"), "next_try_at")
    last_error = doc.get("last_error")
    last_error = str(last_error)[:500] if last_error not in (None, "") else None
    contact = _contact(doc, ident)
    next_try_at: int | None = None
    if status == states.PENDING:
        if status_text == "in_progress":
            next_try_at = max(reserved, now_ms) if reserved is not None else now_ms + in_progress_hold_ms
        else:
            # A reservation into the future may still be a call in the original worker's hands: never before it.
            next_try_at = max(due if due is not None else (reserved if reserved is not None else now_ms),
                              reserved if reserved is not None else 0)
    return LegacyJob(legacy_id=ident, contact=contact,
                     status=status, tries=tries, next_try_at=next_try_at, last_error=last_error)


def _contact(doc: Mapping[str, Any], ident: str) -> dict[str, Any]:
    raw = doc.get("contact")
    contact: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    phones = contact.get("phones")
    if phones is None and contact.get("phone") is not None:
        phones = [contact.get("phone")]
    if not isinstance(phones, list) or not phones:
        raise LegacyProblem("contact.phones", "is missing or empty")
    variables: dict[str, Any] = {}
    for source in (doc.get("context"), contact.get("context"), contact.get("variables")):
        if isinstance(source, Mapping):
            variables.update({str(k): v for k, v in source.items()})
    variables.update({str(k): v for k, v in contact.items() if k not in CONTACT_FIELDS})
    row: dict[str, Any] = {"phones": [str(p) for p in phones],
                           "external_id": str(contact.get("external_id") or doc.get("external_id") or ident)}
    name = contact.get("name") or doc.get("name")
    if name:
        row["name"] = str(name)
    if contact.get("timezone"):
        row["timezone"] = contact["timezone"]
    if variables:
        row["variables"] = {k: v if isinstance(v, str | int | float | bool) or v is None else str(v)
                            for k, v in variables.items()}
    return row
