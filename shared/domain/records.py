"""Typed, read-only views of the documents the pipeline reads: a job (:class:`Job`, with its :class:`Contact`) and
an attempt (:class:`Attempt`).

The stores keep returning documents (dicts); a step builds the view once where it loads a document and passes it
to the decisions and helpers. A missing field takes the default the pipeline always read it with, so a view says
exactly what the document said.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from shared.domain.states import JobState

_NO_VARIABLES: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Contact:
    """A job's contact: its numbers (in dialing order), its own time zone, its call variables, its external id."""

    phones: tuple[str, ...] = ()
    timezone: str | None = None
    variables: Mapping[str, Any] = field(default_factory=lambda: _NO_VARIABLES)
    external_id: str | None = None

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Contact:
        return cls(phones=tuple(doc.get("phones", ())), timezone=doc.get("timezone"),
                   variables=doc.get("variables", _NO_VARIABLES), external_id=doc.get("external_id"))


@dataclass(frozen=True, slots=True)
class Job:
    """A job document as the pipeline reads it (see DESIGN.md, "Job states", for what each field means)."""

    id: str
    status: JobState
    batch_id: str = ""
    account_id: str = ""
    contact: Contact = field(default_factory=Contact)
    #: Rounds spent (a failed round counts one).
    tries: int = 0
    #: The number of the round being dialed (an index into ``contact.phones``).
    phone_index: int = 0
    #: Numbers never to be dialed again (indexes into ``contact.phones``).
    invalid_phones: frozenset[int] = frozenset()
    #: Creates the job has made (each dial that won the claim counts one).
    dials: int = 0
    #: Provider faults in a row that spent no attempt.
    free_retries: int = 0
    next_try_at: int | None = None
    lease_owner: str | None = None
    lease_until: int | None = None
    attempt_id: str | None = None
    call_id: str | None = None
    dialed_at: int | None = None
    #: Whether the call in progress holds a balance reservation (a job without the field does; an unlimited plan's
    #: call records 0).
    reserved: bool = True
    stop_requested_at: int | None = None
    stop_acked: bool = False
    stop_attempts: int = 0
    #: Callbacks the person asked for that were scheduled (``after_call.callback_field``; they spend no attempt).
    callbacks: int = 0

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Job:
        return cls(
            id=doc["_id"], status=JobState(doc["status"]), batch_id=doc.get("batch_id", ""),
            account_id=doc.get("account_id", ""), contact=Contact.from_doc(doc.get("contact") or {}),
            tries=int(doc.get("tries", 0)), phone_index=int(doc.get("phone_index", 0)),
            invalid_phones=frozenset(doc.get("invalid_phones", ())), dials=int(doc.get("dials", 0)),
            free_retries=int(doc.get("free_retries", 0) or 0), next_try_at=doc.get("next_try_at"),
            lease_owner=doc.get("lease_owner"), lease_until=doc.get("lease_until"),
            attempt_id=doc.get("attempt_id"), call_id=doc.get("call_id"), dialed_at=doc.get("dialed_at"),
            reserved=bool(doc.get("reserved", 1)), stop_requested_at=doc.get("stop_requested_at"),
            stop_acked=bool(doc.get("stop_acked")), stop_attempts=int(doc.get("stop_attempts", 0)),
            callbacks=int(doc.get("callbacks", 0) or 0),
        )

    @classmethod
    def of(cls, job: Job | Mapping[str, Any]) -> Job:
        """``job`` itself, or the view of a job document."""
        return job if isinstance(job, Job) else cls.from_doc(job)

    def phone_at(self, index: int) -> str:
        """The contact's number ``index``, or its last number past the end."""
        phones = self.contact.phones
        return phones[min(index, len(phones) - 1)]

    @property
    def phone(self) -> str:
        """The current number (``phone_index``; the last number when the index is past the end)."""
        return self.phone_at(self.phone_index)


@dataclass(frozen=True, slots=True)
class Attempt:
    """An attempt document as the pipeline reads it (``shared.stores.attempts``)."""

    id: str
    state: str | None = None
    #: The number dialed ("" when the attempt was recorded before it had one).
    to_number: str = ""
    created_at: int = 0
    #: The last time its create was sent (None: only at ``created_at``).
    last_sent_at: int | None = None
    call_id: str | None = None
    owner: str | None = None
    from_number: str | None = None
    agent_id: str | None = None
    #: Which create of its job (``dials``) and which round it is.
    dial: int = 1
    round: int = 1
    #: Sends again of an ambiguous create.
    replays: int = 0
    duration_ms: int = 0
    #: The document itself (its reason fields: :func:`shared.domain.reasons.of`).
    doc: Mapping[str, Any] = field(default_factory=lambda: _NO_VARIABLES, repr=False)

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Attempt:
        return cls(
            id=doc["_id"], state=doc.get("state"), to_number=doc.get("to_number", ""),
            created_at=int(doc.get("created_at", 0)), last_sent_at=doc.get("last_sent_at"),
            call_id=doc.get("call_id"), owner=doc.get("owner"), from_number=doc.get("from_number"),
            agent_id=doc.get("agent_id"), dial=int(doc.get("dial", 1)), round=int(doc.get("round", 1)),
            replays=int(doc.get("replays", 0)), duration_ms=int(doc.get("duration_ms") or 0), doc=doc,
        )
