"""Cutting documents into bulk batches of at most `max_docs` documents and `max_bytes`."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from shipper.acks import Segment
from shipper.sinks.base import Batch


class Batcher:
    """The open batch and the full ones waiting to be handed to the sink."""

    def __init__(
        self, max_docs: int, max_bytes: int, max_delay: float, clock: Callable[[], float]
    ) -> None:
        self.max_docs, self.max_bytes, self.max_delay = max_docs, max_bytes, max_delay
        self.clock = clock
        self.open = Batch()
        self.full: deque[Batch] = deque()

    def due(self, now: float, flush: bool) -> bool:
        """A batch is full, or the open one is old enough or to go now (`flush`: the byte
        budget is spent, or nothing more will be added)."""
        batch = self.open
        return bool(self.full) or (
            bool(batch.parts) and (now - batch.created >= self.max_delay or flush)
        )

    def take(self) -> Batch:
        """The oldest full batch, else the open one."""
        if self.full:
            return self.full.popleft()
        batch, self.open = self.open, Batch()
        return batch

    def pending(self) -> bool:
        return bool(self.full or self.open.parts)

    def held_bytes(self) -> int:
        """The bytes of the documents not yet handed to the sink."""
        return self.open.size + sum(batch.size for batch in self.full)

    def deadline(self) -> float | None:
        """When the open batch is due by age (None if it is empty)."""
        return self.open.created + self.max_delay if self.open.entries else None

    def add(self, segment: Segment, entries: list[bytes], size: int) -> None:
        """Put a segment's entries into batches of at most max_docs / max_bytes."""
        batch = self.open
        if not batch.entries:
            batch.created = self.clock()
        if len(batch.entries) + len(entries) < self.max_docs and batch.size + size < self.max_bytes:
            batch.entries += entries
            batch.add(segment, len(entries), size)
            return
        start = 0
        while start < len(entries):
            room_docs = self.max_docs - len(batch.entries)
            room_bytes = self.max_bytes - batch.size
            end, taken = start, 0
            while end < len(entries) and end - start < room_docs:
                n = len(entries[end])
                if taken + n > room_bytes and (end > start or batch.entries):
                    break
                taken += n
                end += 1
            if end > start:
                batch.entries += entries[start:end]
                batch.add(segment, end - start, taken)
                start = end
            if (
                start < len(entries)
                or len(batch.entries) >= self.max_docs
                or batch.size >= self.max_bytes
            ):
                self.full.append(batch)
                batch = self.open = Batch(created=self.clock())
