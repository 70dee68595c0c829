import pytest

from shared.domain.contacts import InvalidContact, parse_contact


def test_valid_contact_is_normalised():
    c = parse_contact({"name": "Ana", "phones": ["+56 9 6123 4567", "961234568", "+56961234567"],
                       "variables": {"debt": 1200, "vip": True, "note": None}, "external_id": "A-1",
                       "timezone": "America/Santiago"})
    assert c.phones == ("+56961234567", "+56961234568")  # duplicates dropped
    assert c.variables == {"debt": "1200", "vip": "true", "note": ""}
    assert c.to_document()["external_id"] == "A-1"


def test_phones_may_be_one_string():
    assert parse_contact({"phones": "+56961234567; +56961234568"}).phones == ("+56961234567", "+56961234568")


@pytest.mark.parametrize(("raw", "field", "fragment"), [
    ("x", "contact", "object"),
    ({"name": "A"}, "phones", "required"),
    ({"phones": []}, "phones", "required"),
    ({"name": "Ana", "phones": ["+56961234567", "12"]}, "phones[1]", "'12' of 'Ana'"),
    ({"phones": ["+56961234567"], "variables": {"$where": "x"}}, "variables.$where", "'$'"),
    ({"phones": ["+56961234567"], "variables": {"a.b": "x"}}, "variables.a.b", "'.'"),
    ({"phones": ["+56961234567"], "variables": {"a": {"b": 1}}}, "variables.a", "string or number"),
    ({"phones": ["+56961234567"], "variables": []}, "variables", "object"),
    ({"phones": ["+56961234567"], "timezone": "Nowhere/City"}, "timezone", "unknown IANA"),
    ({"phones": ["+56961234567"], "age": 3}, "age", "unknown field"),
    ({"phones": ["+56961234567"], "name": {"first": "A"}}, "name", "string"),
])
def test_invalid_contacts_name_the_field(raw, field, fragment):
    with pytest.raises(InvalidContact) as info:
        parse_contact(raw)
    assert info.value.field == field
    assert fragment in str(info.value)


@pytest.mark.parametrize("blank", ["", " ", "\t", " \u00a0 ", "\n"])
def test_a_blank_external_id_is_none(blank):
    contact = parse_contact({"phones": ["+56961234567"], "external_id": blank})
    assert contact.external_id is None and "external_id" not in contact.to_document()


@pytest.mark.parametrize(("raw", "field"), [
    ({"phones": ["+56961234567"], "name": "A\ud800"}, "name"),
    ({"phones": ["+56961234567"], "external_id": "x\udfff"}, "external_id"),
    ({"phones": ["+56961234567"], "timezone": "\ud800"}, "timezone"),
    ({"phones": ["+56961234567"], "variables": {"note": "\ud800"}}, "variables.note"),
    ({"phones": ["+56961234567"], "variables": {"n\ud800": "x"}}, "variables.n\\ud800"),
    ({"phones": ["+5696123\ud8004567"]}, "phones[0]"),
])
def test_text_that_utf8_cannot_hold_is_refused_naming_the_field(raw, field):
    # A direct caller of JobStore.create_jobs gets the row refused, never an encoder failure at the insert.
    with pytest.raises(InvalidContact) as caught:
        parse_contact(raw)
    assert caught.value.field == field
    caught.value.message.encode("utf-8")
