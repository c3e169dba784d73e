"""Producers at their default settings, on the real broker and a real ``streamer serve``:
kcat and confluent-kafka for Python (librdkafka: CRC32 over the key), a Go producer with
Sarama's default partitioner (FNV-1a) and KafkaJS (murmur2, as Java's client). Each sends the
same adds, updates, upserts and deletes of the same records, keyed as ``schemas/`` says, from
the contracts alone; every event is applied on its record's partition (forwarded there by the
writer that got it: streamer/kafka/routing.py) and the final state equals the embedded
client's after the same calls."""

from __future__ import annotations

import random
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

import streamer
from schemas.events import encode_array
from streamer.kafka.client import KafkaClient
from streamer.kafka.common import partition_of
from streamer.testing.kafka import (
    BOOTSTRAP,
    ROOT,
    KillLoop,
    ServiceProcess,
    ensure_broker,
    new_prefix,
    starter,
)
from tests.helpers import random_image, require_node, write_png
from tests.test_fencing import assert_same_state, expected_state, tiny, warm_collection
from tests.test_reliability import crash_workload, full_state

pytestmark = pytest.mark.kafka

DIM = 8
PRODUCERS = ROOT / "tests" / "producers"
Line = tuple[str, dict[str, Any]]  # (key, event)
Call = tuple[str, dict[str, Any]]  # (Collection method, kwargs)


def workload(cid: str, seed: int) -> tuple[list[Line], list[Call]]:
    """Single-record events for a raw producer, and the same calls for the embedded client:
    adds, updates (new embedding and document, or metadata only), upserts of old and new
    records, deletes, and writes after a delete."""
    rng = np.random.default_rng(seed)
    pick = random.Random(seed)
    lines: list[Line] = []
    calls: list[Call] = []

    def op(kind: str, id_: str, *, embedding: bool = False, document: str | None = None,
           metadata: dict[str, Any] | None = None) -> None:
        ev: dict[str, Any] = {"v": 1, "op": kind, "collection": cid, "id": id_}
        kwargs: dict[str, Any] = {"ids": [id_]}
        if embedding:
            vec = rng.standard_normal(DIM).astype(np.float32)
            ev["embedding"] = encode_array(vec)
            kwargs["embeddings"] = [vec]
        if document is not None:
            ev["document"], kwargs["documents"] = document, [document]
        if metadata is not None:
            ev["metadata"], kwargs["metadatas"] = metadata, [metadata]
        lines.append((f"{cid}/{id_}", ev))
        calls.append((kind, kwargs))

    ids = [f"rec-{i}" for i in range(24)]
    for i, id_ in enumerate(ids):
        op("add", id_, embedding=True, document=f"document {i}", metadata={"i": i, "v": 0})
    for id_ in pick.sample(ids, 10):
        op("update", id_, embedding=True, document=f"{id_} updated", metadata={"v": 1})
    for id_ in pick.sample(ids, 6):
        op("update", id_, metadata={"v": 2, "tag": "meta-only"})
    for id_ in [*pick.sample(ids, 5), "new-1", "new-2", "new-3"]:
        op("upsert", id_, embedding=True, document=f"{id_} upserted", metadata={"v": 3})
    gone = pick.sample(ids, 6)
    for id_ in gone:
        lines.append((f"{cid}/{id_}", {"v": 1, "op": "delete", "collection": cid, "ids": [id_]}))
        calls.append(("delete", {"ids": [id_]}))
    for id_ in gone[:3]:  # back after its delete: order per record is what makes this right
        op("add", id_, embedding=True, document=f"{id_} again", metadata={"v": 4})
    return lines, calls


def state(col: streamer.Collection) -> dict[str, tuple[Any, ...]]:
    got = col.get(include=["embeddings", "documents", "metadatas"])
    return {id_: (np.asarray(e, dtype=np.float32).tobytes(), d, m) for id_, e, d, m in zip(
        got["ids"], got["embeddings"], got["documents"], got["metadatas"], strict=True)}


def expected(calls: list[Call]) -> dict[str, tuple[Any, ...]]:
    client = streamer.Client()
    try:
        col = client.create_collection("oracle", embedding_function=None)
        for kind, kwargs in calls:
            getattr(col, kind)(**kwargs)
        return state(col)
    finally:
        client.close()


def settle(col: streamer.Collection) -> None:
    """Every event the producers sent is applied once this returns. A filtered delete goes to
    every partition after them; its first round is answered once each partition's writer has
    processed (and forwarded) what the producers sent there, the second once the forwarded
    events are processed too. The reads after it wait for this client's offsets."""
    for _ in range(2):
        col.delete(where={"matches": "nothing"})


def forwarded(svc: ServiceProcess) -> float:
    assert svc.url is not None
    text = httpx.get(f"{svc.url}/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("streamer_writer_forwarded_total "))


def partitions(topic: str) -> int:
    from confluent_kafka.admin import AdminClient

    return len(AdminClient({"bootstrap.servers": BOOTSTRAP}).list_topics(topic, timeout=10)
               .topics[topic].partitions)


def tsv(lines: list[Line]) -> bytes:
    return b"".join(key.encode() + b"\t" + orjson.dumps(ev) + b"\n" for key, ev in lines)


# ---- the producers, at their defaults ------------------------------------------------------
def kcat(topic: str, lines: list[Line], tmp: Path) -> None:
    exe = shutil.which("kcat") or shutil.which("kafkacat")
    if exe is None:
        pytest.skip("kcat is not installed (.ci/run installs it)")
    path = tmp / "kcat.tsv"
    path.write_bytes(tsv(lines))
    done = subprocess.run([exe, "-b", BOOTSTRAP, "-q", "-P", "-t", topic, "-K", "\t", "-l",
                           str(path)], capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode()


def confluent(topic: str, lines: list[Line], tmp: Path) -> list[int]:
    """The partitions the delivery reports name, in the order of ``lines``."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": BOOTSTRAP})
    placed: dict[int, int] = {}

    def report(i: int) -> Callable[[Any, Any], None]:
        def done(err: Any, msg: Any) -> None:
            placed[i] = -1 if err is not None else msg.partition()
        return done

    for i, (key, ev) in enumerate(lines):
        producer.produce(topic, key=key.encode(), value=orjson.dumps(ev), on_delivery=report(i))
        producer.poll(0)
    assert producer.flush(60) == 0
    assert sorted(placed) == list(range(len(lines))) and -1 not in placed.values()
    return [placed[i] for i in range(len(lines))]


@pytest.fixture(scope="session")
def sarama_exe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("go") is None:
        pytest.skip("needs the Go toolchain (.ci/run's machine has it)")
    exe = tmp_path_factory.mktemp("sarama") / "sarama-producer"
    done = subprocess.run(["go", "build", "-o", str(exe), "."], cwd=PRODUCERS / "sarama",
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return exe


@pytest.fixture(scope="session")
def kafkajs_dir() -> Path:
    require_node()
    package = PRODUCERS / "kafkajs"
    if not (package / "node_modules" / "kafkajs" / "package.json").exists():
        done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=package,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return package


def run_lines(argv: list[str], lines: list[Line], cwd: Path | None = None) -> list[int]:
    """A producer program fed key<TAB>value lines; the partition it printed for each."""
    done = subprocess.run(argv, input=tsv(lines), cwd=cwd, capture_output=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return [int(p) for p in done.stdout.split()]


@pytest.fixture
def producers(sarama_exe: Path, kafkajs_dir: Path) -> dict[str, Callable[[str, list[Line], Path],
                                                                         list[int] | None]]:
    def sarama(topic: str, lines: list[Line], tmp: Path) -> list[int]:
        return run_lines([str(sarama_exe), BOOTSTRAP, topic], lines)

    def kafkajs(topic: str, lines: list[Line], tmp: Path) -> list[int]:
        return run_lines(["node", "produce.js", BOOTSTRAP, topic], lines, kafkajs_dir)

    return {"kcat": kcat, "confluent-kafka": confluent, "sarama": sarama, "kafkajs": kafkajs}


@pytest.fixture
def client(kafka_service: ServiceProcess) -> Iterator[streamer.Client]:
    with KafkaClient(BOOTSTRAP, kafka_topic_prefix=kafka_service.prefix) as c:
        yield c


@pytest.mark.slow
@pytest.mark.parametrize("name", ["kcat", "confluent-kafka", "sarama", "kafkajs"])
def test_a_producer_at_its_defaults_reaches_the_embedded_state(
        name: str, producers: dict[str, Any], client: streamer.Client,
        kafka_service: ServiceProcess, tmp_path: Path) -> None:
    requests = f"{kafka_service.prefix}.requests"
    col = client.create_collection(f"producer-{name}", embedding_function=None)
    lines, calls = workload(col.id, seed=len(name))
    before = forwarded(kafka_service)
    placed = producers[name](requests, lines, tmp_path)
    settle(col)
    assert state(col) == expected(calls)
    moved = forwarded(kafka_service) - before
    if placed is not None:  # the partitions the producer chose, as it printed them
        n = partitions(requests)
        off_home = sum(p != partition_of(key.encode(), n)
                       for (key, _), p in zip(lines, placed, strict=True))
        assert moved == off_home
        if name == "kafkajs":  # Java's partitioner: every event already on its home
            assert off_home == 0
        else:
            assert off_home > len(lines) / 3
    else:  # kcat prints nothing; librdkafka's CRC32 puts most keys elsewhere than murmur2
        assert moved > len(lines) / 3


def raw_events(calls: list[Call], cid: str) -> list[Line]:
    """The events of ``calls`` as a producer that knows only the contracts writes them: one
    per record, keyed ``<collection id>/<record id>``, images as raw arrays."""
    lines: list[Line] = []
    for kind, kwargs in calls:
        for i, id_ in enumerate(kwargs["ids"]):
            if kind == "delete":
                lines.append((f"{cid}/{id_}", {"v": 1, "op": "delete", "collection": cid,
                                               "ids": [id_]}))
                continue
            ev: dict[str, Any] = {"v": 1, "op": kind, "collection": cid, "id": id_}
            for arg, field in (("documents", "document"), ("uris", "uri"),
                               ("metadatas", "metadata")):
                if kwargs.get(arg) is not None:
                    ev[field] = kwargs[arg][i]
            if kwargs.get("images") is not None:
                ev["image"] = encode_array(np.asarray(kwargs["images"][i]))
            if kwargs.get("embeddings") is not None:
                ev["embedding"] = encode_array(np.asarray(kwargs["embeddings"][i], np.float32))
            lines.append((f"{cid}/{id_}", ev))
    return lines


@pytest.mark.slow
def test_sigkills_mid_ingest_from_a_producer_at_its_defaults_give_the_exact_state(
        tmp_path: Path, services: list[ServiceProcess]) -> None:
    """confluent-kafka at its defaults (CRC32, so most events are forwarded) writes documents,
    image arrays, URIs and vectors that ``streamer serve`` loads and embeds itself, while the
    service is SIGKILLed four times: every event is applied once, in its record's order."""
    ensure_broker()
    prefix = new_prefix()
    root = tmp_path / "images"
    root.mkdir()
    uris = [write_png(root / f"p{i}.png", random_image(4000 + i, size=12)) for i in range(12)]
    calls = crash_workload(400, uris, seed=43, dim=len(tiny()(["probe"])[0]))
    want = expected_state(calls, root, "crash-raw")
    env = {"STREAMER_BATCH_MAX_ITEMS": "16", "STREAMER_DATA_ROOTS": str(root)}

    start = starter(services, prefix, tmp_path / "svc", "crash-raw", env)
    loop = KillLoop(start, times=4, seed=47)  # the service starts; the kills wait for `with`
    with KafkaClient(BOOTSTRAP, kafka_topic_prefix=prefix, kafka_request_timeout_s=240) as client:
        col = warm_collection(client, "crash-raw", root)
        lines = raw_events(calls, col.id)
        with loop:
            placed = confluent(f"{prefix}.requests", lines, tmp_path)  # acknowledged (acks=all)
            assert loop.done(timeout=300) == 4
        n = partitions(f"{prefix}.requests")
        assert sum(partition_of(key.encode(), n) != p  # most of them took the detour
                   for (key, _), p in zip(lines, placed, strict=True)) > len(lines) / 3
        settle(col)
        got = full_state(col)
    assert_same_state(got, want)
