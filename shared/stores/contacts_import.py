"""Contacts into a batch from a JSON list or a CSV upload, validated row by row and inserted in chunks.

A :class:`ContactSink` validates each contact (:func:`shared.domain.contacts.parse_contact`), keeps the
valid ones and inserts them :data:`DEFAULT_CHUNK_ROWS` at a time with
:meth:`shared.stores.jobs.JobStore.create_jobs`; each bad row becomes an error naming its ``line`` (CSV)
or ``index`` (JSON), its field and the problem, and the good rows are imported. A contact already in
the batch (the same ``external_id``; or, without one, the same set of phone numbers: see
:meth:`shared.stores.jobs.JobStore.create_jobs`) is a duplicate: counted, listed among the errors with its row
(``"duplicate": true``) and not inserted again, so re-sending an upload (or its tail after a failure), or
two equal rows, never make a contact be called twice.

:func:`import_csv` reads a CSV from an iterable of byte lines, so an upload of any size is
processed with bounded memory (one chunk of rows at a time) while it is still arriving.

CSV format
    UTF-8 (a byte-order mark is ignored), a header row, then one contact per row. The delimiter
    is detected on the header: ``,``, ``;`` or a tab. Columns, matched case-insensitively:

    - ``phone``, ``phones``, ``phone_2``, ``phone2``, ``phone 3``... : the numbers, in column order.
      One cell may hold several numbers separated by ``|`` or ``;`` (or ``,`` when quoted).
    - ``name``, ``external_id``, ``timezone`` (an IANA zone for this contact).
    - every other column is a variable passed to the agent, named exactly as its header
      (names may not start with ``$`` nor contain ``.``). An empty cell is an empty string.

    Blank lines are skipped. A row with more cells than the header is an error; missing
    trailing cells are empty. Lines are numbered from 1 (the header); a row that spans several
    lines (a quoted newline) is reported at its first line.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.domain.contacts import MAX_VARIABLE_KEY, MAX_VARIABLES, Contact, InvalidContact, parse_contact
from shared.errors import ValidationError
from shared.stores.jobs import ImportWriteFailed, JobStore, duplicate_problem

#: Valid contacts inserted per ``insert_many``.
DEFAULT_CHUNK_ROWS = 1000
#: Errors listed in a report; the count (``errors_total``) is always exact.
DEFAULT_MAX_ERRORS = 1000
#: Rows one CSV upload may hold; reading stops there (the rest is reported, not imported).
DEFAULT_MAX_ROWS = 1_000_000
#: Columns a CSV header may have.
MAX_COLUMNS = 64
#: Longest CSV line accepted, bytes (a file without newlines must not be buffered whole).
MAX_LINE_BYTES = 1 << 20
#: Delimiters recognised on the header line, in order of preference on a tie.
DELIMITERS = (",", ";", "\t")

LINE = "line"
INDEX = "index"

_PHONE_COLUMN = re.compile(r"^phones?(?:[ _-]?\d{1,2})?$")
_FIELD_COLUMNS = ("name", "external_id", "timezone")


class CsvFormatError(ValidationError):
    """The CSV cannot be read as contacts at all (header problems); ``errors`` names each one."""


class ImportInterrupted(Exception):
    """An import stopped because a write failed (the database went away); nothing after it was written.

    :param report: the import's report up to the failure: ``imported`` counts exactly the jobs written (read back
        by id), ``stopped`` says at which row the failed write began.
    :param unconfirmed: contacts of the failed write that could not be read back (each may or may not be written);
        0 when the report is exact. Sending the upload again imports the rest and reports the written ones as
        duplicates.
    """

    def __init__(self, report: ImportReport, *, unconfirmed: int) -> None:
        super().__init__(report.stopped or "the import stopped")
        self.report = report
        self.unconfirmed = unconfirmed


def detect_delimiter(header_line: str) -> str:
    """The delimiter of a CSV whose first line is ``header_line``: the most frequent of :data:`DELIMITERS`."""
    counts = [(header_line.count(d), -i, d) for i, d in enumerate(DELIMITERS)]
    best = max(counts)
    return best[2] if best[0] > 0 else ","


def _variable_problem(name: str) -> str | None:
    if not name:
        return "a column has no name"
    if len(name) > MAX_VARIABLE_KEY:
        return f"column names used as variables are at most {MAX_VARIABLE_KEY} characters"
    if name.startswith("$") or "." in name or "\x00" in name:
        return "variable names cannot start with '$' or contain '.'"
    return None


@dataclass(frozen=True, kw_only=True)
class CsvLayout:
    """Which CSV column holds what; build it with :meth:`from_header`.

    :param width: number of columns in the header.
    :param phones: indexes of the phone columns, in order.
    :param fields: contact field name -> column index (``name``, ``external_id``, ``timezone``).
    :param variables: ``(column index, variable name)`` for every other column.
    """

    width: int
    phones: tuple[int, ...]
    fields: Mapping[str, int]
    variables: tuple[tuple[int, str], ...]

    @classmethod
    def from_header(cls, header: Sequence[str]) -> CsvLayout:
        """Read a header row. :raises CsvFormatError: naming every problem (``header`` or ``header.<column>``)."""
        errors: list[tuple[str, str]] = []
        if len(header) > MAX_COLUMNS:
            raise CsvFormatError([("header", f"at most {MAX_COLUMNS} columns, got {len(header)}")])
        names = [h.strip() for h in header]
        seen: set[str] = set()
        phones: list[int] = []
        fields: dict[str, int] = {}
        variables: list[tuple[int, str]] = []
        for index, name in enumerate(names):
            key = name.lower()
            label = f"header.{name[:MAX_VARIABLE_KEY]}" if name else f"header[{index + 1}]"
            if key in seen and key:
                errors.append((label, "appears more than once"))
                continue
            seen.add(key)
            if _PHONE_COLUMN.match(key):
                phones.append(index)
            elif key in _FIELD_COLUMNS:
                fields[key] = index
            else:
                problem = _variable_problem(name)
                if problem:
                    errors.append((label, problem))
                else:
                    variables.append((index, name))
        if not phones:
            errors.append(("header", "no phone column (name one 'phone' or 'phones'; more as phone_2, phone_3...)"))
        if len(variables) > MAX_VARIABLES:
            errors.append(("header", f"at most {MAX_VARIABLES} variable columns, got {len(variables)}"))
        if errors:
            raise CsvFormatError(errors)
        return cls(width=len(names), phones=tuple(phones), fields=fields, variables=tuple(variables))

    def contact(self, row: Sequence[str]) -> dict[str, Any]:
        """The raw contact (for :func:`parse_contact`) of one data row.

        :raises InvalidContact: the row has more cells than the header.
        """
        if len(row) > self.width:
            raise InvalidContact("row", f"has {len(row)} cells, the header has {self.width}")

        def cell(index: int) -> str:
            return row[index].strip() if index < len(row) else ""

        numbers: list[str] = []
        for index in self.phones:
            numbers += [p for p in re.split(r"[|;,]", cell(index)) if p.strip()]
        raw: dict[str, Any] = {"phones": numbers}
        for name, index in self.fields.items():
            value = cell(index)
            if value:
                raw[name] = value
        raw["variables"] = {name: cell(index) for index, name in self.variables}
        return raw


@dataclass
class ImportReport:
    """What an import did: the ``POST /batches/{id}/contacts`` answer.

    :param imported: jobs created.
    :param duplicates: contacts already in the batch (not inserted again; each is also an error).
    :param rows: contacts read (valid or not).
    :param errors: the first ``max_errors`` problems: ``{"line" | "index", "field", "message"}``, and
        ``"duplicate": true`` for a duplicate; in row order.
    :param errors_total: every problem, listed or not.
    :param stopped: why reading stopped before the end, if it did.
    """

    imported: int = 0
    duplicates: int = 0
    rows: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    errors_total: int = 0
    stopped: str | None = None
    max_errors: int = DEFAULT_MAX_ERRORS

    def error(self, where: str, at: int, message: str, field_name: str | None = None, *,
              duplicate: bool = False) -> None:
        """Record one problem at ``line``/``index`` ``at``."""
        self.errors_total += 1
        if len(self.errors) < self.max_errors:
            entry: dict[str, Any] = {where: at, "message": message}
            if field_name:
                entry["field"] = field_name
            if duplicate:
                entry["duplicate"] = True
            self.errors.append(entry)

    def to_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {"imported": self.imported, "duplicates": self.duplicates, "rows": self.rows,
                               "errors": self.errors, "errors_total": self.errors_total,
                               "errors_truncated": self.errors_total > len(self.errors)}
        if self.stopped:
            out["stopped"] = self.stopped
        return out


class ContactSink:
    """Validates contacts one at a time and inserts the valid ones in chunks.

    :param jobs: the job store.
    :param batch_id: the batch the jobs belong to.
    :param account_id: the batch's account.
    :param region: region for numbers written without ``+country``; default ``PHONE_DEFAULT_REGION``.
    :param chunk_rows: valid contacts per insert; default :data:`DEFAULT_CHUNK_ROWS`.
    :param max_errors: errors listed in the report; default :data:`DEFAULT_MAX_ERRORS`.
    """

    def __init__(self, *, jobs: JobStore, batch_id: str, account_id: str, region: str | None = None,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS, max_errors: int = DEFAULT_MAX_ERRORS) -> None:
        self.jobs = jobs
        self.batch_id = batch_id
        self.account_id = account_id
        self.region = region or jobs.config.phone_default_region
        self.chunk_rows = max(1, chunk_rows)
        self.report = ImportReport(max_errors=max_errors)
        self._chunk: list[Contact] = []
        self._rows: list[tuple[str, int]] = []   # (where, at) of each contact in the chunk

    def add(self, raw: Any, *, where: str, at: int) -> bool:
        """Validate one contact; True when it was kept for insertion."""
        self.report.rows += 1
        try:
            contact = parse_contact(raw, region=self.region)
        except InvalidContact as exc:
            self.report.error(where, at, exc.message, exc.field)
            return False
        self._chunk.append(contact)
        self._rows.append((where, at))
        if len(self._chunk) >= self.chunk_rows:
            self.flush()
        return True

    def flush(self) -> None:
        """Insert the contacts kept so far."""
        if not self._chunk:
            return
        chunk, self._chunk = self._chunk, []
        rows, self._rows = self._rows, []
        try:
            result = self.jobs.create_jobs(self.batch_id, self.account_id, chunk, region=self.region)
        except ImportWriteFailed as exc:
            where, at = rows[0]
            self.report.imported += exc.result.imported
            self.report.stopped = (f"stopped at {where} {at}: writing its chunk of {len(chunk)} contacts failed "
                                   f"({type(exc.__cause__).__name__}); nothing after it was written")
            raise ImportInterrupted(self.report, unconfirmed=exc.unconfirmed) from exc
        self.report.imported += result.imported
        self.report.duplicates += result.duplicates
        for i in result.duplicate_at:
            field_name, message = duplicate_problem(chunk[i])
            self.report.error(*rows[i], message, field_name, duplicate=True)

    def finish(self) -> ImportReport:
        self.flush()
        self.report.errors.sort(key=lambda e: e.get(LINE, e.get(INDEX, 0)))
        return self.report


class CheckSink(ContactSink):
    """A :class:`ContactSink` that validates every row as an import would and inserts nothing.

    Its report counts the valid rows in ``imported``; duplicates of contacts already in a batch are not
    known yet (the import reports them).
    """

    def __init__(self, *, region: str, max_errors: int = DEFAULT_MAX_ERRORS) -> None:
        self.region = region
        self.chunk_rows = DEFAULT_CHUNK_ROWS
        self.report = ImportReport(max_errors=max_errors)
        self._chunk = []
        self._rows = []

    def flush(self) -> None:
        self.report.imported += len(self._chunk)
        self._chunk, self._rows = [], []


def import_contacts(contacts: Iterable[Any], sink: ContactSink) -> ImportReport:
    """Import a JSON list of contacts; errors name their ``index`` (from 0).

    :raises ImportInterrupted: a write failed; it carries the report of what was written."""
    for index, raw in enumerate(contacts):
        sink.add(raw, where=INDEX, at=index)
    return sink.finish()


class _DecodedLines:
    """Byte lines -> text lines for :mod:`csv`, remembering which lines were not valid UTF-8."""

    def __init__(self, lines: Iterable[bytes]) -> None:
        self._lines = iter(lines)
        self.number = 0
        self.undecodable: set[int] = set()

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        raw = next(self._lines)
        self.number += 1
        if self.number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.undecodable.add(self.number)
            return raw.decode("utf-8", errors="replace")


def _first_line(source: _DecodedLines) -> str | None:
    for line in source:
        if line.strip():
            return line
    return None


def import_csv(lines: Iterable[bytes], sink: ContactSink, *, max_rows: int = DEFAULT_MAX_ROWS) -> ImportReport:
    """Import a CSV given as byte lines (each ending with ``\\n``, the last one may not); see the module doc.

    :param max_rows: data rows read at most; default :data:`DEFAULT_MAX_ROWS`. Reading stops there
        and the report says so (``stopped``).
    :raises CsvFormatError: no header, or a header that cannot be read (nothing is imported).
    """
    header, rows = csv_lines(lines)
    if header is None:
        raise CsvFormatError([("body", "the CSV is empty: a header row and one contact per row are expected")])
    layout = CsvLayout.from_header(header)
    report = sink.report
    for start, row in rows:
        if report.rows >= max_rows:
            report.stopped = f"stopped at line {start}: an upload may hold at most {max_rows} rows"
            break
        if isinstance(row, str):   # a line that cannot be read
            report.rows += 1
            report.error(LINE, start, row)
            continue
        try:
            raw = layout.contact(row)
        except InvalidContact as exc:
            report.rows += 1
            report.error(LINE, start, exc.message, exc.field)
            continue
        sink.add(raw, where=LINE, at=start)
    return sink.finish()


def csv_lines(lines: Iterable[bytes]) -> tuple[list[str] | None, Iterator[tuple[int, list[str] | str]]]:
    """A CSV given as byte lines, read like the contacts CSV (UTF-8, byte-order mark ignored, delimiter
    detected on the header, blank lines skipped): its header (None when empty) and ``(line, row)`` for each
    data row, where ``row`` is a string saying why the line could not be read (bad UTF-8, bad quoting).
    Lines are numbered from 1 (the header); a row spanning several lines is reported at its first.

    :raises CsvFormatError: the header is not valid UTF-8 or cannot be read.
    """
    source = _DecodedLines(lines)
    header_line = _first_line(source)
    if header_line is None:
        return None, iter(())
    if source.undecodable:
        raise CsvFormatError([("header", "is not valid UTF-8 (save the file as 'CSV UTF-8')")])
    delimiter = detect_delimiter(header_line)
    try:
        header = next(csv.reader([header_line], delimiter=delimiter))
    except (csv.Error, StopIteration) as exc:
        raise CsvFormatError([("header", f"cannot be read: {exc}")]) from None
    header_number = source.number

    def rows() -> Iterator[tuple[int, list[str] | str]]:
        reader = csv.reader(source, delimiter=delimiter)
        previous = header_number
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield previous + 1, f"cannot be read as CSV: {exc}"
                previous = source.number
                continue
            start, previous = previous + 1, source.number
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if any(n in source.undecodable for n in range(start, source.number + 1)):
                yield start, "is not valid UTF-8 (save the file as 'CSV UTF-8')"
                continue
            yield start, row

    return header, rows()


def split_lines(rest: bytes, chunk: bytes) -> tuple[list[bytes], bytes]:
    """Cut ``rest + chunk`` into complete lines (each keeping its ``\\n``) and the unfinished tail.

    Only ``\\n`` ends a line: a lone ``\\r`` may sit inside a quoted cell, and ``\\r\\n`` keeps its
    ``\\r`` for :mod:`csv` to drop.
    """
    data = rest + chunk
    parts = data.split(b"\n")
    tail = parts.pop()
    return [p + b"\n" for p in parts], tail
