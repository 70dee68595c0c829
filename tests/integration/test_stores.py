"""Batch and account stores against the real MongoDB wire server."""

import pytest

from shared.domain import states
from shared.errors import NotFound, ValidationError
from shared.stores.accounts import AccountStore
from shared.stores.batches import BatchStore


@pytest.fixture
def changes():
    return []


@pytest.fixture
def batches(db, config, clock, changes):
    return BatchStore(db, clock=clock, config=config, on_change=changes.append)


def test_create_get_and_list(batches):
    doc = batches.create({"name": "Cobranza", "account_id": "acc", "agent_id": "agent_1",
                          "from_number": "+1 212 555 0123", "call_settings": {"max_attempts": 5}})
    assert doc["status"] == states.BATCH_ACTIVE and doc["from_number"] == "+12125550123"
    assert batches.get(doc["_id"])["call_settings"] == {"max_attempts": 5}
    assert [b["_id"] for b in batches.list(account_id="acc")] == [doc["_id"]]
    assert batches.active_ids() == [doc["_id"]]


def test_create_without_call_settings_stores_none(batches):
    doc = batches.create({"name": "old style", "account_id": "acc"})
    assert "call_settings" not in batches.get(doc["_id"])


def test_create_rejects_every_bad_field_at_once(batches, db):
    with pytest.raises(ValidationError) as info:
        batches.create({"name": "", "from_number": "12", "call_settings": {"max_attempts": 0, "colour": "red"}})
    fields = [f for f, _ in info.value.errors]
    assert {"name", "account_id", "from_number", "call_settings.max_attempts", "call_settings.colour"} <= set(fields)
    assert db.batches.count_documents({}) == 0


def test_update_validates_then_publishes_after_the_write(batches, changes):
    doc = batches.create({"name": "b", "account_id": "acc"})
    with pytest.raises(ValidationError):
        batches.update(doc["_id"], {"call_settings": {"ring_timeout": 1}})
    with pytest.raises(ValidationError):
        batches.update(doc["_id"], {"status": "paused"})
    assert changes == []
    updated = batches.update(doc["_id"], {"call_settings": {"ring_timeout": 45}, "name": "b2"})
    assert updated["call_settings"] == {"ring_timeout": 45} and updated["name"] == "b2"
    assert changes == [doc["_id"]]


def test_status_changes_are_conditional(batches, changes):
    doc = batches.create({"name": "b", "account_id": "acc"})
    assert batches.set_status(doc["_id"], states.BATCH_PAUSED)["status"] == states.BATCH_PAUSED
    assert batches.set_status(doc["_id"], states.BATCH_CANCELLED)["status"] == states.BATCH_CANCELLED
    assert batches.set_status(doc["_id"], states.BATCH_ACTIVE) is None  # cancelled is final
    assert changes == [doc["_id"], doc["_id"]]


def test_a_batch_move_the_table_does_not_allow_is_refused_before_any_write(batches, changes):
    doc = batches.create({"name": "b", "account_id": "acc"})
    with pytest.raises(ValueError, match="cannot move from completed to paused"):
        batches.set_status(doc["_id"], states.BATCH_PAUSED, expected=(states.BATCH_COMPLETED,))
    with pytest.raises(ValueError, match="cannot move from cancelled to active"):
        batches.set_status(doc["_id"], states.BATCH_ACTIVE, expected=(states.BATCH_CANCELLED,))
    assert batches.get(doc["_id"])["status"] == states.BATCH_ACTIVE and changes == []
    # The default sources are those the table lets move there: a completed batch is only reopened on purpose.
    assert batches.set_status(doc["_id"], states.BATCH_COMPLETED, expected=(states.BATCH_ACTIVE,))
    assert batches.set_status(doc["_id"], states.BATCH_ACTIVE) is None


def test_bad_and_unknown_ids(batches):
    with pytest.raises(NotFound, match="not a valid id"):
        batches.get("nope")
    with pytest.raises(NotFound, match="not found"):
        batches.require("0" * 24)


def test_account_upsert_reports_creation(db, config, clock):
    accounts = AccountStore(db, clock=clock, config=config)
    doc, created = accounts.upsert("acme", {"plan": {"type": "unlimited"}})
    assert created and doc["plan"] == {"type": "unlimited"} and "created_at" in doc
    doc2, created2 = accounts.upsert("acme", {"concurrency_limit": 5})
    assert not created2 and doc2["created_at"] == doc["created_at"] and doc2["concurrency_limit"] == 5
    assert accounts.concurrency_limit(doc2) == 5
    assert accounts.concurrency_limit(None) == config.default_concurrency_limit
    with pytest.raises(ValidationError):
        accounts.upsert("$bad", {})


@pytest.mark.parametrize("bad", ["\x113\x14", "a b", "a\nb", "$x", "-x", "é", "a" * 101, ""])
def test_account_ids_are_safe_for_urls_headers_and_keys(db, config, clock, bad):
    with pytest.raises(ValidationError, match="account_id"):
        AccountStore(db, clock=clock, config=config).upsert(bad, {})
    assert db.accounts.count_documents({}) == 0


def test_account_ids_keep_the_usual_characters(db, config, clock):
    doc, _ = AccountStore(db, clock=clock, config=config).upsert(" acme-01.cl:ops@x+y ", {})
    assert doc["_id"] == "acme-01.cl:ops@x+y"


def test_a_late_refusal_does_not_hold_again_a_batch_resumed_since_its_request(batches, clock):
    from shared.domain import states as st
    from tests.helpers import wait_until

    doc = batches.create({"name": "b", "account_id": "acc"})
    sent_at = clock.now_ms()
    assert batches.hold("API key refused", seen_at=sent_at) == [doc["_id"]]
    assert batches.get(doc["_id"])["held_reason"] == "API key refused"
    wait_until(lambda: clock.now_ms() > sent_at, timeout_s=5)
    batches.set_status(doc["_id"], st.BATCH_ACTIVE, expected=(st.BATCH_HELD,))    # the operator resumes
    assert "held_reason" not in batches.get(doc["_id"])
    assert batches.hold("API key refused", seen_at=sent_at) == []                # the answer to an older request
    assert batches.get(doc["_id"])["status"] == st.BATCH_ACTIVE
    assert batches.hold("payment refused", seen_at=clock.now_ms()) == [doc["_id"]]   # a newer one holds it
