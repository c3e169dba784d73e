"""Chroma's argument validation, message for message, turning user arguments into the
normalised requests of ``schemas.records``. Runs before anything is written, client-side
and again server-side for events that arrive from the wire."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np

from consumers.loading.decode import encoded
from consumers.loading.load import NO_LOADER
from consumers.validation.where import RegexSyntaxError, validate_where, validate_where_document
from schemas.errors import (
    DuplicateIDError,
    InvalidArgumentError,
    InvalidTypeError,
    StreamerError,
)
from schemas.records import (
    DEFAULT_GET_INCLUDE,
    DEFAULT_QUERY_INCLUDE,
    INCLUDE_ITEMS,
    DeleteRequest,
    EncodedImage,
    GetRequest,
    ImageInput,
    IncludeItem,
    Op,
    QueryRequest,
    Vector,
    WriteItem,
    WriteRequest,
)

T = TypeVar("T")
NO_EMBEDDING_FUNCTION = ("You must provide an embedding function to compute embeddings."
                         "https://docs.trychroma.com/guides/embeddings")
_EMBEDDABLE = "documents, images, uris"  # Chroma joins a set here; we fix the order
ONE_SOURCE = f"Exactly one of {_EMBEDDABLE} must be provided"
ALREADY_EMBEDDED = "Attempting to embed a record that already has embeddings."
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]$")


@contextmanager
def context(method: str) -> Iterator[None]:
    """Append `` in <method>.`` to validation messages, as Chroma's validation_context does."""
    try:
        yield
    except StreamerError as exc:
        if not isinstance(exc, RegexSyntaxError):
            exc.args = (f"{exc.message} in {method}.", *exc.args[1:])
        raise


def validate_collection_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise InvalidArgumentError(
            "Validation error: name: Expected a name containing 3-512 characters from "
            "[a-zA-Z0-9._-], starting and ending with a character in [a-zA-Z0-9]. "
            f"Got: {name}")
    return name


def one_to_many(target: T | list[T] | None) -> list[T] | None:
    if target is None:
        return None
    if isinstance(target, list):
        return target
    return [target]


def normalize_embeddings(target: Any) -> list[Vector] | None:
    if target is None:
        return None
    if len(target) == 0:
        raise InvalidArgumentError(
            f"Expected Embeddings to be non-empty list or numpy array, got {target}")
    if isinstance(target, np.ndarray):
        if target.ndim == 1:
            return [np.asarray(target, dtype=np.float32)]
        if target.ndim == 2:
            return list(np.asarray(target, dtype=np.float32))
    elif isinstance(target, list):
        first = target[0]
        if isinstance(first, (int, float)) and not isinstance(first, bool):
            return [np.asarray(target, dtype=np.float32)]
        if isinstance(first, np.ndarray):
            return [_embedding_array(e) for e in target]
        if isinstance(first, list) and first and isinstance(first[0], (int, float)) \
                and not isinstance(first[0], bool):
            return [_embedding_array(row) for row in target]
    raise InvalidArgumentError(
        "Expected embeddings to be a list of floats or ints, a list of lists, a numpy array, "
        f"or a list of numpy arrays, got {target}")


def _embedding_array(row: Any) -> Vector:
    arr = np.asarray(row)
    if arr.ndim == 0:
        raise InvalidArgumentError(f"Expected a 1-dimensional array, got a 0-dimensional array {arr}")
    if arr.dtype.kind not in "iuf":
        raise InvalidArgumentError(
            "Expected each value in the embedding to be a int or float, got an embedding with "
            f"{arr.dtype} - {arr}")
    return arr.astype(np.float32, copy=False)


def validate_ids(ids: Any) -> list[str]:
    if not isinstance(ids, list):
        raise InvalidArgumentError(f"Expected IDs to be a list, got {type(ids).__name__} as IDs")
    if len(ids) == 0:
        raise InvalidArgumentError(f"Expected IDs to be a non-empty list, got {len(ids)} IDs")
    seen: set[str] = set()
    dups: list[str] = []
    for id_ in ids:
        if not isinstance(id_, str):
            raise InvalidArgumentError(f"Expected ID to be a str, got {id_}")
        if id_ in seen:
            dups.append(id_)
        seen.add(id_)
    if dups:
        unique = list(dict.fromkeys(dups))
        if len(unique) < 10:
            msg = f"Expected IDs to be unique, found duplicates of: {', '.join(unique)}"
        else:
            ex = unique[:11]
            msg = (f"Expected IDs to be unique, found {len(unique)} duplicated IDs: "
                   f"{', '.join(ex[:5])}, ..., {', '.join(ex[-5:])}")
        raise DuplicateIDError(msg)
    return ids


EMPTY_COLLECTION_METADATA = "Validation error: metadata: Metadata cannot be empty"


def validate_collection_metadata(metadata: Any) -> None:
    """A collection's metadata: None or a valid non-empty dict, with Chroma's message."""
    if isinstance(metadata, dict) and not metadata:
        raise InvalidArgumentError(EMPTY_COLLECTION_METADATA)
    validate_metadata(metadata)


def validate_metadata(metadata: Any) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        raise InvalidArgumentError(
            f"Expected metadata to be a dict or None, got {type(metadata).__name__} as metadata")
    if len(metadata) == 0:
        raise InvalidArgumentError(
            f"Expected metadata to be a non-empty dict, got {len(metadata)} metadata attributes")
    for key, value in metadata.items():
        if key == "chroma:document":
            raise InvalidArgumentError(
                "Expected metadata to not contain the reserved key chroma:document")
        if not isinstance(key, str):
            raise InvalidTypeError(
                f"Expected metadata key to be a str, got {key} which is a {type(key).__name__}")
        if isinstance(value, list):
            if not value:
                raise InvalidArgumentError(
                    f"Expected metadata list value for key '{key}' to be non-empty")
            if not all(isinstance(v, (str, int, float, bool)) and type(v) is type(value[0])
                       for v in value):
                raise InvalidArgumentError(
                    f"Expected metadata list value for key '{key}' to contain only str, int, "
                    f"float, or bool and all elements must be the same type, got {value}")
        elif value is not None and not isinstance(value, (str, int, float, bool)):
            raise InvalidArgumentError(
                "Expected metadata value to be a str, int, float, bool, SparseVector, list, or "
                f"None, got {value} which is a {type(value).__name__}")


def _check_lengths(fields: dict[str, list[Any] | None]) -> None:
    lengths = {k: len(v) for k, v in fields.items() if v is not None}
    if not lengths:
        raise InvalidArgumentError(
            f"At least one of one of {', '.join(fields)} must be provided")
    zero = [k for k, n in lengths.items() if n == 0]
    if zero:
        raise InvalidArgumentError(f"Non-empty lists are required for {zero}")
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{k}: {n}" for k, n in lengths.items())
        raise InvalidArgumentError(f"Unequal lengths for fields: {detail}")


def _check_documents(documents: list[Any], nullable: bool) -> None:
    for doc in documents:
        if doc is None and nullable:
            continue
        if not isinstance(doc, str):
            raise InvalidArgumentError(f"Expected document to be a str, got {doc}")


def _check_images(images: list[Any]) -> list[ImageInput]:
    """Numpy arrays as Chroma takes them, or an image file's bytes (JPEG, PNG, WebP) kept
    encoded until the model needs the pixels."""
    for image in images:
        if not isinstance(image, np.ndarray | bytes | bytearray | memoryview | EncodedImage):
            raise InvalidArgumentError(f"Expected image to be a numpy array, got {image}")
    return [encoded(image) for image in images]


def _check_uris(uris: list[Any]) -> None:
    for uri in uris:
        if not isinstance(uri, str):
            raise InvalidArgumentError(f"Expected URI to be a str, got {uri}")


def _exactly_one(*fields: list[Any] | None) -> None:
    if sum(f is not None for f in fields) != 1:
        raise InvalidArgumentError(ONE_SOURCE)


def prepare_write(op: Op, *, ids: Any, embeddings: Any = None, metadatas: Any = None,
                  documents: Any = None, images: Any = None, uris: Any = None,
                  has_loader: bool, has_embedding_function: bool) -> WriteRequest:
    """Validate an add/update/upsert call; raises before anything is written."""
    with context(op.value):
        id_list = one_to_many(ids)
        vecs = normalize_embeddings(embeddings)
        metas = one_to_many(metadatas)
        docs = one_to_many(documents)
        imgs = one_to_many(images)
        uri_list = one_to_many(uris)
        _check_lengths({"ids": id_list, "embeddings": vecs, "metadatas": metas,
                        "documents": docs, "images": imgs, "uris": uri_list})
        if docs is not None:
            _check_documents(docs, nullable=vecs is not None)
        if imgs is not None:
            imgs = _check_images(imgs)
        if uri_list is not None:
            _check_uris(uri_list)
        validated_ids = validate_ids(id_list)
        if metas is not None:
            for m in metas:
                validate_metadata(m)
        # One modality per record: never two sources, whether or not we embed them.
        if sum(f is not None for f in (docs, imgs, uri_list)) > 1:
            raise InvalidArgumentError(ONE_SOURCE)
        if vecs is not None and imgs is not None:
            raise InvalidArgumentError(ALREADY_EMBEDDED)
        # A metadata-only update embeds nothing; everything else needs one source to embed.
        metadata_only = op is Op.UPDATE and docs is None and imgs is None and uri_list is None
        if vecs is None and not metadata_only:
            _exactly_one(docs, imgs, uri_list)
            if uri_list is not None and not has_loader:
                raise InvalidArgumentError(NO_LOADER)
            if not has_embedding_function:
                raise InvalidArgumentError(NO_EMBEDDING_FUNCTION)
        n = len(validated_ids)
        items = [WriteItem(
            id=validated_ids[i],
            embedding=vecs[i] if vecs is not None else None,
            document=docs[i] if docs is not None else None,
            image=imgs[i] if imgs is not None else None,
            uri=uri_list[i] if uri_list is not None else None,
            metadata=metas[i] if metas is not None else None,
        ) for i in range(n)]
        if vecs is not None:
            check_same_dimension(vecs)
        return WriteRequest(op=op, items=items)


def check_same_dimension(vecs: list[Vector]) -> None:
    dims = {v.shape[0] for v in vecs}
    if len(dims) > 1:
        raise InvalidArgumentError(
            f"Expected all embeddings to have the same dimension, got {sorted(dims)}")


def validate_include(include: Any, disallowed: tuple[str, ...] = ()) -> list[IncludeItem]:
    if not isinstance(include, list):
        raise InvalidArgumentError(f"Expected include to be a list, got {include}")
    for item in include:
        if not isinstance(item, str):
            raise InvalidArgumentError(f"Expected include item to be a str, got {item}")
        if item not in INCLUDE_ITEMS:
            raise InvalidArgumentError(
                f"Expected include item to be one of {', '.join(INCLUDE_ITEMS)}, got {item}")
        if item in disallowed:
            raise InvalidArgumentError(
                f"Include item cannot be one of {', '.join(disallowed)}, got {item}")
    return list(include)


def _with_uris_for_data(include: list[IncludeItem], has_loader: bool) -> list[IncludeItem]:
    if "data" in include:
        if not has_loader:
            raise InvalidArgumentError(NO_LOADER)
        if "uris" not in include:
            include = [*include, "uris"]
    return include


def validate_n_results(n_results: Any) -> int:
    if not isinstance(n_results, int) or isinstance(n_results, bool):
        raise InvalidArgumentError(
            f"Expected requested number of results to be a int, got {n_results}")
    if n_results <= 0:
        raise InvalidTypeError(
            f"Number of requested results {n_results}, cannot be negative, or zero.")
    return n_results


def prepare_get(*, ids: Any = None, where: Any = None, where_document: Any = None,
                limit: Any = None, offset: Any = None, include: Any = None,
                has_loader: bool) -> GetRequest:
    with context("get"):
        id_list = one_to_many(ids)
        if id_list is not None:
            validate_ids(id_list)
        validate_filters(where, where_document)
        inc = validate_include(list(DEFAULT_GET_INCLUDE) if include is None else include,
                               disallowed=("distances",))
        inc = _with_uris_for_data(inc, has_loader)
        for name, value in (("limit", limit), ("offset", offset)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < 0):
                raise InvalidTypeError(f"{name} must be a non-negative integer")
        return GetRequest(ids=id_list, where=where, where_document=where_document,
                          limit=limit, offset=offset, include=inc)


def prepare_query(*, query_embeddings: Any = None, query_texts: Any = None,
                  query_images: Any = None, query_uris: Any = None, ids: Any = None,
                  n_results: Any = 10, where: Any = None, where_document: Any = None,
                  include: Any = None, has_loader: bool,
                  has_embedding_function: bool) -> QueryRequest:
    with context("query"):
        vecs = normalize_embeddings(query_embeddings)
        texts = one_to_many(query_texts)
        imgs = one_to_many(query_images)
        uri_list = one_to_many(query_uris)
        _check_lengths({"embeddings": vecs, "documents": texts, "images": imgs, "uris": uri_list})
        if texts is not None:
            _check_documents(texts, nullable=False)
        if imgs is not None:
            imgs = _check_images(imgs)
        if uri_list is not None:
            _check_uris(uri_list)
        validate_filters(where, where_document)
        inc = validate_include(list(DEFAULT_QUERY_INCLUDE) if include is None else include)
        validate_n_results(n_results)
        if vecs is not None:
            if any(f is not None for f in (texts, imgs, uri_list)):
                raise InvalidArgumentError(
                    "Attempting to embed a record that already has embeddings.")
            check_same_dimension(vecs)
        else:
            _exactly_one(texts, imgs, uri_list)
            if uri_list is not None and not has_loader:
                raise InvalidArgumentError(NO_LOADER)
            if not has_embedding_function:
                raise InvalidArgumentError(NO_EMBEDDING_FUNCTION)
        inc = _with_uris_for_data(inc, has_loader)
        id_list = one_to_many(ids)
        if id_list:  # Chroma answers a query among no ids with empty results
            validate_ids(id_list)
        return QueryRequest(embeddings=vecs, texts=texts, images=imgs, uris=uri_list,
                            ids=id_list, n_results=n_results, where=where,
                            where_document=where_document, include=inc)


def prepare_delete(*, ids: Any = None, where: Any = None, where_document: Any = None,
                   limit: Any = None) -> DeleteRequest:
    with context("delete"):
        if ids is None and where is None and where_document is None:
            raise InvalidArgumentError(
                "At least one of ids, where, or where_document must be provided")
        if limit is not None:
            if not isinstance(limit, int) or isinstance(limit, bool):
                raise InvalidTypeError("limit must be a non-negative integer")
            if limit < 0:
                raise InvalidArgumentError("limit must be a non-negative integer")
            if where is None and where_document is None:
                raise InvalidArgumentError(
                    "limit can only be specified when a where or where_document clause is provided")
        id_list = one_to_many(ids)
        if id_list is not None:
            validate_ids(id_list)
        validate_filters(where, where_document)
        return DeleteRequest(ids=id_list, where=where, where_document=where_document, limit=limit)


def validate_filters(where: Any, where_document: Any) -> None:
    if where is not None:
        validate_where(where)
    if where_document is not None:
        validate_where_document(where_document)

