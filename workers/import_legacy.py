"""``outdial import-legacy``: adopt a running deployment of the original worker.

Reads the original worker's ``batches`` and ``jobs`` (:class:`shared.stores.legacy_source.LegacySource`, never
written to) and writes outdial's batches and jobs through the same stores and validation as the API: a batch's
``call_settings`` are checked like ``POST /batches``, a contact like ``POST /batches/{id}/contacts``. What each job
becomes is :func:`shared.domain.legacy.map_job` (the README's table). The legacy id decides: a batch is found again
by ``legacy_id``, a job by its ``external_id`` (the legacy job id when it had none), so a second run imports nothing
new. Jobs stream through one cursor and are inserted a chunk at a time: memory does not grow with the source.

Cut-over: stop the original worker, run ``import-legacy --dry-run``, then the import, then start the dynos.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.config import Config, get_config
from shared.domain import states
from shared.domain.call_settings import InvalidCallSettings, parse_call_settings
from shared.domain.contacts import InvalidContact, parse_contact
from shared.domain.legacy import LegacyJob, LegacyProblem, legacy_id, map_batch, map_job
from shared.domain.reasons import because
from shared.errors import ValidationError
from shared.logs import configure_from, event, get_logger
from shared.pipeline.timing import Timing
from shared.stores.jobs import IMPORT_CHUNK
from shared.stores.legacy_source import LegacySource

log = get_logger(__name__)

#: Refusals listed in the report (the rest are counted).
MAX_LISTED = 50
#: Real seconds between two progress lines.
PROGRESS_EVERY_S = 1.0


@dataclass
class Tally:
    """Read, imported, skipped as already imported, refused; the first refusals as ``(legacy id, field, why)``."""

    read: int = 0
    imported: int = 0
    skipped: int = 0
    refused: int = 0
    refusals: list[tuple[str, str, str]] = field(default_factory=list)

    def refuse(self, ident: str, field_name: str, why: str) -> None:
        self.refused += 1
        if len(self.refusals) < MAX_LISTED:
            self.refusals.append((ident, field_name, why))


@dataclass
class Report:
    """What an import did (or, with ``dry_run``, would do)."""

    dry_run: bool
    batches: Tally = field(default_factory=Tally)
    jobs: Tally = field(default_factory=Tally)
    #: Jobs of batches not imported (not selected, or refused).
    other_jobs: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    unknown_statuses: Counter[str] = field(default_factory=Counter)
    accounts: set[str] = field(default_factory=set)
    elapsed_s: float = 0.0

    def render(self) -> str:
        verb = "would import" if self.dry_run else "imported"
        lines = [f"import-legacy{' (dry run: nothing written)' if self.dry_run else ''}:"]
        for name, tally in (("batches", self.batches), ("jobs", self.jobs)):
            lines.append(f"  {name}: {tally.read} read, {tally.imported} {verb}, {tally.skipped} skipped as already "
                         f"imported, {tally.refused} refused")
            for ident, field_name, why in tally.refusals:
                lines.append(f"    refused {ident}: {field_name}: {why}")
            if tally.refused > len(tally.refusals):
                lines.append(f"    ... and {tally.refused - len(tally.refusals)} more")
        if self.other_jobs:
            lines.append(f"  jobs of batches not imported: {self.other_jobs}")
        if self.statuses:
            lines.append("  legacy statuses: " + ", ".join(f"{s} {n}" for s, n in sorted(self.statuses.items())))
        if self.unknown_statuses:
            lines.append("  unknown statuses (refused, not guessed): "
                         + ", ".join(f"{s!r} {n}" for s, n in self.unknown_statuses.most_common()))
        if self.accounts:
            lines.append(f"  accounts the batches name: {', '.join(sorted(self.accounts))} (each needs an outdial "
                         f"account, PUT /accounts/{{id}}, before the dynos start)")
        lines.append(f"  {self.elapsed_s:.1f} s")
        return "\n".join(lines)


class Importer:
    """One import: ``runtime`` (the destination's stores and clock) from ``source``."""

    def __init__(self, runtime: Any, source: LegacySource, *, dry_run: bool = False,
                 default_account: str | None = None, progress: Callable[[str], None] | None = None) -> None:
        self.rt = runtime
        self.source = source
        self.dry_run = dry_run
        self.default_account = default_account
        self.progress = progress
        self.report = Report(dry_run=dry_run)
        #: legacy batch id -> (outdial batch id or None on a dry run of a new batch, account, hold of in_progress)
        self.targets: dict[str, tuple[str | None, str, int]] = {}

    def run(self, batch_ids: Sequence[str] | None = None) -> Report:
        started = time.monotonic()
        for doc in self.source.batches(batch_ids):
            self._batch(doc)
        self._jobs()
        self.report.elapsed_s = time.monotonic() - started
        event(log, "legacy_import_done", dry_run=self.dry_run, batches=self.report.batches.imported,
              jobs=self.report.jobs.imported, skipped=self.report.jobs.skipped, refused=self.report.jobs.refused)
        return self.report

    # -- batches ---------------------------------------------------------------------------------------------

    def _batch(self, doc: dict[str, Any]) -> None:
        tally = self.report.batches
        tally.read += 1
        try:
            mapped = map_batch(doc, default_account=self.default_account)
        except LegacyProblem as exc:
            tally.refuse(str(doc.get("_id")), exc.field, exc.message)
            return
        body = mapped.body
        try:
            settings = parse_call_settings(body.get("call_settings"), config=self.rt.config)
        except InvalidCallSettings as exc:
            for field_name, why in exc.errors:
                tally.refuse(mapped.legacy_id, f"call_settings.{field_name}", why)
            return
        hold_ms = int(Timing().call_life_s(settings) * 1000)
        account = body["account_id"]
        existing = self.rt.batches.by_legacy_id(mapped.legacy_id)
        if existing is not None:
            tally.skipped += 1
            self.targets[mapped.legacy_id] = (existing["_id"], existing["account_id"], hold_ms)
            return
        errors, _ = self.rt.batches.check(body)
        if errors:
            for field_name, why in errors:
                tally.refuse(mapped.legacy_id, field_name, why)
            return
        self.report.accounts.add(account)
        tally.imported += 1
        if self.dry_run:
            self.targets[mapped.legacy_id] = (None, account, hold_ms)
            return
        try:
            created = self.rt.batches.create(body, legacy_id=mapped.legacy_id)
        except ValidationError as exc:   # checked above; kept for a concurrent change of the rules
            tally.imported -= 1
            for field_name, why in exc.errors:
                tally.refuse(mapped.legacy_id, str(field_name), str(why))
            return
        self.targets[mapped.legacy_id] = (created["_id"], account, hold_ms)

    # -- jobs ------------------------------------------------------------------------------------------------

    def _jobs(self) -> None:
        total = self.source.count_jobs()
        pending: dict[str, list[tuple[int, dict[str, Any], dict[str, Any]]]] = {}
        last = time.monotonic()
        for seen, doc in enumerate(self.source.jobs(), start=1):
            self._job(doc, pending)
            for key in [k for k, rows in pending.items() if len(rows) >= IMPORT_CHUNK]:
                self._flush(key, pending.pop(key))
            if self.progress is not None and time.monotonic() - last >= PROGRESS_EVERY_S:
                last = time.monotonic()
                jobs = self.report.jobs
                self.progress(f"jobs: {seen:,} of about {total:,} read; {jobs.imported:,} imported, "
                              f"{jobs.skipped:,} skipped, {jobs.refused:,} refused")
        for key, rows in pending.items():
            self._flush(key, rows)

    def _job(self, doc: dict[str, Any], pending: dict[str, list[tuple[int, dict[str, Any], dict[str, Any]]]]) -> None:
        tally = self.report.jobs
        ident = str(doc.get("_id"))
        batch_key = legacy_id(doc.get("batch_id"))
        if batch_key is None or batch_key not in self.targets:
            self.report.other_jobs += 1
            return
        tally.read += 1
        status = str(doc.get("status"))
        self.report.statuses[status] += 1
        _, _, hold_ms = self.targets[batch_key]
        try:
            job = map_job(doc, now_ms=self.rt.clock.now_ms(), in_progress_hold_ms=hold_ms)
        except LegacyProblem as exc:
            if exc.field == "status":
                self.report.unknown_statuses[status] += 1
            tally.refuse(ident, exc.field, exc.message)
            return
        pending.setdefault(batch_key, []).append((tally.read, job.contact, _fields(job)))

    def _flush(self, batch_key: str, rows: list[tuple[int, dict[str, Any], dict[str, Any]]]) -> None:
        tally = self.report.jobs
        batch_id, account, _ = self.targets[batch_key]
        legacy_of = {index: fields["legacy_id"] for index, _, fields in rows}
        if self.dry_run:
            for index, contact, _ in rows:
                try:
                    parse_contact(contact, region=self.rt.config.phone_default_region)
                except InvalidContact as exc:
                    tally.refuse(legacy_of[index], *_problem(str(exc)))
                    continue
                if batch_id is not None and self.rt.jobs.find(
                        {"batch_id": {"$eq": batch_id}, "dedupe_key": {"$eq": f"{batch_id}:{contact['external_id']}"}},
                        limit=1):
                    tally.skipped += 1
                else:
                    tally.imported += 1
            return
        assert batch_id is not None
        result = self.rt.jobs.import_jobs(batch_id, account, rows)
        tally.imported += result.imported
        tally.skipped += result.duplicates
        duplicates = set(result.duplicate_at)
        for index, message in result.errors:
            if index not in duplicates:
                tally.refuse(legacy_of.get(index, "?"), *_problem(message))


def _fields(job: LegacyJob) -> dict[str, Any]:
    fields: dict[str, Any] = {"status": job.status, "tries": job.tries, "legacy_id": job.legacy_id}
    if job.next_try_at is not None:
        fields["next_try_at"] = job.next_try_at
    if job.status == states.FAILED:
        fields["reason"] = because("legacy", error=job.last_error or "failed in the original worker")
    return fields


def _problem(message: str) -> tuple[str, str]:
    """A contact's problem as ``(field, why)``: ``phones[0]: ...`` is the contact's ``contact.phones[0]``."""
    head, sep, rest = message.partition(":")
    head = head.strip()
    if sep and head and " " not in head:
        return f"contact.{head}", rest.strip()
    return "contact", message


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="outdial import-legacy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--from-uri", required=True, help="the original worker's MongoDB connection string")
    parser.add_argument("--from-db", required=True, help="its database name")
    parser.add_argument("--batches", default=None, help="only these legacy batch ids, comma-separated")
    parser.add_argument("--account", default=None, help="the account of batches that name none")
    parser.add_argument("--dry-run", action="store_true", help="print the report and write nothing")
    return parser


def main(argv: Sequence[str], *, config: Config | None = None) -> int:
    args = _parser().parse_args(list(argv))
    config = config or get_config()
    configure_from(config)
    from shared.stores import mongo
    from workers.runtime import build_runtime

    runtime = build_runtime(config)
    if not args.dry_run:
        mongo.ensure_indexes(runtime.db)
    source = LegacySource(args.from_uri, args.from_db)
    wanted = [b.strip() for b in args.batches.split(",") if b.strip()] if args.batches else None
    try:
        importer = Importer(runtime, source, dry_run=args.dry_run, default_account=args.account,
                            progress=lambda line: print(line, file=sys.stderr, flush=True))
        report = importer.run(wanted)
    finally:
        source.close()
        runtime.close()
    print(report.render(), flush=True)
    return 1 if report.jobs.refused or report.batches.refused else 0
