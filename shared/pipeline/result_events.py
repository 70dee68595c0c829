"""The results sweep (the analyses of conversations into their contacts' results, the result webhooks' events) and the
signed delivery of each event.

:meth:`ResultEvents.sweep` (actor ``sweep_results``, sent every few seconds by the clock dyno):

1. reads the flags the pipeline leaves, in bounded chunks on their sparse indexes: attempts whose analysis was
   recorded (``notify_analyzed``; the analysis of a conversation is first copied into its contact's result, for
   every account, one bulk request per chunk), attempts that ended with a call (``notify_ended``) and final jobs
   (``notify_final``). For each, when the account's ``result_webhook`` asks for that type, it inserts the event
   (its id is a function of the type and the job or attempt, so a second sweep writes nothing new), then unsets
   the flags of the chunk in one bulk request of writes conditional on them. A final job whose last
   conversation's analysis is still awaited keeps its flag and is looked at again by the next sweep, until the
   analysis is in or ``PIPELINE_ANALYSIS_WAIT_S`` (real seconds, on the shared clock) have passed since it became
   final. Accounts are read once per sweep.
2. claims the due events (one conditional update each, which also makes them not due until the claim's lease
   ends) and sends each a ``deliver_result`` message.

:meth:`ResultEvents.deliver` (actor ``deliver_result``): checks the webhook's target again (the URL, then every
address its host resolves to: DNS may have changed since the PUT), connects to the very address it checked (TLS
verified against the host name), POSTs the stored body signed at the send's time, and records the outcome while it
still holds the lease: 2xx is delivered; anything else is tried again after a capped exponential backoff (10 s
doubling to 1 h, jittered) until 24 hours after the event's creation, then the event is ``dead``. A worker that
dies mid-delivery leaves the lease to end, and the next sweep claims the event again: at least once, every retry
under the same id and the same bytes.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import urllib3

from shared import metrics
from shared.clock import Clock
from shared.config import Config
from shared.domain import result_hooks as hooks
from shared.domain.result_hooks import Resolver, Target, TargetRefused
from shared.domain.results import analysis_result_update, is_conversation, read_analysis
from shared.logs import event, get_logger, register_secret
from shared.stores.jobs import JobStore
from shared.stores.result_events import NOTIFY_ANALYZED, NOTIFY_ENDED, ResultEventStore, resolve_addresses

log = get_logger(__name__)

#: Real seconds a claimed event is held for its delivery (the message's wait in the queue, the request, the write).
DEFAULT_LEASE_S = 60.0
#: Real seconds a delivery must still have on its lease when it starts (the request's timeout plus a margin).
LEASE_MARGIN_S = hooks.DELIVERY_TIMEOUT_S + 5.0
#: Flagged jobs or attempts read per query, and at most per flag and sweep.
DEFAULT_CHUNK = 200
DEFAULT_MAX_PER_SWEEP = 2000
#: Due events claimed per sweep.
DEFAULT_MAX_CLAIMS = 500
#: Most bytes of a receiver's answer read (the rest is dropped).
MAX_ANSWER_BYTES = 64 * 1024


class ResultSender(Protocol):
    """How the sweep hands a claimed event to a delivery (the ``deliver_result`` actor)."""

    def deliver_result(self, event_id: str, token: str) -> None: ...


#: ``post(target, body, headers, timeout_s) -> HTTP status``; raises on a connection failure or a timeout.
Poster = Callable[[Target, bytes, Mapping[str, str], float], int]


def post_pinned(target: Target, body: bytes, headers: Mapping[str, str], timeout_s: float) -> int:
    """POST ``body`` to ``target``'s checked address (never a new look-up of its host): for https, TLS to that
    address with SNI and certificate checked against the host name; a ``Host`` header naming the host. The whole
    request, the answer's body included, takes at most ``timeout_s``; no redirect is followed."""
    if target.address is None:
        raise TargetRefused("the target has no checked address")
    deadline = time.monotonic() + timeout_s
    timeout = urllib3.Timeout(total=timeout_s)
    pool: urllib3.HTTPConnectionPool
    if target.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(target.address, target.port, timeout=timeout, maxsize=1, retries=False,
                                           cert_reqs="CERT_REQUIRED", assert_hostname=target.host,
                                           server_hostname=target.host)
    else:
        pool = urllib3.HTTPConnectionPool(target.address, target.port, timeout=timeout, maxsize=1, retries=False)
    try:
        answer = pool.urlopen("POST", target.path, body=body, headers={**headers, "Host": target.host_header},
                              retries=False, redirect=False, preload_content=False, assert_same_host=False)
        try:
            read = 0
            while read < MAX_ANSWER_BYTES:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"the answer took longer than {timeout_s:g} s")
                chunk = answer.read(8192)
                if not chunk:
                    break
                read += len(chunk)
        finally:
            answer.release_conn()
        return int(answer.status)
    finally:
        pool.close()


def _jitter() -> float:
    return random.uniform(0.8, 1.2)


@dataclass
class SweepReport:
    """What one sweep did: events ``created`` by type, flags ``cleared``, final jobs still ``waiting`` for their
    analysis, due events ``claimed`` (each sent to a delivery)."""

    created: dict[str, int] = field(default_factory=lambda: dict.fromkeys(hooks.EVENT_TYPES, 0))
    cleared: int = 0
    results: int = 0
    waiting: int = 0
    claimed: int = 0


@dataclass(kw_only=True)
class ResultEvents:
    """The result events' sweep and deliveries of one process.

    :param store: the outbox, the flags and the accounts' webhook settings.
    :param jobs: the jobs, whose results take the analyses of their conversations.
    :param sender: where claimed events go to be delivered.
    :param clock: the shared clock.
    :param config: ``PIPELINE_ANALYSIS_WAIT_S``, ``RESULT_WEBHOOKS_ALLOW_PRIVATE``.
    :param resolve: the DNS look-up of a webhook's host.
    :param post: the HTTP POST of a delivery (:func:`post_pinned`).
    :param jitter: the backoff's random factor.
    """

    store: ResultEventStore
    jobs: JobStore
    sender: ResultSender
    clock: Clock
    config: Config
    resolve: Resolver = resolve_addresses
    post: Poster = post_pinned
    jitter: Callable[[], float] | None = _jitter
    lease_s: float = DEFAULT_LEASE_S
    chunk: int = DEFAULT_CHUNK
    max_per_sweep: int = DEFAULT_MAX_PER_SWEEP
    max_claims: int = DEFAULT_MAX_CLAIMS

    # -- the sweep ----------------------------------------------------------------------------------------------

    def sweep(self) -> SweepReport:
        """Create the events the flags call for, then hand every due event to a delivery."""
        report = SweepReport()
        webhooks: dict[str, dict[str, Any] | None] = {}   # accounts read once per sweep

        def webhook(account_id: str | None) -> dict[str, Any] | None:
            if not account_id:
                return None
            if account_id not in webhooks:
                webhooks[account_id] = self.store.webhook_of(account_id)
            return webhooks[account_id]

        # The analyses first: a final job whose contact.final waits for its analysis is then sent in this sweep.
        for flag, kind, data in ((NOTIFY_ANALYZED, hooks.CALL_ANALYZED, hooks.call_analyzed_data),
                                 (NOTIFY_ENDED, hooks.CALL_ENDED, hooks.call_ended_data)):
            self._attempts(flag, kind, data, report, webhook)
        self._final_jobs(report, webhook)
        self._claim_due(report)
        if any(report.created.values()) or report.claimed or report.waiting:
            event(log, "result_events_swept", level=logging.DEBUG, created=report.created, cleared=report.cleared,
                  results=report.results,
                  waiting=report.waiting, claimed=report.claimed)
        return report

    def _create(self, kind: str, subject_id: str, account_id: str, data: Mapping[str, Any],
                report: SweepReport) -> None:
        now = self.clock.now_ms()
        evt_id = hooks.event_id(kind, subject_id)
        if self.store.insert(evt_id=evt_id, account_id=account_id, kind=kind, subject_id=subject_id, created_at=now,
                             body=hooks.event_body(evt_id, kind, now, data)):
            report.created[kind] += 1

    def _final_jobs(self, report: SweepReport, webhook: Callable[[str | None], dict[str, Any] | None]) -> None:
        wait_ms = self.clock.simulated_ms(self.config.pipeline_analysis_wait_s)
        after: str | None = None
        seen = 0
        while seen < self.max_per_sweep:
            jobs = self.store.flagged_jobs(after=after, limit=self.chunk)
            if not jobs:
                return
            read: list[str] = []
            for job in jobs:
                after, seen = job["_id"], seen + 1
                account_id = job.get("account_id")
                if hooks.subscribed(webhook(account_id), hooks.CONTACT_FINAL):
                    if hooks.analysis_awaited(job, self.clock.now_ms(), wait_ms):
                        report.waiting += 1
                        continue
                    self._create(hooks.CONTACT_FINAL, job["_id"], str(account_id), hooks.contact_final_data(job),
                                 report)
                read.append(job["_id"])
            report.cleared += self.store.clear_job_flags(read)
            if len(jobs) < self.chunk:
                return

    def _attempts(self, flag: str, kind: str, data: Callable[[Mapping[str, Any]], dict[str, Any]],
                  report: SweepReport, webhook: Callable[[str | None], dict[str, Any] | None]) -> None:
        after: str | None = None
        seen = 0
        while seen < self.max_per_sweep:
            attempts = self.store.flagged_attempts(flag, after=after, limit=self.chunk)
            if not attempts:
                return
            if flag == NOTIFY_ANALYZED:
                report.results += self._into_results(attempts)
            for attempt in attempts:
                after, seen = attempt["_id"], seen + 1
                account_id = attempt.get("account_id")
                if hooks.subscribed(webhook(account_id), kind):
                    self._create(kind, attempt["_id"], str(account_id), data(attempt), report)
            report.cleared += self.store.clear_attempt_flags([a["_id"] for a in attempts], flag)
            if len(attempts) < self.chunk:
                return

    def _into_results(self, attempts: Sequence[Mapping[str, Any]]) -> int:
        """The analyses of conversations become their contacts' (each only while it is the contact's last
        conversation), in one request; how many contacts took theirs."""
        kept = [(str(a["job_id"]), str(a["_id"]),
                 analysis_result_update(read_analysis(a.get("analysis")), a.get("recording_url")))
                for a in attempts if is_conversation(a) and a.get("job_id")]
        return self.jobs.record_analyses(kept)

    def _claim_due(self, report: SweepReport) -> None:
        now = self.clock.now_ms()
        lease_until = now + self.clock.simulated_ms(self.lease_s)
        for due in self.store.due(now, limit=self.max_claims):
            token = uuid.uuid4().hex
            if self.store.claim(due, token=token, lease_until=lease_until):
                report.claimed += 1
                self.sender.deliver_result(due["_id"], token)

    # -- a delivery -----------------------------------------------------------------------------------------------

    def deliver(self, event_id: str, token: str) -> str:
        """Deliver a claimed event once: ``delivered``, ``failed`` (due again later), ``dead``, or ``skipped`` (the
        claim is no longer this message's, or too little of its lease is left: the sweep claims it again)."""
        doc = self.store.get(event_id)
        now = self.clock.now_ms()
        if doc is None or doc.get("state") != hooks.PENDING or doc.get("lease_token") != token:
            return "skipped"
        if int(doc.get("lease_until") or 0) - now < self.clock.simulated_ms(LEASE_MARGIN_S):
            return "skipped"
        webhook = self.store.webhook_of(doc["account_id"])
        if webhook is None or not hooks.subscribed(webhook, doc["type"]):
            return self._dead(doc, token, None, "the account's result webhook no longer asks for this event",
                              host=None)
        secret = str(webhook.get("secret") or "")
        register_secret(secret)
        try:
            target = hooks.resolve_target(webhook.get("url"), resolve=self.resolve,
                                          allow_private=self.config.result_webhooks_allow_private)
        except TargetRefused as exc:
            return self._failed(doc, token, None, f"target refused: {exc}", host=None)
        body = str(doc["body"]).encode()
        headers = {"Content-Type": "application/json", hooks.EVENT_ID_HEADER: event_id, "User-Agent": hooks.USER_AGENT,
                   hooks.SIGNATURE_HEADER: hooks.signature_header(secret, int(self.clock.source()), body)}
        try:
            status = self.post(target, body, headers, hooks.DELIVERY_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - any failure of the request is a failed delivery, tried again
            return self._failed(doc, token, None, f"{type(exc).__name__}: {_short(exc, target.path)}",
                                host=target.host)
        if 200 <= status < 300:
            if self.store.delivered(event_id, token=token, status=status, now_ms=self.clock.now_ms()):
                metrics.RESULT_WEBHOOKS.labels("delivered").inc()
                event(log, "result_webhook_delivered", event_id=event_id, type=doc["type"],
                      account_id=doc["account_id"], status=status, attempts=int(doc.get("attempts", 0)) + 1,
                      host=target.host)
            return "delivered"
        return self._failed(doc, token, status, f"HTTP {status}", host=target.host)

    def _failed(self, doc: Mapping[str, Any], token: str, status: int | None, error: str, *,
                host: str | None) -> str:
        attempts = int(doc.get("attempts", 0)) + 1
        now = self.clock.now_ms()
        wait_ms = self.clock.simulated_ms(hooks.retry_wait_s(attempts, jitter=self.jitter))
        next_at = hooks.next_delivery_at(now_ms=now, wait_ms=wait_ms,
                                         expires_at_ms=int(doc.get("expires_at") or now))
        if next_at is None:
            return self._dead(doc, token, status, error, host=host)
        if self.store.failed(doc["_id"], token=token, status=status, error=error, now_ms=now, next_at=next_at):
            metrics.RESULT_WEBHOOKS.labels("failed").inc()
            event(log, "result_webhook_failed", level=logging.WARNING, event_id=doc["_id"], type=doc["type"],
                  account_id=doc["account_id"], status=status, attempts=attempts, error=error, host=host,
                  next_at=hooks.iso(next_at))
        return "failed"

    def _dead(self, doc: Mapping[str, Any], token: str, status: int | None, error: str, *, host: str | None) -> str:
        attempts = int(doc.get("attempts", 0)) + 1
        if self.store.failed(doc["_id"], token=token, status=status, error=error, now_ms=self.clock.now_ms(),
                             next_at=None):
            metrics.RESULT_WEBHOOKS.labels("dead").inc()
            event(log, "result_webhook_dead", level=logging.WARNING, event_id=doc["_id"], type=doc["type"],
                  account_id=doc["account_id"], status=status, attempts=attempts, error=error, host=host)
        return "dead"


def _short(exc: BaseException, path: str) -> str:
    """A failure's message, one line, without the URL's path and query (a host is enough to tell targets apart)."""
    text = " ".join(str(exc).split())
    if len(path) > 1:
        text = text.replace(path, "/...")
    return text[:200]
