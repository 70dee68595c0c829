"""``outdial demo``: a whole sample campaign on embedded defaults, on a sped-up clock, in about a minute.

With nothing configured it starts an embedded MongoDB-wire server (in memory, or on ``--data-dir``),
uses the local Redis (else the bundled one), and starts the provider simulator, dramatiq worker
processes, the clock dyno and the web dyno. It creates an account on a credits plan and the three
example batches of the original design, loads a few hundred contacts with a realistic mix of
outcomes, and runs them until every contact is final (or ``--time-cap`` real seconds pass),
showing progress once a second. At the end it prints a summary and checks, against the
simulator's own record of every call it received, that no call was placed outside its window.

Everything it started is stopped at the end or on Ctrl-C; ``--keep-running`` leaves the stack up.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from shared.clock import Clock, use_clock
from shared.config import Config, load_config, parse_float, parse_int, use_config
from shared.domain import states
from shared.errors import EmbeddedServiceError
from shared.logs import register_secret
from shared.stores import mongo
from shared.stores.coordination import Coordination
from workers.dev import demo_plan, embedded
from workers.dev.demo_view import (
    Snapshot,
    calls_by_day,
    collect_summary,
    duplicate_attempts,
    find_window_violations,
    render_live,
    render_progress_line,
    render_summary,
    render_window_check,
)

#: Simulated seconds per real second: Saturday 13:00 to the survey's Thursday retries (~120 h) in about a minute.
DEFAULT_SPEED = 8000.0
#: Real seconds after which the demo stops even if some contacts are not final.
DEFAULT_TIME_CAP_S = 180.0
#: Real seconds between the stack's start and the instant the shared clock reads the campaign's start.
DEFAULT_LEAD_S = 3.0
#: Real seconds between two redraws of the live view (a terminal), and between two progress lines (a pipe).
DEFAULT_REFRESH_S = 1.0
DEFAULT_PIPE_REFRESH_S = 5.0
#: Real seconds to wait for the worker processes to boot before the campaign goes on regardless.
DEFAULT_WORKER_BOOT_S = 10.0
#: Real seconds between two ticks of the clock dyno.
DEFAULT_CLOCK_INTERVAL_S = 0.5
#: Worker processes and threads per process (``dramatiq workers.actors -p P -t T``).
DEFAULT_PROCESSES = 2
DEFAULT_THREADS = 8
#: Real seconds before a window closes in which the demo's workers start no call (``PIPELINE_DIAL_GUARD_S``):
#: above the decision-to-provider time measured under load (p99 0.15 s, max 0.3 s on 2 busy cores).
DEFAULT_DIAL_GUARD_S = 0.5
#: MongoDB database of the demo (dropped and refilled at every start; never ``MONGODB_DB``).
DEMO_DB = "outdial_demo"
#: Redis database index used on a local Redis the demo did not start (keeps the demo apart from db 0).
DEMO_REDIS_DB = 15
#: Heartbeats younger than this (real ms) are watched for ``BUSY_WATCH_S``; one that moves is a live process.
BUSY_HEARTBEAT_MS = 5000
BUSY_WATCH_S = 1.5
#: Real seconds to wait for the web dyno to answer before showing the dashboard as unavailable.
DEFAULT_WEB_WAIT_S = 15.0


@dataclass(kw_only=True)
class DemoOptions:
    """The demo's settings (command-line options).

    :param contacts: contacts over the three batches; default 300.
    :param speed: simulated seconds per real second; default :data:`DEFAULT_SPEED`.
    :param seed: seed of contacts and outcomes; default 7.
    :param port: web dyno port; None = a free one.
    :param data_dir: keep the embedded MongoDB's data here; None = in memory.
    :param keep_running: leave the stack up after the summary, until Ctrl-C.
    :param time_cap_s: real seconds after which the demo stops waiting for contacts to become final.
    :param processes: worker processes; ``threads``: threads per worker process.
    :param start: the simulated instant the campaign starts at (UTC).
    :param live: redraw the view in place (a terminal) instead of printing progress lines; None = auto.
    :param web: start the web dyno; ``webhooks``: have the simulator send its signed webhooks to it.
    :param concurrency_limit: provider slots of the demo account and of the simulator; default 100.
    :param log_dir: keep the processes' logs here; None = a temporary directory, removed after a clean run.
    :param dial_guard_s: ``PIPELINE_DIAL_GUARD_S`` of the demo's workers, real seconds; default 0.5.
    """

    contacts: int = demo_plan.DEFAULT_CONTACTS
    speed: float = DEFAULT_SPEED
    seed: int = demo_plan.DEFAULT_SEED
    port: int | None = None
    data_dir: str | None = None
    keep_running: bool = False
    time_cap_s: float = DEFAULT_TIME_CAP_S
    processes: int = DEFAULT_PROCESSES
    threads: int = DEFAULT_THREADS
    start: datetime = demo_plan.DEFAULT_START
    live: bool | None = None
    web: bool = True
    webhooks: bool = False
    concurrency_limit: int = demo_plan.DEFAULT_CONCURRENCY_LIMIT
    log_dir: str | None = None
    dial_guard_s: float = DEFAULT_DIAL_GUARD_S


def _arg(parse: Callable[..., Any], **bounds: Any) -> Callable[[str], Any]:
    """A command-line type from one of the configuration's parsers (same checks, same messages)."""
    def convert(text: str) -> Any:
        try:
            return parse(text, **bounds)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return convert


_positive_int = _arg(parse_int, minimum=1)
_port = _arg(parse_int, minimum=1, maximum=65535)
_positive_float = _arg(parse_float, positive=True)
_non_negative_float = _arg(parse_float, minimum=0)


def _instant(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO-8601 instant such as 2026-07-04T17:00:00Z, got {text!r}") \
            from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError("needs a UTC offset or Z, e.g. 2026-07-04T17:00:00Z")
    return value.astimezone(UTC)


def parse_args(argv: Sequence[str]) -> DemoOptions:
    parser = argparse.ArgumentParser(
        prog="outdial demo",
        description="Run a whole sample campaign (three batches, a few hundred contacts) on embedded defaults, "
                    "on a sped-up clock, in about a minute; then stop everything it started.")
    parser.add_argument("--contacts", metavar="N", type=_positive_int, default=demo_plan.DEFAULT_CONTACTS,
                        help=f"contacts over the three batches (default {demo_plan.DEFAULT_CONTACTS})")
    parser.add_argument("--speed", metavar="X", type=_positive_float, default=DEFAULT_SPEED,
                        help=f"simulated seconds per real second (default {DEFAULT_SPEED:g}: about 2 h per second)")
    parser.add_argument("--seed", metavar="N", type=int, default=demo_plan.DEFAULT_SEED,
                        help=f"seed of the contacts and their outcomes (default {demo_plan.DEFAULT_SEED})")
    parser.add_argument("--port", metavar="P", type=_port, default=None, help="web dyno port (default: a free port)")
    parser.add_argument("--data-dir", metavar="DIR", default=None,
                        help="keep the embedded MongoDB's data in this directory (default: in memory)")
    parser.add_argument("--keep-running", action="store_true",
                        help="leave everything running after the summary, until Ctrl-C")
    parser.add_argument("--time-cap", type=_positive_float, default=DEFAULT_TIME_CAP_S, dest="time_cap_s", metavar="S",
                        help=f"real seconds after which the demo stops waiting (default {DEFAULT_TIME_CAP_S:g})")
    parser.add_argument("--processes", metavar="N", type=_positive_int, default=DEFAULT_PROCESSES,
                        help=f"worker processes (default {DEFAULT_PROCESSES})")
    parser.add_argument("--threads", metavar="N", type=_positive_int, default=DEFAULT_THREADS,
                        help=f"threads per worker process (default {DEFAULT_THREADS})")
    parser.add_argument("--concurrency-limit", metavar="N", type=_positive_int,
                        default=demo_plan.DEFAULT_CONCURRENCY_LIMIT,
                        help="provider concurrency slots of the demo account and the simulator "
                             f"(default {demo_plan.DEFAULT_CONCURRENCY_LIMIT})")
    parser.add_argument("--start", metavar="ISO", type=_instant, default=demo_plan.DEFAULT_START,
                        help="simulated start instant, ISO-8601 (default Saturday 2026-07-04 13:00 in Santiago)")
    view = parser.add_mutually_exclusive_group()
    view.add_argument("--live", dest="live", action="store_true", default=None,
                      help="redraw the view in place (default when the output is a terminal)")
    view.add_argument("--plain", dest="live", action="store_false", help="print a progress line every few seconds")
    parser.add_argument("--dial-guard", type=_non_negative_float, default=DEFAULT_DIAL_GUARD_S, dest="dial_guard_s",
                        metavar="S",
                        help="real seconds before a window closes in which no call starts "
                             f"(PIPELINE_DIAL_GUARD_S; default {DEFAULT_DIAL_GUARD_S:g})")
    parser.add_argument("--no-web", dest="web", action="store_false", help="do not start the web dyno")
    parser.add_argument("--webhooks", action="store_true",
                        help="send the simulator's signed webhooks to the web dyno (default: calls end by polling, "
                             "which costs less CPU on a small machine)")
    parser.add_argument("--log-dir", metavar="DIR", default=None,
                        help="keep the processes' logs here (default: a temporary directory, removed after a "
                             "successful run)")
    args = parser.parse_args(list(argv))
    return DemoOptions(**vars(args))


# -- services ----------------------------------------------------------------------------------------


def safe_url(url: str) -> str:
    """``url`` without its password (``redis://:secret@host`` -> ``redis://:****@host``)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    userinfo, _, host = rest.partition("@")
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}://{user}{':****' if colon else ''}@{host}"


def _ping_redis(url: str) -> None:
    import redis as redis_lib

    client = redis_lib.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    finally:
        client.close()


def _ping_mongo(uri: str) -> None:
    from pymongo import MongoClient

    client: MongoClient = MongoClient(uri, serverSelectionTimeoutMS=3000, connectTimeoutMS=3000)
    try:
        client.admin.command("ping")
    finally:
        client.close()


def start_services(config: Config, options: DemoOptions) -> tuple[embedded.EmbeddedServer, embedded.EmbeddedServer]:
    """MongoDB and Redis for the demo: the configured ones (checked), else embedded ones.

    :raises EmbeddedServiceError: one line with a hint (unreachable server, busy port, unwritable data dir).
    """
    if config.mongodb_uri and options.data_dir:
        raise EmbeddedServiceError("--data-dir applies to the embedded MongoDB, but MONGODB_URI is set. "
                                   "Hint: unset MONGODB_URI or drop --data-dir")
    redis_server = _redis_for(config)
    try:
        return _mongodb_for(config, options), redis_server
    except BaseException:
        redis_server.stop()
        raise


def _mongodb_for(config: Config, options: DemoOptions) -> embedded.EmbeddedServer:
    if not config.mongodb_uri:
        return embedded.start_mongodb(data_dir=options.data_dir)
    try:
        _ping_mongo(config.mongodb_uri)
    except Exception as exc:  # noqa: BLE001 - any failure: one line
        raise EmbeddedServiceError(
            f"MongoDB at {safe_url(config.mongodb_uri)} (MONGODB_URI) does not answer: {type(exc).__name__}. "
            "Hint: start it, fix MONGODB_URI, or unset it to use an embedded one") from None
    return embedded.EmbeddedServer("mongodb", config.mongodb_uri)


def _redis_for(config: Config) -> embedded.EmbeddedServer:
    if config.redis_url:
        try:
            _ping_redis(config.redis_url)
        except Exception as exc:  # noqa: BLE001 - any failure: one line
            raise EmbeddedServiceError(
                f"Redis at {safe_url(config.redis_url)} (REDIS_URL) does not answer: {type(exc).__name__}. "
                "Hint: start it, fix REDIS_URL, or unset it to use the local or bundled Redis") from None
        _refuse_busy_redis(config.redis_url, "REDIS_URL")
        return embedded.EmbeddedServer("redis", config.redis_url)
    try:
        _ping_redis(embedded.LOCAL_REDIS_URL)
    except Exception:  # noqa: BLE001 - no local Redis: start the bundled one
        return embedded.start_redis()
    url = embedded.with_db_index(embedded.LOCAL_REDIS_URL, DEMO_REDIS_DB)
    _refuse_busy_redis(url, "the demo's database on the local Redis")
    return embedded.EmbeddedServer("redis", url)


def _refuse_busy_redis(url: str, what: str) -> None:
    """Refuse a Redis database where dramatiq processes are alive: the demo's workers would take their messages.

    A live process refreshes its heartbeat (``dramatiq:__heartbeats__``) at least every second; one that stopped
    a moment ago (the previous demo) leaves a recent but frozen heartbeat, so recent ones are watched for a while.
    """
    import redis as redis_lib

    client = redis_lib.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    coordination = Coordination(client)
    try:
        def recent() -> dict[bytes, float]:
            since = int(time.time() * 1000) - BUSY_HEARTBEAT_MS
            return coordination.broker_heartbeats(since_ms=since)

        before = recent()
        live = 0
        if before:
            threading.Event().wait(BUSY_WATCH_S)
            after = recent()
            live = sum(1 for member, score in after.items() if score > before.get(member, 0))
    finally:
        client.close()
    if live:
        raise EmbeddedServiceError(
            f"Redis at {safe_url(url)} ({what}) is in use by {live} running outdial process(es) (another stack or "
            "demo). Hint: stop them, or set REDIS_URL to another database, e.g. redis://127.0.0.1:6379/14")


# -- the run -----------------------------------------------------------------------------------------


@dataclass
class WebState:
    """The web dyno as the demo sees it: its URL once it answered, or why it is not there."""

    port: int | None = None
    url: str | None = None
    read_token: str | None = None
    failed: str | None = None
    started_at: float = 0.0

    @property
    def dashboard(self) -> str | None:
        """Where to sign in to the dashboard (a token never goes in an address)."""
        if self.url is None:
            return None
        return f"{self.url}/login"


@dataclass
class Demo:
    """One run: options, the stack it started, and what it created."""

    options: DemoOptions
    out: TextIO = sys.stdout
    stack: Any = None
    runtime: Any = None
    clock: Clock | None = None
    config: Config | None = None
    batch_ids: dict[str, str] = field(default_factory=dict)
    web: WebState = field(default_factory=WebState)
    log_dir: Path | None = None
    started_real: float = field(default_factory=time.monotonic)
    campaign_real: float | None = None

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def elapsed(self) -> float:
        return time.monotonic() - self.started_real


def _admin_token() -> str:
    return "demo_" + secrets.token_hex(20)


def _prepare_db(runtime: Any) -> None:
    runtime.db.client.drop_database(runtime.db.name)
    mongo.ensure_indexes(runtime.db)


def _clear_account_keys(runtime: Any) -> None:
    """Forget slots and locks a previous demo run left for the demo account (a killed run)."""
    runtime.slots.forget_account(demo_plan.ACCOUNT_ID)
    runtime.coordination.forget_account(demo_plan.ACCOUNT_ID)


def create_campaign(runtime: Any, campaign: demo_plan.Campaign, *, start: datetime,
                    concurrency_limit: int) -> dict[str, str]:
    """The account, the three batches and their contacts (due at ``start``); returns batch ids by key."""
    runtime.account_changes.apply(demo_plan.ACCOUNT_ID, demo_plan.account_body(concurrency_limit))
    ids: dict[str, str] = {}
    for spec in demo_plan.BATCHES:
        batch = runtime.batches.create(demo_plan.batch_body(spec))
        ids[spec.key] = batch["_id"]
        result = runtime.jobs.create_jobs(batch["_id"], demo_plan.ACCOUNT_ID, campaign.contacts[spec.key],
                                          region=spec.region, next_try_at=start)
        if result.errors:
            raise RuntimeError(f"demo contacts rejected: {result.errors[:3]}")
    return ids


def _wait_for_workers(stack: Any, processes: int, *, timeout_s: float, stop: threading.Event) -> bool:
    """Wait until every worker process logged its boot (INFO); False if one exited, ``stop`` was set or
    ``timeout_s`` passed (with ``LOG_LEVEL`` above INFO the boot is not logged: the wait just ends)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not stop.is_set():
        booted = sum(p.read_text(errors="replace").count("worker_process_boot")
                     for p in stack.log_dir.glob("*-worker.log"))
        if booted >= processes:
            return True
        if any(w.poll() is not None for w in stack.workers):
            return False
        threading.Event().wait(0.05)
    return False


def _web_answers(port: int) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}/healthz", timeout=0.3) as resp:
            return 200 <= resp.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except (OSError, ValueError):
        return False


def _check_web(demo: Demo) -> None:
    """Note the dashboard URL once the web dyno answers (or why it never will); connect the webhooks."""
    web = demo.web
    if web.url or web.failed or web.port is None or demo.stack.web is None:
        return
    if demo.stack.web.poll() is not None:
        web.failed = f"the web dyno exited (code {demo.stack.web.returncode}); see its log"
        return
    if _web_answers(web.port):
        web.url = f"http://127.0.0.1:{web.port}"
        if demo.options.webhooks:
            demo.stack.simulator.configure(webhook_url=f"{web.url}/webhooks/retell")
        return
    if time.monotonic() - web.started_at > DEFAULT_WEB_WAIT_S:
        web.failed = f"the web dyno did not answer within {DEFAULT_WEB_WAIT_S:g} s"


def snapshot(demo: Demo) -> Snapshot:
    """Jobs per state of every batch, the clock and the provider's counters, now."""
    assert demo.runtime is not None and demo.clock is not None
    counts = {key: demo.runtime.jobs.counts(batch_id) for key, batch_id in demo.batch_ids.items()}
    try:
        provider = demo.stack.simulator.stats()
    except (OSError, ValueError):
        provider = None
    return Snapshot(now=demo.clock.now(), counts=counts, elapsed_s=demo.elapsed(),
                    campaign_s=(time.monotonic() - demo.campaign_real) if demo.campaign_real else None,
                    speed=demo.options.speed, seed=demo.options.seed, dashboard=demo.web.dashboard,
                    web_note=demo.web.failed, start=demo.options.start,
                    guard=timedelta(seconds=demo.options.dial_guard_s * demo.options.speed),
                    provider=provider)


def all_final(snap: Snapshot) -> bool:
    return all(sum(c[s] for s in states.FINAL) == sum(c.values()) for c in snap.counts.values())


def run_campaign(demo: Demo, stop: threading.Event) -> bool:
    """Show progress until every contact is final, the time cap passes or ``stop`` is set; True when all final."""
    live = demo.options.live if demo.options.live is not None else demo.out.isatty()
    refresh = DEFAULT_REFRESH_S if live else DEFAULT_PIPE_REFRESH_S
    last_line = 0.0
    while True:
        _check_web(demo)
        snap = snapshot(demo)
        done = all_final(snap)
        if live:
            demo.out.write("\x1b[H\x1b[2J" + render_live(snap) + "\n")
            demo.out.flush()
        elif done or time.monotonic() - last_line >= refresh:
            demo.say(render_progress_line(snap))
            last_line = time.monotonic()
        if done:
            return True
        if demo.elapsed() > demo.options.time_cap_s:
            demo.say(f"time cap reached ({demo.options.time_cap_s:g} s real): stopping with contacts not final")
            return False
        if stop.wait(DEFAULT_REFRESH_S if live else 0.5):
            return False


def _env_lines(demo: Demo) -> list[tuple[str, str, bool]]:
    """``(name, value, secret)`` of the variables that point another command at this stack."""
    assert demo.config is not None and demo.clock is not None
    cfg = demo.config
    rows = [("MONGODB_URI", cfg.mongodb_uri or "", False), ("MONGODB_DB", cfg.mongodb_db, False),
            ("REDIS_URL", cfg.redis_url or "", False), ("RETELL_BASE_URL", cfg.retell_base_url or "", False)]
    rows += [(k, v, False) for k, v in demo.clock.env().items()]
    rows.append(("PIPELINE_DIAL_GUARD_S", repr(cfg.pipeline_dial_guard_s), False))
    rows += [("RETELL_API_KEY", cfg.retell_api_key, True), ("ADMIN_TOKEN", cfg.admin_token or "", True)]
    return rows


def write_env_file(demo: Demo) -> Path:
    """The ``export`` lines for this stack, secrets included, in a file only the user can read."""
    assert demo.log_dir is not None
    path = demo.log_dir / "demo.env"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        for name, value, _ in _env_lines(demo):
            fh.write(f"export {name}='{value}'\n")
    return path


def _keep_running(demo: Demo, stop: threading.Event) -> None:
    env_file = write_env_file(demo)
    demo.say("")
    demo.say("The stack keeps running (the clock too, at the same speed). Ctrl-C stops everything.")
    if demo.web.dashboard:
        demo.say(f"  dashboard:  {demo.web.dashboard}  (sign in with the read-only token: {demo.web.read_token})")
    demo.say("  point other outdial commands at it with:")
    for name, value, secret in _env_lines(demo):
        if not secret:
            demo.say(f"    export {name}='{safe_url(value)}'")
    demo.say(f"  or, with the admin token and the simulator's key:  . {env_file}")
    stop.wait()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set ``stop`` (the main loop then cleans up) instead of killing mid-write."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda *_: stop.set())
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _mongo_origin(server: embedded.EmbeddedServer, options: DemoOptions) -> str:
    if not server.started_here:
        return "MONGODB_URI"
    return "embedded nx-27017, " + (f"data in {options.data_dir}" if options.data_dir else "in memory")


def _redis_origin(server: embedded.EmbeddedServer, config: Config) -> str:
    if server.started_here:
        return "bundled redis-server"
    return "REDIS_URL" if config.redis_url else f"local Redis, database {DEMO_REDIS_DB}"


def run(options: DemoOptions, config: Config, out: TextIO = sys.stdout) -> int:
    """The whole demo; returns the exit code.

    0: every contact final, no call outside its window, no attempt dialed twice, nothing left running.
    1: one of those failed (the time cap passed, a check failed). 130: interrupted (Ctrl-C, SIGTERM).

    :raises EmbeddedServiceError: before anything runs, for what a new user can fix (busy port,
        unreachable Redis or MongoDB, unwritable data dir); ``outdial`` prints it as one line (exit 2).
    """
    if options.port is not None and embedded.port_in_use(options.port):
        raise EmbeddedServiceError(f"port {options.port} is already in use. Hint: choose another --port, "
                                   "or leave it out to use a free one")
    campaign = demo_plan.build_campaign(options.contacts, seed=options.seed)
    demo = Demo(options=options, out=out)
    stop = threading.Event()
    # The demo installs its own process clock and configuration; ``settings`` puts back the ones before them.
    with _stop_on_signals(stop), contextlib.ExitStack() as settings:
        mongo_server, redis_server = start_services(config, options)
        services = [redis_server, mongo_server]
        code = 1
        try:
            demo.say(f"outdial demo: {campaign.total} contacts in 3 batches, seed {options.seed}, "
                     f"clock x{options.speed:g} from {options.start.isoformat()}")
            demo.say(f"  MongoDB  {safe_url(mongo_server.url)}  ({_mongo_origin(mongo_server, options)})")
            demo.say(f"  Redis    {safe_url(redis_server.url)}  ({_redis_origin(redis_server, config)})")
            demo.log_dir = Path(options.log_dir or tempfile.mkdtemp(prefix="outdial-demo-"))
            demo.log_dir.mkdir(parents=True, exist_ok=True)
            cfg = config.with_overrides(mongodb_uri=mongo_server.url, mongodb_db=DEMO_DB, redis_url=redis_server.url,
                                        admin_token=_admin_token(), retell_base_url=None,
                                        retell_api_key="key_demo" + secrets.token_hex(12),
                                        pipeline_dial_guard_s=options.dial_guard_s)
            register_secret(cfg.admin_token)
            register_secret(cfg.retell_api_key)
            code = _run_stack(demo, cfg, campaign, stop, settings)
        except Exception:
            if not stop.is_set():
                raise
            code = 130  # a service died under the Ctrl-C that stopped us: not an error
        finally:
            left = _tear_down(demo, services)
        if left and code == 0:
            code = 1
        if demo.log_dir is not None:
            if code in (0, 130) and not options.log_dir:
                shutil.rmtree(demo.log_dir, ignore_errors=True)
            elif code not in (0, 130):
                demo.say(f"logs: {demo.log_dir}")
        return code


def _run_stack(demo: Demo, cfg: Config, campaign: demo_plan.Campaign, stop: threading.Event,
               settings: contextlib.ExitStack) -> int:
    """Start the stack on a clock that reads the campaign's start once everything is up; run; summarise."""
    from workers.dev.stack import start_stack
    from workers.runtime import build_runtime
    from workers.web.http import read_token_for

    options = demo.options
    clock = Clock(start=options.start, speed=options.speed, anchor=time.time() + DEFAULT_LEAD_S)
    settings.enter_context(use_clock(clock))
    settings.enter_context(use_config(cfg))
    demo.clock = clock
    log_dir = demo.log_dir
    assert log_dir is not None   # set before the stack starts
    stack, cfg = start_stack(cfg, clock, scenario=campaign.scenario,
                             simulator_flags={"concurrency_limit": options.concurrency_limit, "seed": options.seed},
                             workers=1, processes=options.processes, threads=options.threads,
                             clock_interval_s=DEFAULT_CLOCK_INTERVAL_S, log_dir=log_dir / "logs")
    demo.stack, demo.config = stack, cfg
    settings.enter_context(use_config(cfg))
    if options.web:
        demo.web.port = options.port or embedded.free_port()
        demo.web.read_token = read_token_for(cfg.admin_token)
        demo.web.started_at = time.monotonic()
        stack.start_web(port=demo.web.port)
    demo.runtime = runtime = build_runtime(cfg, clock)
    _prepare_db(runtime)
    _clear_account_keys(runtime)
    demo.batch_ids = create_campaign(runtime, campaign, start=options.start,
                                     concurrency_limit=options.concurrency_limit)
    _wait_for_workers(stack, options.processes, timeout_s=DEFAULT_WORKER_BOOT_S, stop=stop)
    if stop.is_set():
        return 130
    if any(w.poll() is not None for w in stack.workers):
        raise EmbeddedServiceError(f"the dramatiq workers exited at start-up; see the logs in {stack.log_dir}")
    demo.campaign_real = time.monotonic() + (clock.anchor - time.time())
    finished = run_campaign(demo, stop)
    if stop.is_set() and not finished:
        demo.say("interrupted: stopping everything")
        return 130
    calls = stack.simulator.dials()
    summary = collect_summary(runtime, demo.batch_ids, clock=clock, start=options.start, real_s=demo.elapsed(),
                              balance_before=float(demo_plan.ACCOUNT_PLAN["balance"]))
    violations = find_window_violations(calls, runtime, demo.batch_ids)
    twice = duplicate_attempts(calls)
    demo.say(render_summary(summary, calls_by_day(calls, demo.batch_ids)))
    demo.say(render_window_check(violations, len(calls), twice))
    code = 0 if finished and not violations and not twice else 1
    if options.keep_running and not stop.is_set():
        _keep_running(demo, stop)
    return code


def _tear_down(demo: Demo, services: Sequence[embedded.EmbeddedServer]) -> list[int]:
    """Stop the stack and the services this run started; returns the processes still alive (none)."""
    pids = list(demo.stack.pids()) if demo.stack is not None else []
    pids += [s.proc.pid for s in services if s.proc is not None and s.proc.poll() is None]
    if demo.stack is not None:
        demo.stack.stop()
    for server in services:
        server.stop()
    left = [pid for pid in pids if _alive(pid)]
    if left:
        demo.say(f"processes left behind: {left}")
    elif pids:
        demo.say(f"stopped {len(pids)} processes; none left behind")
    return left


def main(argv: Sequence[str]) -> int:
    options = parse_args(argv)
    config = load_config()  # a malformed variable stops here, naming it (exit 2)
    return run(options, config)
