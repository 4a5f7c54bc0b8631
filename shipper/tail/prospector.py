"""Prospecting: globs, directory listings and rename events turned into typed transitions.

The tailer keeps a picture of each directory that holds a followed file (a `Group`, in
shipper.tail.group): the names it listed last with their inodes, which names are live
files (matched by the globs), which text each followed name holds, and the texts already
read to their end.
Looking at a directory again compares the new listing with that picture, by inode (from
the directory entries: no stat per file), so what happened in between comes out as
transitions whatever the names: a followed file now under another name (`Moved`: a
rotation), a compressed copy of its text beside it (`Copied`), its name gone with no
successor (`Vanished`), a live name holding a new file (`Appeared`), a live file no longer
matched (`Unmatched`: its link removed), and rotations nobody followed (`Unfollowed`:
rotated while shipper was down, or created and renamed between two looks). Which files
are rotations of which live file comes from the rename events when the watcher saw them,
else from the naming schemes of shipper.tail.naming.

Nothing here changes a cursor: shipper.tail.lifecycle applies the transitions.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from parsers.filename import container_ref
from shipper.shares import Share
from shipper.tail import naming
from shipper.tail.discovery import Found, Resolved, expand
from shipper.tail.fs import FileSystem
from shipper.tail.group import Group, Live
from shipper.tail.identity import is_compressed
from shipper.tail.reader import FileCursor
from shipper.tail.registry import text_of

# A directory with events is looked at again at most this often, and for one of many
# files (rotations kept by the thousand) at most every millisecond per file: its looks
# take a bounded share of the loop. Open files are read through their descriptors
# meanwhile; only what is found by a look waits.
MIN_LOOK_INTERVAL = 0.1
LOOK_INTERVAL_PER_FILE = 0.001


@dataclass(frozen=True, slots=True)
class Appeared:
    """A live name holds a file nobody follows (new, or the runtime's next file)."""

    group: Group
    name: str
    ino: int


@dataclass(frozen=True, slots=True)
class _OfCursor:
    group: Group
    cursor: FileCursor
    name: str


class Moved(_OfCursor):
    """The cursor's file is now at `name` (renamed: a rotation if it was live)."""

    __slots__ = ()


class Copied(_OfCursor):
    """`name` may hold a compressed copy of the cursor's text."""

    __slots__ = ()


class Vanished(_OfCursor):
    """The cursor's name `name` is gone, with no successor in sight."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Unmatched:
    """A live file is no longer matched by the globs (its link removed)."""

    group: Group
    name: str


@dataclass(frozen=True, slots=True)
class Unfollowed:
    """A rotation of `stream` nobody follows (see shipper.tail.catchup)."""

    group: Group
    name: str
    stream: str


Transition = Appeared | Moved | Copied | Vanished | Unmatched | Unfollowed


SameText = Callable[[str, str], bool]  # (name, fingerprint): the file there holds that text


def look(group: Group, listing: dict[str, int], same_text: SameText) -> list[Transition]:
    """Compare a new listing of the group's directory with its picture.

    An inode seen under a new name is the same file only while a descriptor holds it
    (then its number cannot be reused); for a closed file the new name's first line must
    also be its text: the kubelet's new live file often takes the number of the rotation
    it has just deleted."""
    old, group.listing = group.listing, listing
    renamed, group.renamed = group.renamed, {}
    created, group.created = group.created, set()
    changed = listing.items() - old.items()  # names new or on another inode (set algebra
    changed.update((n, listing[n]) for n in created & listing.keys())  # in C: no loop here)
    new = dict(sorted(changed))
    out: list[Transition] = []
    by_ino = {ino: n for n, ino in new.items()}
    claimed: set[str] = set()
    for name, cursor in list(group.tracked.items()):
        if listing.get(name) == cursor.ino and (cursor.is_open or name not in created):
            continue
        del group.tracked[name]
        moved_to = by_ino.get(cursor.ino)
        if (
            moved_to is not None
            and moved_to not in claimed
            and (cursor.is_open or same_text(moved_to, cursor.fp))
        ):
            claimed.add(moved_to)
            group.tracked[moved_to] = cursor
            out.append(Moved(group, cursor, moved_to))
            continue
        copy = name + ".gz"
        if copy in new and copy not in claimed:
            claimed.add(copy)
            out.append(Copied(group, cursor, copy))
        else:
            out.append(Vanished(group, cursor, name))
    claimed.update(group.tracked)  # names still holding their followed file
    _follow_done(group, listing, new, by_ino, claimed, same_text, created)
    for name in group.unsettled - set(new):
        if name in listing:
            new[name] = listing[name]  # look again at what could not be identified
    group.unsettled &= set(listing)
    for name, ino in new.items():
        if name in claimed:
            continue
        if name in group.lives:
            out.append(Appeared(group, name, ino))
            continue
        base = name[:-3] if name.endswith(".gz") else ""
        if base in group.tracked:
            out.append(Copied(group, group.tracked[base], name))
            continue
        if base in group.done:
            group.done[name] = (group.done[base][0], ino)
            continue
        stream = _stream_by_rename(group, name, renamed) or naming.stream_of(group.lives, name)
        if stream is not None:
            out.append(Unfollowed(group, name, stream))
    return out


def _follow_done(
    group: Group,
    listing: dict[str, int],
    new: dict[str, int],
    by_ino: dict[int, str],
    claimed: set[str],
    same_text: SameText,
    created: set[str],
) -> None:
    """Texts read to their end, followed through renames. `gone` counts the looks since a
    text's last name vanished; the lifecycle forgets it once that is missing from two
    listings in a row (a listing taken while a rotation is being compressed may show
    neither name)."""
    present: set[str] = set()
    newly: set[str] = set()
    for name, (key, ino) in list(group.done.items()):
        if listing.get(name) == ino and name not in created:
            present.add(key)
            continue
        del group.done[name]
        moved_to = by_ino.get(ino)
        if (
            moved_to is not None
            and moved_to not in claimed
            and moved_to not in group.lives
            and same_text(moved_to, key.partition("|")[0])
        ):
            claimed.add(moved_to)
            group.done[moved_to] = (key, ino)
            present.add(key)
        elif name + ".gz" in new and name + ".gz" not in claimed:
            claimed.add(name + ".gz")
            group.done[name + ".gz"] = (key, new[name + ".gz"])
            present.add(key)
        elif key not in group.gone:
            group.gone[key] = 0
            newly.add(key)
    for key in list(group.gone):
        if key in present:
            del group.gone[key]
        elif key not in newly:
            group.gone[key] += 1


def _stream_by_rename(group: Group, name: str, renamed: dict[str, str]) -> str | None:
    """The stream of a file the rename events say came from a live or followed name."""
    seen = {name}
    while (name := renamed.get(name, "")) and name not in seen:
        seen.add(name)
        if name in group.lives:
            return name
        cursor = group.tracked.get(name)
        if cursor is not None:
            return cursor.stream
    return None


class Prospector:
    """Which directories to look at, and what the globs match."""

    def __init__(
        self,
        paths: list[str],
        exclude: list[str],
        fs: FileSystem,
        share: Share | None = None,
    ) -> None:
        self.paths, self.exclude, self.fs = paths, exclude, fs
        self.share = share or Share()
        self.groups: dict[str, Group] = {}
        self.due: dict[Group, None] = {}  # groups to look at, in the order they became due
        self._resolved: Resolved = {}
        self._globbed = 0

    def match(self, changed: list[Transition]) -> None:
        """Match the globs: which files are live, in which directories."""
        self._globbed += 1
        if self._globbed % 12 == 0:  # a moved directory link is noticed within 12 scans
            self._resolved.clear()
        found = expand(self.paths, self.exclude, self._resolved, self.fs)
        lives: dict[str, dict[str, Live]] = {}
        owns = self.share.owns
        for f in found.values():
            scope, name = os.path.split(f.real)
            if not owns(scope):
                continue  # another worker's
            lives.setdefault(scope, {}).setdefault(name, _live(f))
        for scope, group in self.groups.items():
            now_live = lives.get(scope, {})
            for name in set(group.lives) - set(now_live):
                # Missing from two matches in a row: while a runtime rotates, the live name
                # (or a link's target) is briefly absent between the rename and the new file.
                misses = group.unmatched[name] = group.unmatched.get(name, 0) + 1
                if misses >= 2:
                    del group.lives[name], group.unmatched[name]
                    changed.append(Unmatched(group, name))
        for scope, names in lives.items():
            group = self.groups.get(scope)
            if group is None:
                group = self.groups[scope] = Group(scope, due=self.due)
            for name, live in names.items():
                group.unmatched.pop(name, None)
                if group.lives.get(name) != live:
                    added = name not in group.lives
                    group.lives[name] = live
                    group.listing.pop(name, None)  # looked at as new in the next look
                    if added:  # the names it did not own before may be its rotations
                        kept = set(group.tracked) | set(group.done)
                        group.listing = {n: i for n, i in group.listing.items() if n in kept}
                    group.dirty = True

    def look(self, group: Group, now: float) -> list[Transition]:
        listing = self.fs.listdir(group.scope) or {}
        pause = max(MIN_LOOK_INTERVAL, len(listing) * LOOK_INTERVAL_PER_FILE)
        group.dirty, group.next_look = False, now + pause
        group.looked = True

        def same_text(name: str, fp: str) -> bool:
            path = group.path(name)
            text = text_of(self.fs.read_head(path, is_compressed(path)), final=True)
            return text is not None and text.fp == fp

        return look(group, listing, same_text)


def _live(f: Found) -> Live:
    ref = container_ref(f.path, f.real)
    return Live(f.path, (ref.container_id or "") if ref is not None else "")
