"""CSV reading for contact uploads: delimiter, header layout, rows, line numbers (pure logic)."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.stores.contacts_import import (
    INDEX,
    LINE,
    ContactSink,
    CsvFormatError,
    CsvLayout,
    ImportReport,
    detect_delimiter,
    import_contacts,
    import_csv,
    split_lines,
)


class RecordingSink(ContactSink):
    """Keeps what the reader hands over instead of validating and inserting it."""

    def __init__(self, max_errors: int = 1000) -> None:
        self.report = ImportReport(max_errors=max_errors)
        self.added: list[tuple[str, int, Any]] = []

    def add(self, raw: Any, *, where: str, at: int) -> bool:
        self.report.rows += 1
        self.added.append((where, at, raw))
        return True

    def finish(self) -> ImportReport:
        return self.report


def lines_of(text: str) -> list[bytes]:
    data = text.encode("utf-8")
    lines, rest = split_lines(b"", data)
    return lines + ([rest] if rest else [])


@pytest.mark.parametrize("header,expected", [("name,phone", ","), ("name;phone;deuda", ";"), ("name\tphone", "\t"),
                                             ("phone", ","), ("a;b,c;d", ";")])
def test_detect_delimiter(header, expected):
    assert detect_delimiter(header) == expected


def test_split_lines_keeps_newlines_and_the_unfinished_tail():
    assert split_lines(b"ab", b"c\nde\r\nf") == ([b"abc\n", b"de\r\n"], b"f")
    assert split_lines(b"", b"no newline") == ([], b"no newline")
    assert split_lines(b"x\ry", b"\n") == ([b"x\ry\n"], b"")   # a lone \r is not a line end


@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=300), max_size=6))
def test_split_lines_in_any_chunks_gives_the_same_lines(data, cuts):
    whole, tail = split_lines(b"", data)
    pieces, rest = [], b""
    bounds = [*sorted({min(c, len(data)) for c in cuts}), len(data)]
    start = 0
    for end in bounds:
        lines, rest = split_lines(rest, data[start:end])
        pieces += lines
        start = end
    assert pieces == whole and rest == tail and b"".join(pieces) + rest == data


def test_header_layout_maps_columns():
    layout = CsvLayout.from_header(["Name", " PHONE ", "phone_2", "Phone 3", "external_id", "TimeZone", "Deuda",
                                    "vence"])
    assert layout.phones == (1, 2, 3)
    assert layout.fields == {"name": 0, "external_id": 4, "timezone": 5}
    assert layout.variables == ((6, "Deuda"), (7, "vence"))
    raw = layout.contact(["Ana", "+56961234567", "+56961234568|+56961234569", "", "a1", "", "1200", "2026-03-31"])
    assert raw == {"phones": ["+56961234567", "+56961234568", "+56961234569"], "name": "Ana", "external_id": "a1",
                   "variables": {"Deuda": "1200", "vence": "2026-03-31"}}


@pytest.mark.parametrize("header,fields", [
    (["name", "email"], ["header"]),
    (["phone", "$where"], ["header.$where"]),
    (["phone", "a.b"], ["header.a.b"]),
    (["phone", "x", "X"], ["header.X"]),
    (["phone", ""], ["header[2]"]),
    (["phone", *[f"v{i}" for i in range(51)]], ["header"]),
    (["phone", "$a", "b.c"], ["header.$a", "header.b.c"]),
])
def test_bad_headers_name_every_problem(header, fields):
    with pytest.raises(CsvFormatError) as info:
        CsvLayout.from_header(header)
    assert [f for f, _ in info.value.errors] == fields


def test_rows_report_their_first_line():
    text = 'phone,name,note\n+56961234567,Ana,x\n\n+56961234568,"Two\nlines",y\n+56961234569,Cia,z,extra\n+5696,Short\n'
    sink = RecordingSink()
    report = import_csv(lines_of(text), sink)
    assert [(w, at, raw.get("name")) for w, at, raw in sink.added] == [
        (LINE, 2, "Ana"), (LINE, 4, "Two\nlines"), (LINE, 7, "Short")]
    assert sink.added[2][2]["variables"] == {"note": ""}
    assert report.errors == [{"line": 6, "field": "row", "message": "has 4 cells, the header has 3"}]
    assert report.rows == 4


def test_bom_and_undecodable_lines():
    data = "\ufeffphone;name\n".encode() + b"+56961234567;Jos\xe9\n" + "+56961234568;José\n".encode()
    sink = RecordingSink()
    report = import_csv(data.splitlines(keepends=True), sink)
    assert [(at, raw["name"]) for _, at, raw in sink.added] == [(3, "José")]
    assert report.errors == [{"line": 2, "message": "is not valid UTF-8 (save the file as 'CSV UTF-8')"}]
    with pytest.raises(CsvFormatError):
        import_csv([b"ph\xffone\n", b"1\n"], RecordingSink())


def test_an_unclosed_quote_is_one_bad_row_not_the_rest_of_the_file():
    field_limit = csv.field_size_limit()
    huge = "x" * (field_limit + 10)
    text = f'phone,name\n+56961234567,"{huge}\n+56961234568,Bea\n'
    sink = RecordingSink()
    report = import_csv(lines_of(text), sink)
    assert report.errors_total == 1 and "cannot be read as CSV" in report.errors[0]["message"]
    assert [raw["name"] for _, _, raw in sink.added] == ["Bea"]


def test_max_rows_stops_reading():
    text = "phone\n" + "".join(f"+5696123{n:04d}\n" for n in range(10))
    sink = RecordingSink()
    report = import_csv(lines_of(text), sink, max_rows=4)
    assert len(sink.added) == 4 and report.stopped and "at most 4 rows" in report.stopped


def test_errors_listed_are_capped_but_counted():
    report = ImportReport(max_errors=2)
    for i in range(5):
        report.error(INDEX, i, "bad")
    assert report.to_api()["errors"] == [{"index": 0, "message": "bad"}, {"index": 1, "message": "bad"}]
    assert report.to_api()["errors_total"] == 5 and report.to_api()["errors_truncated"] is True


def test_json_contacts_are_numbered_from_zero():
    sink = RecordingSink()
    import_contacts([{"phones": ["1"]}, {"phones": ["2"]}], sink)
    assert [(w, at) for w, at, _ in sink.added] == [(INDEX, 0), (INDEX, 1)]


@given(st.lists(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                                  max_size=12), min_size=3, max_size=3), max_size=20),
       st.sampled_from([",", ";", "\t"]))
def test_any_csv_written_by_the_csv_module_reads_back_row_for_row(rows, delimiter):
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(["phone", "name", "note"])
    writer.writerows(rows)
    sink = RecordingSink()
    report = import_csv(lines_of(out.getvalue()), sink)
    expected = [r for r in rows if any(cell.strip() for cell in r) or len(r) != 1]
    got = [(raw.get("name", ""), raw["variables"]["note"]) for _, _, raw in sink.added]
    assert report.errors_total == 0
    assert got == [(r[1].strip(), r[2].strip()) for r in expected]


class FailingJobs:
    """A job store whose insert of the ``fail_at``-th chunk fails after writing ``written`` of its contacts."""

    def __init__(self, fail_at: int, written: int) -> None:
        from types import SimpleNamespace

        self.config = SimpleNamespace(phone_default_region="CL")
        self.fail_at = fail_at
        self.written = written
        self.calls = 0

    def create_jobs(self, batch_id: str, account_id: str, contacts: list[Any], *, region: str) -> Any:
        from shared.stores.jobs import ImportResult, ImportWriteFailed

        self.calls += 1
        if self.calls == self.fail_at:
            partial = ImportResult(imported=self.written, job_ids=[f"j{i}" for i in range(self.written)])
            raise ImportWriteFailed(partial, unconfirmed=0) from ConnectionError("the database went away")
        return ImportResult(imported=len(contacts), job_ids=[f"j{i}" for i in range(len(contacts))])


def test_an_import_that_fails_midway_reports_exactly_what_it_wrote():
    from shared.stores.contacts_import import ImportInterrupted

    jobs = FailingJobs(fail_at=2, written=1)
    sink = ContactSink(jobs=jobs, batch_id="b", account_id="a", chunk_rows=3)  # type: ignore[arg-type]
    contacts = [{"phones": [f"+5696123450{i}"]} for i in range(8)]
    with pytest.raises(ImportInterrupted) as caught:
        import_contacts(contacts, sink)
    report = caught.value.report
    assert report.imported == 3 + 1 and caught.value.unconfirmed == 0   # the first chunk, and one of the second
    assert report.rows == 6 and report.stopped and "index 3" in report.stopped
    assert jobs.calls == 2                                               # nothing more is written after the error
