"""The base of every pipeline step: one process's stores and clients, and the helpers they share."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from typing import Any, TypeVar, cast

from cachetools import TTLCache

from shared.cache.batch_cache import CachedBatch
from shared.clock import Clock
from shared.config import Config
from shared.domain.call_settings import CallSettings
from shared.domain.contact_policy import ContactPolicy
from shared.domain.reasons import Reason
from shared.domain.records import Job
from shared.pipeline.call_ops import CallOps, settings_in, stopped_in
from shared.pipeline.interfaces import BatchSource, Provider, Sender
from shared.pipeline.timing import DEFAULT_RECENT_S, Timing
from shared.stores.accounts import AccountStore
from shared.stores.attempts import AttemptStore
from shared.stores.batches import BatchStore
from shared.stores.billing import Billing
from shared.stores.contact_history import ContactHistory
from shared.stores.coordination import Coordination
from shared.stores.dnc import DncStore
from shared.stores.jobs import JobStore, Lease
from shared.stores.slots import Slots

T = TypeVar("T")


@dataclass(kw_only=True)
class Step:
    """What every pipeline step shares: one process's stores, clients, clock and timing, and small helpers."""

    jobs: JobStore
    attempts: AttemptStore
    batches: BatchStore
    accounts: AccountStore
    cache: BatchSource
    billing: Billing
    slots: Slots
    coordination: Coordination
    provider: Provider
    sender: Sender
    clock: Clock
    config: Config
    dnc: DncStore
    history: ContactHistory
    timing: Timing = field(default_factory=Timing)
    #: Active batches per account and account limits, reused for a second (real time) by the hot path.
    _recent: TTLCache[str, Any] = field(default_factory=lambda: TTLCache(maxsize=4096, ttl=DEFAULT_RECENT_S),
                                        repr=False)
    _recent_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @cached_property
    def calls(self) -> CallOps:
        """What several steps do to a call attempt (give back what it holds, hold, free retry, create, record), over
        this step's stores and clients (the provider as the step holds it at each use)."""
        return CallOps(jobs=self.jobs, attempts=self.attempts, batches=self.batches, cache=self.cache,
                       billing=self.billing, slots=self.slots, dnc=self.dnc, history=self.history, sender=self.sender,
                       provider=lambda: self.provider, policy=self._policy, clock=self.clock, config=self.config,
                       timing=self.timing)

    def _remembered(self, key: str, load: Callable[[], T]) -> T:
        with self._recent_lock:
            if key in self._recent:
                return cast(T, self._recent[key])  # what ``load`` gave for this key
        value = load()
        with self._recent_lock:
            self._recent[key] = value
        return value

    def _remember(self, key: str, value: Any) -> None:
        """Keep ``value`` under ``key`` for the same second as :meth:`_remembered`."""
        with self._recent_lock:
            self._recent[key] = value

    def _job(self, job_id: str, given: Job | Mapping[str, Any] | None = None) -> Job | None:
        """The job ``given`` when the caller just read it (it is not read again), else the job as read now (None
        when it does not exist)."""
        if given is not None:
            job = Job.of(given)
            if job.id == job_id:
                return job
        doc = self.jobs.get(job_id)
        return None if doc is None else Job.from_doc(doc)

    def _account(self, account_id: str) -> Mapping[str, Any] | None:
        """The account document (re-read at most once a second)."""
        return self._remembered(f"account:{account_id}", lambda: self.accounts.get(account_id))

    def _limit(self, account_id: str) -> int:
        """The account's provider concurrency limit."""
        return self.accounts.concurrency_limit(self._account(account_id))

    def _pool_limit(self) -> int:
        """Calls the workspace allows in flight: ``RETELL_CONCURRENCY_LIMIT``, else what the provider said last
        (:meth:`shared.pipeline.maintenance.Maintenance.refresh_pool_limit`), else the default account limit (the
        provider's own default)."""
        if self.config.retell_concurrency_limit:
            return self.config.retell_concurrency_limit

        def read() -> int:
            limit = self.slots.pool_limit()
            return self.config.default_concurrency_limit if limit is None else limit
        return self._remembered("pool-limit", read)

    def _policy(self, account_id: str) -> ContactPolicy | None:
        """The account's contact policy (a change applies within a second)."""
        return self.accounts.contact_policy(self._account(account_id))

    # -- helpers -----------------------------------------------------------------------------

    def _sim(self, real_seconds: float) -> timedelta:
        """A real-time wait expressed on the shared clock."""
        return self.clock.simulated_wait(real_seconds)

    def _sim_ms(self, real_seconds: float) -> int:
        """A real-time wait as simulated milliseconds."""
        return self.clock.simulated_ms(real_seconds)

    def _slot_lease_ms(self, settings: CallSettings) -> int:
        """A slot's lease: the dialing lease, the call's longest life (ring, max duration, grace), the lease margin."""
        return self.timing.slot_lease_ms(settings, self.clock)

    def _real_ms(self, sim_seconds: float) -> int:
        return self.clock.real_ms(sim_seconds)

    def _lang(self) -> str:
        return self.config.lang

    def _settings_of(self, job: Job | Mapping[str, Any]) -> CallSettings:
        """The job's (or job document's) batch settings, or the global defaults when the batch is gone or its
        settings no longer validate."""
        return self._settings_in(self.cache.get(Job.of(job).batch_id))

    def _settings_in(self, cached: CachedBatch | None) -> CallSettings:
        """The settings of a batch cache entry, or the global defaults when there is no entry or its stored
        settings no longer validate (``cached.settings_error`` then says why)."""
        return settings_in(cached, self.config)

    def _stopped(self, job: Job, *, cached: CachedBatch | None = None) -> Reason | None:
        """Why the job's batch lets none of its jobs wait any more (cancelled, or gone: see
        :func:`~shared.domain.decisions.batch_stopped`), as the batch cache knows it (``cached``: the entry the caller
        just read); None while the batch goes on."""
        if cached is None:
            cached = self.cache.get(job.batch_id)
        return stopped_in(cached)

    def _cancel(self, job_id: str, reason: Reason, own: Lease) -> dict[str, Any] | None:
        """The job is ``cancelled`` with ``reason`` (one conditional transition: ``own`` names the states and the
        lease it must hold); the job store's rule for final states sets ``finished_at`` and drops the rest."""
        return self.jobs.cancel(job_id, reason, **own)
