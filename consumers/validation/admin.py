"""Collection admin rules, written once for the embedded engine and the Kafka service:
what create / get / get_or_create / modify / delete / list do, given the collections that
exist, with Chroma's checks and messages. Each rule is pure: it reads the current specs and
the caller's arguments and either raises Chroma's error or returns the spec to adopt. The
caller applies it (the engine installs it in its catalog, the service publishes it on the
collections topic, and every replica installs it), so both modes refuse and accept exactly
the same calls. A new rule or argument goes here, once."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, get_args

from consumers.validation.hnsw import CREATE_KEYS as HNSW_CREATE_KEYS
from consumers.validation.hnsw import modified
from consumers.validation.hnsw import parse as parse_hnsw
from consumers.validation.validate import (
    validate_collection_metadata,
    validate_collection_name,
    validate_metadata,
)
from schemas.errors import (
    InvalidArgumentError,
    InvalidTypeError,
    NotFoundError,
    UniqueConstraintError,
)
from schemas.records import CollectionSpec, IndexDType, Space

#: The collections as a rule sees them: name -> spec (a catalog snapshot).
Existing = Mapping[str, CollectionSpec]

SPACES: tuple[str, ...] = get_args(Space)
DTYPES: tuple[str, ...] = get_args(IndexDType)
SPACE_CHANGE = ("Changing the distance function of a collection once it is created is not "
                "supported currently.")


@dataclass(frozen=True)
class Created:
    """What ``create`` decided: the spec, and whether it is new (to install or publish)."""

    spec: CollectionSpec
    new: bool


def default_space(configuration: Mapping[str, Any] | None, embedding_function: Any) -> str:
    """Chroma's space when the metadata names none: the configuration's (``{"hnsw": {"space":
    ...}}`` or ``spann``), else the embedding function's ``default_space()`` (OpenCLIP's is
    cosine), else l2: no function, or the default one (``None`` here), as Chroma's default
    function keeps the base class's l2."""
    for section in ("hnsw", "spann"):
        space = ((configuration or {}).get(section) or {}).get("space")
        if space is not None:
            return str(space)
    named = getattr(embedding_function, "default_space", None)
    return str(named()) if callable(named) else "l2"


def index_settings(metadata: dict[str, Any] | None,
                   default: str = "l2") -> tuple[Space, IndexDType]:
    """The distance and index dtype a new collection asks for: its metadata's, else
    ``default`` (see ``default_space``)."""
    meta = metadata or {}
    space, dtype = meta.get("hnsw:space", default), meta.get("streamer:dtype", "f32")
    if space not in SPACES:
        raise InvalidArgumentError(f"Invalid hnsw:space {space!r}: use cosine, l2 or ip")
    if dtype not in DTYPES:
        raise InvalidArgumentError(f"Invalid streamer:dtype {dtype!r}: use f32, f16 or i8")
    return space, dtype


def lookup(existing: Existing, name: str) -> CollectionSpec:
    """``get_collection`` (and the existence check of ``delete_collection``)."""
    spec = existing.get(name)
    if spec is None:
        raise NotFoundError(f"Collection [{name}] does not exist")
    return spec


def listing(existing: Existing, limit: Any = None, offset: Any = None) -> list[CollectionSpec]:
    """``list_collections(limit, offset)``: a window of the collections, in catalog order."""
    for label, value in (("limit", limit), ("offset", offset)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise InvalidTypeError(f"{label} must be an integer, got {type(value).__name__}")
        if value is not None and value < 0:
            raise InvalidArgumentError(f"{label} must be a non-negative integer, got {value}")
    start = offset or 0
    specs = list(existing.values())
    return specs[start:] if limit is None else specs[start:start + limit]


def validate_sparse(sparse: dict[str, Any] | None) -> dict[str, Any] | None:
    """A sparse index declaration (``CollectionSpec.sparse``) the store can build: BM25 from
    the documents, on a metadata key that is not one of Chroma's reserved ``#`` keys."""
    if sparse is None:
        return None
    key, source = sparse.get("key"), sparse.get("source_key")
    if not isinstance(key, str) or not key or key.startswith("#"):
        raise InvalidArgumentError(f"A sparse vector index needs a metadata key, got {key!r}")
    if source != "#document":
        raise InvalidArgumentError(
            f"Sparse vector index on {key!r}: streamer builds it from #document, got {source!r}")
    ef = sparse.get("embedding_function")
    if not isinstance(ef, dict) or ef.get("name") != "chroma_bm25":
        raise InvalidArgumentError(
            f"Sparse vector index on {key!r} needs the chroma_bm25 embedding function")
    return {"key": key, "source_key": source,
            "embedding_function": {"name": "chroma_bm25", "config": dict(ef.get("config") or {})},
            "bm25": bool(sparse.get("bm25", True))}


def create(existing: Existing, name: str, *, metadata: dict[str, Any] | None,
           embedding_function: dict[str, Any] | None, data_loader: dict[str, Any] | None,
           get_or_create: bool, space: str = "l2",
           sparse: dict[str, Any] | None = None, hnsw: dict[str, Any] | None = None,
           client_embedding_function: dict[str, Any] | None = None) -> Created:
    """``create_collection`` / ``get_or_create_collection``: Chroma validates the metadata
    (refusing an empty one) and the name before it looks at what exists. ``space`` is the
    default when the metadata names none (see ``default_space``); ``hnsw`` is a
    configuration's ``hnsw`` section (checked here: a Kafka producer may send any)."""
    validate_collection_metadata(metadata)
    validate_collection_name(name)
    section = parse_hnsw(hnsw, HNSW_CREATE_KEYS)
    named_space = section.pop("space", None)  # a configuration's space beats the metadata's
    if client_embedding_function is not None and not isinstance(client_embedding_function, dict):
        raise InvalidArgumentError("invalid type: expected an embedding function configuration "
                                   f"object, got {client_embedding_function!r}")
    current = existing.get(name)
    if current is not None:
        if get_or_create:
            return Created(current, new=False)
        raise UniqueConstraintError(f"Collection [{name}] already exists")
    chosen, dtype = index_settings(metadata, space)
    if named_space is not None:
        chosen = named_space
    spec = CollectionSpec(id=str(uuid.uuid4()), name=name, metadata=metadata, space=chosen,
                          dtype=dtype, embedding_function=embedding_function,
                          data_loader=data_loader, sparse=validate_sparse(sparse),
                          hnsw=section or None,
                          client_embedding_function=client_embedding_function)
    return Created(spec, new=True)


def modify(existing: Existing, name: str, *, new_name: str | None,
           metadata: dict[str, Any] | None,
           configuration: dict[str, Any] | None = None) -> CollectionSpec:
    """``Collection.modify``: the spec after renaming, replacing the metadata and changing the
    HNSW parameters Chroma lets change (a copy; the current spec is untouched until the caller
    installs the result). An empty new name keeps the old one, as in Chroma."""
    spec = lookup(existing, name)
    validate_metadata(metadata)
    hnsw = modified(spec, configuration)
    if metadata is not None and metadata.get("hnsw:space", spec.space) != spec.space:
        raise InvalidArgumentError(SPACE_CHANGE)
    target = new_name or name
    if target != name:
        validate_collection_name(target)
        if target in existing:
            raise UniqueConstraintError(f"Collection [{target}] already exists")
    return replace(spec, name=target, metadata=spec.metadata if metadata is None else metadata,
                   hnsw=hnsw)
