"""``outdial demo``: start the embedded services and report them (the full demo comes later)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from shared import embedded
from shared.config import load_config


def main(argv: Sequence[str]) -> int:
    argparse.ArgumentParser(prog="outdial demo", description=__doc__).parse_args(argv)
    load_config()
    with embedded.services() as (mongo, red):
        print(f"MongoDB: {mongo.url} ({'embedded nx-27017' if mongo.started_here else 'MONGODB_URI'})")
        print(f"Redis:   {red.url} ({'bundled redis-server' if red.started_here else 'running'})")
    return 0
