"""``outdial invalidate <batch_id>`` / ``outdial invalidate --all``: evict batches from every process's cache.

Publishes on ``cache:invalidate:<batch_id>`` (or ``cache:invalidate:all``) on ``REDIS_URL``
(else the local Redis) and prints how many listening processes received it. Exit status: 0
published, 1 Redis failed, 2 bad arguments (a malformed batch id).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import redis as redis_lib

from shared.cache.invalidation import describe_url, publish_invalidate_all, publish_invalidation, valid_batch_id
from shared.errors import ServiceError, ValidationError
from shared.redis_keys import invalidate_all_channel, invalidate_channel

#: Connect and socket timeout of the command's Redis connection, seconds.
DEFAULT_TIMEOUT_S = 5.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="outdial invalidate",
        description="Evict a batch (or every batch) from the batch cache of every worker and web process.",
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("batch_id", nargs="?", help="the batch's id (24 hex characters)")
    target.add_argument("--all", action="store_true", help="clear every process's whole batch cache")
    parser.add_argument("--redis-url", help="Redis to publish on (default: REDIS_URL, else the local Redis)")
    return parser


def _redis_url(explicit: str | None) -> str:
    if explicit:
        return explicit
    from shared.config import get_config
    from workers.dev.embedded import LOCAL_REDIS_URL

    return get_config().redis_url or LOCAL_REDIS_URL


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # argparse already printed the problem (or the help)
        return int(exc.code or 0)
    if args.batch_id is not None and valid_batch_id(args.batch_id) is None:
        print(f"outdial invalidate: batch_id {args.batch_id[:40]!r} is not a batch id "
              "(expected 24 hex characters, e.g. 65f1c0ffee0000000000beef)", file=sys.stderr)
        return 2
    url = _redis_url(args.redis_url)
    client = redis_lib.Redis.from_url(url, socket_connect_timeout=DEFAULT_TIMEOUT_S, socket_timeout=DEFAULT_TIMEOUT_S)
    try:
        if args.all:
            channel = invalidate_all_channel()
            receivers = publish_invalidate_all(client, strict=True)
        else:
            channel = invalidate_channel(valid_batch_id(args.batch_id) or "")
            receivers = publish_invalidation(client, args.batch_id, strict=True)
    except ValidationError as exc:
        print(f"outdial invalidate: {exc}", file=sys.stderr)
        return 2
    except ServiceError as exc:
        print(f"outdial invalidate: {exc} (redis {describe_url(url)})", file=sys.stderr)
        return 1
    finally:
        client.close()
    plural = "" if receivers == 1 else "es"
    print(f"published {channel} on {describe_url(url)}: received by {receivers} listening process{plural}")
    if receivers == 0:
        print("note: no process is listening (no worker or web process runs against this Redis)", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
