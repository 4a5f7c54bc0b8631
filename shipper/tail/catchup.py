"""Rotations nobody followed: what a file found beside a live one holds.

A file that is a rotation of a live file (by a rename event, or by its name: see
shipper.tail.naming) and that no cursor follows holds one of: the text of a cursor whose
file was closed when it was renamed or compressed (its new place), a compressed copy of a
text being read, a text read to its end before (its checkpoint is at its end, or it was
read to its end in this run), history from before shipper's very first start, or a text
to read from its checkpoint: rotated while shipper was down, or created and rotated
between two looks. Rotations found together are read oldest first, by the time of their
first line. Deciding is done here; shipper.tail.lifecycle applies the decision.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum

from shipper.tail import naming
from shipper.tail.fs import FileSystem
from shipper.tail.group import Group
from shipper.tail.identity import is_compressed
from shipper.tail.prospector import Unfollowed
from shipper.tail.reader import FileCursor
from shipper.tail.registry import Registry, Text, text_of


@dataclass(frozen=True, slots=True)
class Candidate:
    group: Group
    name: str
    stream: str
    text: Text
    st: os.stat_result

    @property
    def path(self) -> str:
        return self.group.path(self.name)

    @property
    def compressed(self) -> bool:
        return is_compressed(self.name)


class Verdict(Enum):
    PLACE = "place"  # where the closed cursor `holder`'s text is now
    COPY = "copy"  # a compressed copy of `holder`'s text (still readable where it is)
    SAME = "same"  # another file with `holder`'s text (a plain copy): nothing to do
    DONE = "done"  # read to its end before
    HISTORY = "history"  # from before shipper's first start: recorded as read
    NEW = "new"  # to read, from `offset`


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    key: str
    holder: FileCursor | None = None
    offset: int = 0
    length: int | None = 0  # of the text (modulo 2**32 if compressed); None: unknown


def examine(fs: FileSystem, t: Unfollowed) -> Candidate | None:
    """Read the first line of a file found; None if it cannot be told yet what it holds
    (then it is looked at again at the next look)."""
    path = t.group.path(t.name)
    text = text_of(fs.read_head(path, is_compressed(path)), final=True)
    try:
        st = fs.stat(path)
    except OSError:
        return None
    if st.st_ino != t.group.listing.get(t.name):
        t.group.dirty = True  # replaced since the listing: look again
        return None
    if text is None:
        # Empty, or its compression still being written: looked at again at every look
        # while it stays so (an empty one may also be replaced by a new file that takes
        # its inode number).
        t.group.unsettled.add(t.name)
        return None
    return Candidate(t.group, t.name, t.stream, text, st)


def classify(fs: FileSystem, c: Candidate, registry: Registry, history: bool) -> Decision:
    group = c.group
    live = group.lives.get(c.stream)
    container_id = live.container_id if live is not None else ""
    key = registry.key_for(group.scope, c.stream, container_id, c.text.fp)
    holder = registry.by_key.get(key)
    if holder is not None:
        if not holder.is_open and key in group.gone:
            return Decision(Verdict.PLACE, key, holder)
        return Decision(Verdict.COPY if c.compressed else Verdict.SAME, key, holder)
    entry = registry.entry(key)
    length = fs.gzip_length(c.path) if c.compressed else c.st.st_size
    if entry is None and history:
        return Decision(Verdict.HISTORY, key, length=length or 0)
    offset = entry.offset if entry is not None else 0
    end = registry.end_of(key)
    if end is not None:
        offset = max(offset, end)  # read to there in this run, maybe not acknowledged yet
    if (
        (entry is not None or end is not None)
        and length is not None
        and (offset % (1 << 32) == length if c.compressed else offset >= length)
    ):
        return Decision(Verdict.DONE, key)
    offset = entry.offset if entry is not None else 0
    return Decision(Verdict.NEW, key, offset=offset, length=length)


def find_copy(
    fs: FileSystem, group: Group, fp: str, stream: str = ""
) -> tuple[str, os.stat_result] | None:
    """A file of the group holding the text `fp` (the copy of copy-truncate), newest
    name first. Not the names of open files (their inode is theirs); any other name may
    hold it, a finished rotation's too (its inode number may have been reused). With a
    `stream`, only its rotations that nothing is known to hold and that can be read."""
    if not fp:
        return None
    skip = {n for n, c in group.tracked.items() if c.is_open}
    if stream:
        skip.update(group.tracked, group.done, group.lives, group.unsettled)
    for name in sorted(set(group.listing) - skip, reverse=True):
        if stream and naming.stream_of(group.lives, name) != stream:
            continue
        path = group.path(name)
        text = text_of(fs.read_head(path, is_compressed(path)), final=True)
        if text is not None and text.fp == fp:
            try:
                return name, fs.stat(path)
            except OSError:
                return None
    return None
