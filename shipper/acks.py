"""Acknowledgements turned into committed offsets.

Each chunk of a file read becomes a segment: the offset the file may be committed to once
the segment's documents (and those of every earlier segment of that file) are
acknowledged. Segments complete in any order; offsets only advance over a contiguous run,
so a crash can re-send but never skip.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from shipper.checkpoint import CheckpointStore


@dataclass(slots=True)
class Segment:
    """Documents of one chunk of one file, and the offset their delivery allows."""

    key: str
    end: int
    remaining: int
    size: int
    oldest: float = 0.0
    uncertain: bool = False  # documents that may be indexed already (CheckpointStore.resent)


@dataclass(slots=True)
class AckTracker:
    """Advances committed offsets over contiguous runs of fully acknowledged segments."""

    store: CheckpointStore
    on_release: Callable[[int], None] | None = None
    _queues: dict[str, deque[Segment]] = field(default_factory=dict)
    in_flight_bytes: int = 0

    def open(self, key: str, end: int, docs: int, size: int) -> Segment:
        """Register a chunk whose `docs` documents (of `size` bytes) are about to be sent."""
        segment = Segment(key, end, docs, size)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
        queue.append(segment)
        self.in_flight_bytes += size
        if docs == 0:
            self._advance(queue)
        return segment

    def ack(self, segment: Segment, docs: int, size: int) -> None:
        """`docs` documents of `segment` (of `size` bytes) are delivered or accounted for."""
        segment.remaining -= docs
        self.in_flight_bytes -= size
        if self.on_release is not None:
            self.on_release(size)
        if segment.remaining <= 0:
            queue = self._queues.get(segment.key)
            if queue is not None and queue[0] is segment:
                self._advance(queue)

    def _advance(self, queue: deque[Segment]) -> None:
        last = None
        while queue and queue[0].remaining <= 0:
            last = queue.popleft()
        if last is not None:
            self.store.commit(last.key, last.end)
            if not queue:
                del self._queues[last.key]

    def read_ends(self) -> dict[str, int]:
        """Per file, the end of the last segment handed out (everything read so far)."""
        return {key: queue[-1].end for key, queue in self._queues.items()}

    def pending(self, key: str) -> int:
        """Segments of `key` not yet committed."""
        queue = self._queues.get(key)
        return len(queue) if queue else 0

    def idle(self) -> bool:
        """True when nothing is waiting for an acknowledgement."""
        return not self._queues
