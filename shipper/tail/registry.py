"""Which text a file holds: the one place keys are made and matched to checkpoints.

A text's key is made from what identifies it (see shipper.tail.identity), so the same
text found again after a restart, renamed or compressed, gets the same key and so its
checkpoint and its document ids. Stores written before streams were recorded keyed a
text by fingerprint and directory only; such an entry is taken over by the first stream
that shows that text, so an upgrade re-sends nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from parsers.lines import parse_cri, parse_docker
from shipper.checkpoint import CheckpointStore, Entry
from shipper.tail.identity import file_key, fingerprint
from shipper.tail.reader import FileCursor

ENDED_KEPT = 10_000  # texts read to their end remembered by key (their names are followed)


@dataclass(frozen=True, slots=True)
class Text:
    """What a file's first line says: its fingerprint and, for ordering rotations found
    by name, the runtime's time of that line (b"" when it has none)."""

    fp: str
    time: bytes


def text_of(head: bytes, final: bool = False) -> Text | None:
    """The text a file holds from its first bytes; None while the first line is still
    incomplete. A `final` file (rotated: it will not grow) is identified by what it
    holds even without a newline, unless it is empty."""
    fp = fingerprint(head, final)
    if fp is None:
        return None
    line = head.split(b"\n", 1)[0]
    parsed = parse_cri(line) or parse_docker(line)
    return Text(fp, _sortable(parsed[0]) if parsed is not None else b"")


def _sortable(time: bytes) -> bytes:
    """A normalised RFC 3339 time with its fraction padded, so times sort as bytes."""
    base, _, fraction = time[:-1].partition(b".")
    return base + b"." + fraction.ljust(9, b"0")


class Registry:
    """Keys of the texts being followed, and their checkpoints."""

    def __init__(self, store: CheckpointStore) -> None:
        self.store = store
        self.by_key: dict[str, FileCursor] = {}
        self._ended: dict[str, int] = {}  # texts read to their end in this run -> end

    def ended(self, key: str, end: int) -> None:
        """The text `key` was read to `end` (its acknowledgement may still be on its way)."""
        self._ended.pop(key, None)
        self._ended[key] = end
        if len(self._ended) > ENDED_KEPT:
            del self._ended[next(iter(self._ended))]

    def end_of(self, key: str) -> int | None:
        return self._ended.get(key)

    def key_for(self, scope: str, stream: str, container_id: str, fp: str) -> str:
        """The key of the text `fp` of `stream` in `scope`, as stored if seen before."""
        key = file_key(fp, scope, stream, container_id)
        if key in self.store.files or key in self.by_key:
            return key
        legacy = f"{fp}|{scope}"
        entry = self.store.get(legacy)
        if entry is not None and entry.stream in ("", stream) and legacy not in self.by_key:
            entry.stream = stream
            return legacy
        return key

    def entry(self, key: str) -> Entry | None:
        return self.store.get(key)

    def follow(self, cursor: FileCursor, key: str, fp: str) -> int:
        """`cursor` follows the text `key`; return the committed offset to resume at."""
        cursor.set_key(key, fp)
        self.by_key[key] = cursor
        entry = self.store.register(
            key,
            Entry(
                cursor.path,
                cursor.offset,
                cursor.dev,
                cursor.ino,
                scope=cursor.scope,
                stream=cursor.stream,
                fp=fp,
                real=cursor.real,
            ),
        )
        return entry.offset

    def done(
        self, key: str, scope: str, stream: str, fp: str, real: str, st: os.stat_result, end: int
    ) -> None:
        """Record a text as read to `end` without following it (history at first start)."""
        entry = Entry(real, end, st.st_dev, st.st_ino, scope=scope, stream=stream, fp=fp, real=real)
        self.store.register(key, entry)

    def moved(self, cursor: FileCursor) -> None:
        if cursor.key:
            self.store.track(cursor.key, cursor.real, cursor.dev, cursor.ino)

    def release(self, cursor: FileCursor) -> None:
        if cursor.key and self.by_key.get(cursor.key) is cursor:
            del self.by_key[cursor.key]
