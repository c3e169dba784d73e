"""The lifecycle every long-lived component shares: ``start()``, an idempotent ``stop()``, and
``async with``. ``Component`` gives that shape to a class that writes ``_start``/``_stop``;
``Parts`` composes the pieces a component owns on an ``AsyncExitStack``: a failure while
starting stops what already started (in reverse), and stopping runs every part's stop even
when one fails (a failing consumer must not skip the checkpoint), then raises the failures
together as one ``ExceptionGroup``."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar


class Startable(Protocol):
    async def start(self) -> Any: ...

    async def stop(self) -> Any: ...


S = TypeVar("S", bound=Startable)
log = logging.getLogger(__name__)


class Parts:
    """What a component started, stopped in reverse order; see the module docstring."""

    def __init__(self) -> None:
        self._stack = AsyncExitStack()
        self._errors: list[Exception] = []

    async def start(self, part: S) -> S:
        """Start ``part``; it is stopped by ``stop()`` (or by a failed start's rollback)."""
        await part.start()
        self.on_stop(part.stop)
        return part

    def on_stop(self, stop: Callable[[], Awaitable[Any]]) -> None:
        """Run ``stop`` at stop time, after every part added later has stopped."""
        self._stack.push_async_callback(self._collect, stop)

    async def _collect(self, stop: Callable[[], Awaitable[Any]]) -> None:
        try:
            await stop()
        except Exception as exc:  # the others still stop; the failures are raised together
            self._errors.append(exc)

    async def stop(self) -> None:
        await self._stack.aclose()
        errors, self._errors = self._errors, []
        if errors:
            raise ExceptionGroup("errors while stopping", errors)


class Component:
    """Base for long-lived components: subclasses write ``_start`` (adding what they start to
    ``self.parts``) and may write ``_stop`` (run before the parts stop). ``start`` rolls back
    on failure; ``stop`` runs once, whatever happened before."""

    def __init__(self) -> None:
        self.parts = Parts()
        self._started = False
        self._stopped = False

    @property
    def stopped(self) -> bool:
        return self._stopped

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        try:
            await self._start()
        except BaseException:
            await self._rollback()
            raise

    async def _rollback(self) -> None:
        try:
            await self.stop()
        except ExceptionGroup as group:  # the start failure is the one raised
            log.error("stopping %s after a failed start: %r", type(self).__name__, group)

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        errors: list[Exception] = []
        try:
            await self._stop()
        except Exception as exc:
            errors.append(exc)
        try:
            await self.parts.stop()
        except ExceptionGroup as group:
            errors.extend(group.exceptions)
        if errors:
            raise ExceptionGroup(f"errors while stopping {type(self).__name__}", errors)

    async def _start(self) -> None:
        """Start the parts, in order (``await self.parts.start(...)``)."""

    async def _stop(self) -> None:
        """What must happen before the parts stop (stop intake, drain a queue)."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()
