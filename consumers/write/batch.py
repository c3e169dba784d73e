"""The batch stage: a micro-batcher that closes a batch on size or elapsed time, whichever
comes first, so the model sees full batches under load and a lone event is not held back
for more than ``max_wait`` seconds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class BatchConfig:
    max_items: int = 64
    max_wait: float = 0.01
    queue_size: int = 1024


class MicroBatcher(Generic[T]):
    """``put`` from any task; ``next_batch`` from the one consumer task."""

    def __init__(self, config: BatchConfig) -> None:
        self.config = config
        send: ObjectSendStream[T]
        recv: ObjectReceiveStream[T]
        send, recv = anyio.create_memory_object_stream[T](config.queue_size)
        self._send = send
        self._recv = recv

    async def put(self, item: T) -> None:
        await self._send.send(item)

    def close(self) -> None:
        self._send.close()

    async def next_batch(self) -> list[T]:
        """Wait for the first item, then gather more until full or ``max_wait`` elapses.
        Returns an empty list once the batcher is closed and drained."""
        try:
            first = await self._recv.receive()
        except anyio.EndOfStream:
            self._recv.close()
            return []
        batch = [first]
        deadline = anyio.current_time() + self.config.max_wait
        while len(batch) < self.config.max_items:
            try:
                # Take what is already queued without yielding, then wait out the deadline.
                batch.append(self._recv.receive_nowait())
                continue
            except anyio.WouldBlock:
                pass
            except anyio.EndOfStream:
                break
            timeout = deadline - anyio.current_time()
            if timeout <= 0:
                break
            with anyio.move_on_after(timeout):
                try:
                    batch.append(await self._recv.receive())
                except anyio.EndOfStream:
                    break
        return batch
