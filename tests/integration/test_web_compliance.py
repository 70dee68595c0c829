"""Compliance profiles through the real web app on the real MongoDB wire server: the built-in profiles listed, an
operator's profile stored, replacing a built-in one or added, a bad body refused naming each field, access levels."""

from __future__ import annotations

import copy
import json
from importlib import resources

from shared.domain.compliance import BUILTIN_IDS, REGISTRY
from tests.fixtures.web import ADMIN_TOKEN
from workers.web.http import read_token_for


def builtin(profile_id: str) -> dict:
    path = resources.files("shared.domain").joinpath("compliance_profiles", f"{profile_id}.json")
    return json.loads(path.read_text(encoding="utf-8"))


def test_the_built_in_profiles_are_listed_with_their_documents(web):
    reader = web.client(token=read_token_for(ADMIN_TOKEN))
    reply = reader.get("/compliance-profiles")
    assert reply.status == 200, reply.text
    body = reply.json()
    assert [p["id"] for p in body["profiles"]] == sorted(BUILTIN_IDS) and body["count"] == len(BUILTIN_IDS)
    assert body["problems"] == []
    regf = next(p for p in body["profiles"] if p["id"] == "us-regf")
    assert regf["builtin"] and not regf["overridden"] and regf["updated_at"] is None
    assert regf["document"] == builtin("us-regf")
    one = reader.get("/compliance-profiles/cl-cobranza")
    assert one.status == 200 and one.json()["document"] == builtin("cl-cobranza")
    assert reader.get("/compliance-profiles/xx-nothing").status == 404
    assert reader.get("/compliance-profiles/Not%20An%20Id").status == 404
    assert reader.put("/compliance-profiles/acme", {"version": 1}).status == 401   # writes need the admin token
    assert web.client(token=None).get("/compliance-profiles").status == 401


def test_an_override_replaces_the_built_in_profile(api, web_runtime):
    doc = copy.deepcopy(builtin("cl-cobranza"))
    doc.update(version=2, unconfirmed=[], caps=[{"count": 1, "days": 7, "hours": None, "per": "person",
                                                 "counts": ["answered", "voicemail"],
                                                 "rule": "1 call a week, unanswered calls not counted"}])
    del doc["id"]   # the path gives it
    reply = api.put("/compliance-profiles/cl-cobranza", doc)
    assert reply.status == 201, reply.text
    view = reply.json()
    assert (view["id"], view["builtin"], view["overridden"]) == ("cl-cobranza", False, True)
    assert view["document"]["version"] == 2 and view["document"]["caps"][0]["counts"] == ["answered", "voicemail"]
    assert view["updated_at"] is not None
    assert REGISTRY.get("cl-cobranza").version == 2 and not REGISTRY.get("cl-cobranza").builtin

    listed = {p["id"]: p for p in api.get("/compliance-profiles").json()["profiles"]}
    assert len(listed) == len(BUILTIN_IDS)
    assert listed["cl-cobranza"]["overridden"] and listed["cl-cobranza"]["document"]["version"] == 2
    assert listed["co-cobranza"]["builtin"]

    again = api.put("/compliance-profiles/cl-cobranza", {**doc, "version": 3, "id": "cl-cobranza"})
    assert again.status == 200, again.text
    assert api.get("/compliance-profiles/cl-cobranza").json()["document"]["version"] == 3
    stored = web_runtime.compliance_profiles.get("cl-cobranza")
    assert stored["_id"] == "cl-cobranza" and isinstance(stored["updated_at"], int)
    assert {k: v for k, v in stored.items() if k not in ("_id", "updated_at")} == {**builtin("cl-cobranza"),
                                                                                 **doc, "version": 3,
                                                                                 "id": "cl-cobranza"}


def test_an_operator_profile_with_a_new_id_is_added(api, web, web_runtime):
    body = {"version": 1, "name": "ACME: reminders at most twice a day", "country": "cl", "purposes": ["reminder"],
            "windows": [{"days": [1, 2, 3, 4, 5], "start": "9:00", "end": "18:00"}],
            "caps": [{"count": 2, "days": 1}], "rules": [{"rule": "our own policy", "source": "ACME policy 12",
                                                            "checked_on": "2026-12-01"}]}
    reply = api.put("/compliance-profiles/acme-reminders", body)
    assert reply.status == 201, reply.text
    document = reply.json()["document"]
    assert document["country"] == "CL" and document["windows"][0]["start"] == "09:00"
    assert document["caps"] == [{"count": 2, "days": 1, "hours": None, "per": "person", "counts": None, "rule": ""}]
    assert not reply.json()["overridden"] and not reply.json()["builtin"]
    # another web process sees it too: every read takes the stored profiles afresh
    REGISTRY.install([])
    other = web.client(token=read_token_for(ADMIN_TOKEN))
    listed = [p["id"] for p in other.get("/compliance-profiles").json()["profiles"]]
    assert listed == sorted([*BUILTIN_IDS, "acme-reminders"])
    assert REGISTRY.get("acme-reminders").purposes == ("reminder",)


def test_a_bad_body_is_refused_naming_each_field(api, web_runtime):
    bad = {"id": "other-id", "version": 0, "name": "", "country": "ZZ", "purposes": ["sales"],
           "windows": [{"days": [0], "start": "09:00", "end": "09:00"}],
           "caps": [{"count": 3, "days": 7, "hours": 24, "counts": ["ringing"]}],
           "rules": [{"rule": "x", "source": "y", "checked_on": "2026-13-01"}], "unconfirmed": ["caps[0].counts"],
           "colour": "red"}
    reply = api.put("/compliance-profiles/acme", bad)
    assert reply.status == 422, reply.text
    fields = [e["field"] for e in reply.json()["errors"]]
    assert fields == ["id", "colour", "version", "name", "country", "purposes[0]", "windows[0].days",
                      "caps[0].counts[0]", "caps[0].days", "rules[0].checked_on"], fields
    assert all(e["message"] for e in reply.json()["errors"])
    unconfirmed = api.put("/compliance-profiles/acme", {**builtin("us-fl"), "id": "acme", "unconfirmed": ["caps[4]"]})
    assert unconfirmed.status == 422
    assert [e["field"] for e in unconfirmed.json()["errors"]] == ["unconfirmed[0]"]
    assert api.put("/compliance-profiles/Bad_Id", builtin("us-fl")).status == 422
    assert [e["field"] for e in api.put("/compliance-profiles/acme", {**builtin("us-fl"), "id": None}).json()[
        "errors"]] == ["id"]
    assert api.put("/compliance-profiles/acme", [1]).status == 422
    assert api.request("PUT", "/compliance-profiles/acme", data=b"{", headers={"Content-Type": "application/json"}
                       ).status == 400
    assert web_runtime.compliance_profiles.all() == []
    assert [p.id for p in REGISTRY.all()] == sorted(BUILTIN_IDS)


def test_a_stored_profile_that_no_longer_validates_is_reported_not_applied(api, web_runtime):
    web_runtime.compliance_profiles.put({**builtin("us-fl"), "version": 2})
    web_runtime.compliance_profiles.coll.update_one({"_id": "us-fl"}, {"$set": {"caps": "three a day"}})
    body = api.get("/compliance-profiles").json()
    assert [p["id"] for p in body["problems"]] == ["us-fl"] and "caps" in body["problems"][0]["message"]
    florida = next(p for p in body["profiles"] if p["id"] == "us-fl")
    assert florida["builtin"] and florida["document"]["version"] == 1
