"""``AsyncClient`` and ``Client``: Chroma's client API over the embedded engine (or any
backend, e.g. Kafka). The sync client runs the async one on a private event loop thread."""

from __future__ import annotations

import atexit
import logging
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import anyio.to_thread
from anyio.from_thread import BlockingPortal, start_blocking_portal

from consumers.embedding.embed import EmbeddingFunction, OpenCLIPEmbeddingFunction
from consumers.loading.load import DataLoader, ImageLoader
from consumers.validation.admin import default_space
from consumers.validation.validate import validate_collection_metadata
from consumers.write.batch import BatchConfig
from schemas.records import CollectionSpec
from streamer.client.backend import Backend
from streamer.client.collection import AsyncCollection, Collection
from streamer.client.engine import Engine
from streamer.client.search import sparse_of_schema

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_MODEL = "streamer-tiny"


class _Default:
    """Marks "argument not given" (Chroma's default embedding function), unlike None."""

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Any = _Default()
_BUILTINS: dict[str, Any] = {"open_clip": OpenCLIPEmbeddingFunction, "image_loader": ImageLoader}


def describe(obj: Any) -> dict[str, Any] | None:
    """A built-in's persisted identity (name + config); None for arbitrary callables."""
    name = getattr(type(obj), "name", None)
    if obj is None or name is None or not callable(name) or name() not in _BUILTINS:
        return None
    if not isinstance(obj, _BUILTINS[name()]):
        return None
    return {"name": name(), "config": obj.get_config()}


def rebuild(desc: dict[str, Any] | None) -> Any:
    if desc is None or desc.get("name") not in _BUILTINS:
        return None
    return _BUILTINS[desc["name"]].build_from_config(desc["config"])


class AsyncClient:
    def __init__(self, path: str | Path | None = None, *, backend: Backend | None = None,
                 batch: BatchConfig | None = None, fsync: bool = True,
                 checkpoint_every: int = 50_000) -> None:
        self._backend: Backend = backend or Engine(path, fsync=fsync, batch=batch,
                                                   checkpoint_every=checkpoint_every)
        self._started = backend is not None

    async def start(self) -> AsyncClient:
        if not self._started:
            self._started = True
            if isinstance(self._backend, Engine):
                await self._backend.start()
        return self

    async def close(self) -> None:
        await self._backend.close()

    async def __aenter__(self) -> AsyncClient:
        return await self.start()

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def _wrap(self, spec: CollectionSpec, embedding_function: Any,
                    data_loader: Any) -> AsyncCollection:
        def build() -> tuple[Any, Any]:
            ef = rebuild(spec.embedding_function) if embedding_function is DEFAULT \
                else embedding_function
            loader = rebuild(spec.data_loader) if data_loader is DEFAULT else data_loader
            return ef, loader
        # Building a loader resolves its roots on disk: on a thread, not on the loop.
        ef, loader = await anyio.to_thread.run_sync(build)
        return AsyncCollection(self._backend, spec, ef, loader)

    async def create_collection(self, name: str, embedding_function: Any = DEFAULT,
                                data_loader: DataLoader | None = None,
                                metadata: dict[str, Any] | None = None,
                                get_or_create: bool = False, *,
                                configuration: dict[str, Any] | None = None,
                                schema: Any = None) -> AsyncCollection:
        validate_collection_metadata(metadata)  # here too: not every metadata can cross a wire
        await self.start()
        # Chroma's default function (ONNX MiniLM) keeps the base class's l2; so does ours.
        space = default_space(configuration,
                              None if embedding_function is DEFAULT else embedding_function)
        if embedding_function is DEFAULT:  # its constructor looks up the built-in model's files
            embedding_function = await anyio.to_thread.run_sync(OpenCLIPEmbeddingFunction,
                                                                DEFAULT_MODEL)
        # Describing reads the disk (the weights' hash, a loader's roots): off the loop.
        ef_desc = await anyio.to_thread.run_sync(describe, embedding_function)
        loader_desc = await anyio.to_thread.run_sync(describe, data_loader)
        # chromadb's Schema validates its JSON against schema files it reads: off the loop too.
        sparse = await anyio.to_thread.run_sync(sparse_of_schema, schema)
        spec = await self._backend.create_collection(
            name, metadata=metadata, embedding_function=ef_desc,
            data_loader=loader_desc, get_or_create=get_or_create,
            space=space,
            sparse=sparse, hnsw=(configuration or {}).get("hnsw"))
        return AsyncCollection(self._backend, spec, embedding_function, data_loader)

    async def get_collection(self, name: str, embedding_function: Any = DEFAULT,
                             data_loader: Any = DEFAULT) -> AsyncCollection:
        await self.start()
        return await self._wrap(await self._backend.get_collection(name), embedding_function,
                                data_loader)

    async def get_or_create_collection(self, name: str, embedding_function: Any = DEFAULT,
                                       data_loader: DataLoader | None = None,
                                       metadata: dict[str, Any] | None = None, *,
                                       configuration: dict[str, Any] | None = None,
                                       schema: Any = None) -> AsyncCollection:
        return await self.create_collection(name, embedding_function, data_loader, metadata,
                                            get_or_create=True, configuration=configuration,
                                            schema=schema)

    async def list_collections(self, limit: int | None = None,
                               offset: int | None = None) -> list[AsyncCollection]:
        await self.start()
        return [await self._wrap(s, DEFAULT, DEFAULT)
                for s in await self._backend.list_collections(limit, offset)]

    async def delete_collection(self, name: str) -> None:
        await self.start()
        await self._backend.delete_collection(name)

    async def count_collections(self) -> int:
        return len(await self.list_collections())

    def get_max_batch_size(self) -> int:
        return self._backend.max_batch_size


class Client:
    """Synchronous client, like ``chromadb.Client()`` / ``PersistentClient(path)``."""

    def __init__(self, path: str | Path | None = None, *, _async: AsyncClient | None = None,
                 **kwargs: Any) -> None:
        self._stack = ExitStack()
        self._portal: BlockingPortal = self._stack.enter_context(start_blocking_portal())
        self._async = _async if _async is not None else AsyncClient(path, **kwargs)
        self._closed = False
        try:
            self._portal.call(self._async.start)
        except BaseException:
            self._stack.close()
            raise
        atexit.register(self.close)

    def _call(self, factory: Callable[[], Awaitable[T]]) -> T:
        return self._portal.call(factory)

    def close(self) -> None:
        """Drain queued writes, checkpoint and release the path (also run at exit)."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        try:
            self._portal.call(self._async.close)
        finally:
            self._stack.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _sync(self, coll: AsyncCollection) -> Collection:
        return Collection(coll, self._call)

    def create_collection(self, name: str, embedding_function: Any = DEFAULT,
                          data_loader: DataLoader | None = None,
                          metadata: dict[str, Any] | None = None,
                          get_or_create: bool = False, *,
                          configuration: dict[str, Any] | None = None,
                          schema: Any = None) -> Collection:
        return self._sync(self._call(lambda: self._async.create_collection(
            name, embedding_function, data_loader, metadata, get_or_create,
            configuration=configuration, schema=schema)))

    def get_collection(self, name: str, embedding_function: Any = DEFAULT,
                       data_loader: Any = DEFAULT) -> Collection:
        return self._sync(self._call(lambda: self._async.get_collection(
            name, embedding_function, data_loader)))

    def get_or_create_collection(self, name: str, embedding_function: Any = DEFAULT,
                                 data_loader: DataLoader | None = None,
                                 metadata: dict[str, Any] | None = None, *,
                                 configuration: dict[str, Any] | None = None,
                                 schema: Any = None) -> Collection:
        return self.create_collection(name, embedding_function, data_loader, metadata, True,
                                      configuration=configuration, schema=schema)

    def list_collections(self, limit: int | None = None,
                         offset: int | None = None) -> list[Collection]:
        return [self._sync(c) for c in self._call(lambda: self._async.list_collections(limit,
                                                                                     offset))]

    def delete_collection(self, name: str) -> None:
        self._call(lambda: self._async.delete_collection(name))

    def count_collections(self) -> int:
        return self._call(self._async.count_collections)

    def get_max_batch_size(self) -> int:
        return self._async.get_max_batch_size()


__all__ = ["AsyncClient", "Client", "EmbeddingFunction"]
