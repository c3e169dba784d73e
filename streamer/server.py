"""Process wiring for ``streamer serve``: which long-lived components a process runs and in
what order they start and stop.

Each component has ``start()``, an idempotent ``stop()`` and is an async context manager;
they compose here on one ``AsyncExitStack``, so a failure while starting rolls back what
already started and shutdown runs in reverse order (intake first, the writer's checkpoint and
commit after its intake stopped)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from consumers.loading.fetch import set_process_limit
from consumers.write.batch import BatchConfig
from streamer.client.engine import Engine
from streamer.gateway.app import Gateway
from streamer.kafka.client import KafkaBackend
from streamer.kafka.service import Service
from streamer.kafka.sources import Sources
from streamer.settings import Settings


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


@asynccontextmanager
async def service_gateway(settings: Settings, service: Service) -> AsyncIterator[Gateway]:
    """The gateway of ``streamer serve``: requests go through Kafka like any client's,
    live queries hook this process's replica, models are shared with the writer."""
    async with KafkaBackend(settings) as backend, \
            Gateway(settings, backend, service, runtimes=service.runtimes) as gateway:
        yield gateway


async def serve(settings: Settings, role: str = "all") -> None:
    """Run the Kafka service, its upstream sources and the gateway until SIGTERM/SIGINT;
    ``role`` (all, writer, reader) says which halves of the service this process runs."""
    set_process_limit(settings.remote_max_in_flight)
    async with AsyncExitStack() as stack:
        service = await stack.enter_async_context(Service(settings, role=role))
        await stack.enter_async_context(Sources(settings))
        gateway = await stack.enter_async_context(service_gateway(settings, service))
        print(f"streamer: gateway on {gateway.url}", flush=True)
        print("streamer: serving", flush=True)
        await _until_signal()


async def serve_embedded(settings: Settings) -> None:
    """``streamer serve --embedded``: the in-process engine and the gateway, no Kafka."""
    engine = Engine(settings.data_dir, fsync=settings.fsync,
                    checkpoint_every=settings.checkpoint_every,
                    batch=BatchConfig(max_items=settings.batch_max_items,
                                      max_wait=settings.batch_max_wait_ms / 1000))
    async with engine, Gateway(settings, engine, engine) as gateway:
        print(f"streamer: gateway on {gateway.url}", flush=True)
        print("streamer: serving", flush=True)
        await _until_signal()


__all__ = ["serve", "serve_embedded", "service_gateway"]
