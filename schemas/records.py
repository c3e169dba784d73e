"""In-process contracts between pipeline stages: normalised write/read requests, stored
records and log mutations. Validation lives in ``consumers.validation.validate``; these are plain data."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

MetadataValue = str | int | float | bool | list[str] | list[int] | list[float] | list[bool]
Metadata = dict[str, Any]
Vector = npt.NDArray[np.float32]
Image = npt.NDArray[Any]
Where = dict[str, Any]
WhereDocument = dict[str, Any]

Space = Literal["cosine", "l2", "ip"]
IndexDType = Literal["f32", "f16", "i8"]
IncludeItem = Literal["documents", "embeddings", "metadatas", "distances", "uris", "data"]
INCLUDE_ITEMS: tuple[IncludeItem, ...] = (
    "documents", "embeddings", "metadatas", "distances", "uris", "data")
DEFAULT_QUERY_INCLUDE: tuple[IncludeItem, ...] = ("metadatas", "documents", "distances")
DEFAULT_GET_INCLUDE: tuple[IncludeItem, ...] = ("metadatas", "documents")


@dataclass(frozen=True, slots=True)
class EncodedImage:
    """An image still in its compact wire form, decoded only where it is embedded
    (``consumers.loading.decode``): an encoded file (JPEG, PNG, WebP...; ``codec`` "file") or a
    losslessly compressed pixel array (``codec`` "zstd" or "delta-zstd", with its dtype
    and shape)."""

    data: bytes
    codec: str = "file"
    dtype: str | None = None
    shape: tuple[int, ...] | None = None


#: What a caller may pass as an image: pixels, or an image file's bytes kept encoded.
ImageInput = Image | EncodedImage


class Op(StrEnum):
    ADD = "add"
    UPDATE = "update"
    UPSERT = "upsert"
    DELETE = "delete"


class Modality(StrEnum):
    """What a record's vector was computed from; a record has exactly one at a time."""

    TEXT = "text"
    IMAGE = "image"
    URI = "uri"
    EMBEDDING = "embedding"  # caller supplied the vector and no source


@dataclass(slots=True)
class SparseVector:
    """Chroma's ``SparseVector``: ascending term ids (uint32) and their weights (float32),
    optionally the tokens they stand for; on the wire Chroma's transport dict
    (``{"#type": "sparse_vector", "indices", "values", "tokens"?}``)."""

    indices: npt.NDArray[np.uint32]
    values: npt.NDArray[np.float32]
    labels: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"#type": "sparse_vector", "indices": self.indices.tolist(),
                               "values": self.values.tolist()}
        if self.labels is not None:
            out["tokens"] = list(self.labels)
        return out


@dataclass(slots=True)
class WriteItem:
    """One record of an add/update/upsert call after Chroma's validation.

    ``metadata`` None means "not given" (update keeps the old one). Exactly one of
    document/image/uri is set when the record is to be (re-)embedded."""

    id: str
    embedding: Vector | None = None
    document: str | None = None
    image: ImageInput | None = None
    uri: str | None = None
    metadata: Metadata | None = None
    #: (client clock ns, position in the call): insertion order across Kafka partitions
    order: tuple[int, int] | None = None
    #: set when a client embedded an image itself and sends only the vector
    embedded_from: Modality | None = None

    @property
    def modality(self) -> Modality | None:
        if self.embedded_from is not None:
            return self.embedded_from
        if self.image is not None:
            return Modality.IMAGE
        if self.uri is not None and self.document is None:
            return Modality.URI
        if self.document is not None:
            return Modality.TEXT
        if self.embedding is not None:
            return Modality.EMBEDDING
        return None


@dataclass(slots=True)
class WriteRequest:
    op: Op
    items: list[WriteItem]


@dataclass(slots=True)
class DeleteRequest:
    ids: list[str] | None = None
    where: Where | None = None
    where_document: WhereDocument | None = None
    limit: int | None = None


@dataclass(slots=True)
class GetRequest:
    ids: list[str] | None = None
    where: Where | None = None
    where_document: WhereDocument | None = None
    limit: int | None = None
    offset: int | None = None
    include: list[IncludeItem] = field(default_factory=lambda: list(DEFAULT_GET_INCLUDE))


@dataclass(slots=True)
class QueryRequest:
    """Exactly one of the query inputs is set; the others are None."""

    embeddings: list[Vector] | None = None
    texts: list[str] | None = None
    images: list[ImageInput] | None = None
    uris: list[str] | None = None
    ids: list[str] | None = None
    n_results: int = 10
    where: Where | None = None
    where_document: WhereDocument | None = None
    include: list[IncludeItem] = field(default_factory=lambda: list(DEFAULT_QUERY_INCLUDE))

    @property
    def size(self) -> int:
        for inputs in (self.embeddings, self.texts, self.images, self.uris):
            if inputs is not None:
                return len(inputs)
        return 0


@dataclass(slots=True)
class Record:
    """The current state of one id: what the modality-overwrite log says it is now."""

    key: int
    modality: Modality
    document: str | None
    uri: str | None
    metadata: Metadata | None
    #: the first insertion's (client clock ns, position in the call); ``get`` orders by it
    #: because Kafka applies one call's records in partition order. None (embedded mode):
    #: the key, assigned in apply order, is the insertion order.
    order: tuple[int, int] | None = None


@dataclass(slots=True)
class Mutation:
    """One entry of the modality-overwrite log: the full new state of an id (``put``) or
    its removal (``delete``). Full states, not deltas, make replay idempotent."""

    op: Literal["put", "delete"]
    id: str
    modality: Modality | None = None
    document: str | None = None
    uri: str | None = None
    metadata: Metadata | None = None
    vector: Vector | None = None
    seq: int = 0
    order: tuple[int, int] | None = None  # carried to the state topic and logged


@dataclass(slots=True)
class CollectionSpec:
    """A collection's persisted identity: name, metadata and how it embeds and loads.

    ``embedding_function``/``data_loader`` hold ``{"name": ..., "config": {...}}`` for the
    built-ins so a server can rebuild them, or None for callables that cannot cross a wire."""

    id: str
    name: str
    metadata: Metadata | None = None
    space: Space = "cosine"
    dtype: IndexDType = "f32"
    dimension: int | None = None
    embedding_function: dict[str, Any] | None = None
    data_loader: dict[str, Any] | None = None
    #: A sparse vector index Chroma's ``Schema`` declares: ``{"key", "source_key",
    #: "embedding_function": {"name", "config"}, "bm25"}``, or None.
    sparse: dict[str, Any] | None = None
    #: The HNSW parameters a Chroma ``configuration={"hnsw": {...}}`` set (Chroma's defaults
    #: for the rest, ``consumers.validation.hnsw``), or None.
    hnsw: dict[str, Any] | None = None
    #: The embedding function a Chroma client declared in its configuration (``{"type":
    #: "known", "name", "config"}`` or ``{"type": "legacy"}``): it embeds client-side, and its
    #: declaration comes back in ``configuration_json`` as Chroma's server keeps it.
    client_embedding_function: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "metadata": self.metadata, "space": self.space,
            "dtype": self.dtype, "dimension": self.dimension,
            "embedding_function": self.embedding_function, "data_loader": self.data_loader,
            "sparse": self.sparse, "hnsw": self.hnsw,
            "client_embedding_function": self.client_embedding_function,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CollectionSpec:
        return cls(
            id=d["id"], name=d["name"], metadata=d.get("metadata"),
            space=d.get("space", "cosine"), dtype=d.get("dtype", "f32"),
            dimension=d.get("dimension"), embedding_function=d.get("embedding_function"),
            data_loader=d.get("data_loader"), sparse=d.get("sparse"), hnsw=d.get("hnsw"),
            client_embedding_function=d.get("client_embedding_function"),
        )
