"""MongoDB connection, collection names and the indexes the hot queries need.

One :class:`pymongo.MongoClient` per process (it is thread-safe and pools connections).
Datetimes come back timezone-aware (UTC).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, IndexModel, MongoClient, monitoring
from pymongo.database import Database

from shared.errors import NotFound
from shared.metrics import CURRENT_STEP, MONGO_COMMANDS

#: Collection names.
BATCHES = "batches"
JOBS = "jobs"
ATTEMPTS = "attempts"
ACCOUNTS = "accounts"
LEDGER = "ledger"
CONTACT_HISTORY = "contact_history"
DNC = "dnc"
RESULT_EVENTS = "result_events"
COMPLIANCE_PROFILES = "compliance_profiles"

#: Indexes per collection, created idempotently by :func:`ensure_indexes`.
INDEXES: dict[str, list[IndexModel]] = {
    JOBS: [
        IndexModel([("status", ASCENDING), ("next_try_at", ASCENDING)], name="status_next_try_at"),
        IndexModel([("batch_id", ASCENDING), ("status", ASCENDING)], name="batch_status"),
        IndexModel([("call_id", ASCENDING)], name="call_id", sparse=True),
        IndexModel([("lease_owner", ASCENDING)], name="lease_owner", sparse=True),
        IndexModel([("status", ASCENDING), ("lease_until", ASCENDING)], name="status_lease_until"),
        # Only calls in progress waiting for their safety-net poll (webhooks on) carry poll_at.
        IndexModel([("poll_at", ASCENDING)], name="poll_at", sparse=True),
        IndexModel([("dedupe_key", ASCENDING)], name="dedupe_key", unique=True, sparse=True),
        # Sparse: jobs imported before it existed have no phones_key and are left alone.
        IndexModel([("phones_key", ASCENDING)], name="phones_key", unique=True, sparse=True),
        # Only final jobs whose contact.final the result events' sweep has not read yet carry notify_final.
        IndexModel([("notify_final", ASCENDING)], name="notify_final", sparse=True),
    ],
    BATCHES: [
        IndexModel([("status", ASCENDING)], name="status"),
        IndexModel([("account_id", ASCENDING)], name="account_id"),
        # Only cancelled batches that may still have an open job carry cancel_sweep (maintenance's sweep).
        IndexModel([("cancel_sweep", ASCENDING)], name="cancel_sweep", sparse=True),
        # Batches imported from the original worker: one per legacy batch (outdial import-legacy).
        IndexModel([("legacy_id", ASCENDING)], name="legacy_id", unique=True, sparse=True),
    ],
    ATTEMPTS: [
        IndexModel([("job_id", ASCENDING)], name="job_id"),
        IndexModel([("call_id", ASCENDING)], name="call_id", sparse=True),
        # a contact policy's first look at a number or an external id reads its recent calls
        IndexModel([("account_id", ASCENDING), ("to_number", ASCENDING), ("created_at", ASCENDING)],
                   name="account_number_created"),
        IndexModel([("account_id", ASCENDING), ("external_id", ASCENDING), ("created_at", ASCENDING)],
                   name="account_external_created", sparse=True),
        IndexModel([("batch_id", ASCENDING)], name="batch_id"),
        # Ended calls whose call.ended / call.analyzed the result events' sweep has not read yet.
        IndexModel([("notify_ended", ASCENDING)], name="notify_ended", sparse=True),
        IndexModel([("notify_analyzed", ASCENDING)], name="notify_analyzed", sparse=True),
        # Conversations whose post-call analysis is still looked for: when to look next.
        IndexModel([("analysis_due_at", ASCENDING)], name="analysis_due_at", sparse=True),
        # The contact log's retention: ended attempts by age.
        IndexModel([("state", ASCENDING), ("created_at", ASCENDING)], name="state_created"),
    ],
    CONTACT_HISTORY: [
        IndexModel([("account_id", ASCENDING)], name="account_id"),
    ],
    ACCOUNTS: [
        IndexModel([("holds_n", ASCENDING)], name="holds_n", sparse=True),
        IndexModel([("journal_at", ASCENDING)], name="journal_at", sparse=True),
    ],
    LEDGER: [
        IndexModel([("account_id", ASCENDING), ("at", ASCENDING)], name="account_at"),
        IndexModel([("attempt_id", ASCENDING)], name="attempt_id", sparse=True),
    ],
    # The result webhooks' outbox: due events by state and due time, an account's deliveries newest first.
    RESULT_EVENTS: [
        IndexModel([("state", ASCENDING), ("next_at", ASCENDING)], name="state_next_at"),
        IndexModel([("account_id", ASCENDING), ("created_at", ASCENDING)], name="account_created"),
    ],
    # Looked up by _id ("<scope>|<number>"); listed page by page per scope.
    DNC: [
        IndexModel([("scope", ASCENDING), ("number", ASCENDING)], name="scope_number"),
    ],
}

class CommandCounter(monitoring.CommandListener):
    """Counts the commands (round trips) a client sends, by command name; for benchmarks and metrics."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        with self._lock:
            self.counts[event.command_name] = self.counts.get(event.command_name, 0) + 1
        MONGO_COMMANDS.labels(CURRENT_STEP.get()).inc()

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


#: Every command sent by clients made with :func:`client` in this process.
COMMANDS = CommandCounter()

_clients: dict[str, MongoClient[dict[str, Any]]] = {}
_clients_lock = threading.Lock()


#: Timeouts a URI does not set: an unreachable server is an error within seconds, not pymongo's 30 s.
_DEFAULT_TIMEOUTS_MS = {"serverSelectionTimeoutMS": 5_000, "connectTimeoutMS": 5_000}


def _unset_in(uri: str, options: Mapping[str, int]) -> dict[str, Any]:
    """Those of ``options`` the URI's query string does not set (pymongo's keywords would override the URI's)."""
    query = uri.partition("?")[2].lower()
    given = {pair.partition("=")[0] for pair in query.replace(";", "&").split("&") if pair}
    return {name: value for name, value in options.items() if name.lower() not in given}


def client(uri: str) -> MongoClient[dict[str, Any]]:
    """The process's client for ``uri`` (created once); the URI's own timeouts win over the defaults."""
    with _clients_lock:
        found = _clients.get(uri)
        if found is None:
            found = MongoClient(uri, tz_aware=True, appname="outdial", event_listeners=[COMMANDS],
                                **_unset_in(uri, _DEFAULT_TIMEOUTS_MS))
            _clients[uri] = found
        return found


def database(uri: str, name: str) -> Database[dict[str, Any]]:
    return client(uri)[name]


def ensure_indexes(db: Database[dict[str, Any]], extra: dict[str, list[IndexModel]] | None = None) -> None:
    """Create every index in :data:`INDEXES` (and ``extra``); existing ones are left alone."""
    merged = {name: list(models) for name, models in INDEXES.items()}
    for name, models in (extra or {}).items():
        merged.setdefault(name, []).extend(models)
    for name, models in merged.items():
        if models:
            db[name].create_indexes(models)


_ID = re.compile(r"^[0-9a-f]{24}$")


def new_id() -> str:
    """A new document id: an ObjectId's 24 lowercase hex characters.

    Ids and references are stored as these strings, not as ObjectId values: nx-27017 0.8.1
    does not match ObjectId values in equality filters on fields other than ``_id``, nor in
    ``count_documents`` or ``$match`` (measured; see tests/integration/test_mongo_compat.py).
    """
    return str(ObjectId())


def parse_id(value: object, what: str = "id") -> str:
    """``value`` as a document id; :class:`NotFound` naming ``what`` when it cannot be one."""
    text = str(value).strip().lower() if isinstance(value, str | ObjectId) else ""
    if not _ID.match(text):
        raise NotFound(f"{what} {str(value)[:40]!r} is not a valid id (24 hex characters)")
    return text


def projected(doc: Mapping[str, Any], path: str) -> Any:
    """The value at the dotted ``path`` of a projected document: nested (MongoDB), or under the dotted name itself
    (nx-27017 0.8.1 answers a projection of ``"a.b"`` with a flat ``"a.b"`` key; ``test_mongo_compat.py`` pins it)."""
    if path in doc:
        return doc[path]
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value
