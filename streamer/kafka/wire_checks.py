"""Server-side checks on events from the wire, which is untrusted: Chroma's rules (for a
write, shaped for the one record an event carries; for reads, the clients' validation run
again) and the configured limits (``Settings``), raised as typed errors before anything is
loaded, embedded or written."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from consumers.loading.decode import check_limits
from consumers.loading.load import NO_LOADER
from consumers.loading.remote import RemotePolicy, confine
from consumers.validation.validate import (
    ALREADY_EMBEDDED,
    NO_EMBEDDING_FUNCTION,
    ONE_SOURCE,
    context,
    prepare_delete,
    prepare_get,
    prepare_query,
    validate_metadata,
)
from schemas.errors import DataLoaderError, InvalidArgumentError, LimitExceededError
from schemas.events import parse_get, parse_query
from schemas.records import DeleteRequest, GetRequest, ImageInput, Op, QueryRequest, WriteItem
from streamer.settings import Settings

# Loader presence is checked where it matters (a URI to load), so the include/URI checks of
# Chroma's validation pass has_loader=True: "data" is served client-side from the URIs.
_LOADER_CHECKED_LATER = True


def check_image(image: ImageInput, settings: Settings, what: str) -> None:
    """Pixels from the array or file header and bytes as sent; nothing is decoded."""
    check_limits(image, max_pixels=settings.max_image_pixels,
                 max_bytes=settings.max_image_bytes, what=what)


def check_document(id_: str, document: str | None, settings: Settings) -> None:
    if document is not None and (size := len(document.encode())) > settings.max_document_bytes:
        raise LimitExceededError(f"Document of {id_} is {size} bytes, which exceeds "
                                 f"{settings.max_document_bytes} bytes")


def check_write(op: Op, item: WriteItem, settings: Settings, *, has_embedding_function: bool,
                has_loader: bool) -> None:
    """One write event, checked once. ``parse_write`` already refused wrong field types;
    this is Chroma's per-record rules with Chroma's messages, then the limits, then whether
    this collection can embed what the record brings."""
    with context(op.value):
        validate_metadata(item.metadata)
        sources = sum(x is not None for x in (item.document, item.image, item.uri))
        if sources > 1:  # one modality per record, embedded or not
            raise InvalidArgumentError(ONE_SOURCE)
        if item.embedding is not None and item.image is not None:
            raise InvalidArgumentError(ALREADY_EMBEDDED)
        if item.embedding is None and not sources and op is not Op.UPDATE:
            raise InvalidArgumentError(ONE_SOURCE)  # only a metadata update embeds nothing
    check_document(item.id, item.document, settings)
    if item.image is not None:
        check_image(item.image, settings, f"Record {item.id}")
    if item.embedding is None and sources:
        if item.uri is not None and not has_loader:
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
    return RemotePolicy.from_config({
        "allow": items(settings.remote_allow), "stores": settings.remote_stores or {},
        "allow_networks": items(settings.remote_allow_networks),
        "timeout_s": settings.remote_timeout_s, "retries": settings.remote_retries,
        "max_in_flight": settings.remote_max_in_flight})
