"""What a client talks to: the in-process engine or the Kafka service. Both speak in the
normalised requests of ``schemas.records``; clients validate before calling."""

from __future__ import annotations

from typing import Any, Protocol

from consumers.embedding.embed import EmbeddingFunction
from consumers.loading.load import DataLoader
from schemas.records import CollectionSpec, DeleteRequest, GetRequest, QueryRequest, WriteRequest


class Backend(Protocol):
    #: True when the backend runs the user's Python embedding function / loader itself.
    in_process: bool
    #: Records one write may carry (Chroma's ``get_max_batch_size()``).
    max_batch_size: int

    async def create_collection(self, name: str, *, metadata: dict[str, Any] | None,
                                embedding_function: dict[str, Any] | None,
                                data_loader: dict[str, Any] | None,
                                get_or_create: bool, space: str = "l2",
                                sparse: dict[str, Any] | None = None,
                                hnsw: dict[str, Any] | None = None,
                                client_embedding_function: dict[str, Any] | None = None
                                ) -> CollectionSpec:
        """``space`` applies when the metadata names none (``consumers.validation.admin.default_space``);
        ``hnsw`` is a Chroma configuration's ``hnsw`` section."""
        ...

    async def get_collection(self, name: str) -> CollectionSpec: ...

    async def list_collections(self, limit: int | None = None,
                               offset: int | None = None) -> list[CollectionSpec]: ...

    async def delete_collection(self, name: str) -> None: ...

    async def modify_collection(self, name: str, *, new_name: str | None,
                                metadata: dict[str, Any] | None,
                                configuration: dict[str, Any] | None = None) -> CollectionSpec: ...

    async def write(self, spec: CollectionSpec, request: WriteRequest | DeleteRequest, *,
                    embedder: EmbeddingFunction | None, loader: DataLoader | None,
                    wait: bool) -> int:
        """Apply a write; returns how many records a delete removed (0 otherwise)."""
        ...

    async def get(self, spec: CollectionSpec, request: GetRequest) -> dict[str, Any]: ...

    async def query(self, spec: CollectionSpec, request: QueryRequest, *,
                    embedder: EmbeddingFunction | None,
                    loader: DataLoader | None) -> dict[str, Any]: ...

    async def search(self, spec: CollectionSpec,
                     searches: list[dict[str, Any]]) -> dict[str, Any]:
        """Chroma's Search API: the dict forms of ``Search``, string queries embedded."""
        ...

    async def count(self, spec: CollectionSpec) -> int: ...

    async def sync(self) -> None:
        """Return once every write this backend sent is applied where its reads are answered
        (Chroma's read-your-writes for callers that do not share this backend's session)."""
        ...

    async def close(self) -> None: ...
