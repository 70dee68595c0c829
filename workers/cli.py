"""The ``outdial`` command: one subcommand per process or tool.

Each subcommand lives in its own module as ``main(argv) -> int``; this file only routes, so
``outdial --help`` stays fast and a subcommand's imports cost nothing to the others.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from shared.errors import ConfigError, EmbeddedServiceError

#: name -> (module:function, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("workers.dev.demo:main", "run a whole sample campaign on embedded defaults"),
    "web": ("workers.web.app:main", "the web dyno: admin API, webhooks, health, metrics, dashboard"),
    "clock": ("workers.clock_dyno:main", "the clock dyno: sends schedule_due every few seconds"),
    "simulator": ("workers.dev.simulator.main:main", "a local provider speaking Retell's HTTP API"),
    "import-legacy": ("workers.import_legacy:main", "import the original worker's batches and jobs"),
    "invalidate": ("workers.invalidate:main", "evict a batch (or --all) from every process's cache"),
    "services": ("workers.dev.services:main", "start embedded MongoDB and Redis and print their URLs"),
    "bench": ("workers.dev.bench:main", "run the pipeline benchmark"),
    "config": ("workers.dev.services:show_config", "print every environment variable and its value"),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: outdial <command> [options]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "outdial <command> --help shows a command's options."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"outdial: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    target, _ = COMMANDS[name]
    module_name, func_name = target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    try:
        return int(func(rest) or 0)
    except (ConfigError, EmbeddedServiceError) as exc:
        print(f"outdial {name}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
