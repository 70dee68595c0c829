"""The pure parts of results leaving outdial: export rows, neutralised CSV cells, the callee's zone, contact-log
entries and their cursor."""

from __future__ import annotations

import csv
import io
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.config import load_config
from shared.domain.results_export import (
    BASE_COLUMNS,
    DANGEROUS_FIRST,
    CsvLines,
    ExportKeys,
    batch_settings,
    callee_zone,
    cell,
    csv_row,
    decode_before,
    encode_before,
    export_record,
    json_line,
    local_iso,
    log_entry,
    neutralise,
    slug,
    utc_iso,
)

CONFIG = load_config({})
#: 2026-03-09 12:00:00 UTC, a Monday (09:00 in Santiago, UTC-3 then).
NOON_UTC = 1_773_057_600_000


def job(**over):
    doc = {
        "_id": "65f1c0ffee0000000000abcd", "batch_id": "b" * 24, "status": "completed", "reason_code": None,
        "contact": {"name": "Ana", "phones": ["+56961234567", "+56961234568"], "external_id": "deuda-1",
                    "variables": {"deuda": "1500", "vence": "2026-03-31"}},
        "result": {"calls": 2, "talk_ms": 61_234, "charge": 1200, "last_call_at": NOON_UTC,
                   "last_outcome": "completed", "recording_url": "https://rec.example/1.wav",
                   "analysis": {"call_successful": True, "call_summary": "Promised to pay.",
                                "user_sentiment": "Positive", "custom_analysis_data": {"promise": True,
                                                                                      "amount": -200}}},
    }
    doc.update(over)
    return doc


def test_a_record_holds_the_contacts_result_and_its_local_time():
    record = export_record(job(), "America/Santiago")
    assert record == {
        "job_id": "65f1c0ffee0000000000abcd", "external_id": "deuda-1", "name": "Ana",
        "phones": ["+56961234567", "+56961234568"], "status": "completed", "reason_code": None, "calls": 2,
        "talk_s": 61.2, "charge": 1200, "last_call_at": "2026-03-09T12:00:00.000Z",
        "last_call_local": "2026-03-09T09:00:00-03:00", "outcome": "completed", "call_successful": True,
        "summary": "Promised to pay.", "sentiment": "Positive", "recording_url": "https://rec.example/1.wav",
        "after_call": None, "callbacks": 0, "callback_at": None, "callback_local": None, "wrong_numbers": 0,
        "custom": {"promise": True, "amount": -200}, "variables": {"deuda": "1500", "vence": "2026-03-31"},
    }
    assert list(record)[:len(BASE_COLUMNS)] == list(BASE_COLUMNS)


def test_a_record_says_what_the_after_call_rules_did():
    doc = job(status="waiting_schedule")
    doc["result"].update({"after_call": "callback", "callbacks": 2, "callback_at": NOON_UTC + 3_600_000,
                          "wrong_numbers": 1})
    record = export_record(doc, "America/Santiago")
    assert {k: record[k] for k in ("after_call", "callbacks", "callback_at", "callback_local", "wrong_numbers")} == {
        "after_call": "callback", "callbacks": 2, "callback_at": "2026-03-09T13:00:00.000Z",
        "callback_local": "2026-03-09T10:00:00-03:00", "wrong_numbers": 1}
    keys = ExportKeys()
    row = dict(zip(keys.header(), csv_row(record, keys), strict=True))
    assert (row["after_call"], row["callbacks"], row["wrong_numbers"]) == ("callback", 2, 1)   # numbers stay numbers
    assert row["callback_local"] == "2026-03-09T10:00:00-03:00"
    opted = job(status="failed", reason_code="opted_out")
    opted["result"]["after_call"] = "opted_out"
    assert export_record(opted, "UTC")["after_call"] == "opted_out"


def test_a_contact_never_called_has_empty_result_cells():
    keys = ExportKeys()
    keys.add({"promise": True}, {"deuda": "1"})
    record = export_record(job(status="pending", result=None), "America/Santiago")
    row = csv_row(record, keys)
    assert dict(zip(keys.header(), row, strict=True)) | {"phones": ""} == {
        "job_id": "65f1c0ffee0000000000abcd", "external_id": "deuda-1", "name": "Ana", "phones": "",
        "status": "pending", "reason_code": "", "calls": 0, "talk_s": 0.0, "charge": 0, "last_call_at": "",
        "last_call_local": "", "outcome": "", "call_successful": "", "summary": "", "sentiment": "",
        "recording_url": "", "after_call": "", "callbacks": 0, "callback_at": "", "callback_local": "",
        "wrong_numbers": 0, "custom.promise": "", "var.deuda": "1500"}


def test_a_boolean_the_embedded_server_gave_back_as_an_integer_is_a_boolean():
    doc = job()
    doc["result"]["analysis"]["call_successful"] = 0
    assert export_record(doc, "UTC")["call_successful"] is False


def test_the_csv_row_neutralises_text_and_keeps_numbers():
    keys = ExportKeys()
    keys.add({"promise": True, "amount": -200}, {"deuda": "1500", "vence": "2026-03-31"})
    doc = job(contact={"name": '=HYPERLINK("http://x")', "phones": ["+56961234567", "+56961234568"],
                       "variables": {"deuda": "-1500", "vence": "@SUM(A1)"}})
    header = keys.header()
    assert header == [*BASE_COLUMNS, "custom.amount", "custom.promise", "var.deuda", "var.vence"]
    row = dict(zip(header, csv_row(export_record(doc, "UTC"), keys), strict=True))
    assert row["name"] == "'=HYPERLINK(\"http://x\")"
    assert row["phones"] == "'+56961234567;+56961234568"
    assert row["var.deuda"] == "'-1500" and row["var.vence"] == "'@SUM(A1)"
    assert row["custom.amount"] == -200 and row["custom.promise"] == "true"
    assert row["charge"] == 1200 and row["talk_s"] == 61.2


@pytest.mark.parametrize("first", DANGEROUS_FIRST)
def test_every_dangerous_first_character_is_neutralised(first):
    assert neutralise(first + "x") == "'" + first + "x"
    assert cell(first + "1+1") == "'" + first + "1+1"


def test_objects_and_lists_are_written_as_json_and_neutralised():
    assert cell({"a": 1}) == '{"a":1}'
    assert cell(["-x"]) == '["-x"]'
    assert cell(None) == "" and cell(False) == "false"


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=8)


@given(st.lists(st.lists(JSON, min_size=1, max_size=6), min_size=1, max_size=5))
def test_no_text_cell_starts_with_a_dangerous_character_and_rows_read_back(rows):
    cells = [[cell(v) for v in row] for row in rows]
    text = CsvLines().text(cells)
    back = list(csv.reader(io.StringIO(text, newline="")))
    assert len(back) == len(rows)
    for values, read in zip(rows, back, strict=True):
        assert len(read) == len(values)
        for value, got in zip(values, read, strict=True):
            if isinstance(value, int | float) and not isinstance(value, bool):
                assert float(got) == float(value)          # a number outdial wrote stays a number
            else:
                assert not got.startswith(DANGEROUS_FIRST), (value, got)
                if isinstance(value, str):
                    assert got in (value, "'" + value)     # at most one quote in front, nothing else changed


@given(st.text())
def test_neutralise_adds_one_quote_only_where_needed(text):
    out = neutralise(text)
    assert not out.startswith(DANGEROUS_FIRST)
    assert out == text or out == "'" + text


def test_keys_are_capped_to_the_first_in_sorted_order_whatever_the_order_they_come_in():
    keys = ExportKeys(limit=3)
    for name in ("e", "b", "d", "a", "c"):
        keys.add({name: 1}, {name.upper(): "x"})
    assert keys.custom == {"a", "b", "c"} and keys.variables == {"A", "B", "C"}
    assert keys.custom_dropped and keys.variables_dropped
    assert keys.header()[-6:] == ["custom.a", "custom.b", "custom.c", "var.A", "var.B", "var.C"]


def test_a_long_key_is_cut_in_its_column_and_its_value_found():
    long = "k" * 150
    keys = ExportKeys()
    keys.add({long: "yes"}, None)
    assert keys.header()[-1] == "custom." + "k" * 100
    record = export_record(job(), "UTC") | {"custom": {long: "yes"}, "variables": {}}
    assert csv_row(record, keys)[-1] == "yes"


def test_the_callee_zone_is_the_contacts_then_the_batchs_then_the_numbers_then_the_default():
    santiago = batch_settings({"timezone": "America/Santiago"}, CONFIG)
    auto = batch_settings({"timezone": "auto"}, CONFIG)
    contact = {"phones": ["+12125550123"]}
    assert callee_zone({**contact, "timezone": "Europe/Madrid"}, santiago, CONFIG) == "Europe/Madrid"
    assert callee_zone(contact, santiago, CONFIG) == "America/Santiago"
    assert callee_zone(contact, auto, CONFIG) == "America/New_York"
    assert callee_zone({"phones": ["+56961234567"]}, auto, CONFIG, "+12125550123") == "America/New_York"
    assert callee_zone({}, batch_settings(None, CONFIG), CONFIG) == CONFIG.default_timezone
    assert batch_settings({"timezone": "Not/AZone"}, CONFIG).timezone == CONFIG.default_timezone


def test_instants_in_utc_and_local_with_the_offset():
    assert utc_iso(NOON_UTC) == "2026-03-09T12:00:00.000Z"
    assert local_iso(NOON_UTC, "Asia/Kolkata") == "2026-03-09T17:30:00+05:30"
    assert utc_iso(None) is None and local_iso(None, "UTC") is None


def test_json_lines_are_data_and_are_not_neutralised():
    line = json_line(export_record(job(contact={"name": "=1+1", "phones": ["+56961234567"]}), "UTC"))
    assert line.endswith("\n") and "\n" not in line[:-1]
    assert json.loads(line)["name"] == "=1+1" and json.loads(line)["phones"] == ["+56961234567"]


def test_slugs_are_safe_file_names():
    assert slug("Cobranza Marzo / Ñuñoa 2026") == "cobranza-marzo-nunoa-2026"
    assert slug('"; rm -rf') == "rm-rf"
    assert slug("") == "batch" and slug(None) == "batch" and slug("的") == "batch"


def test_a_log_entry_falls_back_to_the_attempt_when_no_call_started():
    placed = {"_id": "j:r1:p0:d1", "job_id": "j", "batch_id": "b", "to_number": "+56961234567", "state": "ended",
              "outcome": "busy", "created_at": NOON_UTC - 5000, "started_at": NOON_UTC, "duration_ms": 12_345,
              "call_id": "call_1", "charge": 60}
    assert log_entry(placed, batch_name="March", zone="America/Santiago") == {
        "at": "2026-03-09T12:00:00.000Z", "local": "2026-03-09T09:00:00-03:00", "zone": "America/Santiago",
        "number": "+56961234567", "batch_id": "b", "batch_name": "March", "job_id": "j", "attempt_id": "j:r1:p0:d1",
        "outcome": "busy", "duration_s": 12.3, "call_id": "call_1", "charge": 60}
    never = {"_id": "j:r1:p0:d2", "state": "not_placed", "created_at": NOON_UTC}
    entry = log_entry(never, batch_name=None, zone="UTC")
    assert entry["outcome"] == "not_placed" and entry["at"] == "2026-03-09T12:00:00.000Z"
    assert entry["duration_s"] is None and entry["charge"] is None


@given(st.integers(min_value=0, max_value=10**14), st.text(min_size=1, max_size=200))
def test_the_cursor_reads_back(at, attempt_id):
    token = encode_before(at, attempt_id)
    assert token.isascii() and "=" not in token
    assert decode_before(token) == (at, attempt_id)


@pytest.mark.parametrize("token", ["", "x", "!!!!", encode_before(5, "a")[:-2] + "**", "MTIz"])
def test_a_bad_cursor_is_refused(token):
    with pytest.raises(ValueError):
        decode_before(token)
