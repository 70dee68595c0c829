import pytest

from shared.contacts import InvalidContact, parse_contact


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
