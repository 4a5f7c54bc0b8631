"""Batches waiting for a request slot, and what is still owed for each one.

A `Work` is one batch and the positions of its entries not yet accounted for (indexed,
duplicate, dead-lettered or given up), plus those that may already be indexed (the
uncertain range). Whatever happens to a request, only unaccounted entries are ever sent
again, so an unexpected error cannot count or dead-letter an entry twice.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from shipper.sinks.base import Batch


@dataclass(slots=True)
class Work:
    batch: Batch
    left: set[int]  # positions of entries not yet accounted for
    uncertain: set[int] = field(default_factory=set)  # positions that may be indexed already
    tried: int = 0  # requests made for it so far (retry.max_attempts)

    @classmethod
    def of(cls, batch: Batch) -> Work:
        uncertain: set[int] = set()
        position = 0
        for segment, docs, _size in batch.parts:
            if getattr(segment, "uncertain", False):
                uncertain.update(range(position, position + docs))
            position += docs
        return cls(batch, set(range(len(batch.entries))), uncertain)

    def pending(self) -> list[int]:
        count = len(self.batch.entries)
        return list(range(count)) if len(self.left) == count else sorted(self.left)

    def account(self, positions: list[int] | set[int]) -> None:
        self.left.difference_update(positions)
        self.uncertain.difference_update(positions)


class BatchQueue:
    """At most `concurrency` deliveries at a time, in arrival order, once opened."""

    def __init__(self, concurrency: int, deliver: Callable[[Work], Awaitable[None]]) -> None:
        self.concurrency = concurrency
        self._deliver = deliver
        self._waiting: deque[Work] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._open = False
        self._closing = False

    def put(self, work: Work) -> None:
        self._waiting.append(work)
        self.pump()

    def open(self) -> None:
        self._open = True
        self.pump()

    def pump(self) -> None:
        if self._closing:  # a request cancelled by `close` must not start the next one
            return
        while self._waiting and len(self._tasks) < self.concurrency and self._open:
            task = asyncio.create_task(self._deliver(self._waiting.popleft()))
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self.pump()
        if self.empty():
            self._idle.set()

    def empty(self) -> bool:
        return not self._tasks and not self._waiting

    async def drain(self, timeout: float | None = None) -> bool:
        if self.empty():
            return True
        self._idle.clear()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
