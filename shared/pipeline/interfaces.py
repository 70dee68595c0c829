"""The interfaces the pipeline sends and calls through: the message sender (the dramatiq actors), the provider
client and the batch cache. Tests give the pipeline in-process doubles of them (``tests/fixtures/doubles.py``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from shared.provider.retell import Call, Concurrency

if TYPE_CHECKING:
    from shared.cache.batch_cache import CachedBatch


class Sender(Protocol):
    """How the pipeline sends its next messages (the dramatiq actors implement it)."""

    def dial(self, job_id: str, lease_owner: str, *, delay_ms: int = 0) -> None: ...
    def poll(self, job_id: str, lease_owner: str, call_id: str, n: int, *, delay_ms: int = 0) -> None: ...
    def reconcile(self, job_id: str, lease_owner: str, *, delay_ms: int = 0) -> None: ...
    def schedule(self, account_id: str | None = None) -> None: ...


class Provider(Protocol):
    """The provider client (:class:`shared.provider.retell.RetellClient`, blocking): the calls it answers are
    :class:`~shared.provider.retell.Call`, its workspace limit a :class:`~shared.provider.retell.Concurrency`."""

    def create_phone_call(self, *, from_number: str | None, to_number: str, agent_id: str | None = None,
                          dynamic_variables: Mapping[str, Any] | None = None,
                          metadata: Mapping[str, Any] | None = None, ring_timeout_s: float | None = None,
                          max_call_duration_s: float | None = None,
                          agent_override: Mapping[str, Any] | None = None,
                          idempotency_key: str | None = None,
                          precheck: Callable[[], None] | None = None) -> Call: ...
    def get_call(self, call_id: str) -> Call: ...
    def stop_call(self, call_id: str) -> bool: ...
    def find_calls_by_metadata(self, to_number: str, key: str, value: str, *, since_ms: int | None = None,
                               max_pages: int = 50) -> list[Call]: ...
    def get_concurrency(self) -> Concurrency: ...


class BatchSource(Protocol):
    """The batch cache (:class:`shared.cache.batch_cache.BatchCache`): a batch as it holds it, None when unknown."""

    def get(self, batch_id: str) -> CachedBatch | None: ...
