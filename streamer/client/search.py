"""``Collection.search``'s client half: Chroma's ``Search`` objects (or their dict forms) to
the wire's dicts, string queries embedded here as Chroma's client embeds them (the dense key
with the collection's embedding function, a sparse key with its schema's function; the IDF is
applied where the index lives), a ``Schema``'s sparse index to ``CollectionSpec.sparse``, and
``SearchResult`` with Chroma's ``rows()``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from consumers.embedding.bm25 import describe_sparse, sparse_function
from schemas.errors import InvalidArgumentError
from schemas.records import CollectionSpec

EmbedText = Callable[[str], Awaitable[list[float]]]


class SearchResult(dict[str, Any]):
    """Chroma's column-major search response: ``ids``, ``documents``, ``embeddings``,
    ``metadatas``, ``scores`` and ``select``, one entry per search."""

    def rows(self) -> list[list[dict[str, Any]]]:
        """Per search, one dict per hit with ``id`` and the fields that have values."""
        out = []
        n = len(self.get("ids", []))
        columns = {name: self.get(plural) or [None] * n for name, plural in (
            ("document", "documents"), ("embedding", "embeddings"),
            ("metadata", "metadatas"), ("score", "scores"))}
        for s, ids in enumerate(self["ids"]):
            rows = []
            for r, id_ in enumerate(ids):
                row: dict[str, Any] = {"id": id_}
                for name, column in columns.items():
                    value = column[s][r] if column[s] is not None else None
                    if value is not None:
                        row[name] = value
                rows.append(row)
            out.append(rows)
        return out


def sparse_of_schema(schema: Any) -> dict[str, Any] | None:
    """The sparse vector index a chromadb ``Schema`` (or its JSON form) declares."""
    if schema is None:
        return None
    doc = schema.serialize_to_json() if hasattr(schema, "serialize_to_json") else schema
    if not isinstance(doc, dict):
        raise InvalidArgumentError(f"Expected a Schema, got {type(schema).__name__}")
    found = []
    for key, types in (doc.get("keys") or {}).items():
        index = ((types or {}).get("sparse_vector") or {}).get("sparse_vector_index") or {}
        if index.get("enabled"):
            found.append((key, index.get("config") or {}))
    if not found:
        return None
    if len(found) > 1:
        raise InvalidArgumentError("Only one sparse vector index is allowed per collection")
    key, config = found[0]
    ef = config.get("embedding_function") or {}
    if ef.get("type") == "unknown" or "name" not in ef:
        raise InvalidArgumentError(
            f"Sparse vector index on {key!r} needs a known embedding function (chroma_bm25)")
    return {"key": key, "source_key": config.get("source_key"),
            "embedding_function": {"name": ef["name"], "config": ef.get("config") or {}},
            "bm25": bool(config.get("bm25", False))}


def sparse_config(key: str, function: Any, *, bm25: bool = True) -> dict[str, Any]:
    """``CollectionSpec.sparse`` from a key and a sparse function (chromadb's or ours)."""
    return {"key": key, "source_key": "#document", "embedding_function": describe_sparse(function),
            "bm25": bm25}


async def wire_searches(searches: Any, spec: CollectionSpec,
                        embed_text: EmbedText | None, *,
                        server_embeds: bool = False) -> list[dict[str, Any]]:
    """The dict forms of one search or many, string Knn queries embedded (those on
    ``#embedding`` left to the server when ``server_embeds``: a built-in runs there)."""
    items = searches if isinstance(searches, list) else [searches]
    if not items:
        raise InvalidArgumentError("Expected at least one search")
    out = []
    for item in items:
        doc = item.to_dict() if hasattr(item, "to_dict") else item
        if not isinstance(doc, dict):
            raise InvalidArgumentError(f"Expected a Search, got {type(item).__name__}")
        doc = dict(doc)
        if doc.get("rank") is not None:
            doc["rank"] = await _embed_rank(doc["rank"], spec, embed_text, server_embeds)
        out.append(doc)
    return out


async def _embed_rank(node: Any, spec: CollectionSpec, embed_text: EmbedText | None,
                      server_embeds: bool) -> Any:
    if isinstance(node, list):
        return [await _embed_rank(n, spec, embed_text, server_embeds) for n in node]
    if not isinstance(node, dict):
        return node
    if "$knn" in node and isinstance(node["$knn"], dict):
        knn = dict(node["$knn"])
        query = knn.get("query")
        key = knn.get("key", "#embedding")
        if isinstance(query, str) and not (server_embeds and key == "#embedding"):
            knn["query"] = await _embed_query(query, key, spec, embed_text)
        elif isinstance(query, np.ndarray):
            knn["query"] = query.tolist()
        elif query is not None and hasattr(query, "to_dict"):
            knn["query"] = query.to_dict()
        return {"$knn": knn}
    return {k: await _embed_rank(v, spec, embed_text, server_embeds) for k, v in node.items()}


async def _embed_query(text: str, key: str, spec: CollectionSpec,
                       embed_text: EmbedText | None) -> Any:
    if key == "#embedding":
        if embed_text is None:
            raise InvalidArgumentError(
                "You must provide an embedding function to compute embeddings.")
        return await embed_text(text)
    function = sparse_function((spec.sparse or {}).get("embedding_function")) \
        if spec.sparse is not None and spec.sparse.get("key") == key else None
    if function is None:
        raise InvalidArgumentError(
            f"Cannot embed string query for key '{key}': key not found in schema. Please "
            f"provide an embedded vector or configure an embedding function for this key in "
            f"the schema.")
    return function.encode(text).to_dict()
