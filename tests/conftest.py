from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from blockbuster import blockbuster_ctx

import streamer
from streamer.testing.kafka import ServiceProcess, delete_test_topics, ensure_broker, new_prefix, service
from tests.helpers import HashEmbedding

# tests/chroma_search needs Chroma's distributed-mode environment when chromadb's tests are
# imported: tests/test_chroma_search_peer.py runs it in a pytest process of its own.
collect_ignore = [] if os.environ.get("CHROMA_CLUSTER_TEST_ONLY") == "1" else ["chroma_search"]


@pytest.fixture(scope="session")
def kafka_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    ensure_broker()
    yield from service(tmp_path_factory.mktemp("kafka"), new_prefix())


CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
        item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[CALL_FAILED] = report.failed
    return report


@pytest.fixture
def services(request: pytest.FixtureRequest) -> Iterator[list[ServiceProcess]]:
    """`streamer serve` processes a test starts itself; killed when it ends, pass or fail.
    After a failure, what each service logged itself (warnings and errors, not aiokafka's
    connection noise) is printed, so a rare failure's cause is in the report."""
    started: list[ServiceProcess] = []
    yield started
    for svc in started:
        svc.kill()
    if request.node.stash.get(CALL_FAILED, False):
        for svc in started:
            print(f"--- service {svc.instance}: its own warnings and errors ---")
            print("\n".join(svc.problems()[-40:]))


@pytest.fixture(params=["embedded", pytest.param("kafka", marks=pytest.mark.kafka)])
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[streamer.Client]:
    if request.param == "embedded":
        c = streamer.Client(tmp_path / "store")
        yield c
        c.close()
        return
    from streamer.kafka.client import KafkaClient

    svc: ServiceProcess = request.getfixturevalue("kafka_service")
    kc = KafkaClient(kafka_topic_prefix=svc.prefix, wait_writes=True)
    yield kc
    for col in kc.list_collections():
        kc.delete_collection(col.name)
    kc.close()


@pytest.fixture
def ef() -> HashEmbedding:
    return HashEmbedding()


@pytest.fixture(autouse=True)
def no_blocking_on_event_loops(request: pytest.FixtureRequest) -> Iterator[None]:
    """blockbuster: a blocking call (file or socket I/O, sleep, lock wait) made by our code on
    a running event loop fails the test, whichever loop it is (pytest-asyncio's, the sync
    clients' portal thread, the gateway's). Work belongs on a thread (anyio.to_thread)."""
    if request.node.get_closest_marker("blocking_ok"):
        yield
        return
    # streamer.testing is the harness the tests drive the system with, test code like tests/:
    # its fixtures may block (the broker check, starting a service process).
    with blockbuster_ctx(["streamer", "consumers", "schemas"], excluded_modules=["streamer.testing"]) as bb:
        # Constructing an ImageLoader resolves its roots; tests build theirs inline, as a
        # user would in their own code. The library itself builds loaders on a thread.
        for fn in ("os.path.abspath", "os.stat"):
            bb.functions[fn].can_block_in("consumers/loading/load.py", "__init__")
        yield


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Session fixtures (service processes) are torn down by now; their topics can go.
    deleted = delete_test_topics()
    if deleted:
        writer = session.config.get_terminal_writer()
        writer.line()
        writer.line(f"deleted {deleted} test topics from the broker")
