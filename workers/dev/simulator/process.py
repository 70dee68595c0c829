"""Start ``outdial simulator`` as a child process and drive its debug endpoints.

Used by the test fixtures, the benchmarks and ``outdial demo``::

    sim = start_simulator(env=child_env, concurrency_limit=50, scenario={"numbers": {...}})
    config = config.with_overrides(retell_base_url=sim.base_url, retell_api_key=sim.api_key)
    ...
    sim.dials(to_number="+15551230001")   # the create requests that created a call
    sim.stop()

The child inherits ``env`` (default ``os.environ``): give it the shared clock's variables
(``Clock.env()``) so its calls run on the same simulated time as the caller.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from shared.errors import ServiceError

__all__ = ["SimulatorProcess", "start_simulator"]

#: Real seconds to wait for the child to print its address.
DEFAULT_STARTUP_TIMEOUT_S = 30.0
#: Line the child prints once it accepts requests (see workers/dev/simulator/main.py).
READY_PREFIX = "outdial simulator listening on "
#: Talks to the child directly, whatever proxy the environment names.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class SimulatorProcess:
    """A running simulator child: where it listens, its key, and helpers for its debug endpoints.

    Every helper is a blocking HTTP request to the child (``urllib``; no event loop needed).
    """

    def __init__(self, *, process: subprocess.Popen[str], base_url: str, api_key: str, log_path: str,
                 temp_files: Sequence[str] = ()) -> None:
        self.process = process
        self._temp_files = list(temp_files)
        self.base_url = base_url
        self.api_key = api_key
        self.log_path = log_path
        self.port = int(base_url.rsplit(":", 1)[1])

    @property
    def pid(self) -> int:
        return self.process.pid

    # -- HTTP ------------------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, *, auth: bool = False,
                timeout_s: float = 30.0) -> Any:
        """Send ``body`` as JSON to ``path``; returns the decoded JSON answer (None when empty).

        Raises :class:`urllib.error.HTTPError` for non-2xx answers (its ``read()`` has the error body).
        """
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)
        with _OPENER.open(req, timeout=timeout_s) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def health(self) -> dict[str, Any]:
        return self.request("GET", "/debug/health")

    def calls(self, *, to_number: str | None = None, created: bool = False,
              timeline: bool = False) -> list[dict[str, Any]]:
        """Every create request received: ``{"received_at", "body", "call_id", "status"[, "fault",
        "idempotent_replay"]}``.

        :param to_number: only requests to this number.
        :param created: only requests that created a call or replayed one (``call_id`` set); see :meth:`dials`.
        :param timeline: add ``call``: the call's ``created_ms``, ``connect_ms``, ``end_ms``, ``stopped_ms``.
        """
        query = {}
        if timeline:
            query["timeline"] = "1"
        if to_number:
            query["to_number"] = to_number
        if created:
            query["created"] = "1"
        return self.request("GET", "/debug/calls" + ("?" + urllib.parse.urlencode(query) if query else ""))

    def dials(self, to_number: str | None = None, *, timeline: bool = False) -> list[dict[str, Any]]:
        """The create requests that created a call (including those whose answer was dropped); a repeated
        idempotency key that got the original call back dialed nothing and is not one."""
        return [r for r in self.calls(to_number=to_number, created=True, timeline=timeline)
                if not r.get("idempotent_replay")]

    def replays(self) -> list[dict[str, Any]]:
        """The create requests answered with the call of an earlier one (same idempotency key)."""
        return [r for r in self.calls(created=True) if r.get("idempotent_replay")]

    def call_debug(self, call_id: str) -> dict[str, Any]:
        """The plan of a call: outcome, connect/end instants, current view, pending webhooks."""
        return self.request("GET", f"/debug/calls/{urllib.parse.quote(call_id)}")

    def stats(self) -> dict[str, Any]:
        return self.request("GET", "/debug/stats")

    def webhooks(self, call_id: str | None = None) -> list[dict[str, Any]]:
        """Finished webhook deliveries: event, call_id, url, attempts, ok, status, lag_ms."""
        suffix = "?" + urllib.parse.urlencode({"call_id": call_id}) if call_id else ""
        return self.request("GET", "/debug/webhooks" + suffix)

    def set_scenario(self, scenario: Mapping[str, Any]) -> dict[str, Any]:
        """Replace the outcome rules (per-number dial counts restart)."""
        return self.request("PUT", "/debug/scenario", dict(scenario))

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        """Replace the faults: ``rate_429``, ``rate_500``, ``rate_slow``, ``rate_drop``, ``slow_ms``,
        ``retry_after_ms``, ``endpoints``, ``script`` (fields not given: no fault)."""
        return self.request("PUT", "/debug/faults", faults)

    def script_faults(self, endpoint: str, *faults: str) -> dict[str, Any]:
        """Apply ``faults`` (``"drop"``, ``"429"``, ``"500"``, ``"slow"``, ...) to the next requests of ``endpoint``."""
        current = self.request("GET", "/debug/faults")
        script = dict(current.get("script") or {})
        script[endpoint] = list(faults)
        return self.request("PATCH", "/debug/faults", {"script": script})

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Change ``concurrency_limit``, ``concurrency_mode``, ``webhook_url``, ``not_found_status``,
        ``unconnected_status`` or ``seed`` at run time."""
        return self.request("PATCH", "/debug/config", settings)

    def reset(self, *, full: bool = False) -> None:
        """Forget calls, records and counters (scenario, faults and settings stay, unless ``full``: then
        they go back to what the simulator started with)."""
        self.request("POST", "/debug/reset" + ("?full=1" if full else ""))

    # -- process ---------------------------------------------------------------------------------------

    def stop(self, timeout_s: float = 10.0) -> None:
        """Terminate the child (SIGTERM, then SIGKILL after ``timeout_s``)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout_s)
        for path in self._temp_files:
            try:
                os.unlink(path)
            except OSError:
                pass

    def __enter__(self) -> SimulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _flag_args(flags: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for name, value in flags.items():
        if value is None or value is False:
            continue
        option = "--" + name.replace("_", "-")
        out += [option] if value is True else [option, str(value)]
    return out


def _read_ready_line(process: subprocess.Popen[str], timeout_s: float) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout_s
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            if selector.select(timeout=remaining):
                line = process.stdout.readline()
                if not line:
                    raise EOFError
                if line.startswith(READY_PREFIX):
                    return line[len(READY_PREFIX):].strip()
    finally:
        selector.close()


def start_simulator(*, env: Mapping[str, str] | None = None, api_key: str | None = None,
                    scenario: Mapping[str, Any] | None = None, args: Sequence[str] = (), host: str = "127.0.0.1",
                    port: int = 0, startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
                    **flags: Any) -> SimulatorProcess:
    """Start ``outdial simulator`` and wait until it answers.

    :param env: the child's environment (default ``os.environ``); put the shared clock's variables in it.
    :param api_key: the key it accepts and signs webhooks with; default ``RETELL_API_KEY`` of ``env``
        (else the development key).
    :param scenario: outcome rules, written to a temporary file passed as ``--scenario``.
    :param args: further command-line arguments.
    :param host: interface; default loopback. ``port``: default 0 (a free port chosen by the system).
    :param flags: command-line options by name, e.g. ``concurrency_limit=5``, ``webhook_url=...``,
        ``rate_429=0.1``, ``concurrency_mode="429"`` (``True`` gives a bare flag, None/False omits it).
    :raises ServiceError: the child exited or did not print its address within ``startup_timeout_s``.
    """
    child_env = dict(os.environ if env is None else env)
    if api_key is not None:
        child_env["RETELL_API_KEY"] = api_key
    from shared.config import DEFAULT_DEV_API_KEY

    key = child_env.get("RETELL_API_KEY") or DEFAULT_DEV_API_KEY
    log_fd, log_path = tempfile.mkstemp(prefix="outdial-simulator-", suffix=".log")
    command = [sys.executable, "-m", "workers.cli", "simulator", "--host", host, "--port", str(port)]
    temp_files = [log_path]
    if scenario is not None:
        fd, scenario_path = tempfile.mkstemp(prefix="outdial-scenario-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(scenario, fh)
        command += ["--scenario", scenario_path]
        temp_files.append(scenario_path)
    command += _flag_args(flags) + list(args)
    process = subprocess.Popen(command, env=child_env, stdout=subprocess.PIPE, stderr=log_fd, text=True,
                               stdin=subprocess.DEVNULL)
    os.close(log_fd)
    try:
        base_url = _read_ready_line(process, startup_timeout_s)
    except (TimeoutError, EOFError):
        process.kill()
        process.wait()
        with open(log_path, encoding="utf-8", errors="replace") as fh:
            tail = fh.read()[-2000:]
        for path in temp_files:
            os.unlink(path)
        raise ServiceError(f"outdial simulator did not start (exit {process.returncode}): {tail}") from None
    sim = SimulatorProcess(process=process, base_url=base_url, api_key=key, log_path=log_path,
                           temp_files=temp_files)
    # Drain stdout so the child never blocks on a full pipe.
    threading.Thread(target=lambda: sum(1 for _ in process.stdout or ()), name="simulator-stdout",
                     daemon=True).start()
    return sim
