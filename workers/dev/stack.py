"""Start and stop a whole outdial stack as child processes: simulator, workers, clock, web.

Used by ``outdial demo``, ``outdial bench`` and the end-to-end tests. Every child shares the
parent's services (``MONGODB_URI``, ``REDIS_URL``) and its shared clock (the clock variables are
passed down), gets a log file, dies with the parent (Linux), and is stopped by :meth:`Stack.stop`,
which leaves no process behind: each child runs in its own process group, and the group is
killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.clock import Clock
from shared.config import Config
from workers.dev.embedded import spawn

#: Real milliseconds between a worker's polls of Redis (dramatiq's default is 1000).
DEFAULT_WORKER_TIMEOUT_MS = 100
#: Real milliseconds a worker gets to finish its messages at shutdown.
DEFAULT_SHUTDOWN_TIMEOUT_MS = 5000


def child_env(config: Config, clock: Clock | None = None, *, base: Mapping[str, str] | None = None,
              **extra: str) -> dict[str, str]:
    """The environment of a child process that must see ``config``'s services and ``clock``."""
    env = dict(os.environ if base is None else base)
    for name in ("OUTDIAL_CLOCK_START", "OUTDIAL_CLOCK_SPEED", "OUTDIAL_CLOCK_ANCHOR"):
        env.pop(name, None)
    env.update({
        "MONGODB_URI": config.mongodb_uri or "",
        "MONGODB_DB": config.mongodb_db,
        "REDIS_URL": config.redis_url or "",
        "RETELL_API_KEY": config.retell_api_key,
        "OUTDIAL_LANG": config.lang,
        "dramatiq_worker_timeout": str(DEFAULT_WORKER_TIMEOUT_MS),
    })
    if config.retell_base_url:
        env["RETELL_BASE_URL"] = config.retell_base_url
    if config.admin_token:
        env["ADMIN_TOKEN"] = config.admin_token
    env["PIPELINE_LEASE_S"] = repr(config.pipeline_lease_s)
    env["PIPELINE_DIAL_GUARD_S"] = repr(config.pipeline_dial_guard_s)
    env["PIPELINE_MAX_SKEW_MS"] = str(config.pipeline_max_skew_ms)
    env["RETELL_CREATE_TIMEOUT_S"] = repr(config.retell_create_timeout_s)
    env["PIPELINE_MAX_FREE_RETRIES"] = str(config.pipeline_max_free_retries)
    env["PIPELINE_FREE_RETRY_BASE_S"] = repr(config.pipeline_free_retry_base_s)
    env["RETELL_WEBHOOKS"] = "1" if config.retell_webhooks else "0"
    env["PIPELINE_SAFETY_POLL_S"] = repr(config.pipeline_safety_poll_s)
    env["RESULTS_SWEEP_S"] = repr(config.results_sweep_s)
    if config.retell_concurrency_limit:
        env["RETELL_CONCURRENCY_LIMIT"] = str(config.retell_concurrency_limit)
    if config.call_from_number:
        env["CALL_FROM_NUMBER"] = config.call_from_number
    if clock is not None:
        env.update(clock.env())
    env.update(extra)
    return env


def _kill_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def stop_group(proc: subprocess.Popen[bytes], *, timeout_s: float = 10.0) -> None:
    """SIGTERM the child's process group, SIGKILL it after ``timeout_s``."""
    stop_groups([proc], timeout_s=timeout_s)


def stop_groups(procs: list[subprocess.Popen[bytes]], *, timeout_s: float = 10.0) -> None:
    """SIGTERM every child's process group at once, wait for them together, SIGKILL what is left after
    ``timeout_s`` (their shutdowns overlap instead of adding up)."""
    running = [p for p in procs if p.poll() is None]
    if timeout_s > 0:
        for proc in running:
            _kill_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.0, deadline - time.monotonic()))
    for proc in procs:
        _kill_group(proc, signal.SIGKILL)  # the group may outlive its leader
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)


@dataclass
class Stack:
    """Children started for one stack; :meth:`stop` ends them all."""

    env: dict[str, str]
    log_dir: Path
    simulator: Any = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    clocks: list[subprocess.Popen[bytes]] = field(default_factory=list)
    web: subprocess.Popen[bytes] | None = None
    _counter: int = 0

    def _log(self, name: str) -> Path:
        self._counter += 1
        return self.log_dir / f"{self._counter:02d}-{name}.log"

    def start_worker(self, *, processes: int = 1, threads: int = 8, queues: list[str] | None = None,
                     env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        """One ``dramatiq workers.actors`` command (``processes`` worker processes under one master).

        :param env: variables for this command only, on top of the stack's.
        """
        argv = [sys.executable, "-m", "dramatiq", "workers.actors", "--processes", str(processes),
                "--threads", str(threads), "--worker-shutdown-timeout", str(DEFAULT_SHUTDOWN_TIMEOUT_MS)]
        if queues:
            argv += ["--queues", *queues]
        proc = spawn(argv, log_path=self._log("worker"), env={**self.env, **(env or {})}, new_session=True)
        self.workers.append(proc)
        return proc

    def start_clock(self, *, interval_s: float = 0.5) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "workers.cli", "clock", "--interval", str(interval_s)]
        proc = spawn(argv, log_path=self._log("clock"), env=self.env, new_session=True)
        self.clocks.append(proc)
        return proc

    def start_web(self, *, port: int) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "workers.cli", "web", "--port", str(port)]
        self.web = spawn(argv, log_path=self._log("web"), env=self.env, new_session=True)
        return self.web

    def kill_worker(self, index: int = 0, sig: int = signal.SIGKILL) -> None:
        """Kill a worker command and every process it forked (``kill -9`` of a dyno)."""
        proc = self.workers[index]
        _kill_group(proc, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)

    def pids(self) -> list[int]:
        """Every live child process of the stack, worker processes included."""
        found = []
        for proc in [*self.workers, *self.clocks, *([self.web] if self.web else [])]:
            if proc.poll() is None:
                found.append(proc.pid)
                found.extend(_descendants(proc.pid))
        if self.simulator is not None and self.simulator.process.poll() is None:
            found.append(self.simulator.process.pid)
        return found

    def logs(self) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-4000:]}"
                         for p in sorted(self.log_dir.glob("*.log")))

    def stop(self, *, graceful: bool = True) -> None:
        """Stop every child. ``graceful``: SIGTERM first (workers finish their messages, as on a dyno
        restart); else SIGKILL at once (the tests' clean-up: nothing left to finish, seconds saved)."""
        timeout_s = 10.0 if graceful else 0.0
        stop_groups(self.clocks, timeout_s=timeout_s)   # first: no new work is scheduled while the workers stop
        stop_groups([*self.workers, *([self.web] if self.web else [])], timeout_s=timeout_s)
        if self.simulator is not None:
            self.simulator.stop()


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return out
    for child in children:
        out.append(int(child))
        out.extend(_descendants(int(child)))
    return out


def start_stack(config: Config, clock: Clock, *, simulator: bool = True, scenario: Mapping[str, Any] | None = None,
                simulator_flags: Mapping[str, Any] | None = None, workers: int = 1, processes: int = 1,
                threads: int = 8, clock_interval_s: float | None = 0.5, log_dir: str | Path | None = None,
                env: Mapping[str, str] | None = None) -> tuple[Stack, Config]:
    """Start the simulator (unless ``config`` names a provider), workers and the clock.

    Returns the stack and ``config`` pointing at the simulator. On failure everything started is stopped.

    :param env: further variables for every process of the stack (the simulator included).
    """
    from workers.dev.simulator.process import start_simulator

    stack = Stack(env={}, log_dir=Path(log_dir or tempfile.mkdtemp(prefix="outdial-stack-")))
    stack.log_dir.mkdir(parents=True, exist_ok=True)
    try:
        if simulator:
            stack.simulator = start_simulator(env={**child_env(config, clock), **(env or {})}, scenario=scenario,
                                              **dict(simulator_flags or {}))
            config = config.with_overrides(retell_base_url=stack.simulator.base_url,
                                           retell_api_key=stack.simulator.api_key)
        stack.env = {**child_env(config, clock), **(env or {})}
        for _ in range(workers):
            stack.start_worker(processes=processes, threads=threads)
        if clock_interval_s:
            stack.start_clock(interval_s=clock_interval_s)
    except BaseException:
        stack.stop()
        raise
    return stack, config
