"""One collection's state: the record table (what each id currently is) and its vector index.

Both are checkpoints of the modality-overwrite log. ``resolve`` turns validated write items
plus their vectors into full-state mutations (Chroma's add/update/upsert rules plus the
one-modality rule); ``apply`` installs mutations; reads never see a half-applied batch because
apply runs in one synchronous step on the event loop's side of the pipeline."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from consumers.embedding.bm25 import Bm25, sparse_function
from consumers.storage.index import Keys, Matrix, VectorIndex
from consumers.storage.sparse import SparseIndex
from consumers.validation import hnsw
from consumers.validation.where import compile_where, compile_where_document
from schemas.errors import DimensionMismatchError, InvalidArgumentError
from schemas.records import (
    CollectionSpec,
    GetRequest,
    Metadata,
    Modality,
    Mutation,
    Op,
    Record,
    SparseVector,
    Vector,
    WriteItem,
)


def merge_metadata(old: Metadata | None, new: Metadata | None) -> Metadata | None:
    """Chroma's update rule: keys merge, a None value deletes its key."""
    if new is None:
        return old
    merged = dict(old or {})
    for k, v in new.items():
        if v is None:
            merged.pop(k, None)
        else:
            merged[k] = v
    return merged or None


def _clean(meta: Metadata | None) -> Metadata | None:
    return merge_metadata(None, meta)


@dataclass(slots=True)
class Hits:
    ids: list[list[str]]
    distances: list[list[float]]


class CollectionStore:
    def __init__(self, spec: CollectionSpec) -> None:
        self.spec = spec
        self.records: dict[str, Record] = {}
        self.by_key: dict[int, str] = {}
        self.next_key = 1
        #: ids in insertion order (None: sort again on the next read). New ids that come
        #: after the last are appended; removed ones wait in ``_gone`` until the next read.
        #: None at first too: a checkpoint fills ``records`` directly.
        self._ordered: list[str] | None = None
        self._tail: tuple[tuple[int, int], int] | None = None  # the rank of the last appended
        self._gone: set[str] = set()
        self.index: VectorIndex | None = None
        self.applied_seq = 0
        self.source: dict[str, Any] = {}
        #: The sparse index a schema declares, with the function that weighs documents' terms.
        self.sparse: SparseIndex | None = None
        self._bm25: Bm25 | None = None
        if spec.sparse is not None:
            self.sparse = SparseIndex()
            self._bm25 = sparse_function(spec.sparse["embedding_function"])

    # ---- writes -------------------------------------------------------------------
    def check_dimension(self, vectors: Iterable[Vector]) -> None:
        dim = self.spec.dimension
        for v in vectors:
            if dim is None:
                dim = int(v.shape[0])
            elif v.shape[0] != dim:
                raise DimensionMismatchError(
                    f"Collection expecting embedding with dimension of {dim}, got {v.shape[0]}")

    def resolve(self, op: Op, items: list[WriteItem], vectors: list[Vector | None],
                pending: dict[str, Mutation | None]) -> list[Mutation]:
        """Mutations for one request. ``pending`` holds this batch's earlier results per id
        (None = deleted) so that several requests in a batch compose in order."""
        out: list[Mutation] = []
        for item, vec in zip(items, vectors):
            current = self._current(item.id, pending)
            if op is Op.ADD and current is not None:
                continue  # Chroma ignores adds of existing ids
            if op is Op.UPDATE and current is None:
                continue  # and updates of missing ones
            if current is None:
                m = Mutation(op="put", id=item.id, modality=item.modality,
                             document=item.document, uri=item.uri,
                             metadata=_clean(item.metadata), vector=vec)
            else:
                m = self._overwrite(current, item, vec)
            m.order = item.order
            pending[item.id] = m
            out.append(m)
        return out

    def _current(self, id_: str, pending: dict[str, Mutation | None]) -> Mutation | None:
        if id_ in pending:
            return pending[id_]
        rec = self.records.get(id_)
        if rec is None:
            return None
        return Mutation(op="put", id=id_, modality=rec.modality, document=rec.document,
                        uri=rec.uri, metadata=rec.metadata, vector=None)

    @staticmethod
    def _overwrite(cur: Mutation, item: WriteItem, vec: Vector | None) -> Mutation:
        meta = merge_metadata(cur.metadata, item.metadata)
        source = item.modality
        if source in (Modality.TEXT, Modality.IMAGE, Modality.URI):
            # One modality per record: the new source replaces document and uri together.
            return Mutation(op="put", id=item.id, modality=source, document=item.document,
                            uri=item.uri, metadata=meta, vector=vec)
        # Embedding-only or metadata-only update: Chroma keeps the stored document/uri.
        return Mutation(op="put", id=item.id, modality=cur.modality, document=cur.document,
                        uri=cur.uri, metadata=meta, vector=vec if vec is not None else cur.vector)

    def delete_ids(self, ids: Iterable[str], pending: dict[str, Mutation | None]) -> list[Mutation]:
        out = []
        for id_ in ids:
            if self._current(id_, pending) is not None:
                pending[id_] = None
                out.append(Mutation(op="delete", id=id_))
        return out

    def apply(self, mutations: list[Mutation], seq: int, source: dict[str, Any], *,
              defer_index: bool = False) -> None:
        """Install one committed log batch (already durable) into the table and the index.
        ``source`` is the batch's commit metadata (e.g. Kafka offsets), kept for checkpoints;
        ``defer_index`` leaves new vectors pending in the index (log replay at recovery)."""
        self.applied_seq = max(self.applied_seq, seq)
        self.source.update(source)
        final: dict[str, Mutation] = {}
        for m in mutations:
            prev = final.get(m.id)
            if m.op == "put" and m.vector is None and prev is not None and prev.vector is not None:
                # A put without a vector keeps the id's vector: within one batch that is the
                # vector of the put before it (a replica's batch spans many transactions).
                m = dataclasses.replace(m, vector=prev.vector)
            final[m.id] = m  # last write wins inside a batch
        put_keys: list[int] = []
        put_vecs: list[Vector] = []
        drop: list[int] = []
        added: list[str] = []
        for id_, m in final.items():
            old = self.records.get(id_)
            if m.op == "delete":
                if old is not None:
                    del self.records[id_]
                    del self.by_key[old.key]
                    drop.append(old.key)
                    self._gone.add(id_)
                    if self.sparse is not None:
                        self.sparse.remove(old.key)
                continue
            if old is None:
                key, order = self._take_key(), m.order
                added.append(id_)
            else:  # an overwrite keeps its place, as Chroma's update and upsert do
                key, order = old.key, old.order
            modality = m.modality or Modality.EMBEDDING
            self.records[id_] = Record(key, modality, m.document, m.uri, m.metadata, order)
            self.by_key[key] = id_
            if self.sparse is not None and self._bm25 is not None:
                # A record's terms are its document's: an image or a URI has none.
                if m.document is None:
                    self.sparse.remove(key)
                elif old is None or old.document != m.document:
                    self.sparse.put(key, self._bm25.encode(m.document))
            if m.vector is not None:
                put_keys.append(key)
                put_vecs.append(m.vector)
        self._place(added)
        if drop and self.index is not None:
            self.index.remove(np.asarray(drop, dtype=np.uint64))
        if put_vecs:
            matrix = np.vstack(put_vecs).astype(np.float32, copy=False)
            if self.index is None:
                self.spec.dimension = int(matrix.shape[1])
                self.index = VectorIndex(self.spec.dimension, self.spec.space, self.spec.dtype,
                                         **hnsw.index_params(self.spec))
            self.index.upsert(np.asarray(put_keys, dtype=np.uint64), matrix, defer=defer_index)

    def retune(self) -> None:
        """The index takes the spec's HNSW parameters again (a modify changed them)."""
        if self.index is not None:
            params = hnsw.index_params(self.spec)
            self.index.tune(expansion_add=params["expansion_add"],
                            expansion_search=params["expansion_search"])

    def encode_sparse(self, text: str) -> SparseVector:
        """A text's terms and weights for the sparse index: the collection's own function, as
        Chroma's client applies it to a string query before it sends it."""
        if self._bm25 is None:
            raise InvalidArgumentError("This collection has no sparse vector index")
        return self._bm25.encode(text)

    def rebuild_sparse(self) -> None:
        """The sparse index from the records (a checkpoint keeps the documents it derives
        from, not the index)."""
        if self.sparse is None or self._bm25 is None:
            return
        encode = self._bm25.encode
        for rec in self.records.values():
            if rec.document is not None:
                self.sparse.put(rec.key, encode(rec.document))

    def _take_key(self) -> int:
        key = self.next_key
        self.next_key += 1
        return key

    # ---- reads --------------------------------------------------------------------
    def count(self) -> int:
        return len(self.records)

    @staticmethod
    def insertion_rank(r: Record) -> tuple[tuple[int, int], int]:
        """Insertion order: the first insertion's stamp, then the key (apply order), which
        alone orders stamp-less (embedded) records and breaks ties."""
        return (r.order or (0, 0), r.key)

    def _place(self, added: list[str]) -> None:
        """Append one batch's new ids when they all come after the last (the usual case: a
        sort per write would cost O(n log n) at every read after it); else sort on the next
        read. A Kafka batch applies one call's records out of order: they are sorted first."""
        if not added or self._ordered is None:
            return
        if not self._gone.isdisjoint(added):  # back after a delete: its old place is stale
            self._ordered = None
            return
        records = self.records
        added.sort(key=lambda i: self.insertion_rank(records[i]))
        first, last = self.insertion_rank(records[added[0]]), self.insertion_rank(records[added[-1]])
        if self._tail is not None and first <= self._tail:
            self._ordered = None
            return
        self._ordered.extend(added)
        self._tail = last

    def ordered(self) -> list[str]:
        """All ids in insertion order. The list is the store's: read it under the
        collection's lock, and do not change it."""
        records = self.records
        if self._ordered is None:
            self._ordered = sorted(records, key=lambda i: self.insertion_rank(records[i]))
            self._tail = self.insertion_rank(records[self._ordered[-1]]) if self._ordered else None
            self._gone = set()
        elif self._gone:
            gone, self._gone = self._gone, set()
            self._ordered = [i for i in self._ordered if i not in gone]
        return self._ordered

    def insertion_ranks(self, keys: Iterable[int]) -> dict[int, int]:
        """Each key's place among ``keys`` in insertion order: ties in a search's scores go
        to the record inserted first, as in ``get``, on every replica."""
        records, by_key = self.records, self.by_key
        ranked = sorted(keys, key=lambda k: self.insertion_rank(records[by_key[k]]))
        return {k: place for place, k in enumerate(ranked)}

    def select(self, ids: list[str] | None, where: Metadata | None,
               where_document: Metadata | None,
               pending: dict[str, Mutation | None] | None = None) -> list[str]:
        """Ids matching the filters, in insertion order, as Chroma returns them.
        ``pending`` (a batch's earlier results, see ``resolve``) overlays the table: a
        filtered delete sees the writes queued before it in the same batch."""
        if ids is not None:
            found = [(r, i) for i in dict.fromkeys(ids) if (r := self.records.get(i)) is not None]
            found.sort(key=lambda ri: self.insertion_rank(ri[0]))
            chosen = [i for _, i in found]
        else:
            chosen = list(self.ordered())
        fields: dict[str, tuple[Metadata | None, str | None]] = {
            i: (self.records[i].metadata, self.records[i].document) for i in chosen}
        if pending:
            wanted = None if ids is None else set(ids)
            for i, m in pending.items():
                if m is None:
                    fields.pop(i, None)
                elif wanted is None or i in wanted:
                    fields[i] = (m.metadata, m.document)
            chosen = list(fields)
        if where is not None:
            pm = compile_where(where)
            chosen = [i for i in chosen if pm(fields[i][0])]
        if where_document is not None:
            pd = compile_where_document(where_document)
            chosen = [i for i in chosen if pd(fields[i][1])]
        return chosen

    def vectors(self, ids: list[str]) -> Matrix:
        if not ids or self.index is None:
            return np.zeros((0, self.spec.dimension or 0), dtype=np.float32)
        return self.index.get(self._keys(ids))

    def _keys(self, ids: list[str]) -> Keys:
        return np.fromiter((self.records[i].key for i in ids), dtype=np.uint64, count=len(ids))

    def get(self, req: GetRequest) -> list[str]:
        chosen = self.select(req.ids, req.where, req.where_document)
        start = req.offset or 0
        end = None if req.limit is None else start + req.limit
        return chosen[start:end]

    def search(self, queries: Matrix, n_results: int, ids: list[str] | None,
               where: Metadata | None, where_document: Metadata | None) -> Hits:
        self.check_dimension(queries)
        n_q = len(queries)
        if self.index is None or not self.records:
            return Hits([[] for _ in range(n_q)], [[] for _ in range(n_q)])
        filtered = ids is not None or where is not None or where_document is not None
        if filtered:
            chosen = self.select(ids, where, where_document)
            if not chosen:
                return Hits([[] for _ in range(n_q)], [[] for _ in range(n_q)])
            keys, dists = self.index.search_among(queries, self._keys(chosen), n_results)
            return Hits([[self.by_key[int(k)] for k in row] for row in keys],
                        [[float(d) for d in row] for row in dists])
        keys, dists, counts = self.index.search(queries, min(n_results, len(self.records)))
        return Hits([[self.by_key[int(k)] for k in keys[i, :counts[i]]] for i in range(n_q)],
                    [[float(d) for d in dists[i, :counts[i]]] for i in range(n_q)])
