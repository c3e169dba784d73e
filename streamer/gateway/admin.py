"""Collection admin over the websocket: ``create_collection`` with built-in embedding
functions and loaders named by ``{"name", "config"}`` (run server-side, like the Python
client's built-ins over Kafka), and ``delete_collection``. Both need write access."""

from __future__ import annotations

from typing import Any

import anyio.to_thread

from schemas.errors import InvalidArgumentError, SchemaError
from streamer.client.backend import Backend
from streamer.client.clients import DEFAULT_MODEL, describe, rebuild
from streamer.gateway.auth import Grant

ADMIN_OPS = ("create_collection", "delete_collection")
DEFAULT_EMBEDDING = {"name": "open_clip", "config": {"model_name": DEFAULT_MODEL}}


async def collection_admin(backend: Backend, ev: dict[str, Any], grant: Grant) -> Any:
    name = ev.get("name")
    if not isinstance(name, str):
        raise SchemaError("Field 'name' must be a string")
    grant.check("w", name)
    if ev["op"] == "delete_collection":
        await backend.delete_collection(name)
        return None
    metadata = ev.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise SchemaError("Field 'metadata' must be an object")
    # Building a loader resolves its roots on disk: off the loop.
    embedding = await anyio.to_thread.run_sync(
        _builtin, ev.get("embedding_function", DEFAULT_EMBEDDING), "embedding_function")
    loader = await anyio.to_thread.run_sync(_builtin, ev.get("data_loader"), "data_loader")
    spec = await backend.create_collection(
        name, metadata=metadata, embedding_function=embedding, data_loader=loader,
        get_or_create=bool(ev.get("get_or_create", False)), sparse=ev.get("sparse"))
    return spec.to_dict()


def _builtin(desc: Any, what: str) -> dict[str, Any] | None:
    """A built-in embedding function or loader named by the client, normalised to the full
    config the Python client would store; anything else cannot run server-side."""
    if desc is None:
        return None
    if not isinstance(desc, dict) or not isinstance(desc.get("config", {}), dict):
        raise SchemaError(f"Field {what!r} must be {{'name', 'config'}}")
    try:
        built = rebuild({"name": desc.get("name"), "config": desc.get("config", {})})
    except TypeError as exc:
        raise InvalidArgumentError(f"Bad {what} config: {exc}") from exc
    described = describe(built)
    if described is None:
        raise InvalidArgumentError(f"Unknown {what} {desc.get('name')!r}: a server runs only "
                                   "the built-ins open_clip and image_loader")
    return described
