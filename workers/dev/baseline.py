"""The reference worker of ``outdial bench --baseline``: a minimal single-process dialer, for comparison only.

It is built the plain way a first dialer is: a claim loop takes the next due ``pending`` job
(``find_one_and_update`` to ``in_progress``, oldest ``next_try_at`` first) whenever one of the
account's ``concurrency_limit`` slots (a semaphore) is free, and hands it to a thread of its own,
which creates the call (``create-phone-call`` through :class:`shared.provider.retell.RetellClient`, as
outdial does), asks for it (``get-call``) every 5 simulated seconds until it ends, and marks the
job ``completed`` with one update. Batch settings are read once per batch and again every 5
simulated minutes. No lease, no retry, no calling window, no billing, no webhook, no recovery
when the process dies: it is a benchmark reference, not a product path.

Run as its own process (``python -m workers.dev.baseline --batch-id ID --phones FILE``) on the
environment of a stack (``MONGODB_URI``, ``MONGODB_DB``, ``RETELL_BASE_URL``, ``RETELL_API_KEY``,
the shared clock): it imports the contacts (not counted), dials them all, and prints one JSON line
of its figures: completed and failed calls, real seconds, its CPU seconds, MongoDB round trips
(counted by a pymongo command listener) by command, its peak RSS and the dial lag.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pymongo import ReturnDocument

from shared.clock import Clock, get_clock
from shared.config import get_config
from shared.domain import states
from shared.provider.retell import RetellClient
from shared.stores import mongo
from shared.stores.jobs import JobStore
from workers.dev.bench import cpu_s, peak_rss_mb, percentile

#: Simulated seconds between two polls of a call in progress.
POLL_S = 5.0
#: Simulated seconds a batch's settings are kept before they are read again.
SETTINGS_TTL_S = 300.0
#: Simulated seconds the claim loop waits when no job is due.
IDLE_S = 1.0
#: The state a claimed job is in while its call runs.
IN_PROGRESS = "in_progress"


class BaselineWorker:
    """Claim loop plus one blocking thread per call, at most ``limit`` calls at once."""

    def __init__(self, db: Any, clock: Clock, provider: RetellClient, *, limit: int) -> None:
        self.jobs = db[mongo.JOBS]
        self.batches = db[mongo.BATCHES]
        self.clock = clock
        self.provider = provider
        self.slots = threading.BoundedSemaphore(limit)
        self.lock = threading.Lock()
        self.settings: dict[str, tuple[int, dict[str, Any]]] = {}
        self.lags_s: list[float] = []
        self.completed = 0
        self.failed = 0
        self.errors: dict[str, int] = {}

    def run(self, expected: int, *, deadline: float) -> None:
        """Dial until ``expected`` jobs have ended or the real ``deadline`` (``time.monotonic``) has passed."""
        while self.completed + self.failed < expected and time.monotonic() < deadline:
            self.slots.acquire()
            now = self.clock.now_ms()
            job = self.jobs.find_one_and_update(
                {"status": states.PENDING, "next_try_at": {"$lte": now}},
                {"$set": {"status": IN_PROGRESS, "updated_at": now}},
                sort=[("next_try_at", 1)], return_document=ReturnDocument.AFTER)
            if job is None:
                self.slots.release()
                time.sleep(self.clock.real_seconds(IDLE_S))
                continue
            threading.Thread(target=self._call, args=(job,), daemon=True).start()

    def _batch(self, batch_id: str) -> dict[str, Any]:
        """The batch document, read again once it is :data:`SETTINGS_TTL_S` old."""
        now = self.clock.now_ms()
        with self.lock:
            cached = self.settings.get(batch_id)
        if cached is not None and now - cached[0] < SETTINGS_TTL_S * 1000:
            return cached[1]
        doc = self.batches.find_one({"_id": batch_id}) or {}
        with self.lock:
            self.settings[batch_id] = (now, doc)
        return doc

    def _call(self, job: dict[str, Any]) -> None:
        try:
            batch = self._batch(job["batch_id"])
            settings = batch.get("call_settings") or {}
            contact = job["contact"]
            dialed_at = self.clock.now_ms()
            call = self.provider.create_phone_call(
                from_number=batch["from_number"], to_number=contact["phones"][0], agent_id=batch.get("agent_id"),
                dynamic_variables=contact.get("variables") or {},
                metadata={"job_id": job["_id"], "batch_id": job["batch_id"]},
                max_call_duration_s=settings.get("max_call_duration"))
            with self.lock:
                self.lags_s.append((dialed_at - job["next_try_at"]) / 1000)
            while not call.is_final:
                time.sleep(self.clock.real_seconds(POLL_S))
                call = self.provider.get_call(call.call_id)
            self.jobs.update_one({"_id": job["_id"]}, {"$set": {
                "status": states.COMPLETED, "call_id": call.call_id, "outcome": call.disconnection_reason,
                "updated_at": self.clock.now_ms()}})
            with self.lock:
                self.completed += 1
        except Exception as exc:  # noqa: BLE001 - the reference worker fails the job and goes on
            self.jobs.update_one({"_id": job["_id"]}, {"$set": {
                "status": states.FAILED, "error": type(exc).__name__, "updated_at": self.clock.now_ms()}})
            with self.lock:
                self.failed += 1
                self.errors[type(exc).__name__] = self.errors.get(type(exc).__name__, 0) + 1
        finally:
            self.slots.release()


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.dev.baseline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-id", required=True, help="the batch whose contacts are imported and dialed")
    parser.add_argument("--phones", required=True, help="file of the contacts' numbers, one a line")
    parser.add_argument("--time-cap", type=float, default=900.0,
                        help="real seconds after which it stops claiming and reports what it reached (default 900)")
    args = parser.parse_args(argv)
    config = get_config()
    clock = get_clock()
    db = mongo.database(config.mongodb_uri or "", config.mongodb_db)
    batch = db[mongo.BATCHES].find_one({"_id": args.batch_id})
    if batch is None:
        print(f"no batch {args.batch_id}", file=sys.stderr)
        return 2
    account = db[mongo.ACCOUNTS].find_one({"_id": batch["account_id"]}) or {}
    limit = int(account.get("concurrency_limit") or config.retell_concurrency_limit or 20)
    phones = Path(args.phones).read_text().split()
    started = time.monotonic()
    JobStore(db, clock=clock, config=config).create_jobs(
        batch["_id"], batch["account_id"], [{"name": f"c{i}", "phones": [p]} for i, p in enumerate(phones)])
    worker = BaselineWorker(db, clock, RetellClient(config), limit=limit)
    mongo.COMMANDS.reset()
    cpu0 = cpu_s(os.getpid())
    worker.run(len(phones), deadline=started + args.time_cap)
    elapsed = time.monotonic() - started
    counts = dict(mongo.COMMANDS.counts)
    print(json.dumps({
        "completed": worker.completed, "failed": worker.failed, "errors": worker.errors, "limit": limit,
        "elapsed_s": round(elapsed, 2), "cpu_s": round(cpu_s(os.getpid()) - cpu0, 3),
        "mongo_commands": sum(counts.values()), "mongo_commands_by_name": counts,
        "peak_rss_mb": round(peak_rss_mb(os.getpid()), 1),
        "lag_p50_sim_s": round(percentile(worker.lags_s, 0.5), 1),
        "lag_p99_sim_s": round(percentile(worker.lags_s, 0.99), 1),
    }), flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
