"""Prospecting's transitions applied: what each means for the cursors.

shipper.tail.prospector says what changed in a directory; this decides what that means
(a compressed copy checked against its text, rotations nobody followed classified by
shipper.tail.catchup, history at the first start) and has shipper.tail.lifecycle make
each change to a cursor.
"""

from __future__ import annotations

import os

from shipper.tail import naming
from shipper.tail.catchup import Candidate, Verdict, classify, examine
from shipper.tail.fs import FileSystem
from shipper.tail.group import Group
from shipper.tail.lifecycle import Lifecycle
from shipper.tail.options import END
from shipper.tail.prospector import (
    Appeared,
    Copied,
    Moved,
    Transition,
    Unfollowed,
    Unmatched,
    Vanished,
)
from shipper.tail.reader import FileCursor, State
from shipper.tail.registry import text_of


class Follower:
    def __init__(self, life: Lifecycle, fs: FileSystem) -> None:
        self.life, self.fs, self.registry = life, fs, life.registry

    def apply(self, transitions: list[Transition], now: float) -> None:
        life = self.life
        rotations: list[Candidate] = []
        for t in transitions:
            if type(t) is Moved:
                life.rotated(t.group, t.cursor, t.name, now)
            elif type(t) is Copied:
                self._copied(t.group, t.cursor, t.name, now)
            elif type(t) is Vanished:
                life.vanished(t.group, t.cursor, now)
            elif type(t) is Unmatched:
                cursor = t.group.tracked.get(t.name)
                if cursor is not None and cursor.state is State.LIVE:
                    life.set_state(cursor, State.DETACHED, now)  # its link was removed
            elif type(t) is Appeared:
                life.follow_new(t.group, t.name, t.ino, t.name, State.LIVE, now)
            elif type(t) is Unfollowed:
                found = examine(self.fs, t)
                if found is not None:
                    rotations.append(found)
        rotations.sort(key=lambda c: (c.text.time, c.name))  # oldest first
        for candidate in rotations:
            self._rotation(candidate, now)

    def _copied(self, group: Group, cursor: FileCursor, name: str, now: float) -> None:
        """`name` may hold a compressed copy of the cursor's text."""
        path = group.path(name)
        plain_gone = os.path.basename(cursor.real) not in group.listing
        if cursor.key:
            text = text_of(self.fs.read_head(path, True), final=True)
            if text is None or text.fp != cursor.fp:
                group.unsettled.add(name)  # not (yet) its copy: looked at again later
                if plain_gone:
                    self.life.vanished(group, cursor, now)
                return
        self.life.copy_found(cursor, path)
        if plain_gone:
            self.life.to_copy(group, cursor, now)

    def _rotation(self, c: Candidate, now: float) -> None:
        """A rotation nobody followed (see shipper.tail.catchup)."""
        group, name, life = c.group, c.name, self.life
        d = classify(self.fs, c, self.registry, self._history(group, c.stream, name))
        holder = d.holder
        if d.verdict is Verdict.PLACE and holder is not None:
            life.placed(group, holder, name, c.st, now)
        elif d.verdict is Verdict.COPY and holder is not None:
            life.copy_found(holder, c.path)
        elif d.verdict is Verdict.HISTORY:
            self.registry.done(d.key, group.scope, c.stream, c.text.fp, c.path, c.st, d.length)
            group.done[name] = (d.key, c.st.st_ino)
        elif d.verdict is Verdict.DONE:
            group.done[name] = (d.key, c.st.st_ino)
            group.gone.pop(d.key, None)
        elif d.verdict is Verdict.NEW:
            life.follow_rotation(group, name, c.st, c.stream, d.key, c.text, d.length, now)

    def _history(self, group: Group, stream: str, name: str) -> bool:
        """Rotations lying beside a live file when shipper first sees it at its very first
        start (or with read_from: end) are from before shipper: not read."""
        horizon = self.registry.store.horizon(group.scope)
        if horizon is not None:
            stamp = naming.kubelet_stamp(stream, name)
            return stamp is not None and stamp <= horizon
        life = self.life
        return (
            life.initial
            and group.scope not in life.known_scopes
            and (life.fresh or life.o.read_from == END)
        )
