"""The one place a cursor's state changes: found, keyed, moved, opened, closed, truncated,
finished, given up.

Transitions come from prospecting (shipper.tail.prospector, applied by
shipper.tail.follow) and from reading (shipper.tail.ends: the end of a file, a shrink, a
new first line). A file is opened as soon as it is found, so its descriptor follows it
through renames and deletion; at the descriptor cap, files found are identified by name
at every look until they can be opened. Whatever can never be read is counted by
shipper.tail.losses.
"""

from __future__ import annotations

import logging
import os
import time
import zlib

from shipper.tail.budget import Budget
from shipper.tail.fs import FileSystem
from shipper.tail.group import Group
from shipper.tail.identity import is_compressed, same_file
from shipper.tail.items import Finished, Item, TailStats
from shipper.tail.losses import Losses
from shipper.tail.options import END, TailOptions
from shipper.tail.prospector import Prospector
from shipper.tail.reader import FileCursor, State
from shipper.tail.registry import Registry, Text, text_of
from shipper.tail.schedule import Schedule

log = logging.getLogger(__name__)


class Lifecycle:
    def __init__(
        self,
        options: TailOptions,
        fs: FileSystem,
        registry: Registry,
        schedule: Schedule,
        budget: Budget,
        stats: TailStats,
        prospector: Prospector,
    ) -> None:
        self.o, self.fs, self.registry = options, fs, registry
        self.schedule, self.budget, self.stats = schedule, budget, stats
        self.losses = Losses(stats)
        self.groups = prospector.groups
        self.cursors: set[FileCursor] = set()
        self.deleted: set[FileCursor] = set()  # deleted files held open (bounded)
        self.out: list[Item] = []  # items produced outside a read (discovery, bounds)
        self.initial = True  # the scan at start-up
        self.fresh = registry.store.fresh  # ... on the very first start on this node
        self.known_scopes = set(registry.store.by_scope)  # directories seen by earlier runs

    def take(self) -> list[Item]:
        out, self.out = self.out, []
        return out

    # ---- moves, copies, new files (see shipper.tail.follow for when) -------------------

    def rotated(self, group: Group, cursor: FileCursor, name: str, now: float) -> None:
        """Renamed within its directory (`tracked` already says so): a rotation, if it was
        the live file of its stream."""
        if cursor.state is State.LIVE and name != cursor.stream:
            self.stats.rotations += 1
            cursor.state = State.ROTATED
            self.schedule.ready(cursor)
        cursor.real = group.path(name)
        self.registry.moved(cursor)
        self._key_final(cursor, now)

    def _key_final(self, cursor: FileCursor, now: float) -> None:
        """A file waiting for its first line that stopped being live is identified by
        what it holds now, at once (not when its turn to be read comes: reading may be
        paused), so that a copy of it found meanwhile is known for its copy."""
        if not cursor.key and cursor.is_open and cursor.state is not State.LIVE:
            self.try_key(cursor, now)

    def relocated(self, group: Group, cursor: FileCursor, name: str, st: os.stat_result) -> None:
        """Its file, closed, was found renamed (its text is at `name`)."""
        cursor.real, cursor.dev, cursor.ino = group.path(name), st.st_dev, st.st_ino
        group.tracked[name] = cursor
        group.gone.pop(cursor.key, None)
        self.registry.moved(cursor)

    def placed(
        self, group: Group, cursor: FileCursor, name: str, st: os.stat_result, now: float
    ) -> None:
        """The text of the closed `cursor` was found at `name`: renamed, or compressed."""
        if is_compressed(name):
            self.copy_found(cursor, group.path(name))
            self.to_copy(group, cursor, now)
        else:
            self.relocated(group, cursor, name, st)

    def copy_found(self, cursor: FileCursor, path: str) -> None:
        """A compressed copy of the cursor's text is at `path` (its plain file may go)."""
        cursor.copy = path

    def to_copy(self, group: Group, cursor: FileCursor, now: float) -> None:
        """The plain file is gone and a compressed copy holds the text: read on from it,
        through the descriptor while it is open."""
        group.gone.pop(cursor.key, None)
        if cursor.is_open and not cursor.compressed:
            if cursor.state is not State.DELETED:
                self.set_state(cursor, State.DELETED, now)
            return
        try:
            st = self.fs.stat(cursor.copy)
        except OSError:
            return
        group.tracked[os.path.basename(cursor.copy)] = cursor
        self.close(cursor)
        cursor.real, cursor.copy, cursor.compressed = cursor.copy, "", True
        cursor.dev, cursor.ino = st.st_dev, st.st_ino
        self.registry.moved(cursor)
        if cursor.state in (State.LIVE, State.DELETED):
            cursor.state = State.ROTATED  # its text is in the compressed copy now
            self.deleted.discard(cursor)
        self.schedule.ready(cursor)

    def vanished(self, group: Group, cursor: FileCursor, now: float) -> None:
        """Its name went with no successor in sight."""
        if cursor.copy and os.path.basename(cursor.copy) in group.listing:
            self.to_copy(group, cursor, now)
        elif cursor.is_open:
            gone = cursor.links() == 0
            self.set_state(cursor, State.DELETED if gone else State.DETACHED, now)
            self._key_final(cursor, now)
        elif cursor.key:
            # Closed: it may come back under another name (compressed meanwhile); given
            # up once two listings in a row have not shown it (see shipper.tail.departures).
            group.gone.setdefault(cursor.key, 0)
        else:
            # Closed and never identified: its text may be a rotation found beside it
            # (see `follow_rotation`); given up if none is found in two looks.
            self.losses.unidentified(group, cursor)
            self.end(cursor, "", now)

    def follow_rotation(
        self,
        group: Group,
        name: str,
        st: os.stat_result,
        stream: str,
        key: str,
        text: Text,
        length: int | None,
        now: float,
    ) -> None:
        """Read a rotation nobody followed, from the checkpoint of its text (`length`
        long). A text never seen before may be what a file that vanished unidentified
        held: the first such file of its stream it could hold is accounted for."""
        self.stats.rotations += 1  # rotated before it was followed, or while shipper was down
        cursor = self.make(group, name, st, stream, State.ROTATED, now)
        cursor.order = text.time
        cursor.offset = self.registry.follow(cursor, key, text.fp)
        if cursor.offset == 0:
            self.losses.text_found(group, stream, length)
        self.enter(group, cursor)
        self.open_if_room(cursor, group)

    # ---- cursors --------------------------------------------------------------------------

    def follow_new(
        self, group: Group, name: str, ino: int, stream: str, state: State, now: float
    ) -> FileCursor | None:
        """Follow the file `name` of `group` (a live file, found just now). If it is gone
        or replaced before it could be opened, nothing is followed now: the name is
        looked at again at the next look, and the file itself found where it went."""
        try:
            st = self.fs.stat(group.path(name))
        except OSError:
            st = None
        cursor = (
            None
            if st is None or st.st_ino != ino
            else self.make(group, name, st, stream, state, now)
        )
        if cursor is not None and self.budget.room():
            try:
                self._open(cursor)
            except (OSError, EOFError, zlib.error):
                cursor = None
        if cursor is None:
            group.listing.pop(name, None)
            group.dirty = True
            return None
        self.enter(group, cursor)
        self.try_key(cursor, now)
        return cursor

    def open_if_room(self, cursor: FileCursor, group: Group) -> None:
        """Files are opened as soon as they are found: the descriptor then follows the
        file through renames and deletion, also while reading is paused."""
        if self.budget.room():
            try:
                self._open(cursor)
            except (OSError, EOFError, zlib.error):
                group.dirty = True  # gone or replaced already: the next look says which

    def make(
        self, group: Group, name: str, st: os.stat_result, stream: str, state: State, now: float
    ) -> FileCursor:
        return group.cursor(name, st, stream, state, now, self.o.max_line_bytes, self.fs)

    def enter(self, group: Group, cursor: FileCursor) -> None:
        group.enter(cursor)
        self.cursors.add(cursor)
        log.debug("following file", extra={"file": cursor.real, "state": cursor.state.value})
        self.schedule.ready(cursor)

    def try_key(self, cursor: FileCursor, now: float) -> bool:
        """Give the cursor the key of its text once the first line is complete."""
        text = text_of(cursor.head(), final=cursor.state is not State.LIVE)
        if text is None:
            if cursor.state is not State.LIVE and not cursor.unread_bytes():
                self.end(cursor, "", now)  # rotated or gone while still empty
            elif cursor.state is State.LIVE and not self._still_live(cursor):
                self.groups[cursor.scope].dirty = True  # replaced: look at the directory
            return False
        group = self.groups[cursor.scope]
        key = self.registry.key_for(cursor.scope, cursor.stream, cursor.container_id, text.fp)
        holder = self.registry.by_key.get(key)
        if holder is not None and holder is not cursor:
            # The text is followed already (this is a second name for the same file, or
            # a copy of it): this cursor has read nothing of it and simply ends.
            self.end(cursor, "", now)
            return False
        cursor.order = text.time
        if (
            self.registry.entry(key) is None
            and self.initial
            and self.o.read_from == END
            and cursor.scope not in self.known_scopes
        ):
            cursor.offset = cursor.last_line_end()
        cursor.resume_at(self.registry.follow(cursor, key, text.fp))
        group.gone.pop(key, None)
        return True

    def identify_closed(self, group: Group, cursor: FileCursor, now: float) -> None:
        """A closed file not identified yet (found at the descriptor cap, before its first
        line was complete) is looked at by name at every look of its directory, also while
        reading is paused, so it is known by its text before it is renamed or compressed.
        Smaller than it was, it is a new file on its inode number: the old one vanished."""
        try:
            st = self.fs.stat(cursor.real)
        except OSError:
            return  # the look says where it went
        if not same_file(st, cursor.dev, cursor.ino):
            return
        if st.st_size < cursor.size_seen:
            self.vanished(group, cursor, now)
            group.listing.pop(os.path.basename(cursor.real), None)  # to follow it as new
            group.dirty = True
            return
        cursor.size_seen = st.st_size
        self.try_key(cursor, now)

    def _still_live(self, cursor: FileCursor) -> bool:
        """Its live name still leads to it (one stat: a file waiting for its first line
        notices its replacement without waiting for a rescan or an event)."""
        try:
            return same_file(self.fs.stat(cursor.real), cursor.dev, cursor.ino)
        except OSError:
            return False

    def _open(self, cursor: FileCursor) -> bool:
        cursor.open()
        self.budget.open += 1
        self.stats.files_opened += 1
        return True

    def reopen(self, cursor: FileCursor, now: float) -> bool:
        """Open a closed cursor, first closing an idle one if the descriptor cap is reached."""
        budget = self.budget
        if not budget.room():
            victim = None
            if budget.may_look_for_room(now):
                victim = budget.victim(self.cursors, cursor, self.schedule.last_data, self._waiting)
            if victim is None:
                budget.nothing_to_close(now)
                self.schedule.sleep(cursor, now, 0.25)
                return False
            self.close(victim)
            if victim.state is State.DELETED:
                self.to_copy(self.groups[victim.scope], victim, now)
            budget.parked += 1
            self.stats.parked += 1
        try:  # ContentReplaced (shrunk below its offset while closed): shipper.tail.ends
            return self._open(cursor)
        except (OSError, EOFError, zlib.error):
            if cursor.copy:
                self.to_copy(self.groups[cursor.scope], cursor, now)
            else:  # moved or gone meanwhile: the next look says which
                self.groups[cursor.scope].dirty = True
                self.schedule.sleep(cursor, now, 0.25)
            return False

    def _waiting(self, cursor: FileCursor) -> bool:
        """Not read until the older files of its stream are done."""
        return not self.groups[cursor.scope].is_head(cursor)

    def close(self, cursor: FileCursor) -> None:
        if cursor.is_open:
            self.budget.open -= 1
        cursor.close()

    def set_state(self, cursor: FileCursor, state: State, now: float) -> None:
        if cursor.state is state:
            return
        if state is State.DELETED:
            self.deleted.add(cursor)
        cursor.state, cursor.state_since = state, now
        self.schedule.ready(cursor)

    # ---- ends ------------------------------------------------------------------------

    def finish(self, cursor: FileCursor) -> None:
        """The file is done: hand out an unterminated last line, then close it for good."""
        tail = cursor.unterminated_tail()
        if tail is not None:
            self.out.append(tail)
        self.groups[cursor.scope].read_to_end(cursor)
        self.registry.ended(cursor.key, cursor.offset)
        self.stats.files_closed += 1
        self._drop(cursor)

    def unfollow(self, cursor: FileCursor, now: float) -> None:
        """No longer wanted (excluded by a reload): dropped where it is, its checkpoint
        kept, so including it again reads on from there; the stage flushes what its
        decoder holds on `Finished`."""
        if cursor.finished:
            return
        if cursor.key:
            self.registry.store.touch(cursor.key, time.time())
        self._drop(cursor)

    def end(self, cursor: FileCursor, reason: str, now: float) -> None:
        """The cursor ends before its file's end; what it had not read is given up."""
        unread = cursor.unread_bytes()
        if reason and unread:
            self.losses.lost(cursor.real, reason, unread)
        if cursor.key:
            self.registry.store.remove(cursor.key)
        self._drop(cursor)

    def _drop(self, cursor: FileCursor) -> None:
        cursor.finished = True
        self.close(cursor)
        self.registry.release(cursor)
        self.schedule.forget(cursor)
        self.cursors.discard(cursor)
        self.deleted.discard(cursor)
        following = self.groups[cursor.scope].leave(cursor)
        if following is not None:
            self.schedule.ready(following)
        self.out.append(Finished(cursor))

    def stop(self) -> None:
        """Close every file; what is left of deleted ones cannot be read by the next run."""
        for cursor in list(self.cursors):
            if cursor.is_open and cursor.links() == 0 and cursor.unread_bytes():
                self.losses.lost(cursor.real, "deleted_at_shutdown", cursor.unread_bytes())
            self.close(cursor)
