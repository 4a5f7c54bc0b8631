"""The picture of one directory holding followed files (a `Group`): the names it listed
last with their inodes, which names are live files, which text each followed name holds,
the texts already read to their end, and each stream's files in the order they are read.
shipper.tail.prospector compares a new listing with it; shipper.tail.lifecycle changes
the cursors in it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from parsers.filename import container_ref
from shipper.tail.fs import FileSystem
from shipper.tail.losses import Unaccounted
from shipper.tail.reader import FileCursor, State


@dataclass(frozen=True, slots=True)
class Live:
    """How a live file was discovered: the path documents show, its container id."""

    path: str
    container_id: str


@dataclass(eq=False, slots=True)
class Group:
    """The picture of one directory holding followed files."""

    scope: str
    listing: dict[str, int] = field(default_factory=dict)  # name -> inode, last look
    lives: dict[str, Live] = field(default_factory=dict)  # live name -> discovery
    tracked: dict[str, FileCursor] = field(default_factory=dict)  # name -> its cursor
    done: dict[str, tuple[str, int]] = field(default_factory=dict)  # name -> (key, inode)
    streams: dict[str, list[FileCursor]] = field(default_factory=dict)  # oldest first
    unsettled: set[str] = field(default_factory=set)  # rotations not identifiable yet
    gone: dict[str, int] = field(default_factory=dict)  # key -> looks since it vanished
    unaccounted: list[Unaccounted] = field(default_factory=list)  # vanished unidentified
    renamed: dict[str, str] = field(default_factory=dict)  # new name -> old (events)
    created: set[str] = field(default_factory=set)  # names (re)created since (events)
    unmatched: dict[str, int] = field(default_factory=dict)  # live name -> matches missed
    looked: bool = False
    next_look: float = 0.0
    # The groups due for a look (shared with the prospector): a pass looks at those only,
    # in the order they became due (an insertion-ordered dict: output order is stable).
    due: dict[Group, None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.due[self] = None

    @property
    def dirty(self) -> bool:
        return self in self.due

    @dirty.setter
    def dirty(self, value: bool) -> None:
        if value:
            self.due.setdefault(self, None)
        else:
            self.due.pop(self, None)

    def path(self, name: str) -> str:
        return os.path.join(self.scope, name)

    def stream(self, name: str) -> list[FileCursor]:
        return self.streams.setdefault(name, [])

    def is_head(self, cursor: FileCursor) -> bool:
        """Files of one stream are read in order: only the oldest unfinished one is."""
        stream = self.streams.get(cursor.stream)
        return not stream or stream[0] is cursor

    def cursor(
        self,
        name: str,
        st: os.stat_result,
        stream: str,
        state: State,
        now: float,
        max_line_bytes: int,
        fs: FileSystem,
    ) -> FileCursor:
        """A cursor for the file `name` here, written under `stream`."""
        live = self.lives.get(stream)
        real = self.path(name)
        path = live.path if live is not None else real
        return FileCursor(
            path=path,
            real=real,
            scope=self.scope,
            stream=stream,
            dev=st.st_dev,
            ino=st.st_ino,
            offset=0,
            max_line_bytes=max_line_bytes,
            ref=container_ref(path, self.path(stream)),
            container_id=live.container_id if live is not None else "",
            state=state,
            state_since=now,
            size_seen=st.st_size,
            fs=fs,
        )

    def enter(self, cursor: FileCursor) -> None:
        """Into the picture, and into its stream: rotations by the time of their first
        line, before the live file."""
        self.tracked[os.path.basename(cursor.real)] = cursor
        stream = self.stream(cursor.stream)
        at = len(stream)
        if cursor.state is not State.LIVE:
            while at > 0 and (
                stream[at - 1].state is State.LIVE or stream[at - 1].order > cursor.order
            ):
                at -= 1
        stream.insert(at, cursor)

    def read_to_end(self, cursor: FileCursor) -> None:
        """Its names on disk stay known as done, so that a rename or compression of it
        later is not taken for a rotation nobody read."""
        for name, holder in self.tracked.items():
            if holder is cursor:
                self.done[name] = (cursor.key, self.listing.get(name, cursor.ino))
        copy = os.path.basename(cursor.copy)
        if copy in self.listing:
            self.done[copy] = (cursor.key, self.listing[copy])

    def leave(self, cursor: FileCursor) -> FileCursor | None:
        """Take an ended cursor out of the picture; return its stream's next file."""
        for name in [n for n, c in self.tracked.items() if c is cursor]:
            del self.tracked[name]
        stream = self.streams.get(cursor.stream)
        if stream is None or cursor not in stream:
            return None
        was_head = stream[0] is cursor
        stream.remove(cursor)
        if not stream:
            del self.streams[cursor.stream]
            return None
        return stream[0] if was_head else None

    def idle(self) -> bool:
        """Nothing is followed here any more."""
        return not (self.lives or self.tracked or self.streams or self.unaccounted)
