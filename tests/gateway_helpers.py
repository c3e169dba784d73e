"""An in-process gateway over the embedded engine, and helpers to compare its answers
(shared by tests/test_gateway.py, tests/test_search_page.py and others); the WebSocket client
and the test tokens are ``streamer.testing.gateway``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np

from consumers.write.batch import BatchConfig
from schemas.events import decode_array, decode_result
from schemas.records import CollectionSpec
from streamer.client.engine import Engine
from streamer.gateway.app import Gateway
from streamer.kafka.runtimes import Runtimes
from streamer.settings import Settings
from streamer.testing.gateway import TOKENS
from tests.helpers import HashEmbedding


class SlowEmbedding(HashEmbedding):
    """HashEmbedding that takes ``delay`` seconds per call, as a model would."""

    def __init__(self, delay: float, dim: int = 16) -> None:
        super().__init__(dim)
        self.delay = delay

    def __call__(self, input: Sequence[Any]) -> list[np.ndarray]:
        time.sleep(self.delay)
        return super().__call__(input)


def settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {"http_host": "127.0.0.1", "http_port": 0, "auth_tokens": TOKENS}
    return Settings(**{**base, **overrides})


@asynccontextmanager
async def embedded_gateway(path: Path, embedder: Any, *, by_name: dict[str, Any] | None = None,
                           batch: BatchConfig | None = None,
                           **overrides: Any) -> AsyncIterator[tuple[Engine, Gateway]]:
    """An engine and a gateway on 127.0.0.1:<free port>. Collections embed with ``embedder``
    (or ``by_name[collection]``): a test double cannot travel in a collection spec, so the
    gateway is told; data loaders are rebuilt from the spec as in production."""
    async with Engine(path, fsync=False, batch=batch) as engine:
        runtimes = Runtimes(engine.embed_thread)

        async def resolve(spec: CollectionSpec) -> tuple[Any, Any]:
            return (by_name or {}).get(spec.name, embedder), await runtimes.get(spec.data_loader)

        async with Gateway(settings(**overrides), engine, engine, resolve=resolve) as gateway:
            yield engine, gateway


def _arrays(value: Any) -> Any:
    if isinstance(value, list):
        return [_arrays(v) for v in value]
    return None if value is None else decode_array(value)


def decoded(result: dict[str, Any]) -> dict[str, Any]:
    result = decode_result(result)
    if result.get("data") is not None:
        result["data"] = _arrays(result["data"])
    return result


def assert_same(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got.keys() == want.keys()
    for key, value in want.items():
        if key in ("embeddings", "data") and value is not None:
            assert len(got[key]) == len(value)
            for g, w in zip(got[key], value):
                if isinstance(w, list):  # query data: per query, per hit (None without a URI)
                    assert [x is None for x in g] == [x is None for x in w]
                    g, w = [x for x in g if x is not None], [x for x in w if x is not None]
                np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
        elif key == "distances" and value is not None:
            np.testing.assert_allclose(np.asarray(got[key], dtype=float), np.asarray(value, dtype=float),
                                       atol=1e-6)
        else:
            assert got[key] == value, key
