"""The index sharded across processes next to one unsharded process, in one run: the same
CLIP-like vectors (benchmarks.vectors) go through Kafka into an unsharded ``streamer serve``
and into 2 shards (``--shard 0/2``, ``--shard 1/2``); then each process's resident memory,
recall@10 against exact search and single-query p50/p99 through ``KafkaClient``.

    python -m benchmarks.bench_shards --n 50000

Needs the local broker (compose/kafka/start). Prints a table; every figure is measured here."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import machine, percentiles
from benchmarks.vectors import ClipLike
from streamer.kafka.client import KafkaClient
from streamer.testing.kafka import BOOTSTRAP, ServiceProcess, ensure_broker, new_prefix

K = 10
CHUNK = 2000
ENV = {"STREAMER_BATCH_MAX_ITEMS": "1024", "STREAMER_BATCH_MAX_WAIT_MS": "50"}


def rss_mib(svc: ServiceProcess) -> float:
    assert svc.proc is not None
    for line in Path(f"/proc/{svc.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(prefix: str, vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray,
        timeout: float) -> tuple[float, float, float, float]:
    """Build time (s), recall@10, p50 ms, p99 ms through one deployment."""
    with KafkaClient(BOOTSTRAP, kafka_topic_prefix=prefix,
                     kafka_request_timeout_s=timeout) as client:
        col = client.create_collection("bench")  # l2, as Chroma
        t0 = time.perf_counter()
        for start in range(0, len(vectors), CHUNK):
            chunk = vectors[start:start + CHUNK]
            col.add(ids=[str(start + i) for i in range(len(chunk))], embeddings=chunk)
        assert col.count() == len(vectors)  # waits until every shard applied the writes
        build = time.perf_counter() - t0
        hits, samples = [], []
        for q in queries:
            t = time.perf_counter()
            got = col.query(query_embeddings=[q], n_results=K, include=[])
            samples.append(time.perf_counter() - t)
            hits.append([int(i) for i in got["ids"][0]])
    recall = float(np.mean([len(set(h) & set(t)) / K for h, t in zip(hits, truth, strict=True)]))
    p50, p99 = percentiles(samples)
    return build, recall, p50, p99


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="request timeout (s): the count after the last add waits this long")
    args = parser.parse_args()
    # No checkpoint during the run: one saves the whole graph, under the collection's lock.
    env_all = {**ENV, "STREAMER_KAFKA_REQUEST_TIMEOUT_S": str(args.timeout),
               "STREAMER_CHECKPOINT_EVERY": str(2 * args.n)}
    ensure_broker()
    gen = ClipLike(args.dim)
    vectors = np.concatenate(list(gen.chunks(args.n)))
    queries = gen.queries(args.queries)
    d = (queries ** 2).sum(1)[:, None] - 2 * queries @ vectors.T + (vectors ** 2).sum(1)[None]
    truth = np.argsort(d, axis=1)[:, :K]
    tmp = Path(tempfile.mkdtemp(prefix="bench-shards-"))
    rows = []
    for label, shards in (("unsharded", [None]), ("2 shards", ["0/2", "1/2"])):
        prefix = new_prefix()
        procs = []
        try:
            for i, shard in enumerate(shards):
                env = dict(env_all, **({"STREAMER_SHARD": shard} if shard else {}))
                svc = ServiceProcess(prefix, tmp / f"{prefix}-{i}", instance=str(i),
                                     extra_env=env)
                svc.start()
                procs.append(svc)
            build, recall, p50, p99 = run(prefix, vectors, queries, truth, args.timeout)
            rss = [rss_mib(s) for s in procs]
        finally:
            for svc in procs:
                svc.kill()
        rows.append((label, build, rss, recall, p50, p99))
        print(f"{label}: built in {build:.1f} s", flush=True)
    print(f"\nmachine: {machine()}; {args.n} CLIP-like {args.dim}-d f32 vectors through Kafka, "
          f"{args.queries} single queries, k={K}")
    print("| deployment | build s | resident MiB per process | recall@10 | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|")
    for label, build, rss, recall, p50, p99 in rows:
        print(f"| {label} | {build:.1f} | {' / '.join(f'{r:.0f}' for r in rss)} | {recall:.3f} "
              f"| {p50:.1f} | {p99:.1f} |")


if __name__ == "__main__":
    main()
