"""The lifecycle every long-lived component shares (consumers/runtime/lifecycle.py): a failure while
starting stops what already started, in reverse; a failure while stopping neither skips the
other stops (the store's checkpoint among them) nor hides the other failures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import streamer
from consumers.runtime.lifecycle import Component
from streamer.client.engine import Engine


class Part:
    def __init__(self, name: str, log: list[str], *, fail_start: bool = False,
                 fail_stop: bool = False) -> None:
        self.name, self.log = name, log
        self.fail_start, self.fail_stop = fail_start, fail_stop

    async def start(self) -> None:
        self.log.append(f"start {self.name}")
        if self.fail_start:
            raise RuntimeError(f"{self.name} cannot start")

    async def stop(self) -> None:
        self.log.append(f"stop {self.name}")
        if self.fail_stop:
            raise RuntimeError(f"{self.name} cannot stop")


class Composite(Component):
    def __init__(self, *parts: object) -> None:
        super().__init__()
        self._children = parts

    async def _start(self) -> None:
        for part in self._children:
            await self.parts.start(part)  # type: ignore[type-var]


async def test_a_failed_start_stops_what_started_in_reverse() -> None:
    log: list[str] = []
    whole = Composite(Part("a", log), Part("b", log), Part("c", log, fail_start=True),
                      Part("d", log))
    with pytest.raises(RuntimeError, match="c cannot start"):
        await whole.start()
    assert log == ["start a", "start b", "start c", "stop b", "stop a"]
    await whole.stop()  # idempotent: nothing stops twice
    assert log[-1] == "stop a" and len(log) == 5


async def test_failed_stops_run_every_stop_and_are_raised_together() -> None:
    log: list[str] = []
    whole = Composite(Part("a", log), Part("b", log, fail_stop=True),
                      Part("c", log, fail_stop=True))
    await whole.start()
    with pytest.raises(ExceptionGroup) as info:
        await whole.stop()
    assert [str(e) for e in info.value.exceptions] == ["c cannot stop", "b cannot stop"]
    assert log[3:] == ["stop c", "stop b", "stop a"]
    await whole.stop()
    assert len(log) == 6


async def test_a_failing_stop_does_not_skip_the_checkpoint(tmp_path: Path) -> None:
    """A process whose reader fails to stop still checkpoints its store: the store is one of
    the parts, stopped after the reader whatever the reader did."""
    db = tmp_path / "db"
    engine = Engine(db, checkpoint_every=10**9)  # no checkpoint unless stop takes one
    process = Composite(engine, Part("reader", [], fail_stop=True))
    await process.start()
    col = await streamer.AsyncClient(backend=engine).create_collection(
        "kept", embedding_function=None)
    vectors = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    await col.add(ids=[str(i) for i in range(50)], embeddings=vectors)
    checkpoints = db / "collections" / col.id / "checkpoints"
    assert not any(checkpoints.iterdir())
    with pytest.raises(ExceptionGroup, match="errors while stopping"):
        await process.stop()
    assert any(checkpoints.iterdir())
    async with Engine(db) as reopened:
        again = await streamer.AsyncClient(backend=reopened).get_collection(
            "kept", embedding_function=None)
        assert await again.count() == 50
