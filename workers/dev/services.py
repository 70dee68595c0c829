"""``outdial services``: start the embedded MongoDB and Redis, print their URLs, wait.

``outdial config``: print every environment variable, its default and its current value.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from collections.abc import Sequence

from shared.config import describe_variables, load_config
from shared.logs import redact
from workers.dev import embedded


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="outdial services", description=__doc__)
    parser.add_argument("--data-dir", help="keep MongoDB data in this directory (default: in memory)")
    parser.add_argument("--once", action="store_true", help="start, print, stop (a check that both start)")
    args = parser.parse_args(argv)
    load_config()  # a malformed variable stops here, naming it
    with embedded.services(data_dir=args.data_dir) as (mongo, red):
        print(f"export MONGODB_URI='{mongo.url}'  # {'embedded nx-27017' if mongo.started_here else 'given'}")
        print(f"export REDIS_URL='{red.url}'  # {'bundled redis-server' if red.started_here else 'running'}")
        if args.once:
            return 0
        print("# Ctrl-C stops the embedded servers", flush=True)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
    return 0


def show_config(argv: Sequence[str]) -> int:
    argparse.ArgumentParser(prog="outdial config", description="Print the configuration.").parse_args(argv)
    load_config()
    for name, default, doc in describe_variables():
        value = os.environ.get(name)
        shown = "(unset)" if value is None else redact(value) if "KEY" in name or "TOKEN" in name else value
        if value and ("KEY" in name or "TOKEN" in name):
            shown = value[:4] + "****"
        print(f"{name:28} {shown:40} default={default or '-'}  # {doc}")
    return 0
