"""Persistence across processes, crash recovery, torn log tails and corrupt checkpoints."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import streamer
from consumers.storage.catalog import CollectionState
from consumers.storage.log import MutationLog
from schemas.records import CollectionSpec, Modality, Mutation
from tests.helpers import HashEmbedding

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_persistence_across_processes(tmp_path: Path) -> None:
    writer = run_python("""
        import sys, streamer
        from tests.helpers import HashEmbedding
        c = streamer.Client(sys.argv[1])
        col = c.create_collection("persist", embedding_function=HashEmbedding(), metadata={"m": 1})
        col.add(ids=["a", "b"], documents=["alpha", "beta"], metadatas=[{"k": 1}, {"k": 2}])
        col.update(ids=["a"], images=[__import__("tests.helpers").helpers.random_image(3)])
        col.delete(ids=["b"])
        col.add(ids=["c"], documents=["gamma"])
        c.close()
    """, str(tmp_path))
    assert writer.returncode == 0, writer.stderr
    c = streamer.Client(tmp_path)
    try:
        col = c.get_collection("persist", embedding_function=HashEmbedding())
        assert col.metadata == {"m": 1}
        got = col.get(include=["documents", "metadatas", "embeddings"])
        assert got["ids"] == ["a", "c"]
        assert got["documents"] == [None, "gamma"]
        assert got["metadatas"] == [{"k": 1}, None]
        ef = HashEmbedding()
        from tests.helpers import random_image
        np.testing.assert_allclose(got["embeddings"], np.stack([ef.vector(random_image(3)), ef.vector("gamma")]))
        assert col.query(query_texts=["gamma"], n_results=1)["ids"] == [["c"]]
    finally:
        c.close()


CRASHER = """
    import sys, streamer
    from tests.helpers import HashEmbedding
    c = streamer.Client(sys.argv[1], checkpoint_every=int(sys.argv[2]))
    col = c.get_or_create_collection("crash", embedding_function=HashEmbedding())
    i = 0
    while True:
        ids = [f"r{i}-{j}" for j in range(5)]
        col.upsert(ids=ids, documents=[f"doc {i} {j}" for j in range(5)],
                   metadatas=[{"batch": i}] * 5)
        if i % 3 == 2:
            col.delete(ids=[f"r{i - 1}-0"])
        print(i, flush=True)
        i += 1
"""


@pytest.mark.parametrize("checkpoint_every", [7, 1_000_000])
def test_sigkill_at_any_point_recovers_every_acknowledged_write(tmp_path: Path, checkpoint_every: int) -> None:
    expected_docs: dict[str, str] = {}
    for round_ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(CRASHER), str(tmp_path),
                                 str(checkpoint_every)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        time.sleep(2.0 + round_ * 0.37)
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        acked = [int(line) for line in out.split()]
        assert acked, "the writer made no progress"
        # Each round restarts at batch 0 and rewrites the same ids: acknowledged state is the
        # union of every round's acknowledged upserts minus its deletes.
        for i in acked:
            for j in range(5):
                expected_docs[f"r{i}-{j}"] = f"doc {i} {j}"
        for i in acked:
            if i % 3 == 2:
                expected_docs.pop(f"r{i - 1}-0", None)
        last = acked[-1]
        c = streamer.Client(tmp_path)
        try:
            col = c.get_collection("crash", embedding_function=HashEmbedding())
            got = col.get(include=["documents", "embeddings"])
            stored = dict(zip(got["ids"], got["documents"], strict=True))
            # Nothing acknowledged is lost. The one call in flight at the kill (iteration
            # last + 1: its upsert, then maybe its delete of r{last}-0) may have landed.
            missing = set(expected_docs) - set(stored)
            extra = set(stored) - set(expected_docs)
            in_flight_delete = {f"r{last}-0"} if (last + 1) % 3 == 2 else set()
            assert missing <= in_flight_delete
            assert extra <= {f"r{last + 1}-{j}" for j in range(5)}
            for id_ in set(expected_docs) - missing:
                assert stored[id_] == expected_docs[id_]
            ef = HashEmbedding()
            want = np.stack([ef.vector(d) for d in got["documents"]])
            np.testing.assert_allclose(got["embeddings"], want, atol=1e-6)
            for id_ in extra:  # the in-flight batch, if it landed, landed whole
                expected_docs.setdefault(id_, stored[id_])
            for id_ in list(expected_docs):
                if id_ not in stored:
                    expected_docs.pop(id_)
        finally:
            c.close()


def _spec() -> CollectionSpec:
    return CollectionSpec(id="c1", name="col")


def _put(id_: str, x: float) -> Mutation:
    return Mutation(op="put", id=id_, modality=Modality.EMBEDDING,
                    vector=np.array([x, 1.0, 0.0], dtype=np.float32))


def test_torn_log_tail_is_cut_and_earlier_batches_survive(tmp_path: Path) -> None:
    state = CollectionState(_spec(), tmp_path, fsync=True, checkpoint_every=10**9)
    state.open()
    state.commit([_put("a", 1.0), _put("b", 2.0)])
    state.commit([_put("c", 3.0)])
    state.close(checkpoint_now=False)
    seg = next((tmp_path / "log").glob("*.log"))
    size = seg.stat().st_size
    with open(seg, "r+b") as f:  # cut the last batch mid-frame
        f.truncate(size - 7)
    again = CollectionState(_spec(), tmp_path, fsync=True, checkpoint_every=10**9)
    again.open()
    assert sorted(again.store.records) == ["a", "b"]
    assert again.log is not None and again.log.torn_bytes > 0
    again.commit([_put("d", 4.0)])  # appends continue cleanly after the cut
    again.close(checkpoint_now=False)
    third = CollectionState(_spec(), tmp_path, fsync=True, checkpoint_every=10**9)
    third.open()
    assert sorted(third.store.records) == ["a", "b", "d"]
    third.close()


def test_bit_flip_in_a_frame_fails_its_crc(tmp_path: Path) -> None:
    log = MutationLog(tmp_path)
    list(log.recover())
    log.append([_put("a", 1.0)])
    log.append([_put("b", 2.0)])
    log.close()
    seg = next(tmp_path.glob("*.log"))
    data = bytearray(seg.read_bytes())
    data[-30] ^= 0xFF
    seg.write_bytes(bytes(data))
    again = MutationLog(tmp_path)
    batches = list(again.recover())
    assert [m.id for b in batches for m in b.mutations] == ["a"]
    again.close()


def test_corrupt_checkpoint_is_rejected_not_loaded(tmp_path: Path) -> None:
    state = CollectionState(_spec(), tmp_path, fsync=True, checkpoint_every=10**9)
    state.open()
    state.commit([_put("a", 1.0)])
    state.checkpoint()
    state.commit([_put("b", 2.0)])
    state.checkpoint()
    state.close(checkpoint_now=False)
    newest = sorted((tmp_path / "checkpoints").glob("ckpt-*"))[-1]
    (newest / "records.json").write_bytes(b'[["evil", 1, "text", "x", null, null]]')
    again = CollectionState(_spec(), tmp_path, fsync=True, checkpoint_every=10**9)
    again.open()  # falls back to the older checkpoint plus the log
    assert sorted(again.store.records) == ["a", "b"]
    assert "evil" not in again.store.records
    again.close(checkpoint_now=False)


def test_closed_path_is_exclusive(tmp_path: Path) -> None:
    c = streamer.Client(tmp_path)
    try:
        with pytest.raises(ValueError, match="open in another client"):
            streamer.Client(tmp_path)
    finally:
        c.close()
    streamer.Client(tmp_path).close()


def test_in_memory_client_keeps_nothing(tmp_path: Path) -> None:
    c = streamer.Client()
    c.create_collection("mem", embedding_function=HashEmbedding()).add(ids=["a"], documents=["x"])
    c.close()
    assert not any(tmp_path.iterdir())
    assert os.listdir(tmp_path) == []
