"""Contact uploads through the API: any CSV the csv module can write, and uploads that arrive in pieces."""

from __future__ import annotations

import csv
import io

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.domain.phones import numbered


def valid_numbers(count: int, prefix: str = "68") -> list[str]:
    return numbered(f"+569{prefix}", count)


GOOD = valid_numbers(30)
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=15)
ROW = st.tuples(st.sampled_from([*GOOD, "123", "", "not a phone", "+1555"]), TEXT, TEXT)


def setup_batch(api) -> str:
    api.put("/accounts/acme", {"plan": {"type": "unlimited"}})
    return api.post("/batches", {"name": "csv", "account_id": "acme"}).json()["id"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(ROW, max_size=25), delimiter=st.sampled_from([",", ";", "\t"]))
def test_every_row_is_imported_or_reported_exactly_once(api, web_runtime, rows, delimiter):
    bid = setup_batch(api)
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter)      # "\r\n" line ends, as Excel writes them
    writer.writerow(["phone", "name", "nota"])
    writer.writerows(rows)
    reply = api.request("POST", f"/batches/{bid}/contacts", data=out.getvalue().encode(),
                        headers={"Content-Type": "text/csv"})
    assert reply.status == 200, reply.text
    body = reply.json()
    valid, seen, lines, line = [], set(), [], 2
    for r in rows:
        if r[0] not in GOOD:
            lines.append((line, False))
        elif r[0] in seen:            # a second row with the same number (and no external_id): a duplicate
            lines.append((line, True))
        else:
            seen.add(r[0])
            valid.append(r)
        line += 1 + sum(cell.count("\n") for cell in r)   # only "\n" ends a line
    assert body["imported"] == len(valid) and body["errors_total"] == len(rows) - len(valid)
    assert body["rows"] == len(rows) and body["duplicates"] == sum(dup for _, dup in lines)
    stored = [(j["contact"]["phones"][0], j["contact"]["name"], j["contact"]["variables"]["nota"])
              for j in web_runtime.jobs.find({"batch_id": bid}, sort=[("_id", 1)])]
    assert sorted(stored) == sorted((p, n.strip(), v.strip()) for p, n, v in valid)   # cells are trimmed
    assert [(e["line"], e.get("duplicate", False)) for e in body["errors"]] == lines   # in row order


def test_an_upload_in_tiny_pieces_reads_the_same(api, web_runtime):
    bid = setup_batch(api)
    rows = [(GOOD[i % 30], f'Name "{i}"\nsecond line', f"v;{i}") for i in range(600)]
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";", lineterminator="\r\n")
    writer.writerow(["phones", "name", "external_id"])
    for phone, name, ext in rows:
        writer.writerow([phone, name, ext])
    data = out.getvalue().encode()
    pieces = iter([data[i:i + 7] for i in range(0, len(data), 7)])       # splits lines, quotes and CRLFs
    reply = api.request("POST", f"/batches/{bid}/contacts", body_iter=pieces, headers={"Content-Type": "text/csv"})
    assert reply.status == 200, reply.text
    assert reply.json()["imported"] == 600 and reply.json()["errors"] == []
    stored = {j["contact"]["external_id"]: j["contact"]["name"] for j in web_runtime.jobs.find({"batch_id": bid})}
    assert stored == {ext: name for _, name, ext in rows}


def test_two_people_with_blank_external_ids_are_both_imported(api, web_runtime):
    bid = setup_batch(api)
    people = [{"name": "Ana", "phones": [GOOD[0]], "external_id": " "},
              {"name": "Luis", "phones": [GOOD[1]], "external_id": "\t"}]
    reply = api.post(f"/batches/{bid}/contacts", {"contacts": people})
    assert reply.status == 200, reply.text
    assert (reply.json()["imported"], reply.json()["duplicates"], reply.json()["errors"]) == (2, 0, [])
    csv_body = f'phone,name,external_id\n{GOOD[2]},Eva," "\n{GOOD[3]},Tom,"  "\n'.encode()
    reply = api.request("POST", f"/batches/{bid}/contacts", data=csv_body, headers={"Content-Type": "text/csv"})
    assert reply.status == 200, reply.text
    assert (reply.json()["imported"], reply.json()["duplicates"]) == (2, 0)
    jobs = web_runtime.jobs.find({"batch_id": bid})
    assert sorted(j["contact"]["name"] for j in jobs) == ["Ana", "Eva", "Luis", "Tom"]
    assert all("external_id" not in j["contact"] and "dedupe_key" not in j for j in jobs)
    again = api.post(f"/batches/{bid}/contacts", {"contacts": people})   # the same people again: duplicates
    assert (again.json()["imported"], again.json()["duplicates"]) == (0, 2)
