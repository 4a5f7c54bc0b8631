"""Batches on their way to the sink, each once the "sent up to" marks covering it are on disk.

A batch that reaches past the durable marks may leave only after a write of them (after a
crash, everything below a mark is looked up before it is sent again). The write is the
checkpoint writer's, in a thread, and the pipeline goes on reading and encoding meanwhile
instead of waiting for the disk at every batch: two fsyncs each, which on a one-worker
backlog left the core idle for 0.5 s of 12.5. Batches leave in the order they came, and
one write covers every batch marked before it began.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

from shipper.sinks.base import Batch


class Outbox:
    def __init__(
        self,
        needs_marks: Callable[[Batch], bool],
        mark: Callable[[], None],
        write: Callable[[], Awaitable[None]],
        send: Callable[[Batch], Awaitable[None]],
    ) -> None:
        self._needs_marks = needs_marks  # the batch reaches past the durable marks
        self._mark = mark  # raise the marks (in memory) over everything read so far
        self._write = write  # make the marks durable (a failed write is logged)
        self._send = send
        self._waiting: deque[Batch] = deque()
        self._task: asyncio.Task[None] | None = None

    async def put(self, batch: Batch) -> None:
        if self._task is not None and self._task.done():
            task, self._task = self._task, None
            task.result()  # a send that failed fails the pipeline, as it would have here
        if self._needs_marks(batch):
            self._mark()
        elif not self._waiting:
            await self._send(batch)
            return
        self._waiting.append(batch)  # marked, or behind batches that are
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while self._waiting:
            ready = len(self._waiting)  # every one marked before this write begins
            if any(self._needs_marks(self._waiting[i]) for i in range(ready)):
                await self._write()  # failed or not, they go: as they did before
            for _ in range(ready):
                await self._send(self._waiting.popleft())

    async def flush(self) -> None:
        """Return once every batch put is handed to the sink."""
        if self._task is not None:
            task, self._task = self._task, None
            await task

    def cancel(self) -> None:
        """Stop sending (what is left is read and sent again on the next start)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
