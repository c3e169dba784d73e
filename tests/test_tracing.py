"""Traces across hops (streamer/tracing.py): one ``add`` then ``query`` over Kafka, made by a
client process and ``streamer serve``, collected by an OTLP receiver this test runs, form one
trace with every stage in order; a websocket query and an HTTP call join the caller's trace;
tracing is off (no header, no span) unless the standard ``OTEL_*`` variables ask for it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiokafka import ConsumerRecord

from schemas.events import write_event
from schemas.records import Op, WriteItem
from streamer import tracing
from streamer.cli.demo import has_trained_checkpoint, random_checkpoint
from streamer.testing.gateway import TOKENS, ws_client
from streamer.testing.kafka import BOOTSTRAP, ROOT, ServiceProcess, ensure_broker, new_prefix
from streamer.testing.otlp import ReceivedSpan, Receiver
from streamer.testing.servers import free_port
from tests.test_sources import _create_topics, mapping_copy, produce

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def configure_in(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``tracing.configure()`` in a fresh process (it installs a process-wide provider)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run([sys.executable, "-c", "from streamer import tracing; "
                           "print(tracing.configure(), tracing.enabled())"],
                          env={**clean, **env}, cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize(("env", "on"), [
    ({}, False),  # no endpoint, no exporter: off
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4317"}, True),
    ({"OTEL_TRACES_EXPORTER": "console"}, True),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317"}, False),
    ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317"}, False),
])
def test_the_standard_variables_decide_whether_traces_are_on(env: dict[str, str], on: bool) -> None:
    done = configure_in(env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(on), str(on)]


def test_an_unknown_exporter_is_a_usage_error_of_the_cli(tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run([sys.executable, "-m", "streamer", "serve", "--embedded",
                           "--data-dir", str(tmp_path), "--http-port", "0"],
                          env={**clean, "OTEL_TRACES_EXPORTER": "zipkin"}, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "unknown exporter 'zipkin'" in done.stderr


def test_off_writes_no_header_and_makes_no_batch_trace() -> None:
    assert not tracing.enabled()  # nothing in the test process installs a provider
    headers = [("reply_to", b"r")]
    assert tracing.inject(headers) == [("reply_to", b"r")]
    rec = ConsumerRecord("t", 0, 5, 0, 0, b"k", b"v", None, 1, 1, [
        ("traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-01".encode())])
    assert tracing.extract(rec.headers) is None
    assert tracing.BatchTrace.of([rec]) is None
    with tracing.span("x") as span:
        assert span is None


# ---- one trace over Kafka ------------------------------------------------------------------
CLIENT = textwrap.dedent("""
    import sys
    from opentelemetry import trace
    from streamer import tracing
    from streamer.embedding_functions import OpenCLIPEmbeddingFunction
    from streamer.kafka.client import KafkaClient

    assert tracing.configure()
    with KafkaClient(sys.argv[1], kafka_topic_prefix=sys.argv[2]) as client:
        col = client.create_collection("traced", embedding_function=OpenCLIPEmbeddingFunction(
            "streamer-tiny"))
        col.add(ids=["warm"], documents=["loads the model in the writer"])
        col.query(query_texts=["and in the reader"], n_results=1)
        with trace.get_tracer("app").start_as_current_span("app add then query") as root:
            col.add(ids=["doc", *(f"more-{i}" for i in range(7))],
                    documents=["a lighthouse on a cliff at dusk",
                               *(f"a harbour wall, photo {i}" for i in range(7))])
            hit = col.query(query_texts=["a lighthouse on a cliff at dusk"], n_results=1)
        assert hit["ids"] == [["doc"]], hit
        print(col.id, format(root.get_span_context().trace_id, "032x"), flush=True)
    tracing.shutdown()
""")

ADD = ["streamer add", "writer load", "writer embed", "writer resolve", "writer transaction",
       "replica apply"]
QUERY = ["streamer query", "reader query", "reader session wait", "reader embed",
         "reader search"]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def by_name(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    named: dict[str, ReceivedSpan] = {}
    for s in spans:
        assert s.name not in named, f"two {s.name!r} spans in one trace"
        named[s.name] = s
    return named


@pytest.mark.kafka
@pytest.mark.slow
def test_one_add_then_query_is_one_trace_with_every_stage_in_order(
        tmp_path: Path, receiver: Receiver) -> None:
    ensure_broker()
    prefix = new_prefix()
    upstream = f"{prefix}.up.app"
    asyncio.run(_create_topics({upstream: 1}))
    checkpoint = None if has_trained_checkpoint() else str(random_checkpoint(tmp_path))
    mapping = mapping_copy(tmp_path, "jsonl-documents",
                           {"topic": upstream, "root": str(tmp_path / "files")}, checkpoint)
    svc = ServiceProcess(prefix, tmp_path / "svc", instance="traced", extra_env={
        **receiver.env("streamer-serve"), "STREAMER_HTTP_PORT": str(free_port()),
        "STREAMER_AUTH_TOKENS": TOKENS}, args=["--source", str(mapping)])
    svc.start()
    try:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        done = subprocess.run([sys.executable, "-c", CLIENT, BOOTSTRAP, prefix],
                              env={**clean, **receiver.env("app")}, cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        cid, trace_id = done.stdout.split()
        receiver.wait_for({*ADD, *QUERY})
        spans = [s for s in receiver.spans if s.trace_id == trace_id]
        # The add's 8 records share its spans: each stage is one span for the call, and the
        # transaction (with its apply) one per partition the records went to.
        counts = Counter(s.name for s in spans)
        per_partition = {"writer transaction", "replica apply"}
        assert counts.keys() == {"app add then query", *ADD, *QUERY}
        assert all(n == 1 for name, n in counts.items() if name not in per_partition), counts
        assert 1 <= counts["writer transaction"] == counts["replica apply"] <= 8, counts
        for tx in [s for s in spans if s.name == "writer transaction"]:
            assert tx.parent_id == next(s.span_id for s in spans if s.name == "streamer add")
        named = by_name([s for s in spans if s.name not in per_partition] + [
            next(s for s in spans if s.name == "writer transaction")])
        applies = [s for s in spans if s.name == "replica apply"]
        assert {a.parent_id for a in applies} == \
            {s.span_id for s in spans if s.name == "writer transaction"}
        named["replica apply"] = next(a for a in applies
                                      if a.parent_id == named["writer transaction"].span_id)

        # The chain of parents: each hop continues the context the one before it sent.
        root = named["app add then query"]
        parent = {s.name: next((p.name for p in spans if p.span_id == s.parent_id), None)
                  for s in spans}
        assert parent == {
            "app add then query": None, "streamer add": root.name, "streamer query": root.name,
            **{stage: "streamer add" for stage in ADD[1:5]},
            "replica apply": "writer transaction",
            "reader query": "streamer query",
            **{stage: "reader query" for stage in QUERY[2:]}}
        assert {s.service for s in spans} == {"app", "streamer-serve"}
        assert {named[n].service for n in ("app add then query", "streamer add",
                                           "streamer query")} == {"app"}

        # In order: each stage starts after the one before it started, and the query waits
        # for the add's apply (session consistency).
        for chain in (ADD, QUERY):
            starts = [named[n].start_ns for n in chain]
            assert starts == sorted(starts), [(n, named[n].start_ns) for n in chain]
        for n in ("writer load", "writer embed", "writer resolve"):
            assert named[n].end_ns <= named["writer transaction"].start_ns
        assert named["streamer add"].end_ns <= named["streamer query"].start_ns
        assert named["replica apply"].end_ns <= named["reader session wait"].end_ns
        assert all(root.start_ns <= s.start_ns and s.end_ns <= root.end_ns for s in spans
                   if s.service == "app")

        # The batch: every writer stage links one "writer batch" span, which links back.
        batch_ids = {link for n in ADD[1:5] for link in named[n].links}
        assert len(batch_ids) == 1
        batch = next(s for s in receiver.named("writer batch") if s.span_id in batch_ids)
        assert named["streamer add"].span_id in batch.links
        assert batch.trace_id != trace_id  # its own trace, shared by the requests it carried

        assert svc.url is not None
        asyncio.run(_gateway_joins_the_callers_trace(svc.url, cid, receiver))
        _a_source_record_continues_its_upstream_trace(upstream, receiver)
    finally:
        assert svc.terminate() == 0


async def _gateway_joins_the_callers_trace(url: str, cid: str, receiver: Receiver) -> None:
    parent = "00f067aa0ba902b7"
    async with ws_client(url) as ws:
        await ws.result({"op": "query", "collection": cid, "texts": ["a lighthouse"],
                         "n_results": 1, "traceparent": f"00-{TRACE_ID}-{parent}-01"})
    async with aiohttp.ClientSession() as session, session.get(
            f"{url}/api/v2/heartbeat",
            headers={"traceparent": f"00-{TRACE_ID}-{'1' * 16}-01"}) as resp:
        assert resp.status == 200
    await asyncio.to_thread(receiver.wait_for, {"ws query", "GET /api/v2/heartbeat"})
    spans = [s for s in receiver.spans if s.trace_id == TRACE_ID]
    named = by_name(spans)
    assert named["ws query"].parent_id == parent
    assert named["GET /api/v2/heartbeat"].parent_id == "1" * 16
    assert named["GET /api/v2/heartbeat"].attributes["http.response.status_code"] == 200
    # The gateway's query goes through Kafka like a client's, in the same trace.
    assert named["streamer query"].parent_id == named["ws query"].span_id
    assert named["reader query"].parent_id == named["streamer query"].span_id
    await _a_live_push_continues_the_write_it_found(url, cid, receiver)


async def _a_live_push_continues_the_write_it_found(url: str, cid: str,
                                                    receiver: Receiver) -> None:
    trace_id, parent = "5" * 32, "6" * 16
    async with ws_client(url) as ws, ws_client(url) as writer:
        await ws.result({"op": "subscribe", "name": "traced", "texts": ["a red kite"],
                         "threshold": 2.5})
        item = WriteItem(id="kite", document="a red kite over the dunes")
        await writer.result({**write_event(Op.ADD, cid, item, time.time_ns(), 0),
                             "traceparent": f"00-{trace_id}-{parent}-01"})
        push = await asyncio.wait_for(ws.pushes.get(), 30)
        assert push["id"] == "kite"
    await asyncio.to_thread(receiver.wait_for, {"live push"})
    spans = [s for s in receiver.spans if s.trace_id == trace_id]
    named = by_name(spans)
    ids = {s.span_id: s.name for s in spans}
    assert ids[named["live push"].parent_id] == "writer transaction"
    assert ids[named["writer transaction"].parent_id] == "streamer add"
    assert named["live push"].start_ns >= named["writer transaction"].start_ns


def _a_source_record_continues_its_upstream_trace(topic: str, receiver: Receiver) -> None:
    """An upstream record with a ``traceparent`` header is the parent of its source span and
    of the writer's stages; one without starts a trace at the source."""
    trace_id, parent = "7" * 32, "8" * 16
    produce(topic, [(None, b'{"id": "traced-line", "text": "a traced upstream line"}',
                     [("traceparent", f"00-{trace_id}-{parent}-01".encode())]),
                    (None, b'{"id": "plain-line", "text": "an untraced upstream line"}', [])])
    name = "source app-documents"
    deadline = time.monotonic() + 60
    while len([s for s in receiver.spans if s.name == "replica apply" and s.trace_id in {
            x.trace_id for x in receiver.spans if x.name == name}]) < 2:
        assert time.monotonic() < deadline, "no apply spans under the source's"
        time.sleep(0.2)
    sources = [s for s in receiver.spans if s.name == name]
    assert len(sources) == 2
    traced = next(s for s in sources if s.trace_id == trace_id)
    assert traced.parent_id == parent
    root = next(s for s in sources if s.trace_id != trace_id)
    assert not root.parent_id  # a root: no parent span
    for source in (traced, root):
        spans = [s for s in receiver.spans if s.trace_id == source.trace_id]
        ids = {s.span_id: s.name for s in spans}
        named = by_name(spans)
        assert {"writer load", "writer embed", "writer resolve", "writer transaction",
                "replica apply"} <= named.keys()
        assert ids[named["writer load"].parent_id] == name
        assert ids[named["replica apply"].parent_id] == "writer transaction"
