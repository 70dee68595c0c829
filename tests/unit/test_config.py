from datetime import UTC, datetime

import pytest

from shared.config import DEFAULT_MONGODB_DB, Config, describe_variables, load_config
from shared.errors import ConfigError


def test_defaults_with_nothing_set():
    cfg = load_config({})
    assert cfg == Config()
    assert cfg.mongodb_db == DEFAULT_MONGODB_DB == "outdial"
    assert cfg.max_tries == 3
    assert cfg.retry_delay_minutes == 30
    assert cfg.call_max_duration_minutes == 10
    assert cfg.ring_timeout_seconds == 30
    assert cfg.default_timezone == "America/Santiago"
    assert cfg.mongodb_uri is None and cfg.redis_url is None and cfg.retell_base_url is None
    assert cfg.clock_speed == 1.0 and cfg.clock_start is None


def test_contract_variable_names():
    names = {name for name, _, _ in describe_variables()}
    for required in ("MONGODB_URI", "MONGODB_DB", "REDIS_URL", "RETELL_BASE_URL", "RETELL_API_KEY", "ADMIN_TOKEN",
                     "PORT", "OUTDIAL_CLOCK_START", "OUTDIAL_CLOCK_SPEED", "OUTDIAL_CLOCK_ANCHOR", "MAX_TRIES",
                     "RETRY_DELAY_MINUTES", "CALL_MAX_DURATION_MINUTES"):
        assert required in names


def test_values_are_parsed():
    cfg = load_config({
        "MAX_TRIES": "5", "RETRY_DELAY_MINUTES": "2.5", "PORT": "9000",
        "MONGODB_URI": "mongodb://db.example:27017/x", "REDIS_URL": "redis://r:6379/2",
        "OUTDIAL_CLOCK_START": "2026-03-07T15:00:00Z", "OUTDIAL_CLOCK_SPEED": "3600",
        "RETELL_BASE_URL": "http://127.0.0.1:9999/",
    })
    assert cfg.max_tries == 5 and cfg.retry_delay_minutes == 2.5 and cfg.port == 9000
    assert cfg.clock_start == datetime(2026, 3, 7, 15, tzinfo=UTC)
    assert cfg.clock_speed == 3600
    assert cfg.retell_base_url == "http://127.0.0.1:9999"


@pytest.mark.parametrize(("name", "value", "fragment"), [
    ("MAX_TRIES", "abc", "expected an integer"),
    ("MAX_TRIES", "0", ">= 1"),
    ("MONGODB_URI", "http://nope", "not a MongoDB URI"),
    ("MONGODB_URI", "mongodb://", "not a MongoDB URI"),
    ("REDIS_URL", "localhost:6379", "redis://"),
    ("RETELL_BASE_URL", "ftp://x", "http"),
    ("OUTDIAL_CLOCK_SPEED", "-1", "> 0"),
    ("OUTDIAL_CLOCK_SPEED", "nan", "finite"),
    ("OUTDIAL_CLOCK_START", "yesterday", "ISO-8601"),
    ("OUTDIAL_CLOCK_START", "2026-03-07T15:00:00", "offset"),
    ("PORT", "70000", "<= 65535"),
    ("DEFAULT_TIMEZONE", "Mars/Olympus", "unknown IANA"),
    ("PHONE_DEFAULT_REGION", "XX", "unknown region"),
    ("OUTDIAL_LANG", "fr", "en, es"),
    ("LOG_LEVEL", "LOUD", "DEBUG"),
])
def test_malformed_value_names_the_variable(name, value, fragment):
    with pytest.raises(ConfigError) as info:
        load_config({name: value})
    assert name in str(info.value)
    assert fragment in str(info.value)


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as info:
        load_config({"MAX_TRIES": "x", "PORT": "y"})
    assert "MAX_TRIES" in str(info.value) and "PORT" in str(info.value)


def test_empty_value_counts_as_unset():
    assert load_config({"MAX_TRIES": "  ", "MONGODB_URI": ""}) == Config()


@pytest.mark.parametrize("raw", ["56222222222", "+5622", "+56 2 2222 2222 ext", "caller"])
def test_call_from_number_must_be_e164_at_start(raw):
    with pytest.raises(ConfigError) as info:
        load_config({"CALL_FROM_NUMBER": raw})
    assert "CALL_FROM_NUMBER" in str(info.value) and "E.164" in str(info.value)
    assert "56222222222" not in str(info.value)   # a full number is masked


def test_call_from_number_is_normalised():
    assert load_config({"CALL_FROM_NUMBER": " +56 2 2222 2222 "}).call_from_number == "+56222222222"


@pytest.mark.parametrize("key", [None, "key_outdial_dev"])
def test_retells_own_api_with_the_development_key_is_refused(key):
    env = {"RETELL_BASE_URL": "https://api.retellai.com"}
    if key:
        env["RETELL_API_KEY"] = key
    with pytest.raises(ConfigError) as info:
        load_config(env).check_deployment()
    assert "RETELL_API_KEY" in str(info.value)
    load_config({**env, "RETELL_API_KEY": "key_live_abc"}).check_deployment()   # a real key is fine
    load_config({}).check_deployment()                                           # the simulator too


def test_a_dialing_lease_shorter_than_a_create_is_refused():
    with pytest.raises(ConfigError) as info:
        load_config({"PIPELINE_LEASE_S": "10", "RETELL_CREATE_TIMEOUT_S": "20"}).check_deployment()
    assert "PIPELINE_LEASE_S" in str(info.value) and "RETELL_CREATE_TIMEOUT_S" in str(info.value)
    load_config({"PIPELINE_LEASE_S": "3", "RETELL_CREATE_TIMEOUT_S": "1.5"}).check_deployment()
