"""``outdial web`` as a real process: PORT, readiness, shutdown, logs; and inside a running stack,
where the simulator's signed webhooks and the workers' polls race to finalize the same calls."""

from __future__ import annotations

import collections
import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.clock import started_at
from shared.domain import states
from shared.domain.phones import numbered
from tests.fixtures.web import ADMIN_TOKEN, HttpClient
from tests.helpers import service_env, wait_until
from workers.dev.embedded import free_port
from workers.runtime import build_runtime
from workers.web.http import read_token_for

START = datetime(2026, 3, 3, 13, 0, tzinfo=UTC)  # a Tuesday, 10:00 in Santiago


def start_web(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "workers.cli", "web", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)


def wait_healthy(client: HttpClient, proc: subprocess.Popen[str]) -> None:
    def up() -> bool:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            return client.get("/healthz", token=None).status == 200
        except OSError:
            return False
    wait_until(up, timeout_s=60, interval_s=0.1)


def stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError("outdial web did not stop on SIGTERM:\n" + err) from None
    return proc.returncode, err


@pytest.mark.slow
def test_outdial_web_listens_on_port_refuses_without_admin_token_and_stops_on_sigterm(config, db):
    port = free_port()
    env = {**service_env(config), "PORT": str(port), "LOG_FORMAT": "json"}
    env.pop("ADMIN_TOKEN", None)
    proc = start_web(env)
    client = HttpClient(f"http://127.0.0.1:{port}", token="whatever-token")
    try:
        wait_healthy(client, proc)
        assert client.get("/readyz", token=None).json() == {"status": "ready",
                                                            "checks": {"mongodb": "ok", "redis": "ok", "clock": "ok"}}
        refused = client.get("/batches")
        assert refused.status == 401 and "ADMIN_TOKEN is not set" in refused.json()["message"]
    finally:
        code, err = stop(proc)
    assert code == 0
    events = [json.loads(line)["event"] for line in err.splitlines() if line.startswith("{")]
    assert "admin_token_unset" in events and "web_listening" in events


@pytest.mark.slow
def test_logs_never_show_the_admin_token_or_a_full_phone_number(config, db):
    port = free_port()
    env = {**service_env(config), "ADMIN_TOKEN": ADMIN_TOKEN, "LOG_LEVEL": "DEBUG", "LOG_FORMAT": "json"}
    proc = start_web(env, "--port", str(port))
    client = HttpClient(f"http://127.0.0.1:{port}", token=ADMIN_TOKEN)
    try:
        wait_healthy(client, proc)
        client.put("/accounts/acme", {"plan": {"type": "unlimited"}})
        bid = client.post("/batches", {"name": "b", "account_id": "acme", "from_number": "+12125550100"}).json()["id"]
        client.post(f"/batches/{bid}/contacts", {"contacts": [{"phones": ["+56961234567", "+56 9 6123 4999x"]}]})
        client.post("/webhooks/retell", {"event": "call_ended", "call": {"call_id": "c", "to_number": "+56961234567"}},
                    headers={"x-retell-signature": f"v={int(time.time() * 1000)},d={'0' * 64}"})
        client.get("/batches", token="wrong-" + ADMIN_TOKEN)
    finally:
        _, err = stop(proc)
    assert "web_listening" in err
    for secret in (ADMIN_TOKEN, read_token_for(ADMIN_TOKEN), "+56961234567", "+12125550100", "56961234999"):
        assert secret not in err


@pytest.mark.slow
def test_print_read_token(config):
    env = {**service_env(config), "ADMIN_TOKEN": ADMIN_TOKEN}
    out = subprocess.run([sys.executable, "-m", "workers.cli", "web", "--print-read-token"], env=env, text=True,
                         capture_output=True, timeout=60, check=True).stdout.strip()
    assert out == read_token_for(ADMIN_TOKEN) and len(out) == 64


def test_readyz_is_503_when_redis_or_mongodb_does_not_answer(web_factory, web_config, clock, db):
    no_redis = build_runtime(web_config.with_overrides(redis_url=f"redis://127.0.0.1:{free_port()}/0"), clock)
    server = web_factory(runtime=no_redis, start_cache_listener=False, ready_timeout_s=2)
    reply = server.client(token=None).get("/readyz")
    assert reply.status == 503
    checks = reply.json()["checks"]
    assert checks["mongodb"] == "ok" and checks["redis"].startswith("error")
    assert checks["clock"] == "error: ClockUnknown"      # the shared time comes from that Redis
    no_mongo = build_runtime(web_config.with_overrides(mongodb_uri=f"mongodb://127.0.0.1:{free_port()}/"), clock)
    server = web_factory(runtime=no_mongo, start_cache_listener=False, ready_timeout_s=0.5)
    reply = server.client(token=None).get("/readyz")
    assert reply.status == 503
    assert reply.json() == {"status": "unavailable", "checks": {"mongodb": "no answer within 0.5 s", "redis": "ok",
                                                                 "clock": "ok"}}
    assert server.client().get("/batches").status == 503     # and the admin API says so, in the common shape


def numbers(prefix: str, count: int) -> list[str]:
    return numbered(f"+569{prefix}", count)


def stack_with_web(stack_factory, rules, *, speed: float, start: datetime = START, **config_overrides):
    """A running stack (simulator, workers, clock from ``start``) and its web dyno, which the simulator sends its
    webhooks to: ``(stack, runtime, admin client)``."""
    port = free_port()
    stack, runtime = stack_factory(clock=started_at(start, speed=speed), scenario={"numbers": rules},
                                   config_overrides=config_overrides,
                                   simulator_flags={"concurrency_limit": 50,
                                                    "webhook_url": f"http://127.0.0.1:{port}/webhooks/retell"})
    stack.env = {**stack.env, "ADMIN_TOKEN": ADMIN_TOKEN}
    stack.start_web(port=port)
    client = HttpClient(f"http://127.0.0.1:{port}", token=ADMIN_TOKEN)
    wait_healthy(client, stack.web)   # type: ignore[arg-type]
    return stack, runtime, client


@pytest.mark.slow
def test_in_a_running_stack_webhooks_and_polls_apply_each_outcome_once(stack_factory):
    answer, busy = numbers("71", 12), numbers("72", 6)
    rules = {p: {"outcome": "answer", "ring_s": 3, "duration_s": 40} for p in answer}
    rules.update({p: "busy" for p in busy})
    stack, runtime, client = stack_with_web(stack_factory, rules, speed=60)
    assert client.put("/accounts/acme", {"plan": {"type": "minutes", "balance": 600}, "concurrency_limit": 6}
                      ).status == 201
    bid = client.post("/batches", {"name": "race", "account_id": "acme", "agent_id": "agent_test",
                                   "from_number": "+12125550100",
                                   "call_settings": {"max_attempts": 2, "retry_delay_hours": 0.01,
                                                     "max_call_duration": 120}}).json()["id"]
    contacts = [{"name": f"c{i}", "phones": [p], "external_id": p} for i, p in enumerate(answer + busy)]
    assert client.post(f"/batches/{bid}/contacts", {"contacts": contacts}).json()["imported"] == 18

    def finished() -> bool:
        return client.get(f"/batches/{bid}").json()["status"] == "completed"

    try:
        wait_until(finished, timeout_s=180, interval_s=0.2)
    except TimeoutError:
        raise AssertionError(f"{client.get(f'/batches/{bid}').json()}\n{stack.logs()}") from None
    body = client.get(f"/batches/{bid}").json()
    assert body["counts"][states.COMPLETED] == 12 and body["counts"][states.FAILED] == 6
    attempts = list(runtime.attempts.coll.find({"batch_id": bid}))
    dials = collections.Counter(rec["body"]["metadata"]["attempt_id"] for rec in stack.simulator.dials())
    assert sorted(dials) == sorted(a["_id"] for a in attempts) and set(dials.values()) == {1}
    assert len(attempts) == 12 + 6 * 2 and all(a["state"] == "ended" for a in attempts)
    by = collections.Counter(a["finalized_by"] for a in attempts)
    assert by["webhook"] > 0 and by["webhook"] + by["poll"] == len(attempts), by
    for job in runtime.jobs.find({"batch_id": bid}):
        detail = client.get(f"/jobs/{job['_id']}").json()
        assert detail["tries"] == (0 if detail["status"] == "completed" else 2)
        assert len(detail["attempts"]) == (1 if detail["status"] == "completed" else 2)
    assert runtime.billing.check("acme").ok
    charged = sum(int(a.get("charge") or 0) for a in attempts)
    assert charged == 12 * 40 and client.get("/accounts/acme").json()["units"]["balance"] == 36000 - charged

    def scrape() -> list[tuple[str, dict[str, str], float]] | None:
        text = client.get("/metrics", token=read_token_for(ADMIN_TOKEN)).text
        found = [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples]
        dialed = sum(v for name, _, v in found if name == "outdial_dials_total")
        return found if dialed == len(attempts) else None

    found = wait_until(scrape, timeout_s=30, interval_s=1)   # worker snapshots are published every 5 s
    dials = {labels["process"]: v for name, labels, v in found if name == "outdial_dials_total"}
    # The worker's snapshot and the web's own samples: the web dials too (the refill after a webhook's finalize);
    # each call is counted once, by the process that placed it.
    assert len(dials) >= 2 and sum(dials.values()) == len(attempts)
    calls = sum(v for name, labels, v in found if name == "outdial_calls_total")
    assert calls == len(attempts)    # every outcome counted once, by whichever process applied it
    webhooks = {labels["result"]: v for name, labels, v in found if name == "outdial_webhooks_total"}
    web_process = {labels["process"] for name, labels, _ in found if name == "outdial_webhooks_total"}
    by_web = sum(v for name, labels, v in found if name == "outdial_calls_total" and labels["process"] in web_process)
    # Each applied outcome is counted once: a 200 "finalized" answer applied one; a 202 "accepted" answer (its
    # finalize outlived the answer's wait, as it can on a loaded machine) may have applied one after answering.
    late = webhooks.get("accepted", 0)
    assert len(web_process) == 1 and 0 < webhooks["finalized"] <= by_web <= webhooks["finalized"] + late, webhooks
    assert not any("webhook_finalize_failed" in log.read_text() for log in stack.log_dir.glob("*.log"))
    code, _ = stop(stack.web)        # type: ignore[arg-type]
    stack.web = None
    assert code == 0


@pytest.mark.slow
def test_web_and_workers_refuse_retells_api_with_the_development_key(config):
    env = {**service_env(config), "RETELL_BASE_URL": "https://api.retellai.com", "ADMIN_TOKEN": ADMIN_TOKEN}
    env.pop("RETELL_API_KEY", None)
    for argv in ([sys.executable, "-m", "workers.cli", "web", "--port", str(free_port())],
                 [sys.executable, "-m", "dramatiq", "workers.actors", "--processes", "1", "--threads", "1"]):
        done = subprocess.run(argv, env=env, text=True, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
        assert done.returncode != 0, argv
        assert "RETELL_API_KEY" in done.stdout + done.stderr, (argv, done.stdout, done.stderr)


@pytest.mark.slow
def test_with_retell_webhooks_calls_are_polled_only_when_their_webhook_never_came(stack_factory):
    """RETELL_WEBHOOKS: a call's end comes by webhook and nobody asks the provider about it; once webhooks stop
    arriving, maintenance polls each call past its ring timeout plus the safety margin, and it still ends."""
    first, second = numbers("73", 8), numbers("74", 4)
    rules = {p: {"outcome": "answer", "ring_s": 3, "duration_s": 10} for p in first + second}
    # At 30x the safety poll of a call (ring timeout + margin: 90 simulated seconds after its dial) comes 77 simulated
    # seconds (2.6 real s) after the end its webhook reports.
    stack, runtime, client = stack_with_web(stack_factory, rules, speed=30, retell_webhooks=True)
    assert client.put("/accounts/acme", {"plan": {"type": "unlimited"}, "concurrency_limit": 4}).status == 201

    def campaign(name: str, phones: list[str]) -> str:
        bid = client.post("/batches", {"name": name, "account_id": "acme", "agent_id": "agent_test",
                                       "from_number": "+12125550100",
                                       "call_settings": {"max_attempts": 1, "max_call_duration": 300}}).json()["id"]
        contacts = [{"name": f"c{i}", "phones": [p]} for i, p in enumerate(phones)]
        assert client.post(f"/batches/{bid}/contacts", {"contacts": contacts}).json()["imported"] == len(phones)
        wait_until(lambda: client.get(f"/batches/{bid}").json()["status"] == "completed", timeout_s=120,
                   interval_s=0.2)
        return bid

    with_webhooks = campaign("webhooks", first)
    attempts = list(runtime.attempts.coll.find({"batch_id": with_webhooks}))
    assert len(attempts) == 8 and {a["finalized_by"] for a in attempts} == {"webhook"}
    requests = stack.simulator.stats()["requests"]
    assert requests["create_phone_call"] == 8 and requests.get("get_call", 0) == 0   # one request per call

    stack.simulator.configure(webhook_url=f"http://127.0.0.1:{free_port()}/nobody")   # webhooks now get lost
    without = campaign("lost webhooks", second)
    attempts = list(runtime.attempts.coll.find({"batch_id": without}))
    assert len(attempts) == 4 and {a["finalized_by"] for a in attempts} == {"poll"}
    for attempt in attempts:   # found ended by the first safety-net poll: ring timeout (30 s) + margin (60 s)
        assert attempt["finalized_at"] - attempt["created_at"] >= 90_000
    polled = stack.simulator.stats()["requests"].get("get_call", 0)
    assert 4 <= polled <= 8, polled
    jobs = runtime.jobs.find({"batch_id": {"$in": [with_webhooks, without]}})
    assert all(j["status"] == states.COMPLETED and "poll_at" not in j for j in jobs)
