"""Faults injected into a real outdial process, for the tests that need one at an exact point.

A test puts this directory on the ``PYTHONPATH`` of the processes it starts; Python imports this
module at start-up, and it changes nothing unless one of these variables is set:

``OUTDIAL_TEST_CLOCK_SHIFT_S``
    Seconds added to ``time.time()`` in this process: a machine whose clock is wrong.
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


def _shift_clock(seconds: float) -> None:
    real = time.time
    time.time = lambda: real() + seconds  # type: ignore[assignment]


def _freeze_after_attempt() -> None:
    import signal

    import redis

    from shared.attempts import AttemptStore

    original = AttemptStore.insert

    def insert(self, doc):  # type: ignore[no-untyped-def]
        inserted = original(self, doc)
        if inserted and doc.get("state", "dialing") == "dialing":
            client = redis.Redis.from_url(os.environ["REDIS_URL"])
            if client.set("outdial:test:frozen", os.getpid(), nx=True):
                os.kill(os.getpid(), signal.SIGSTOP)
        return inserted

    AttemptStore.insert = insert  # type: ignore[method-assign]


def _stall(spec: str) -> None:
    import importlib
    import threading

    target, seconds, *rest = spec.split(":")
    class_name, method = target.split(".")
    modules = {"Slots": "shared.slots", "Billing": "shared.billing", "AttemptStore": "shared.attempts",
               "JobStore": "shared.jobs"}
    cls = getattr(importlib.import_module(modules[class_name]), class_name)
    original = getattr(cls, method)
    left = [int(rest[0]) if rest else 1]
    lock = threading.Lock()

    def stalled(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        with lock:
            stall = left[0] > 0
            left[0] -= 1 if stall else 0
        if stall:
            time.sleep(float(seconds))
        return original(self, *args, **kwargs)

    setattr(cls, method, stalled)


if os.environ.get("OUTDIAL_TEST_CLOCK_SHIFT_S"):
    _shift_clock(float(os.environ["OUTDIAL_TEST_CLOCK_SHIFT_S"]))
if os.environ.get("OUTDIAL_TEST_FREEZE_AFTER_ATTEMPT") == "1":
    _freeze_after_attempt()
if os.environ.get("OUTDIAL_TEST_STALL"):
    _stall(os.environ["OUTDIAL_TEST_STALL"])
