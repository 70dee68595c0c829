"""The MongoDB client's default timeouts never override the ones an operator put in ``MONGODB_URI``."""

from __future__ import annotations

from shared.stores import mongo


def test_the_uris_own_timeouts_win_and_the_defaults_fill_the_rest():
    uri = "mongodb://127.0.0.1:1/outdial_options?serverSelectionTimeoutMS=30000&appName=x"
    client = mongo.client(uri)
    try:
        assert client.options.server_selection_timeout == 30.0
        assert client.options.pool_options.connect_timeout == 5.0
    finally:
        client.close()
        mongo._clients.pop(uri, None)


def test_option_names_are_read_without_regard_to_case_or_separator():
    defaults = {"serverSelectionTimeoutMS": 5_000, "connectTimeoutMS": 5_000}
    assert mongo._unset_in("mongodb://h/db", defaults) == defaults
    assert mongo._unset_in("mongodb://h/db?SERVERSELECTIONTIMEOUTMS=1;connecttimeoutms=2", defaults) == {}
    assert mongo._unset_in("mongodb+srv://u:p@h/db?retryWrites=true&connectTimeoutMS=9", defaults) == {
        "serverSelectionTimeoutMS": 5_000}
