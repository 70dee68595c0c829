"""The layout's promise about data: only the stores touch MongoDB collections and Redis keys.

Every module of ``workers`` and ``shared`` is parsed; outside the modules that own a collection or a key,
none may reach a collection (``.coll``, ``get_collection``, ``db[...]``), run a Redis command on a key
(``get``/``set``/``incr``/``lock``/... on a client named ``redis``), import a key builder from
:mod:`shared.redis_keys` or spell a key (``"outdial:..."``, ``f"{PREFIX}:..."``). They call the stores'
methods instead.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Modules that own MongoDB collections: the stores, and the connection (ids, indexes).
MONGO_OWNERS = frozenset({
    "shared/stores/accounts.py", "shared/stores/attempts.py", "shared/stores/batch_results.py",
    "shared/stores/batches.py", "shared/stores/billing.py", "shared/stores/compliance_profiles.py",
    "shared/stores/contact_history.py", "shared/stores/dnc.py", "shared/stores/jobs.py",
    "shared/stores/legacy_source.py", "shared/stores/ledger.py",
    "shared/stores/mongo.py", "shared/stores/result_events.py", "shared/stores/results_read.py",
})
#: Modules that own Redis keys and channels: slots and the pool, coordination (locks, turns, gates, kicks),
#: the process metric snapshots, the cache invalidation channels, the dashboard's admin sessions, and the key names
#: themselves.
REDIS_OWNERS = frozenset({
    "shared/stores/admin_sessions.py", "shared/stores/coordination.py", "shared/cache/invalidation.py",
    "shared/metrics.py", "shared/redis_keys.py", "shared/stores/slots.py",
})
#: The reference worker ``outdial bench --baseline`` compares with: a benchmark's stand-in for the plain way to build
#: a dialer (one claim and one update per call on the jobs collection), deliberately outside the stores.
BENCH_REFERENCE = frozenset({"workers/dev/baseline.py"})
#: Names of :mod:`shared.redis_keys` any module may use: a workspace's name and the invalidation channels
#: (shown to operators), none of them a key.
PUBLIC_NAMES = frozenset({
    "workspace_id", "invalidate_channel", "invalidate_all_channel", "INVALIDATE_ALL", "INVALIDATE_CHANNEL_PREFIX",
    "INVALIDATE_PATTERN",
})
#: redis-py methods that read or write a key (pub/sub, ``ping``, ``time`` and ``flushdb`` name none).
REDIS_KEY_COMMANDS = frozenset({
    "append", "decr", "decrby", "delete", "eval", "evalsha", "exists", "expire", "get", "getdel", "getset",
    "hdel", "hget", "hgetall", "hincrby", "hset", "incr", "incrby", "keys", "lock", "lpush", "lrange", "mget",
    "mset", "pexpire", "pipeline", "pttl", "register_script", "rpush", "sadd", "scan", "scan_iter", "set",
    "setex", "setnx", "smembers", "srem", "ttl", "unlink", "zadd", "zcard", "zrange", "zrangebyscore", "zrem",
    "zremrangebyscore", "zscore",
})


def _dotted(node: ast.AST) -> str:
    """``self.slots.redis`` for that expression; ``?`` for parts that are not names."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    if isinstance(node, ast.Call):
        return f"{_dotted(node.func)}()"
    return "?"


def _is_key_literal(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        text = node.value
        return text.startswith(("outdial:", "dramatiq:")) and len(text) > 8 and not text[8:9].isspace()
    if isinstance(node, ast.JoinedStr) and node.values:
        first = node.values[0]
        return (isinstance(first, ast.FormattedValue) and isinstance(first.value, ast.Name)
                and first.value.id == "PREFIX")
    return False


def violations(source: str, *, mongo_owner: bool = False, redis_owner: bool = False) -> list[str]:
    """What a module's ``source`` does that only a store may do: one line per place."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        line = getattr(node, "lineno", 0)
        if not mongo_owner:
            if isinstance(node, ast.Attribute) and node.attr in ("coll", "get_collection"):
                found.append(f"{line}: {_dotted(node)}")
            elif isinstance(node, ast.Subscript) and _dotted(node.value).split(".")[-1] == "db":
                found.append(f"{line}: {_dotted(node.value)}[...]")
        if redis_owner:
            continue
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            receiver = _dotted(node.func.value).lower()
            if node.func.attr in REDIS_KEY_COMMANDS and "redis" in receiver.split(".")[-1]:
                found.append(f"{line}: {_dotted(node.func)}(...)")
        elif isinstance(node, ast.ImportFrom) and node.module == "shared.redis_keys":
            private = sorted(a.name for a in node.names if a.name not in PUBLIC_NAMES)
            if private:
                found.append(f"{line}: imports {', '.join(private)} from shared.redis_keys")
        elif isinstance(node, ast.ImportFrom) and node.module == "shared" and any(
                a.name == "redis_keys" for a in node.names):
            found.append(f"{line}: imports shared.redis_keys")
        elif _is_key_literal(node):
            found.append(f"{line}: spells a key")
    return found


def _modules() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for top in ("shared", "workers") for p in (ROOT / top).rglob("*.py"))


@pytest.mark.parametrize("module", _modules())
def test_only_stores_touch_collections_and_keys(module: str) -> None:
    source = (ROOT / module).read_text()
    found = violations(source, mongo_owner=module in MONGO_OWNERS | BENCH_REFERENCE, redis_owner=module in REDIS_OWNERS)
    assert not found, f"{module} reaches MongoDB or Redis itself (use a store method):\n" + "\n".join(found)


def test_the_owners_exist() -> None:
    modules = set(_modules())
    assert modules >= MONGO_OWNERS | REDIS_OWNERS
    assert len(modules) > 60


@pytest.mark.parametrize("code", [
    "self.jobs.coll.find({})",
    "rt.accounts.coll.find({'_id': {'$in': ids}})",
    "db.get_collection('jobs')",
    "runtime.db['jobs'].find_one({})",
    "self.slots.redis.incr(dispatch_turn_key(w))",
    "self.redis.set(kick_key(a), '1', nx=True)",
    "runtime.redis.delete(x)",
    "redis.scan_iter(match=p)",
    "from shared.redis_keys import kick_key",
    "from shared import redis_keys",
    "KEY = 'dramatiq:__heartbeats__'",
    "KEY = f'{PREFIX}:metrics:proc:'",
])
def test_what_is_flagged(code: str) -> None:
    assert violations(code)


@pytest.mark.parametrize("code", [
    "rt.jobs.counts_by_batch(ids)",
    "options.get('limit')",
    "runtime.pipeline(sender)",
    "client.ping(); ctx.runtime.redis.ping()",
    "publish_invalidation(ctx.runtime.redis, batch_id)",
    "from shared.redis_keys import invalidate_channel, workspace_id",
    "print(f'outdial: unknown command {name!r}')",
    "runtime.db.command('ping')",
    "self.coordination.dispatch_lock(account_id, timeout_s=1)",
])
def test_what_is_not_flagged(code: str) -> None:
    assert not violations(code)


def test_owners_may() -> None:
    assert not violations("self.coll.find({}); db[name].create_indexes(m)", mongo_owner=True)
    assert not violations("self.redis.set(kick_key(a), '1')", redis_owner=True)
