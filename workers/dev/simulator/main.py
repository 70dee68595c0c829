"""``outdial simulator``: a local provider speaking Retell's HTTP API (docs/retell.md).

Prints ``outdial simulator listening on http://HOST:PORT`` once it accepts requests (with
``--port 0`` the port is chosen by the system), then serves until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Sequence

from shared.clock import get_clock
from shared.config import load_config, set_config
from shared.errors import ConfigError
from shared.logs import configure_from, event, get_logger
from shared.provider.retell import DEFAULT_SIMULATOR_PORT
from workers.dev.simulator.scenario import ScenarioError, parse_faults, parse_scenario
from workers.dev.simulator.server import (
    CONCURRENCY_MODES,
    DEFAULT_CONCURRENCY_LIMIT,
    DEFAULT_CONCURRENCY_MODE,
    DEFAULT_NOT_FOUND_STATUS,
    DEFAULT_WEBHOOK_RETRIES,
    DEFAULT_WEBHOOK_RETRY_DELAY_S,
    DEFAULT_WEBHOOK_TIMEOUT_S,
    Simulator,
    SimulatorSettings,
    start_server,
)

log = get_logger("outdial.simulator")

#: Line printed (and flushed) on stdout once the simulator accepts requests.
READY_PREFIX = "outdial simulator listening on "


def _rate(raw: str) -> float:
    value = float(raw)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {raw}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="outdial simulator", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="interface to bind")
    p.add_argument("--port", type=int, default=DEFAULT_SIMULATOR_PORT, help="port (0: any free port)")
    p.add_argument("--scenario", metavar="FILE", help="JSON scenario: outcome rules per number (docs/retell.md)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the random mix and faults; unset: the scenario's, else 0")
    p.add_argument("--api-key", default=None,
                   help="key requests must carry and webhooks are signed with; unset: RETELL_API_KEY")
    p.add_argument("--concurrency-limit", type=int, default=DEFAULT_CONCURRENCY_LIMIT,
                   help="calls dialing or connected at once")
    p.add_argument("--concurrency-mode", choices=CONCURRENCY_MODES, default=DEFAULT_CONCURRENCY_MODE,
                   help="over the limit: 'reason' = 201 and a call ended with concurrency_limit_reached; '429' = error")
    p.add_argument("--webhook-url", default=None, help="where to POST signed webhooks; unset: none sent")
    p.add_argument("--webhook-timeout-s", type=float, default=DEFAULT_WEBHOOK_TIMEOUT_S, help="per attempt")
    p.add_argument("--webhook-retries", type=int, default=DEFAULT_WEBHOOK_RETRIES, help="retries after a failure")
    p.add_argument("--webhook-retry-delay-s", type=float, default=DEFAULT_WEBHOOK_RETRY_DELAY_S,
                   help="real seconds between attempts")
    p.add_argument("--not-found-status", type=int, choices=(404, 422), default=DEFAULT_NOT_FOUND_STATUS,
                   help="status for an unknown call id")
    p.add_argument("--unconnected-status", choices=("ended", "not_connected"), default="ended",
                   help="call_status of calls that never connected")
    p.add_argument("--rate-429", type=_rate, default=0.0, help="share of requests answered 429")
    p.add_argument("--rate-500", type=_rate, default=0.0, help="share of requests answered 500")
    p.add_argument("--rate-slow", type=_rate, default=0.0, help="share of requests answered late")
    p.add_argument("--rate-drop", type=_rate, default=0.0,
                   help="share of requests processed, then dropped without an answer (the ambiguous create)")
    p.add_argument("--slow-ms", type=int, default=3000, help="delay of a slow answer, real ms")
    p.add_argument("--retry-after-ms", type=int, default=1000, help="retry-after of an injected 429, ms")
    p.add_argument("--fault-endpoints", default=None,
                   help="comma-separated endpoints the rates apply to; unset: all")
    return p


def build_simulator(args: argparse.Namespace, api_key: str) -> Simulator:
    """The :class:`Simulator` the parsed command line describes. Raises ConfigError for a bad scenario/faults."""
    scenario_raw = None
    if args.scenario:
        try:
            with open(args.scenario, encoding="utf-8") as fh:
                scenario_raw = json.load(fh)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--scenario {args.scenario}: {exc}") from None
    faults_raw: dict[str, object] = {
        "rate_429": args.rate_429, "rate_500": args.rate_500, "rate_slow": args.rate_slow,
        "rate_drop": args.rate_drop, "slow_ms": args.slow_ms, "retry_after_ms": args.retry_after_ms,
    }
    if args.fault_endpoints:
        faults_raw["endpoints"] = [e.strip() for e in args.fault_endpoints.split(",") if e.strip()]
    try:
        scenario = parse_scenario(scenario_raw)
        faults = parse_faults(faults_raw)
    except ScenarioError as exc:
        raise ConfigError(f"{'--scenario ' + args.scenario + ': ' if args.scenario else ''}{exc}") from None
    if args.concurrency_limit < 0:
        raise ConfigError("--concurrency-limit must be >= 0")
    settings = SimulatorSettings(
        api_key=api_key, concurrency_limit=args.concurrency_limit, concurrency_mode=args.concurrency_mode,
        webhook_url=args.webhook_url, not_found_status=args.not_found_status,
        unconnected_status=args.unconnected_status, seed=args.seed, webhook_timeout_s=args.webhook_timeout_s,
        webhook_retries=args.webhook_retries, webhook_retry_delay_s=args.webhook_retry_delay_s,
    )
    return Simulator(settings=settings, scenario=scenario, faults=faults, clock=get_clock())


async def _serve(sim: Simulator, host: str, port: int) -> None:
    runner, actual = await start_server(sim, host=host, port=port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"{READY_PREFIX}http://{host}:{actual}", flush=True)
    event(log, "simulator_started", host=host, port=actual, concurrency_limit=sim.settings.concurrency_limit,
          concurrency_mode=sim.settings.concurrency_mode, clock_speed=sim.clock.speed)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    config = load_config()
    if args.api_key:
        config = config.with_overrides(retell_api_key=args.api_key)
    set_config(config)
    configure_from(config)
    sim = build_simulator(args, config.retell_api_key)
    try:
        asyncio.run(_serve(sim, args.host, args.port))
    except OSError as exc:
        print(f"outdial simulator: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0
