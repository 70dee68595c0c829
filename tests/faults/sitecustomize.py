"""Faults injected into a real outdial process, for the tests that need one at an exact point.

A test puts this directory on the ``PYTHONPATH`` of the processes it starts; Python imports this
module at start-up, and it changes nothing unless one of these variables is set:

``OUTDIAL_TEST_CLOCK_SHIFT_S``
    Seconds added to ``time.time()`` in this process: a machine whose clock is wrong.
``OUTDIAL_TEST_CLOCK_STEP``
    ``<Class.method>:<seconds>``, e.g. ``Dial.dial:-300``: the first call of that method in this process first
    steps ``time.time()`` by that many seconds, for good (``time.monotonic()`` is untouched): a wall clock set
    back or forward while the process runs (NTP, an operator), at that exact point.
``OUTDIAL_TEST_FREEZE_AFTER_ATTEMPT``
    ``1``: the first process of the stack (decided through Redis) that records an attempt stops itself
    with SIGSTOP right after recording it, before its create: a frozen process. Its pid is written to
    the Redis key ``outdial:test:frozen``; the test resumes it with SIGCONT.
``OUTDIAL_TEST_STALL``
    ``<Class.method>:<seconds>[:<times>]``, e.g. ``Slots.acquire:3:1``: the first ``times`` (default 1)
    calls of that method in this process first sleep that many real seconds: a stall (a slow network,
    a long GC) at that point.
"""

from __future__ import annotations

import os
import time

#: Seconds added to ``time.time()`` in this process (changed by a step).
_shift = [0.0]
#: Classes whose methods the hooks below may wrap, by module.
_MODULES = {"Slots": "shared.stores.slots", "Billing": "shared.stores.billing",
            "AttemptStore": "shared.stores.attempts", "JobStore": "shared.stores.jobs", "Dial": "shared.pipeline.dial"}


def _shift_clock(seconds: float) -> None:
    real = time.time
    _shift[0] = seconds
    time.time = lambda: real() + _shift[0]  # type: ignore[assignment]


def _project_first() -> None:
    """``python -m`` puts the current directory first on sys.path only after this module ran: put it there now,
    so that a class wrapped here is the one the process will run, not an installed copy's."""
    import sys

    if sys.path[:1] != [os.getcwd()]:
        sys.path.insert(0, os.getcwd())


def _wrap_first_calls(target: str, times: int, before) -> None:  # type: ignore[no-untyped-def]
    """Run ``before()`` at the start of the first ``times`` calls of ``Class.method`` in this process."""
    import importlib
    import threading

    _project_first()
    class_name, method = target.split(".")
    cls = getattr(importlib.import_module(_MODULES[class_name]), class_name)
    original = getattr(cls, method)
    left = [times]
    lock = threading.Lock()

    def wrapped(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        with lock:
            due = left[0] > 0
            left[0] -= 1 if due else 0
        if due:
            before()
        return original(self, *args, **kwargs)

    setattr(cls, method, wrapped)


def _step_clock(spec: str) -> None:
    target, seconds = spec.split(":")

    def step() -> None:
        _shift[0] += float(seconds)

    _wrap_first_calls(target, 1, step)


def _freeze_after_attempt() -> None:
    import signal

    import redis

    _project_first()
    from shared.stores.attempts import AttemptStore

    original = AttemptStore.insert

    def insert(self, doc):  # type: ignore[no-untyped-def]
        inserted = original(self, doc)
        if inserted and doc.get("state", "dialing") == "dialing":
            client = redis.Redis.from_url(os.environ["REDIS_URL"])
            if client.set("outdial:test:frozen", os.getpid(), nx=True):
                os.kill(os.getpid(), signal.SIGSTOP)
                # The stop does not always take this thread at once (measured: it went on to send its create in
                # the same millisecond while the others stopped); a sleep enters the kernel, where it stops.
                time.sleep(0.2)
        return inserted

    AttemptStore.insert = insert  # type: ignore[method-assign]


def _stall(spec: str) -> None:
    target, seconds, *rest = spec.split(":")
    _wrap_first_calls(target, int(rest[0]) if rest else 1, lambda: time.sleep(float(seconds)))


if os.environ.get("OUTDIAL_TEST_CLOCK_SHIFT_S") or os.environ.get("OUTDIAL_TEST_CLOCK_STEP"):
    _shift_clock(float(os.environ.get("OUTDIAL_TEST_CLOCK_SHIFT_S") or 0))
if os.environ.get("OUTDIAL_TEST_CLOCK_STEP"):
    _step_clock(os.environ["OUTDIAL_TEST_CLOCK_STEP"])
if os.environ.get("OUTDIAL_TEST_FREEZE_AFTER_ATTEMPT") == "1":
    _freeze_after_attempt()
if os.environ.get("OUTDIAL_TEST_STALL"):
    _stall(os.environ["OUTDIAL_TEST_STALL"])
