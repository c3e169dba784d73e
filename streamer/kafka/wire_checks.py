"""Server-side checks on events from the wire, which is untrusted: Chroma's validation (the
code the clients run before sending, run again) and the configured limits (``Settings``),
raised as typed errors before anything is loaded, embedded or written."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from consumers.remote import RemotePolicy, confine
from consumers.validate import (
    NO_EMBEDDING_FUNCTION,
    NO_LOADER,
    prepare_delete,
    prepare_get,
    prepare_query,
    prepare_write,
)
from schemas.errors import DataLoaderError, InvalidArgumentError, LimitExceededError
from schemas.events import parse_get, parse_query
from schemas.records import DeleteRequest, GetRequest, Image, Op, QueryRequest, WriteItem
from streamer.settings import Settings

# Loader presence is checked where it matters (a URI to load), so the include/URI checks of
# Chroma's validation pass has_loader=True: "data" is served client-side from the URIs.
_LOADER_CHECKED_LATER = True


def check_image(image: Image, settings: Settings, what: str) -> None:
    pixels = int(np.prod(image.shape[:2])) if image.ndim >= 2 else int(image.size)
    if pixels > settings.max_image_pixels:
        raise LimitExceededError(f"{what}: image of {pixels} pixels is over the limit of "
                                 f"{settings.max_image_pixels}")
    if image.nbytes > settings.max_image_bytes:
        raise LimitExceededError(f"{what}: image of {image.nbytes} bytes is over the limit of "
                                 f"{settings.max_image_bytes}")


def check_write(op: Op, item: WriteItem, settings: Settings, *, has_embedding_function: bool,
                has_loader: bool) -> None:
    def one(value: Any) -> list[Any] | None:
        return None if value is None else [value]

    prepare_write(op, ids=[item.id], embeddings=one(item.embedding), metadatas=one(item.metadata),
                  documents=one(item.document), images=one(item.image), uris=one(item.uri),
                  has_loader=_LOADER_CHECKED_LATER, has_embedding_function=True)
    if item.document is not None and len(item.document.encode()) > settings.max_document_bytes:
        raise LimitExceededError(
            f"Document of {item.id} exceeds {settings.max_document_bytes} bytes")
    if item.image is not None:
        check_image(item.image, settings, f"Record {item.id}")
    source = item.document is not None or item.image is not None or item.uri is not None
    if item.embedding is None and (source or op is not Op.UPDATE):
        if item.uri is not None and item.document is None and not has_loader:
            raise DataLoaderError(NO_LOADER)
        if not has_embedding_function:
            raise InvalidArgumentError(NO_EMBEDDING_FUNCTION)


def check_delete(req: DeleteRequest, settings: Settings) -> DeleteRequest:
    checked = prepare_delete(ids=req.ids, where=req.where, where_document=req.where_document,
                             limit=req.limit)
    if checked.ids is not None and len(checked.ids) > settings.max_batch_records:
        raise LimitExceededError(f"A delete of {len(checked.ids)} ids is over the limit of "
                                 f"{settings.max_batch_records} records")
    return checked


def checked_query(ev: dict[str, Any], settings: Settings, *,
                  has_embedding_function: bool) -> QueryRequest:
    raw = parse_query(ev)
    for i, image in enumerate(raw.images or []):  # before anything else looks at the pixels
        check_image(image, settings, f"Query image {i}")
    req = prepare_query(query_embeddings=raw.embeddings, query_texts=raw.texts,
                        query_images=raw.images, query_uris=raw.uris, ids=raw.ids,
                        n_results=raw.n_results, where=raw.where,
                        where_document=raw.where_document, include=ev.get("include"),
                        has_loader=_LOADER_CHECKED_LATER,
                        has_embedding_function=has_embedding_function)
    if req.n_results > settings.max_n_results:
        raise LimitExceededError(f"n_results {req.n_results} exceeds the limit of "
                                 f"{settings.max_n_results}")
    if req.size > settings.max_batch_records:
        raise LimitExceededError(f"{req.size} queries in one request are over the limit of "
                                 f"{settings.max_batch_records}")
    return req


def checked_get(ev: dict[str, Any]) -> GetRequest:
    raw = parse_get(ev)
    return prepare_get(ids=raw.ids, where=raw.where, where_document=raw.where_document,
                       limit=raw.limit, offset=raw.offset, include=ev.get("include"),
                       has_loader=_LOADER_CHECKED_LATER)


def server_loader(desc: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """An image loader's spec as this server runs it: the client's limits capped by the
    server's, and its roots confined to the server's ``data_roots`` when those are set."""
    config = dict(desc.get("config") or {})
    config["max_pixels"] = min(int(config.get("max_pixels", settings.max_image_pixels)),
                               settings.max_image_pixels)
    config["max_bytes"] = min(int(config.get("max_bytes", settings.max_image_bytes)),
                              settings.max_image_bytes)
    if settings.data_roots:
        allowed = [Path(r).resolve() for r in settings.data_roots.split(os.pathsep) if r]
        asked = config.get("roots")
        wanted = allowed if asked is None else [Path(r).resolve() for r in asked]
        # The intersection of two sets of directory trees: the deeper root of each nested pair.
        config["roots"] = sorted({str(w if w.is_relative_to(a) else a) for w in wanted
                                  for a in allowed if w.is_relative_to(a) or a.is_relative_to(w)})
    remote = confine(config.pop("remote", None), server_remote(settings))
    if remote is not None:
        config["remote"] = remote
    return {**desc, "config": config}


def server_remote(settings: Settings) -> RemotePolicy:
    """The server's remote policy from ``STREAMER_REMOTE_*``."""
    def items(raw: str | None) -> list[str]:
        return [p.strip() for p in (raw or "").split(",") if p.strip()]
    try:
        stores = orjson.loads(settings.remote_stores) if settings.remote_stores else {}
    except orjson.JSONDecodeError as exc:
        raise InvalidArgumentError(f"STREAMER_REMOTE_STORES is not JSON: {exc}") from None
    return RemotePolicy.from_config({
        "allow": items(settings.remote_allow), "stores": stores,
        "allow_networks": items(settings.remote_allow_networks),
        "timeout_s": settings.remote_timeout_s, "retries": settings.remote_retries,
        "max_in_flight": settings.remote_max_in_flight})
