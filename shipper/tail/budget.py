"""Bounds on descriptors: how many files may be open, and how long deleted ones are kept.

An open descriptor is what lets a rotated or deleted file be read to its end, so files
are opened as soon as they are found and kept open while they may be needed. Two bounds
keep that from pinning the node's resources: at most `max_open_files` descriptors (idle
live files are closed first; they are reopened by name when they get data), and deleted
files (whose disk space a descriptor keeps from the node) at most `deleted_max_files` at
once and for `deleted_max_seconds` each. Over those, a deleted file with a compressed copy
beside it is closed first (its text is read from the copy: nothing lost); one without is
given up, its unread bytes counted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from shipper.tail.reader import FileCursor, State

CAP_RETRY = 0.25  # at the cap with nothing to close: look again this much later


@dataclass(slots=True)
class Budget:
    max_open_files: int
    deleted_max_files: int
    deleted_max_seconds: float
    rotate_wait: float
    open: int = 0  # cursors holding a descriptor
    parked: int = 0  # live files closed to make room, in all
    _cap_retry: float = 0.0

    def room(self) -> bool:
        """A descriptor may be opened now without closing another one."""
        return self.open < self.max_open_files

    def may_look_for_room(self, now: float) -> bool:
        """At the cap: worth looking for a file to close (not again for every waiting file
        right after a look found none)."""
        return now >= self._cap_retry

    def nothing_to_close(self, now: float) -> None:
        self._cap_retry = now + CAP_RETRY

    def victim(
        self,
        cursors: Iterable[FileCursor],
        wanted: FileCursor,
        last_data: Callable[[FileCursor], float],
        waiting: Callable[[FileCursor], bool],
    ) -> FileCursor | None:
        """A file whose descriptor can be given back losing nothing: the live file with
        nothing left to read, idle the longest; else one waiting for the older files of its stream
        (so the oldest gets a descriptor), whose text can be found again: a deleted one
        whose compressed copy is beside it (read on from the copy), a compressed one, or
        one that still has a name."""
        idle, later = [], []
        for c in cursors:
            if c is wanted or not c.is_open:
                continue
            # cheap tests first: at the cap this runs over every open file
            if c.state is State.LIVE:
                if c.eof or (not c.key and not c.unread_bytes()):
                    idle.append(c)  # (an empty one too, never read for want of a first line)
            elif waiting(c) and (c.copy if c.state is State.DELETED else c.compressed or c.links()):
                later.append(c)
        if idle:
            return min(idle, key=last_data)
        return min(later, key=_reopen_cost) if later else None

    def over(self, deleted: list[FileCursor], now: float) -> list[tuple[FileCursor, str]]:
        """Deleted open files that must be closed now, with the reason: over the count
        (once deleted for `rotate_wait`: a burst of small rotations is read, not given up),
        or deleted too long ago. Those with a compressed copy are chosen first."""
        deleted = sorted(deleted, key=lambda c: (not c.copy, c.state_since))
        excess = len(deleted) - self.deleted_max_files
        out = []
        for i, cursor in enumerate(deleted):
            age = now - cursor.state_since
            if i < excess and age >= self.rotate_wait:
                out.append((cursor, "deleted_file_limit"))
            elif age > self.deleted_max_seconds:
                out.append((cursor, "deleted_file_timeout"))
        return out


def _reopen_cost(cursor: FileCursor) -> int:
    """Deleted with a copy first, then compressed, then plain with a name (which the
    runtime might delete before it is opened again)."""
    return 0 if cursor.state is State.DELETED else 1 if cursor.compressed else 2


def deleted_open(cursors: Iterable[FileCursor]) -> list[FileCursor]:
    return [c for c in cursors if c.is_open and c.state is State.DELETED]
