"""The dramatiq actors (``dramatiq workers.actors``): one per pipeline step plus the upkeep and the result webhooks,
each thin.

Each actor asks the process's :class:`shared.pipeline.Pipeline` to do its step; the pipeline
answers by sending the next messages through :class:`DramatiqSender`. Queues are separate so a
backlog of dials never delays the polls of calls in progress.
"""

from __future__ import annotations

from typing import TypedDict

import dramatiq
from redis import Redis

from shared.pipeline import Pipeline
from shared.pipeline.result_events import ResultEvents
from shared.stores.coordination import RESULTS_SWEEP, Coordination
from workers.broker import broker  # noqa: F401 - sets the broker before actors are declared

#: Queue names.
SCHEDULE_QUEUE = "outdial.schedule"
MAINTAIN_QUEUE = "outdial.maintain"
DIAL_QUEUE = "outdial.dial"
POLL_QUEUE = "outdial.poll"
#: The result webhooks' sweep and deliveries: never on the dial or poll queues.
RESULTS_QUEUE = "outdial.results"
class _RetryOptions(TypedDict):
    max_retries: int
    min_backoff: int
    max_backoff: int


#: Retries of an actor that raised (a store or Redis error): fast, few; leases cover the rest.
RETRY_OPTIONS: _RetryOptions = {"max_retries": 5, "min_backoff": 500, "max_backoff": 30_000}
#: Real milliseconds during which a second "fill the freed slot" kick for an account is skipped.
KICK_DEBOUNCE_MS = 100


@dramatiq.actor(queue_name=SCHEDULE_QUEUE, time_limit=120_000, **RETRY_OPTIONS)
def schedule_due(account_id: str | None = None, periodic: bool = False) -> None:
    """Dispatch due jobs (one account's, or every account's). ``periodic``: a message from a clock of an
    earlier release, which asked for the upkeep in the same message; it runs it first."""
    if periodic:
        pipeline().maintain()
    pipeline().schedule_due(account_id)


@dramatiq.actor(queue_name=MAINTAIN_QUEUE, time_limit=120_000, **RETRY_OPTIONS)
def maintain() -> None:
    """The periodic upkeep (:meth:`shared.pipeline.maintenance.Maintenance.maintain`), on its own queue so a slow
    billing repair never delays dispatch."""
    pipeline().maintain()


@dramatiq.actor(queue_name=DIAL_QUEUE, time_limit=120_000, **RETRY_OPTIONS)
def dial(job_id: str, lease_owner: str) -> None:
    pipeline().dial(job_id, lease_owner)


@dramatiq.actor(queue_name=POLL_QUEUE, time_limit=60_000, **RETRY_OPTIONS)
def poll(job_id: str, lease_owner: str, call_id: str, n: int = 0) -> None:
    pipeline().poll(job_id, lease_owner, call_id, n)


@dramatiq.actor(queue_name=POLL_QUEUE, time_limit=60_000, **RETRY_OPTIONS)
def reconcile(job_id: str, lease_owner: str) -> None:
    pipeline().reconcile(job_id, lease_owner)


@dramatiq.actor(queue_name=RESULTS_QUEUE, time_limit=120_000, **RETRY_OPTIONS)
def sweep_results() -> None:
    """At most once per ``RESULTS_SWEEP_S`` of all processes: look for the analyses due to be looked for
    (:meth:`shared.pipeline.analysis.Analysis.look_for_analyses`), decide the contacts whose conversation's analysis
    was not applied yet (:meth:`shared.pipeline.after_call.AfterCallStep.check_analyzing`), then copy the new
    analyses into the contacts' results, turn the pipeline's flags into result events and hand the due ones to
    deliveries (:meth:`shared.pipeline.result_events.ResultEvents.sweep`)."""
    steps = pipeline()
    if not steps.coordination.once_per(RESULTS_SWEEP, int(steps.config.results_sweep_s * 1000)):
        return   # another process swept less than RESULTS_SWEEP_S ago
    steps.look_for_analyses()
    steps.check_analyzing()
    result_events().sweep()


@dramatiq.actor(queue_name=RESULTS_QUEUE, time_limit=60_000, max_retries=0)
def deliver_result(event_id: str, token: str) -> None:
    """POST one claimed result event to the account's webhook (a failure is retried by the sweep, not here)."""
    result_events().deliver(event_id, token)


class ResultSender:
    """The result events' :class:`shared.pipeline.result_events.ResultSender`, on the ``deliver_result`` actor."""

    def deliver_result(self, event_id: str, token: str) -> None:
        deliver_result.send(event_id, token)


class DramatiqSender:
    """The pipeline's :class:`shared.pipeline.Sender`, on these actors."""

    def __init__(self, redis: Redis) -> None:
        self.coordination = Coordination(redis)

    def dial(self, job_id: str, lease_owner: str, *, delay_ms: int = 0) -> None:
        dial.send_with_options(args=(job_id, lease_owner), delay=delay_ms or None)

    def poll(self, job_id: str, lease_owner: str, call_id: str, n: int, *, delay_ms: int = 0) -> None:
        poll.send_with_options(args=(job_id, lease_owner, call_id, n), delay=delay_ms or None)

    def reconcile(self, job_id: str, lease_owner: str, *, delay_ms: int = 0) -> None:
        reconcile.send_with_options(args=(job_id, lease_owner), delay=delay_ms or None)

    def schedule(self, account_id: str | None = None) -> None:
        if account_id is not None and not self.coordination.kick(account_id, debounce_ms=KICK_DEBOUNCE_MS):
            return
        schedule_due.send(account_id)


def result_events() -> ResultEvents:
    """This process's result events' sweep and deliveries (:attr:`workers.runtime.Runtime.result_events`)."""
    from workers.runtime import get_runtime

    return get_runtime().result_events


def pipeline() -> Pipeline:
    """This process's pipeline: :attr:`workers.runtime.Runtime.process_pipeline` of its runtime."""
    from workers.runtime import get_runtime

    return get_runtime().process_pipeline
