"""``AsyncCollection`` and ``Collection``: Chroma's collection API over any backend.

Validation (``consumers.validation.validate``) runs here, before anything leaves the client, so a bad
call raises Chroma's error with nothing written; ``include=["data"]`` loads originals
through the collection's data loader, client-side, as Chroma does."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

import anyio.to_thread

from consumers.embedding.embed import EmbeddingFunction
from consumers.loading.load import DataLoader
from consumers.validation import hnsw
from consumers.validation.validate import (
    prepare_delete,
    prepare_get,
    prepare_query,
    prepare_write,
    validate_metadata,
)
from schemas.errors import LimitExceededError
from schemas.records import CollectionSpec, GetRequest, Op
from streamer.client.backend import Backend
from streamer.client.search import SearchResult, wire_searches


def configuration_json(spec: CollectionSpec) -> dict[str, Any]:
    """Chroma's ``configuration_json`` for a collection: its space and the HNSW parameters its
    index runs with (``consumers.validation.hnsw``); a built-in embedding function as Chroma
    names a known one (``{"type": "known", "name", "config"}``), else what a Chroma client
    declared, else None."""
    ef = spec.embedding_function
    return {"hnsw": hnsw.shown(spec), "spann": None,
            "embedding_function": spec.client_embedding_function if ef is None
            else {"type": "known", **ef}}


def _check_batch(size: int, backend: Backend) -> None:
    if size > backend.max_batch_size:
        raise LimitExceededError(
            f"Batch size of {size} is greater than max batch size of {backend.max_batch_size}")


async def _finish(result: dict[str, Any], include: Sequence[str], loader: DataLoader | None,
                  nested: bool) -> dict[str, Any]:
    if "data" in include and loader is not None and result["uris"] is not None:
        uris = result["uris"]
        # Loading decodes images: on a worker thread, never on the caller's event loop.
        result["data"] = await anyio.to_thread.run_sync(
            lambda: [list(loader(u)) for u in uris] if nested else list(loader(uris)))
    if "uris" not in include:
        result["uris"] = None
    return result


class AsyncCollection:
    def __init__(self, backend: Backend, spec: CollectionSpec,
                 embedding_function: EmbeddingFunction | None,
                 data_loader: DataLoader | None) -> None:
        self._backend = backend
        self._spec = replace(spec)  # a snapshot, as Chroma's collection holds its model
        self._embedding_function = embedding_function
        self._data_loader = data_loader

    @property
    def name(self) -> str:
        return self._spec.name

    @property
    def id(self) -> str:
        return self._spec.id

    @property
    def metadata(self) -> dict[str, Any] | None:
        return self._spec.metadata

    @property
    def configuration_json(self) -> dict[str, Any]:
        """Chroma's view of the index configuration (its tests read the space here)."""
        return configuration_json(self._spec)

    @property
    def configuration(self) -> dict[str, Any]:
        """Chroma's ``collection.configuration``: ``hnsw`` (space and parameters), ``spann``
        (None) and the embedding function object (LangChain reads ``["hnsw"]["space"]``)."""
        return {**configuration_json(self._spec), "embedding_function": self._embedding_function}

    @property
    def embedding_function(self) -> EmbeddingFunction | None:
        return self._embedding_function

    @property
    def data_loader(self) -> DataLoader | None:
        return self._data_loader

    def __repr__(self) -> str:
        return f"Collection(name={self.name})"

    def _value(self) -> tuple[Any, ...]:
        spec = self._spec
        # A built-in's description stands for it; any other callable compares itself.
        ef = spec.embedding_function or self._embedding_function
        loader = spec.data_loader or self._data_loader
        return spec.id, spec.name, spec.metadata, spec.space, spec.dtype, ef, loader

    def __eq__(self, other: object) -> bool:
        """By value, like Chroma's collections: two handles on the same collection, with the
        same metadata, configuration, embedding function and data loader, are equal."""
        return isinstance(other, AsyncCollection) and self._value() == other._value()

    def __hash__(self) -> int:
        return hash(self._spec.id)

    async def _write(self, op: Op, ids: Any, embeddings: Any, metadatas: Any, documents: Any,
                     images: Any, uris: Any, wait: bool) -> None:
        request = prepare_write(op, ids=ids, embeddings=embeddings, metadatas=metadatas,
                                documents=documents, images=images, uris=uris,
                                has_loader=self._data_loader is not None,
                                has_embedding_function=self._embedding_function is not None)
        _check_batch(len(request.items), self._backend)
        await self._backend.write(self._spec, request, embedder=self._embedding_function,
                                  loader=self._data_loader, wait=wait)

    async def add(self, ids: Any, embeddings: Any = None, metadatas: Any = None,
                  documents: Any = None, images: Any = None, uris: Any = None, *,
                  wait: bool = False) -> None:
        await self._write(Op.ADD, ids, embeddings, metadatas, documents, images, uris, wait)

    async def update(self, ids: Any, embeddings: Any = None, metadatas: Any = None,
                     documents: Any = None, images: Any = None, uris: Any = None, *,
                     wait: bool = False) -> None:
        await self._write(Op.UPDATE, ids, embeddings, metadatas, documents, images, uris, wait)

    async def upsert(self, ids: Any, embeddings: Any = None, metadatas: Any = None,
                     documents: Any = None, images: Any = None, uris: Any = None, *,
                     wait: bool = False) -> None:
        await self._write(Op.UPSERT, ids, embeddings, metadatas, documents, images, uris, wait)

    async def delete(self, ids: Any = None, where: Any = None, where_document: Any = None,
                     limit: Any = None, *, wait: bool = False) -> dict[str, int]:
        request = prepare_delete(ids=ids, where=where, where_document=where_document, limit=limit)
        deleted = await self._backend.write(self._spec, request, embedder=None, loader=None,
                                            wait=wait)
        return {"deleted": deleted}

    async def get(self, ids: Any = None, where: Any = None, limit: Any = None,
                  offset: Any = None, where_document: Any = None,
                  include: Any = None) -> dict[str, Any]:
        request = prepare_get(ids=ids, where=where, where_document=where_document, limit=limit,
                              offset=offset, include=include,
                              has_loader=self._data_loader is not None)
        result = await self._backend.get(self._spec, request)
        return await _finish(result, list(request.include), self._data_loader, nested=False)

    async def peek(self, limit: int = 10) -> dict[str, Any]:
        request = GetRequest(limit=limit, include=["embeddings", "documents", "metadatas"])
        return await _finish(await self._backend.get(self._spec, request), request.include,
                       None, nested=False)

    async def query(self, query_embeddings: Any = None, query_texts: Any = None,
                    query_images: Any = None, query_uris: Any = None, ids: Any = None,
                    n_results: Any = 10, where: Any = None, where_document: Any = None,
                    include: Any = None) -> dict[str, Any]:
        request = prepare_query(
            query_embeddings=query_embeddings, query_texts=query_texts,
            query_images=query_images, query_uris=query_uris, ids=ids, n_results=n_results,
            where=where, where_document=where_document, include=include,
            has_loader=self._data_loader is not None,
            has_embedding_function=self._embedding_function is not None)
        result = await self._backend.query(self._spec, request,
                                           embedder=self._embedding_function,
                                           loader=self._data_loader)
        return await _finish(result, list(request.include), self._data_loader, nested=True)

    async def search(self, searches: Any, read_level: Any = None) -> SearchResult:
        """Chroma's Search API (``chromadb.Search`` objects, or their dict forms): filter,
        dense and BM25 ranks and their arithmetic (``Rrf``), group, limit, select. Every
        ``read_level`` reads what this session wrote (there is no compaction lag to skip)."""
        ef = self._embedding_function

        async def embed_text(text: str) -> list[float]:
            assert ef is not None
            vectors = await anyio.to_thread.run_sync(ef, [text])
            return [float(x) for x in vectors[0]]
        # Over Kafka a built-in embedding function runs server-side, as for query_texts.
        server = not self._backend.in_process and self._spec.embedding_function is not None
        wire = await wire_searches(searches, self._spec, None if ef is None else embed_text,
                                   server_embeds=server)
        return SearchResult(await self._backend.search(self._spec, wire))

    async def count(self) -> int:
        return await self._backend.count(self._spec)

    async def modify(self, name: str | None = None, metadata: dict[str, Any] | None = None,
                     configuration: dict[str, Any] | None = None) -> None:
        """Chroma's: a new name, new metadata, and HNSW parameters Chroma lets change
        (``ef_search``, ...; ``consumers.validation.hnsw``)."""
        validate_metadata(metadata)  # here too: not every metadata can cross a wire
        self._spec = await self._backend.modify_collection(self._spec.name, new_name=name,
                                                           metadata=metadata,
                                                           configuration=configuration)


class Collection:
    """The synchronous face of ``AsyncCollection``, run through the client's event loop."""

    def __init__(self, inner: AsyncCollection,
                 call: Callable[[Callable[[], Awaitable[Any]]], Any]) -> None:
        self._inner = inner
        self._call = call

    def __repr__(self) -> str:
        return repr(self._inner)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Collection) and self._inner == other._inner

    def __hash__(self) -> int:
        return hash(self._inner)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def sync(*args: Any, **kwargs: Any) -> Any:
            return self._call(lambda: attr(*args, **kwargs))
        return sync

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def id(self) -> str:
        return self._inner.id

    @property
    def metadata(self) -> dict[str, Any] | None:
        return self._inner.metadata

    @property
    def configuration_json(self) -> dict[str, Any]:
        return self._inner.configuration_json

    @property
    def configuration(self) -> dict[str, Any]:
        return self._inner.configuration

    # Explicit: both are callables, which __getattr__ would wrap as methods.
    @property
    def embedding_function(self) -> EmbeddingFunction | None:
        return self._inner.embedding_function

    @property
    def data_loader(self) -> DataLoader | None:
        return self._inner.data_loader
