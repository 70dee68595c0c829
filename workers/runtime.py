"""The composition root: every object a process uses (stores, cache, billing, provider client, pipeline)
comes from its one :class:`Runtime`, built once per process by :func:`get_runtime`."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property

import redis as redis_lib
from pymongo.database import Database

from shared import metrics
from shared.cache.batch_cache import BatchCache
from shared.cache.invalidation import publish_invalidation
from shared.clock import Clock, ServerTime, get_clock, set_clock
from shared.config import LOCAL_REDIS_URL, Config, get_config
from shared.domain.calling_window import use_profile_reloader
from shared.domain.compliance import REGISTRY
from shared.errors import ConfigError
from shared.pipeline import Pipeline, Sender, Timing
from shared.pipeline.result_events import ResultEvents
from shared.provider.retell import RetellClient
from shared.redis_keys import workspace_id
from shared.stores import mongo
from shared.stores.account_changes import AccountChanges
from shared.stores.accounts import AccountStore
from shared.stores.admin_sessions import AdminSessions
from shared.stores.attempts import AttemptStore
from shared.stores.batches import BatchStore
from shared.stores.billing import Billing
from shared.stores.compliance_profiles import ComplianceProfileStore
from shared.stores.contact_history import ContactHistory
from shared.stores.coordination import Coordination
from shared.stores.dnc import DncStore
from shared.stores.jobs import JobStore
from shared.stores.result_events import ResultEventStore
from shared.stores.slots import Slots


@dataclass
class Runtime:
    """A process's objects, each built on first use and then shared. Build it with :func:`build_runtime`
    (a process's own: :func:`get_runtime`)."""

    config: Config
    clock: Clock
    db: Database
    redis: redis_lib.Redis
    redis_url: str
    #: Where the clock's real time comes from (Redis's TIME through this process's offset).
    server_time: ServerTime | None = None
    _process_pipeline: Pipeline | None = field(default=None, init=False, repr=False, compare=False)
    _build_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    @cached_property
    def jobs(self) -> JobStore:
        return JobStore(self.db, clock=self.clock, config=self.config)

    @cached_property
    def batches(self) -> BatchStore:
        return BatchStore(self.db, clock=self.clock, config=self.config, on_change=self.publish_invalidation)

    @cached_property
    def accounts(self) -> AccountStore:
        return AccountStore(self.db, clock=self.clock, config=self.config)

    @cached_property
    def attempts(self) -> AttemptStore:
        return AttemptStore(self.db, clock=self.clock)

    @cached_property
    def dnc(self) -> DncStore:
        return DncStore(self.db, clock=self.clock, config=self.config)

    @cached_property
    def history(self) -> ContactHistory:
        return ContactHistory(self.db, clock=self.clock)

    @cached_property
    def compliance_profiles(self) -> ComplianceProfileStore:
        """The operator's own compliance profiles (the profiles in force: ``shared.domain.compliance.REGISTRY``)."""
        return ComplianceProfileStore(self.db, clock=self.clock)

    @cached_property
    def slots(self) -> Slots:
        return Slots(self.redis, workspace=workspace_id(self.config.retell_api_key, self.config.retell_base_url))

    @cached_property
    def admin_sessions(self) -> AdminSessions:
        return AdminSessions(self.redis)

    @cached_property
    def coordination(self) -> Coordination:
        return Coordination(self.redis, workspace=self.slots.workspace)

    @cached_property
    def cache(self) -> BatchCache:
        """The batch cache; each of its bulk loads (its first, after a clear, then once per TTL) reads the operator's
        compliance profiles again, so a profile changed anywhere reaches this process with the invalidation that
        clears every cache."""
        return BatchCache.for_store(self.batches, config=self.config, clock=self.clock,
                                    refresh=self.install_compliance_profiles)

    def install_compliance_profiles(self) -> None:
        """Put the operator's compliance profiles in force in this process (:data:`REGISTRY`)."""
        REGISTRY.install(self.compliance_profiles.all())

    @cached_property
    def billing(self) -> Billing:
        return Billing(self.db, clock=self.clock, config=self.config, jobs=self.jobs)

    @cached_property
    def account_changes(self) -> AccountChanges:
        """``PUT /accounts/{account_id}`` (create an account, change its plan, balance, limit or policy)."""
        return AccountChanges(self.billing)

    @cached_property
    def result_event_store(self) -> ResultEventStore:
        """The result events' outbox and the flags that feed it."""
        return ResultEventStore(self.db, clock=self.clock)

    @cached_property
    def result_events(self) -> ResultEvents:
        """The result webhooks' sweep and deliveries, handing claimed events to the ``deliver_result`` actor."""
        from workers.actors import ResultSender  # the actors' module declares them on the broker

        return ResultEvents(store=self.result_event_store, jobs=self.jobs, sender=ResultSender(), clock=self.clock,
                            config=self.config)

    @cached_property
    def provider(self) -> RetellClient:
        """The provider client (``RETELL_BASE_URL``; unset: the local simulator's default address)."""
        return RetellClient(self.config)

    @cached_property
    def sender(self) -> Sender:
        """How this process's pipeline sends its next messages: through the dramatiq actors."""
        from workers.actors import DramatiqSender  # the actors' module declares them on the broker

        return DramatiqSender(self.redis)

    @property
    def process_pipeline(self) -> Pipeline:
        """This process's pipeline (the actors' and the webhooks'), sending through :attr:`sender`; built once,
        by the first thread that asks."""
        pipeline = self._process_pipeline
        if pipeline is None:
            with self._build_lock:
                if self._process_pipeline is None:
                    self._process_pipeline = self.pipeline(self.sender)
                pipeline = self._process_pipeline
        return pipeline

    def pipeline(self, sender: Sender) -> Pipeline:
        """A pipeline on this runtime's objects that sends through ``sender``."""
        return Pipeline(jobs=self.jobs, attempts=self.attempts, batches=self.batches, accounts=self.accounts,
                        cache=self.cache, billing=self.billing, slots=self.slots, coordination=self.coordination,
                        provider=self.provider,
                        sender=sender, clock=self.clock, config=self.config, dnc=self.dnc,
                        history=self.history, timing=Timing.from_config(self.config))

    def publish_invalidation(self, batch_id: str) -> None:
        publish_invalidation(self.redis, batch_id)

    def close(self) -> None:
        """Close the provider client's connections (if it was built) and the Redis client."""
        provider = self.__dict__.get("provider")
        if provider is not None:
            provider.close()
        self.redis.close()


def build_runtime(config: Config | None = None, clock: Clock | None = None) -> Runtime:
    """Connect to the services ``config`` names. MongoDB must be named: processes share it.

    The runtime's clock reads real time from Redis (:class:`shared.clock.ServerTime`), so every process
    that shares the Redis shares one time for leases, due times and calling windows.
    """
    config = config or get_config()
    if not config.mongodb_uri:
        raise ConfigError(
            "MONGODB_URI is not set: worker, clock and web processes must share one MongoDB "
            "(`outdial services` starts an embedded one and prints its URI)"
        )
    config.check_deployment()
    redis_url = config.redis_url or LOCAL_REDIS_URL
    db = mongo.database(config.mongodb_uri, config.mongodb_db)
    client = redis_lib.Redis.from_url(redis_url, socket_timeout=10, socket_connect_timeout=5,
                                      health_check_interval=30)
    server_time = ServerTime(client)
    metrics.CLOCK_OFFSET.set_function(lambda: server_time.offset_s)
    metrics.CLOCK_UNCERTAINTY.set_function(lambda: min(server_time.uncertainty_s, 1e9))
    metrics.CLOCK_AGE.set_function(lambda: min(server_time.age_s, 1e9))
    return Runtime(config=config, clock=(clock or get_clock()).with_source(server_time), db=db, redis=client,
                   redis_url=redis_url, server_time=server_time)


_runtime: Runtime | None = None
_lock = threading.Lock()


def get_runtime() -> Runtime:
    """This process's runtime; its clock (on the shared server time) becomes the process clock."""
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = build_runtime()
            mongo.ensure_indexes(_runtime.db)
            set_clock(_runtime.clock)
            # A batch naming a profile this process does not know yet reads the profiles again before it is refused.
            use_profile_reloader(_runtime.install_compliance_profiles)
        return _runtime
