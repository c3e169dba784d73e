"""A collection against a plain-Python model, driven by Hypothesis: add / update / upsert /
delete / get / query / restart in random orders, with a tiny checkpoint interval and tiny log
segments so that checkpoints, log truncation and log replay all run between the checks.

The model follows Chroma's rules as ``consumers.storage.store`` documents them: adding an existing id
and updating a missing one are ignored; metadata merges key by key and a None value deletes
its key; one modality per record (an update from images drops the document, from documents
sets it, from embeddings or metadata alone keeps it); reads list ids in insertion order."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import streamer
from consumers.storage.log import MutationLog
from consumers.write.batch import BatchConfig
from tests.helpers import HashEmbedding, random_image

DIM = 4
IDS = ["a", "b", "c", "d", "e", "f"]
DOCS = ["alpha", "beta", "gamma", "delta"]
STRS = ["x", "y"]
NAME = "machine"

# Small integer vectors (never all zero): equal and parallel vectors, hence tied distances,
# come up often.
vectors = st.lists(st.integers(-2, 2), min_size=DIM, max_size=DIM).filter(any)
id_batches = st.lists(st.sampled_from(IDS), min_size=1, max_size=3, unique=True)


@st.composite
def metadatas(draw: st.DrawFn) -> dict[str, Any]:
    """A non-empty metadata dict over two keys; None values (delete this key) included."""
    keys = draw(st.lists(st.sampled_from(["n", "s"]), min_size=1, max_size=2, unique=True))
    out: dict[str, Any] = {}
    for k in keys:
        value = st.integers(0, 3) if k == "n" else st.sampled_from(STRS)
        out[k] = draw(st.none() | value)
    return out


# How a write call supplies its records' vectors (update may also send metadata alone).
WRITE_MODES = ["embeddings", "embeddings+documents", "documents", "images"]
# where filters on the int field "n", with the model's reading of each.
wheres = st.one_of(
    st.integers(0, 3).map(lambda v: {"n": v}),
    st.integers(0, 3).map(lambda v: {"n": {"$gte": v}}),
    st.integers(0, 3).map(lambda v: {"n": {"$lt": v}}),
    st.integers(0, 3).map(lambda v: {"n": {"$ne": v}}),
    st.lists(st.integers(0, 3), min_size=1, max_size=2).map(lambda v: {"n": {"$in": v}}),
)


def model_where(where: dict[str, Any], meta: dict[str, Any] | None) -> bool:
    (_key, cond), = where.items()
    present = meta is not None and "n" in meta
    n = meta["n"] if present else None  # type: ignore[index]
    if not isinstance(cond, dict):
        return present and n == cond
    (op, v), = cond.items()
    if op == "$ne":  # Chroma 1.5: $ne also matches records that lack the key
        return not (present and n == v)
    if not present:
        return False
    if op == "$gte":
        return bool(n >= v)
    if op == "$lt":
        return bool(n < v)
    assert op == "$in"
    return n in v


def merge(old: dict[str, Any] | None, new: dict[str, Any] | None) -> dict[str, Any] | None:
    if new is None:
        return old
    merged = dict(old or {})
    for k, v in new.items():
        if v is None:
            merged.pop(k, None)
        else:
            merged[k] = v
    return merged or None


@dataclass
class Rec:
    vector: np.ndarray
    document: str | None
    metadata: dict[str, Any] | None
    order: int


@dataclass
class Item:
    """What one write call says about one id: the source of its vector and its fields."""

    id: str
    mode: str  # embeddings | embeddings+documents | documents | images | metadata
    embedding: list[int] | None
    document: str | None
    image_seed: int | None
    metadata: dict[str, Any] | None


class CollectionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.path = tempfile.mkdtemp(prefix="streamer-sm-")
        self.ef = HashEmbedding(dim=DIM)
        self.client: streamer.Client | None = None
        self.model: dict[str, Rec] = {}
        self.next_order = 0
        self._open()
        assert self.client is not None
        self.col: streamer.Collection = self.client.create_collection(NAME, embedding_function=self.ef)

    # ---- plumbing -----------------------------------------------------------------
    def _open(self) -> None:
        self.client = streamer.Client(self.path, checkpoint_every=3, fsync=False,
                                      batch=BatchConfig(max_wait=0.0))

    def teardown(self) -> None:
        try:
            if self.client is not None:
                self.client.close()
        finally:
            shutil.rmtree(self.path, ignore_errors=True)

    def _reopen(self) -> None:
        self._open()
        assert self.client is not None
        self.col = self.client.get_collection(NAME, embedding_function=self.ef)

    def _vector_of(self, item: Item) -> np.ndarray | None:
        if item.embedding is not None:
            return np.asarray(item.embedding, dtype=np.float64)
        if item.mode == "documents":
            return self.ef.vector(item.document).astype(np.float64)
        if item.mode == "images":
            return self.ef.vector(random_image(item.image_seed or 0, size=4)).astype(np.float64)
        return None

    def _write(self, op: str, items: list[Item]) -> None:
        mode = items[0].mode
        kwargs: dict[str, Any] = {"ids": [it.id for it in items]}
        if mode.startswith("embeddings"):
            kwargs["embeddings"] = [it.embedding for it in items]
        if "documents" in mode:
            kwargs["documents"] = [it.document for it in items]
        if mode == "images":
            kwargs["images"] = [random_image(it.image_seed or 0, size=4) for it in items]
        if any(it.metadata is not None for it in items):
            kwargs["metadatas"] = [it.metadata for it in items]
        getattr(self.col, op)(**kwargs)
        for it in items:
            self._apply(op, it)

    def _apply(self, op: str, it: Item) -> None:
        cur = self.model.get(it.id)
        if op == "add" and cur is not None:
            return  # Chroma ignores adds of existing ids
        if op == "update" and cur is None:
            return  # and updates of missing ones
        vec = self._vector_of(it)
        if cur is None:
            assert vec is not None
            self.model[it.id] = Rec(vec, it.document, merge(None, it.metadata), self.next_order)
            self.next_order += 1
            return
        cur.metadata = merge(cur.metadata, it.metadata)
        if it.mode == "images":
            cur.document = None  # one modality: the image replaces the document
        elif it.document is not None:
            cur.document = it.document
        # embeddings only, metadata only, or a None document next to an embedding: keep it
        if vec is not None:
            cur.vector = vec

    def _draw_items(self, data: st.DataObject, ids: list[str], mode: str) -> list[Item]:
        with_meta = data.draw(st.booleans(), label="with metadata") or mode == "metadata"
        items = []
        for id_ in ids:
            emb = data.draw(vectors, label=f"embedding {id_}") if mode.startswith("embeddings") \
                else None
            doc = None
            if mode == "documents":
                doc = data.draw(st.sampled_from(DOCS), label=f"document {id_}")
            elif mode == "embeddings+documents":
                # None next to an embedding: no document for a new record, keep the old one
                doc = data.draw(st.none() | st.sampled_from(DOCS), label=f"document {id_}")
            seed = data.draw(st.integers(0, 3), label=f"image {id_}") if mode == "images" else None
            meta = data.draw(st.none() | metadatas(), label=f"metadata {id_}") if with_meta \
                else None
            items.append(Item(id_, mode, emb, doc, seed, meta))
        return items

    # ---- writes -------------------------------------------------------------------
    @rule(ids=id_batches, mode=st.sampled_from(WRITE_MODES), data=st.data())
    def add(self, ids: list[str], mode: str, data: st.DataObject) -> None:
        self._write("add", self._draw_items(data, ids, mode))

    @rule(ids=id_batches, mode=st.sampled_from([*WRITE_MODES, "metadata"]), data=st.data())
    def update(self, ids: list[str], mode: str, data: st.DataObject) -> None:
        self._write("update", self._draw_items(data, ids, mode))

    @rule(ids=id_batches, mode=st.sampled_from(WRITE_MODES), data=st.data())
    def upsert(self, ids: list[str], mode: str, data: st.DataObject) -> None:
        self._write("upsert", self._draw_items(data, ids, mode))

    @rule(ids=id_batches)
    def delete_ids(self, ids: list[str]) -> None:
        self.col.delete(ids=ids)
        for id_ in ids:
            self.model.pop(id_, None)

    @rule(where=wheres)
    def delete_where(self, where: dict[str, Any]) -> None:
        self.col.delete(where=where)
        for id_ in [i for i, r in self.model.items() if model_where(where, r.metadata)]:
            del self.model[id_]

    # ---- restarts -----------------------------------------------------------------
    @rule()
    def restart(self) -> None:
        """A clean close (checkpoint, log truncation) and a reopen."""
        assert self.client is not None
        self.client.close()
        self._reopen()

    @rule()
    def crash_restart(self) -> None:
        """Close without the closing checkpoint, as after a crash once the log is durable:
        the reopen must replay the log tail past the newest checkpoint."""
        assert self.client is not None
        engine = self.client._async._backend
        for state in engine.catalog.collections.values():  # type: ignore[attr-defined]
            state._since_checkpoint = 0
        self.client.close()
        self._reopen()

    # ---- reads --------------------------------------------------------------------
    def _ordered(self, ids: list[str] | None = None) -> list[str]:
        chosen = self.model if ids is None else {i: self.model[i] for i in ids if i in self.model}
        return sorted(chosen, key=lambda i: chosen[i].order)

    def _check_get(self, got: dict[str, Any], want_ids: list[str]) -> None:
        assert got["ids"] == want_ids
        assert got["documents"] == [self.model[i].document for i in want_ids]
        assert got["metadatas"] == [self.model[i].metadata for i in want_ids]
        emb = np.asarray(got["embeddings"], dtype=np.float64).reshape(len(want_ids), DIM)
        want = np.array([self.model[i].vector for i in want_ids]).reshape(len(want_ids), DIM)
        np.testing.assert_allclose(emb, want, atol=1e-6)

    @rule()
    def get_all(self) -> None:
        got = self.col.get(include=["documents", "metadatas", "embeddings"])
        self._check_get(got, self._ordered())

    @rule(ids=id_batches)
    def get_ids(self, ids: list[str]) -> None:
        got = self.col.get(ids=ids, include=["documents", "metadatas", "embeddings"])
        self._check_get(got, self._ordered(ids))

    @rule(where=wheres, offset=st.none() | st.integers(0, 3), limit=st.none() | st.integers(0, 3))
    def get_where(self, where: dict[str, Any], offset: int | None, limit: int | None) -> None:
        got = self.col.get(where=where, offset=offset, limit=limit,
                           include=["documents", "metadatas", "embeddings"])
        want = [i for i in self._ordered() if model_where(where, self.model[i].metadata)]
        start = offset or 0
        self._check_get(got, want[start:None if limit is None else start + limit])

    @rule(queries=st.lists(vectors, min_size=1, max_size=2), n_results=st.integers(1, 8),
          where=st.none() | wheres)
    def query(self, queries: list[list[int]], n_results: int,
              where: dict[str, Any] | None) -> None:
        res = self.col.query(query_embeddings=queries, n_results=n_results, where=where,
                             include=["distances", "documents", "metadatas"])
        candidates = [i for i in self.model
                      if where is None or model_where(where, self.model[i].metadata)]
        assert len(res["ids"]) == len(queries)
        for q, ids, dists, docs, metas in zip(queries, res["ids"], res["distances"],
                                              res["documents"], res["metadatas"]):
            qv = np.asarray(q, dtype=np.float64)
            truth = {i: 1.0 - float(self.model[i].vector @ qv) /
                     (float(np.linalg.norm(self.model[i].vector)) * float(np.linalg.norm(qv)))
                     for i in candidates}
            k = min(n_results, len(candidates))
            assert len(ids) == k and len(set(ids)) == k, (ids, truth)
            assert all(i in truth for i in ids), (ids, truth)
            # Ties can come back in any order and either side of the cut: compare the
            # distances with the brute-force top-k, and each id with its own true distance.
            best = sorted(truth.values())[:k]
            np.testing.assert_allclose(dists, best, atol=1e-5)
            np.testing.assert_allclose(dists, [truth[i] for i in ids], atol=1e-5)
            assert docs == [self.model[i].document for i in ids]
            assert metas == [self.model[i].metadata for i in ids]

    @precondition(lambda self: bool(self.model))
    @rule(n_results=st.integers(1, 3), data=st.data())
    def query_stored_vector(self, n_results: int, data: st.DataObject) -> None:
        """Querying with a stored record's own vector finds it at distance 0 (or a tie)."""
        id_ = data.draw(st.sampled_from(sorted(self.model)), label="query id")
        res = self.col.query(query_embeddings=[self.model[id_].vector.tolist()],
                             n_results=n_results, include=["distances"])
        assert res["distances"][0][0] == pytest.approx(0.0, abs=1e-5)

    @invariant()
    def count_matches(self) -> None:
        assert self.col.count() == len(self.model)


def test_collection_state_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    # Log segments of a few frames, so that checkpoints also drop whole segments.
    kwdefaults = MutationLog.__init__.__kwdefaults__
    assert kwdefaults is not None and "segment_bytes" in kwdefaults
    monkeypatch.setitem(kwdefaults, "segment_bytes", 600)
    run_state_machine_as_test(CollectionMachine, settings=settings(
        max_examples=60, stateful_step_count=40, deadline=None, database=None,
        suppress_health_check=[HealthCheck.too_slow]))


def test_restart_after_segment_roll_keeps_log_sequence(tmp_path: Path) -> None:
    """A batch rolls the log segment and triggers the first checkpoint, which truncates the
    full segment: only the new, empty segment is left. After a clean restart, an acknowledged
    (fsynced) update followed by a crash must survive."""
    child = textwrap.dedent("""
        import os, sys
        import streamer
        from consumers.storage.log import MutationLog

        MutationLog.__init__.__kwdefaults__["segment_bytes"] = 200
        path = sys.argv[1]
        with streamer.Client(path, checkpoint_every=3) as client:
            col = client.create_collection("seq", embedding_function=None)
            col.add(ids=["a", "b", "c"], embeddings=[[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]])
        client = streamer.Client(path, checkpoint_every=3)
        col = client.get_collection("seq", embedding_function=None)
        col.update(ids=["a"], embeddings=[[0, 0, 0, 1]], metadatas=[{"v": 2}])
        os._exit(0)  # crash: no closing checkpoint, the update is only in the log
    """)
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", child, str(tmp_path)], cwd=root,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    with streamer.Client(tmp_path) as client:
        col = client.get_collection("seq", embedding_function=None)
        got = col.get(ids=["a"], include=["embeddings", "metadatas"])
        assert got["metadatas"] == [{"v": 2}]
        np.testing.assert_array_equal(got["embeddings"], [[0, 0, 0, 1]])
