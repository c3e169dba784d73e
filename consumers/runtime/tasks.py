"""Background-loop helpers shared by every long-lived component."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

log = logging.getLogger(__name__)


def supervise(task: asyncio.Task[Any]) -> asyncio.Task[Any]:
    """Log a background loop's crash at once instead of when the task is collected."""
    def report(t: asyncio.Task[Any]) -> None:
        if not t.cancelled() and t.exception() is not None:
            log.error("%s crashed", t.get_name(), exc_info=t.exception())
    task.add_done_callback(report)
    return task


async def cancel(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background loop and wait until it has finished unwinding."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
