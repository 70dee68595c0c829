"""``outdial demo`` end to end, as a new user runs it: a subprocess on embedded defaults.

The reduced run (24 contacts over the three batches, a faster clock) must end with every contact
final, print the summary and the window check (0 calls outside their window), exit 0 and leave no
process behind. The error
path: a busy ``--port`` gives exit code 2 and one line with a hint, before anything starts.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib

pytestmark = pytest.mark.slow   # ``outdial demo`` as a child process

#: Real seconds the reduced demo may take before the test gives up on it.
DEMO_TIMEOUT_S = 150
#: Redis database index of these tests (not the other tests' index: the demo refuses a database in use).
DEMO_TEST_REDIS_DB = int(os.environ.get("OUTDIAL_TEST_DEMO_REDIS_DB", "12"))


@pytest.fixture
def demo_redis_url(redis_server) -> Iterator[str]:
    base, _, tail = redis_server.url.rpartition("/")
    url = f"{base}/{DEMO_TEST_REDIS_DB}" if tail.isdigit() else f"{redis_server.url.rstrip('/')}/{DEMO_TEST_REDIS_DB}"
    client = redis_lib.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            kids = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
        except OSError:
            continue
        for kid in map(int, kids):
            found.add(kid)
            found |= _children(kid)
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _demo_env(redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OUTDIAL_CLOCK_", "MONGODB_", "RETELL_")) and k not in ("ADMIN_TOKEN", "PORT")}
    env["REDIS_URL"] = redis_url  # this test's flushed Redis database; MongoDB: the demo starts its own
    env["LOG_FORMAT"] = "json"
    return env


def test_reduced_demo_runs_every_contact_to_a_final_state(demo_redis_url, tmp_path):
    # 30,000x with a quarter-second dial guard (2 simulated hours): the demo's days pass in 3 real seconds each
    argv = [sys.executable, "-m", "workers.cli", "demo", "--contacts", "24", "--speed", "30000", "--dial-guard", "0.25",
            "--plain",
            "--time-cap", "120", "--seed", "11", "--log-dir", str(tmp_path / "logs")]
    proc = subprocess.Popen(argv, env=_demo_env(demo_redis_url), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    seen: set[int] = set()
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout or ()), daemon=True)
    reader.start()
    try:
        while proc.poll() is None:
            seen |= _children(proc.pid)
            try:
                proc.wait(0.2)
            except subprocess.TimeoutExpired:
                pass
        proc.wait(DEMO_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
    reader.join(10)
    text = "".join(output)
    assert proc.returncode == 0, text

    # every contact final, the summary and both checks printed
    finals = re.findall(r"final (\d+)/(\d+)", text)
    assert finals and finals[-1] == ("24", "24"), text
    assert "Summary: simulated Sat 2026-07-04 13:00" in text
    total = re.search(r"^total\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", text, re.M)
    assert total is not None, text
    contacts, completed, failed, still_open, calls = map(int, total.groups())
    assert (contacts, still_open) == (24, 0) and completed + failed == 24 and calls >= 24
    assert re.search(r"window check: \d+ calls received by the provider; 0 calls outside their window", text)
    assert "dial check: 0 attempts dialed twice" in text
    assert "ledger balanced" in text

    # the stack really ran: worker processes, simulator, clock, web, MongoDB were children
    assert len(seen) >= 6, seen
    assert "none left behind" in text
    left = sorted(pid for pid in seen if _alive(pid))
    assert not left, f"processes left behind: {left}"

    # never a full phone number or a key
    assert not re.search(r"\+\d{9,}", text), "a full phone number was printed"
    assert not re.search(r"key_demo[0-9a-f]{4,}", text), "the simulator key was printed"


def test_port_in_use_is_one_line_with_a_hint(demo_redis_url):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "workers.cli", "demo", "--port", str(port), "--plain"],
                              env=_demo_env(demo_redis_url), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"port {port} is already in use" in lines[0] and "Hint:" in lines[0]
    assert "MongoDB" not in proc.stdout  # nothing was started


def test_unreachable_redis_is_one_line_with_a_hint():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        env = _demo_env(f"redis://:secret@127.0.0.1:{port}/0")
        proc = subprocess.run([sys.executable, "-m", "workers.cli", "demo", "--plain"], env=env,
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "REDIS_URL" in lines[0] and "Hint:" in lines[0], proc.stderr
    assert "secret" not in proc.stderr


def test_a_redis_database_in_use_is_refused(demo_redis_url):
    client = redis_lib.Redis.from_url(demo_redis_url)
    client.zadd("dramatiq:__heartbeats__", {"stopped-worker": int(time.time() * 1000) - 1000})
    stop = threading.Event()

    def live_worker() -> None:  # refreshes its heartbeat like a dramatiq consumer does
        while not stop.is_set():
            client.zadd("dramatiq:__heartbeats__", {"live-worker": int(time.time() * 1000)})
            stop.wait(0.1)

    beating = threading.Thread(target=live_worker, daemon=True)
    beating.start()
    try:
        proc = subprocess.run([sys.executable, "-m", "workers.cli", "demo", "--plain"],
                              env=_demo_env(demo_redis_url), capture_output=True, text=True, timeout=60)
    finally:
        stop.set()
        beating.join(5)
        client.close()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "in use by 1 running outdial process" in lines[0] and "Hint:" in lines[0], proc.stderr


def test_unwritable_data_dir_is_one_line_with_a_hint(demo_redis_url):
    # a heartbeat a stopped process left a second ago (the previous demo) does not count as a live process
    client = redis_lib.Redis.from_url(demo_redis_url)
    client.zadd("dramatiq:__heartbeats__", {"stopped-worker": int(time.time() * 1000) - 1000})
    client.close()
    proc = subprocess.run([sys.executable, "-m", "workers.cli", "demo", "--plain", "--data-dir", "/proc/outdial-demo"],
                          env=_demo_env(demo_redis_url), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot write to the MongoDB data dir" in lines[0] and "Hint:" in lines[0], proc.stderr
