"""What can never be read: counted per reason in `stats.given_up_bytes` and logged once
per file with its byte count.

A file that vanished before its first line was seen (found at the descriptor cap, so not
opened, and renamed, compressed and removed before a look identified it) is not given up
at once: its text may be a rotation nobody followed, found beside it within two looks
(shipper.tail.catchup), which is then read whole. Only if none turns up are its bytes
given up. A rotation accounts for such a file only when it is of its stream, was never
seen before (no checkpoint) and holds at least as many bytes as the file was seen with.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shipper.tail.items import TailStats
from shipper.tail.reader import FileCursor

if TYPE_CHECKING:
    from shipper.tail.group import Group

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Unaccounted:
    """The bytes of a file that vanished unidentified, waiting for a text to account
    for them."""

    stream: str
    path: str
    nbytes: int
    looks: int = 0


class Losses:
    def __init__(self, stats: TailStats) -> None:
        self.stats = stats

    def lost(self, path: str, reason: str, nbytes: int) -> None:
        log.warning(
            "giving up bytes that can no longer be read",
            extra={"file": path, "reason": reason, "bytes_given_up": nbytes},
        )
        self.stats.give_up(reason, nbytes)

    def unidentified(self, group: Group, cursor: FileCursor) -> None:
        """`cursor`'s file vanished before its first line was seen."""
        if unread := cursor.unread_bytes():
            group.unaccounted.append(Unaccounted(cursor.stream, cursor.real, unread))

    def text_found(self, group: Group, stream: str, length: int | None) -> None:
        """A text never seen before, `length` bytes long (None: unknown), is read from
        its start: the oldest unidentified file of its stream it can hold is accounted
        for."""
        if length is None:
            return
        for u in group.unaccounted:
            if u.stream == stream and u.nbytes <= length:
                group.unaccounted.remove(u)
                return

    def looked(self, group: Group) -> None:
        """A look at `group`: what two looks in a row did not account for is given up."""
        for u in list(group.unaccounted):
            if u.looks < 1:
                u.looks += 1
                continue
            group.unaccounted.remove(u)
            self.lost(u.path, "deleted_before_first_line", u.nbytes)
