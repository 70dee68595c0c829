import io
import json
import logging

from shared.logs import configure_logging, event, redact, register_secret


def test_json_lines_with_fields_and_masking():
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    register_secret("key_supersecretvalue123")
    log = logging.getLogger("outdial.test")
    event(log, "dialing +56961234567", job_id="j1", phone="+56961234567",
          headers={"Authorization": "Bearer key_supersecretvalue123"})
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["event"].startswith("dialing +569")
    assert "56961234567" not in stream.getvalue()
    assert "supersecretvalue" not in stream.getvalue()
    assert line["job_id"] == "j1"
    assert line["phone"] == "+569******67"


def test_redact_unknown_retell_style_keys():
    assert "abcdef123456" not in redact("key_abcdef123456789 leaked")


def test_redact_leaves_short_numbers_alone():
    assert redact("tries=3 attempt 12") == "tries=3 attempt 12"


def test_identifiers_with_digit_runs_are_left_whole():
    from shared.logs import redact

    call_id = "call_481bc4c431864e0dacc52519fedd"
    assert redact(f"call {call_id} to 56961234567") == f"call {call_id} to 56*******67"
    assert redact("attempt 6b0f12bfca766c057cfbc864:r1:p0:d1") == "attempt 6b0f12bfca766c057cfbc864:r1:p0:d1"
