"""What the pipeline hands a sink, and what a sink promises back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from shipper.acks import Segment
from shipper.document import DocumentEncoder


@dataclass(slots=True)
class Batch:
    """NDJSON entries (a bulk action line and a document each, or a document alone) and,
    in the same order, how many of them belong to which file segment."""

    entries: list[bytes] = field(default_factory=list)
    parts: list[tuple[Segment, int, int]] = field(default_factory=list)  # segment, docs, bytes
    size: int = 0
    created: float = 0.0

    def add(self, segment: Segment, docs: int, size: int) -> None:
        self.parts.append((segment, docs, size))
        self.size += size


Acknowledge = Callable[[Batch], None]


class Sink(Protocol):
    """Delivers batches; calls the acknowledge callback once every entry of a batch is
    delivered or accounted for (dead-lettered, or given up and counted)."""

    def encoder(self, path: str, metadata: bytes, id_prefix: bytes) -> DocumentEncoder:
        """An encoder producing this sink's entry format for one file."""
        ...

    async def start(self) -> None: ...

    async def send(self, batch: Batch) -> None:
        """Take a batch; may wait for a free slot (that wait is the backpressure)."""
        ...

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until every batch taken is acknowledged; False if the timeout passed."""
        ...

    async def close(self) -> None: ...

    def ready(self) -> bool:
        """True when the sink can deliver (reachable, template installed)."""
        ...

    def fatal(self) -> BaseException | None:
        """An error retrying cannot fix; the pipeline stops with it."""
        ...
