"""The embedded defaults really start, answer, and stop."""

import socket

import pytest
import redis as redis_lib
from pymongo import MongoClient

from shared.errors import EmbeddedServiceError
from workers.dev import embedded


def test_mongodb_on_a_data_dir_persists_across_restarts(tmp_path):
    server = embedded.start_mongodb(data_dir=tmp_path / "data")
    try:
        MongoClient(server.url).outdial.jobs.insert_one({"_id": "kept"})
    finally:
        server.stop()
    assert server.proc.poll() is not None
    again = embedded.start_mongodb(data_dir=tmp_path / "data")
    try:
        assert MongoClient(again.url).outdial.jobs.find_one({"_id": "kept"}) is not None
    finally:
        again.stop()


def test_mongodb_in_memory_and_given_uri_is_not_started(monkeypatch):
    server = embedded.start_mongodb()
    try:
        monkeypatch.setenv("MONGODB_URI", server.url)
        given = embedded.mongodb()
        assert given.url == server.url and not given.started_here
    finally:
        server.stop()


def test_bundled_redis_starts_on_a_free_port():
    server = embedded.start_redis()
    try:
        assert server.started_here
        assert redis_lib.Redis.from_url(server.url).ping()
    finally:
        server.stop()
    with pytest.raises(redis_lib.ConnectionError):
        redis_lib.Redis.from_url(server.url, socket_connect_timeout=0.5).ping()


def test_port_in_use_is_one_clear_line():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(EmbeddedServiceError, match=f"port {port} is already in use. Hint"):
            embedded.start_redis(port=port)
        with pytest.raises(EmbeddedServiceError, match="already in use"):
            embedded.start_mongodb(port=port)


def test_unwritable_data_dir_is_one_clear_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(EmbeddedServiceError, match="cannot write to the MongoDB data dir"):
        embedded.start_mongodb(data_dir=blocker / "sub")


def test_redis_falls_back_to_local_or_bundled(monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    server = embedded.redis()
    try:
        assert redis_lib.Redis.from_url(server.url).ping()
    finally:
        server.stop()
