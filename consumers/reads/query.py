"""The query stage: embed query inputs (batched on the model thread), search the index
under the collection lock, and shape results exactly as Chroma returns them."""

from __future__ import annotations

from concurrent.futures import Executor
from typing import Any

import numpy as np

from consumers.embedding.embed import EmbeddingFunction
from consumers.embedding.embedq import embed_query
from consumers.loading.load import DataLoader, load_images
from consumers.storage.catalog import CollectionState
from schemas.records import GetRequest, IncludeItem, QueryRequest, Vector


async def query_vectors(req: QueryRequest, embedder: EmbeddingFunction | None,
                        loader: DataLoader | None, embed_thread: Executor) -> list[Vector]:
    if req.embeddings is not None:
        return req.embeddings
    inputs: list[Any]
    if req.texts is not None:
        inputs = list(req.texts)
    elif req.images is not None:
        inputs = list(req.images)
    else:
        inputs = list(await load_images(loader, req.uris or []))
    assert embedder is not None
    return await embed_query(embed_thread, embedder, inputs)


def _records(state: CollectionState, ids: list[str], include: list[IncludeItem]) -> dict[str, Any]:
    recs = [state.store.records[i] for i in ids]
    return {
        "documents": [r.document for r in recs] if "documents" in include else None,
        "metadatas": [r.metadata for r in recs] if "metadatas" in include else None,
        "uris": [r.uri for r in recs] if "uris" in include else None,
        "embeddings": state.store.vectors(ids) if "embeddings" in include else None,
    }


def get_result(state: CollectionState, req: GetRequest) -> dict[str, Any]:
    ids = state.store.get(req)
    fields = _records(state, ids, req.include)
    return {"ids": ids, "embeddings": fields["embeddings"], "documents": fields["documents"],
            "uris": fields["uris"], "data": None, "metadatas": fields["metadatas"],
            "included": list(req.include)}


def search_result(state: CollectionState, req: QueryRequest,
                  vectors: list[Vector]) -> dict[str, Any]:
    state.store.check_dimension(vectors)  # a typed error, not usearch's ValueError
    queries = np.vstack(vectors).astype(np.float32, copy=False)
    hits = state.store.search(queries, req.n_results, req.ids, req.where, req.where_document)
    per_query = [_records(state, ids, req.include) for ids in hits.ids]
    inc = req.include

    def column(name: str) -> list[Any] | None:
        return [f[name] for f in per_query] if name in inc else None

    return {"ids": hits.ids, "embeddings": column("embeddings"), "documents": column("documents"),
            "uris": column("uris"), "data": None, "metadatas": column("metadatas"),
            "distances": hits.distances if "distances" in inc else None, "included": list(inc)}
