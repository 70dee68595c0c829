"""The reason table: every code said in English and Spanish, nested reasons, stored documents."""

import re
from pathlib import Path

from shared.domain import reasons
from shared.domain.reasons import LANGS, MAX_TEXT, OUTCOMES, TEXTS, Reason, because, of, shown, text

DOCS = Path(__file__).resolve().parents[2] / "docs" / "reasons.md"


def test_every_code_has_every_language():
    for code, entry in TEXTS.items():
        assert len(entry) == len(LANGS), code


def test_a_nested_reason_is_said_in_the_same_language():
    last = because("call_outcome", outcome="no_answer", provider="dial_no_answer")
    reason = because("max_attempts_after", limit=3, last=last)
    assert reason.params["last"] == {"code": "call_outcome", "params": {"outcome": "no_answer",
                                                                       "provider": "dial_no_answer"}}
    assert reason.text() == "max attempts reached (3): no answer (dial_no_answer)"
    assert reason.text("es") == "máximo de intentos alcanzado (3): no contesta (dial_no_answer)"
    assert reason.text("fr") == reason.text("en")


def test_a_call_outcome_without_the_provider_word_is_the_outcome_alone():
    assert because("call_outcome", outcome="busy", provider=None).text("es") == "ocupado"
    assert set(OUTCOMES) >= {"answered", "busy", "no_answer", "voicemail", "timeout"}


def test_fields_and_stored_documents():
    fields = because("window_closing", seconds=900.0, why=because("outside_window", why="closed")).fields("en")
    assert fields["reason_code"] == "window_closing"
    assert fields["last_error"] == "window closes within 900 s: closed"
    assert of(fields) == Reason("window_closing", fields["reason_params"])
    assert shown({"last_error": "an old text"}) == "an old text"  # written before reason codes
    assert of({}) is None and shown(None) is None
    assert len(because("text", text="x" * 2000).fields()["last_error"]) == MAX_TEXT


def test_unknown_codes_and_missing_parameters_show_the_code():
    assert text("from_a_newer_version") == "from_a_newer_version"
    assert text("max_attempts") == "max_attempts"


def test_the_documented_table_lists_every_code():
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", DOCS.read_text(encoding="utf-8"), re.MULTILINE))
    assert documented == set(TEXTS), set(TEXTS) ^ documented
    assert reasons.__doc__ and "docs/reasons.md" in reasons.__doc__
