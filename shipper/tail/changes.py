"""What a directory watcher saw, handed from its thread to the tailer's loop.

The watcher thread only records which directories changed and which names were renamed
into which (the kernel pairs the two halves of a rename with a cookie); the tailer, on
its own thread, drains that and looks at those directories. A rename event tells where a
file went even when it was created and renamed between two looks, so a rotation is
followed whatever name it gets.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

Move = tuple[str, str, str, str]  # from directory, from name, to directory, to name


@dataclass(slots=True)
class Drained:
    dirs: set[str] = field(default_factory=set)
    moves: list[Move] = field(default_factory=list)
    # Names a file was created at or renamed onto: whatever was there before is not there
    # any more, even if the new file took the same inode number.
    created: set[tuple[str, str]] = field(default_factory=set)
    overflow: bool = False  # events were lost: every directory must be looked at

    def __bool__(self) -> bool:
        return bool(self.dirs or self.moves or self.overflow)


class Changes:
    """Thread-safe collector; `wake` is called once per batch of changes."""

    def __init__(self, wake: Callable[[], None] | None = None) -> None:
        self.wake = wake
        self._lock = threading.Lock()
        self._pending = Drained()

    def add(
        self,
        dirs: set[str],
        moves: list[Move] | None = None,
        created: set[tuple[str, str]] | None = None,
        overflow: bool = False,
    ) -> None:
        """Directories whose entries changed, renames seen, names (re)created, events lost
        (from the watcher thread)."""
        if not (dirs or moves or overflow):
            return
        with self._lock:
            pending = self._pending
            first = not pending
            pending.dirs |= dirs
            if moves:
                pending.moves += moves
            if created:
                pending.created |= created
            pending.overflow = pending.overflow or overflow
        if first and self.wake is not None:
            self.wake()

    def drain(self) -> Drained:
        with self._lock:
            out, self._pending = self._pending, Drained()
        return out
