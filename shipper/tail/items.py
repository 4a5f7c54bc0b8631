"""What the tailer hands the pipeline besides chunks of lines, and what it counts."""

from __future__ import annotations

from dataclasses import dataclass, field

from shipper.tail.reader import Chunk, FileCursor


@dataclass(slots=True)
class Finished:
    """A file was read to its final end and closed: flush what its decoder holds."""

    cursor: FileCursor


@dataclass(slots=True)
class Restarted:
    """A file was truncated (copy-truncate): what its decoder holds belongs to the old text.

    `key` and `id_prefix` are those of the old text, `end` how far it was read.
    """

    cursor: FileCursor
    key: str
    id_prefix: bytes
    end: int


Item = Chunk | Finished | Restarted


@dataclass(slots=True)
class TailStats:
    """Counters the metrics read."""

    files_opened: int = 0
    files_closed: int = 0
    rotations: int = 0
    truncations: int = 0
    parked: int = 0
    truncated_bytes: int = 0  # skipped parts of over-long lines
    given_up_bytes: dict[str, int] = field(default_factory=dict)
    given_up_files: dict[str, int] = field(default_factory=dict)

    def give_up(self, reason: str, nbytes: int) -> None:
        self.given_up_bytes[reason] = self.given_up_bytes.get(reason, 0) + nbytes
        self.given_up_files[reason] = self.given_up_files.get(reason, 0) + 1
