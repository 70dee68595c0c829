"""The dial pipeline: load, decide, write, send. One module per step (:mod:`shared.pipeline.dispatch`,
:mod:`shared.pipeline.dial`, :mod:`shared.pipeline.reconcile`, :mod:`shared.pipeline.poll`,
:mod:`shared.pipeline.finalize`, :mod:`shared.pipeline.analysis`, :mod:`shared.pipeline.after_call`,
:mod:`shared.pipeline.maintenance`), composed here.

:class:`Pipeline` holds the stores and clients of one process; the dramatiq actors
(``workers/actors.py``) and the webhook handler call its methods and nothing else. Every write
is a conditional update, so each method is safe to run twice with the same message and against
a concurrent twin in another process. Time comes from the shared clock; durations of the
campaign (windows, retries, calls) are simulated time, while waits that protect the provider or
cover a slow process (leases, back-off after a provider error) are real time converted with
:meth:`Clock.simulated_seconds`. The waits are in :mod:`shared.pipeline.timing`.
"""

from __future__ import annotations

from shared.pipeline.after_call import AfterCallStep
from shared.pipeline.analysis import Analysis
from shared.pipeline.dial import Dial
from shared.pipeline.dispatch import Dispatch
from shared.pipeline.finalize import Finalize
from shared.pipeline.interfaces import BatchSource, Provider, Sender
from shared.pipeline.maintenance import Maintenance
from shared.pipeline.poll import Poll
from shared.pipeline.reconcile import Reconcile
from shared.pipeline.step import Step
from shared.pipeline.timing import Timing

__all__ = ["BatchSource", "Pipeline", "Provider", "Sender", "Step", "Timing"]


class Pipeline(Dispatch, Dial, Reconcile, Poll, Finalize, Analysis, AfterCallStep, Maintenance):
    """Every step of one process's pipeline (the actors and the webhook handler call its methods)."""
