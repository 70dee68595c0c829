"""``outdial import-legacy``: the original worker's documents, written with pymongo as it wrote them (ObjectId ids,
datetime instants, missing fields) into a second database of the same server, imported through the stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import ObjectId

from shared.clock import started_at
from shared.domain import states
from shared.domain.phones import numbered
from shared.stores import mongo
from shared.stores.legacy_source import LegacySource
from tests.helpers import wait_until
from workers.import_legacy import Importer, main
from workers.runtime import build_runtime

START = datetime(2026, 3, 3, 13, 0, tzinfo=UTC)   # a Tuesday, 10:00 in Santiago


@pytest.fixture
def legacy(mongo_server, db_name):
    """The original worker's database (a second database of the test's server) and its name."""
    name = f"{db_name}_legacy"
    client = mongo.client(mongo_server.url)
    yield client[name], name
    client.drop_database(name)


def write_legacy(db: Any, now: datetime, phones: list[str]) -> dict[str, ObjectId]:
    """Two batches (one without call_settings, one with the original worker's seven fields and a batch_name), a
    third left out by --batches, and jobs in every state the original worker leaves."""
    ids = {name: ObjectId() for name in ("cobranza", "plain", "other")}
    db.batches.insert_many([
        {"_id": ids["cobranza"], "batch_name": "Cobranza_Morosos", "account_id": "acme",
         "call_settings": {"max_call_duration": 600, "ring_timeout": 45, "max_attempts": 3, "retry_delay_hours": 0.01,
                           "allowed_hours": {"start": "09:00", "end": "20:00"}, "days_of_week": [1, 2, 3, 4, 5, 6],
                           "timezone": "America/Santiago"}},
        {"_id": ids["plain"], "name": "Sin settings", "account_id": "acme"},
        {"_id": ids["other"], "name": "Other", "account_id": "acme"},
    ])
    naive = now.replace(tzinfo=None)   # pymongo writes naive datetimes as UTC, as the original worker's did
    db.jobs.insert_many([
        {"_id": ObjectId(), "batch_id": ids["cobranza"], "status": "pending", "tries": 0,
         "contact": {"name": "Ana", "phones": [phones[0]]}, "context": {"deuda": "45000"}},
        {"_id": ObjectId(), "batch_id": ids["cobranza"], "status": "pending", "tries": 2,
         "next_try_at": naive - timedelta(minutes=5), "contact": {"name": "Beto", "phones": [phones[1]]}},
        {"_id": ObjectId(), "batch_id": ids["cobranza"], "status": "in_progress", "tries": 1,
         "reserved_until": naive + timedelta(minutes=30), "contact": {"name": "Carla", "phones": [phones[2]]}},
        {"_id": ObjectId(), "batch_id": ids["cobranza"], "status": "done", "tries": 1,
         "contact": {"name": "Dora", "phones": [phones[3]]}},
        {"_id": ObjectId(), "batch_id": ids["cobranza"], "status": "failed", "tries": 3,
         "last_error": "Máximo de intentos alcanzado (3)", "contact": {"name": "Eva", "phones": [phones[4]]}},
        {"_id": ObjectId(), "batch_id": ids["cobranza"], "status": "paused", "contact": {"phones": [phones[5]]}},
        {"_id": ObjectId(), "batch_id": ids["cobranza"], "status": "pending", "contact": {"phones": ["12"]}},
        {"_id": ObjectId(), "batch_id": str(ids["plain"]), "status": "pending",
         "contact": {"name": "Fede", "phones": [phones[6]], "external_id": "F-6"}},
        {"_id": ObjectId(), "batch_id": ids["other"], "status": "pending", "contact": {"phones": [phones[7]]}},
    ])
    return ids


def snapshot(db: Any) -> list[Any]:
    return [sorted(db[name].find({}), key=lambda d: str(d["_id"])) for name in ("batches", "jobs")]


def test_import_maps_every_state_refuses_what_it_cannot_read_and_runs_twice_for_nothing(config, db, legacy, clock):
    runtime = build_runtime(config, clock)
    mongo.ensure_indexes(runtime.db)
    legacy_db, legacy_name = legacy
    now = clock.now()
    ids = write_legacy(legacy_db, now, numbered("+56961", 8))
    before = snapshot(legacy_db)
    source = LegacySource(config.mongodb_uri, legacy_name)
    wanted = [str(ids["cobranza"]), str(ids["plain"])]

    dry = Importer(runtime, source, dry_run=True).run(wanted)
    assert (dry.batches.imported, dry.jobs.imported, dry.jobs.refused) == (2, 6, 2)
    assert runtime.batches.coll.count_documents({}) == 0 and runtime.jobs.coll.count_documents({}) == 0

    report = Importer(runtime, source).run(wanted)
    assert (report.batches.read, report.batches.imported, report.batches.refused) == (2, 2, 0)
    assert (report.jobs.read, report.jobs.imported, report.jobs.skipped, report.jobs.refused) == (8, 6, 0, 2)
    assert report.other_jobs == 1 and report.unknown_statuses == {"paused": 1}
    assert sorted(field for _, field, _ in report.jobs.refusals) == ["contact.phones[0]", "status"]
    text = report.render()
    assert "unknown statuses (refused, not guessed): 'paused' 1" in text
    assert "contact.phones[0]: '12': wrong length for its country" in text

    cobranza = runtime.batches.by_legacy_id(str(ids["cobranza"]))
    assert cobranza["name"] == "Cobranza_Morosos" and cobranza["call_settings"]["max_attempts"] == 3
    plain = runtime.batches.by_legacy_id(str(ids["plain"]))
    assert "call_settings" not in plain                  # keeps running on the defaults, as it did
    jobs = {j["contact"].get("name"): j for j in runtime.jobs.find({})}
    now_ms = int(now.timestamp() * 1000)
    assert jobs["Ana"]["status"] == states.PENDING and jobs["Ana"]["tries"] == 0
    assert jobs["Ana"]["contact"]["variables"] == {"deuda": "45000"}
    assert jobs["Ana"]["contact"]["external_id"] == jobs["Ana"]["legacy_id"]   # the legacy id, when it had none
    assert jobs["Beto"]["tries"] == 2 and jobs["Beto"]["next_try_at"] == now_ms - 5 * 60_000
    assert jobs["Carla"]["status"] == states.PENDING and jobs["Carla"]["next_try_at"] == now_ms + 30 * 60_000
    assert jobs["Dora"]["status"] == states.COMPLETED and "next_try_at" not in jobs["Dora"]
    assert jobs["Eva"]["status"] == states.FAILED and jobs["Eva"]["last_error"] == "Máximo de intentos alcanzado (3)"
    assert jobs["Eva"]["reason_code"] == "legacy" and "notify_final" not in jobs["Eva"]
    assert jobs["Fede"]["batch_id"] == plain["_id"] and jobs["Fede"]["contact"]["external_id"] == "F-6"

    again = Importer(runtime, source).run(wanted)
    assert (again.batches.imported, again.batches.skipped, again.jobs.imported, again.jobs.skipped) == (0, 2, 0, 6)
    assert runtime.jobs.coll.count_documents({}) == 6
    assert snapshot(legacy_db) == before                  # the source is never written to
    source.close()
    runtime.close()


def test_the_command_prints_its_report_and_exits_nonzero_on_refusals(config, legacy, capsys):
    legacy_db, legacy_name = legacy
    legacy_db.batches.insert_one({"_id": ObjectId(), "batch_name": "x", "account_id": "acme",
                                  "call_settings": {"max_attempts": 0}})
    assert main(["--from-uri", config.mongodb_uri, "--from-db", legacy_name], config=config) == 1
    out = capsys.readouterr().out
    assert "batches: 1 read, 0 imported, 0 skipped as already imported, 1 refused" in out
    assert "call_settings.max_attempts" in out


@pytest.mark.slow
def test_an_imported_campaign_runs_to_the_end_without_calling_anyone_early_or_twice(stack_factory, legacy):
    clock = started_at(START, speed=480)   # the 30 minutes of a reservation: 3.75 real seconds
    legacy_db, legacy_name = legacy
    phones = numbered("+56962", 8)
    rules = {p: {"outcome": "answer", "ring_s": 2, "duration_s": 20} for p in phones}
    rules[phones[1]] = "busy"      # Beto: 2 tries spent of 3, always busy: one more round, then failed
    stack, runtime = stack_factory(clock=clock, scenario={"numbers": rules}, workers=1, processes=1)
    runtime.account_changes.apply("acme", {"plan": {"type": "unlimited"}, "concurrency_limit": 5})
    now = clock.now()
    ids = write_legacy(legacy_db, now, phones)
    wanted = [str(ids["cobranza"]), str(ids["plain"])]
    source = LegacySource(runtime.config.mongodb_uri, legacy_name)
    assert Importer(runtime, source).run(wanted).jobs.imported == 6

    def final() -> bool:
        return all(j["status"] in states.FINAL for j in runtime.jobs.find({}))

    try:
        wait_until(final, timeout_s=120, interval_s=0.2)
    except TimeoutError:
        raise AssertionError(f"{[(j['contact'].get('name'), j['status']) for j in runtime.jobs.find({})]}\n"
                             f"{stack.logs()}") from None
    assert Importer(runtime, source).run(wanted).jobs.imported == 0      # nothing imported twice
    source.close()
    jobs = {j["contact"].get("name"): j for j in runtime.jobs.find({})}
    dials = {p: stack.simulator.dials(p) for p in phones}
    reserved_ms = int((now + timedelta(minutes=30)).timestamp() * 1000)
    assert dials[phones[2]] and all(d["received_at"] >= reserved_ms for d in dials[phones[2]])   # Carla
    assert len(dials[phones[1]]) == 1 and jobs["Beto"]["status"] == states.FAILED          # one round left
    assert jobs["Beto"]["tries"] == 3
    assert not dials[phones[3]] and not dials[phones[4]]      # final in the original worker: never called again
    assert not dials[phones[7]]                               # a batch not imported
    for name in ("Ana", "Carla", "Fede"):
        assert jobs[name]["status"] == states.COMPLETED and len(dials[jobs[name]["contact"]["phones"][0]]) == 1
