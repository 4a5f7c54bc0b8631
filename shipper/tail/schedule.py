"""When each file is read next: a ready queue, an idle heap, and one backoff rule.

New data is found by polling. A file that just gave data is read again at once (while
the pass has budget) or within 50 ms; one that stays quiet is looked at less and less
often, doubling up to `idle_poll_max`. A file no longer live (rotated, deleted) is looked
at at least every 250 ms, so it is closed soon after its end.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from dataclasses import dataclass

from shipper.tail.reader import FileCursor, State

NOT_LIVE_POLL = 0.25


@dataclass(slots=True)
class _Slot:
    queued: bool = False
    next_poll: float = 0.0
    backoff: float = 0.0
    last_data: float = 0.0


def backoff(previous: float, idle_poll_max: float, minimum: float = 0.0) -> float:
    """The next wait for something idle: 50 ms, doubling up to `idle_poll_max`."""
    return min(max(previous * 2, 0.05, minimum), idle_poll_max)


class Schedule:
    """Fair turns between files: each ready file gives one chunk per turn."""

    def __init__(self, idle_poll_max: float) -> None:
        self.idle_poll_max = idle_poll_max
        self._ready: deque[FileCursor] = deque()
        self._idle: list[tuple[float, int, FileCursor]] = []
        self._slots: dict[FileCursor, _Slot] = {}
        self._seq = itertools.count()

    def _slot(self, cursor: FileCursor) -> _Slot:
        slot = self._slots.get(cursor)
        if slot is None:
            slot = self._slots[cursor] = _Slot()
        return slot

    def ready(self, cursor: FileCursor) -> None:
        """Read `cursor` in the next pass."""
        if cursor.finished:
            return
        slot = self._slot(cursor)
        if not slot.queued:
            slot.queued = True
            self._ready.append(cursor)

    def pop(self) -> FileCursor | None:
        """The next ready file, or None."""
        while self._ready:
            cursor = self._ready.popleft()
            slot = self._slots.get(cursor)
            if slot is None:
                continue  # forgotten while queued
            slot.queued = False
            if not cursor.finished:
                return cursor
        return None

    def has_ready(self) -> bool:
        return bool(self._ready)

    def sleep(self, cursor: FileCursor, now: float, minimum: float = 0.0) -> None:
        """Look at `cursor` again later, backing off while it stays idle."""
        slot = self._slot(cursor)
        wait = backoff(slot.backoff, self.idle_poll_max, minimum)
        if cursor.state is not State.LIVE:
            wait = min(wait, NOT_LIVE_POLL)
        slot.backoff = wait
        slot.next_poll = now + wait
        heapq.heappush(self._idle, (slot.next_poll, next(self._seq), cursor))

    def gave_data(self, cursor: FileCursor, now: float) -> None:
        slot = self._slot(cursor)
        slot.backoff = 0.0
        slot.last_data = now

    def last_data(self, cursor: FileCursor) -> float:
        slot = self._slots.get(cursor)
        return slot.last_data if slot is not None else 0.0

    def wake_due(self, now: float) -> None:
        idle = self._idle
        while idle and idle[0][0] <= now:
            _, _, cursor = heapq.heappop(idle)
            slot = self._slots.get(cursor)
            if slot is not None and slot.next_poll <= now:
                self.ready(cursor)

    def next_wakeup(self) -> float | None:
        """When the earliest idle file is due (None if none is waiting)."""
        while self._idle and self._idle[0][2] not in self._slots:
            heapq.heappop(self._idle)
        return self._idle[0][0] if self._idle else None

    def forget(self, cursor: FileCursor) -> None:
        """The cursor ended: no more turns (stale heap and queue entries are skipped)."""
        self._slots.pop(cursor, None)
