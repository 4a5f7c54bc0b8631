"""What reading finds when it stops: more to come later, the final end of a file no
longer written, a shrink or a new first line (the text read so far ends and the file is
read again from 0 as a new text, the copy of copy-truncate read on from where the old
text was), or a read error. shipper.tail.tailer reports here; the cursor changes that
follow are made by shipper.tail.lifecycle.
"""

from __future__ import annotations

import logging
import os

from shipper.tail.catchup import find_copy
from shipper.tail.identity import same_file
from shipper.tail.items import Restarted
from shipper.tail.lifecycle import Lifecycle
from shipper.tail.reader import FileCursor, State

log = logging.getLogger(__name__)

MAX_READ_ERRORS = 5  # a file no longer written that keeps failing to read is given up


class Ends:
    def __init__(self, life: Lifecycle) -> None:
        self.life = life
        self.fs, self.registry, self.schedule = life.fs, life.registry, life.schedule
        self.stats = life.stats

    def check_replaced(self, cursor: FileCursor, now: float) -> os.stat_result | None:
        """A shrink below what was read, or a new first line (rewritten in place): the
        text read so far ends (see `replaced`). Looked for at the end of what could be
        read, and when its directory is looked at (so the copy of copy-truncate is opened
        at once, also while reading is paused). Returns a changed stat, if any."""
        st = cursor.stat_if_changed()
        if (
            st is not None
            and cursor.key
            and (st.st_size < cursor.position or cursor.head_changed())
        ):
            self.replaced(cursor, now)
            return None
        return st

    def at_end(self, cursor: FileCursor, now: float) -> None:
        """Nothing more to read for now: a shrink, a deletion, or the final end."""
        st = self.check_replaced(cursor, now)
        if cursor.finished or not cursor.key:
            return
        if cursor.state is State.LIVE:
            if st is None or st.st_nlink:
                self.schedule.sleep(cursor, now)
                return
            self.life.set_state(cursor, State.DELETED, now)
        if self._complete(cursor) or now - cursor.state_since >= self.life.o.rotate_wait:
            self.life.finish(cursor)
        else:
            self.schedule.sleep(cursor, now)

    def _complete(self, cursor: FileCursor) -> bool:
        """A file no longer live, read to its end, gets no more lines once it is
        compressed, or once the runtime writes to a new file at its live name.

        The runtime reopens its log after the rename and then writes only to the new file,
        so new lines there mean the old one is done. They are looked for first and the old
        file read once more after, or its last lines (written just before the reopen)
        could be missed; until then, or if the new file stays empty, `rotate_wait` holds.
        """
        if cursor.compressed or cursor.superseded:
            return True
        try:
            st = self.fs.stat(os.path.join(cursor.scope, cursor.stream))
        except OSError:
            return False
        if st.st_size > 0 and not same_file(st, cursor.dev, cursor.ino):
            cursor.superseded = True  # the next end reached is the last
        return False

    def replaced(self, cursor: FileCursor, now: float) -> None:
        """Truncated (copy-truncate) or rewritten in place: the text read so far ends, the
        file is read again from 0 as a new text; a copy of the old text beside it (the
        copy of copy-truncate) is read on from where the old one was."""
        old_key, old_prefix, old_offset, old_fp = (
            cursor.key,
            cursor.id_prefix,
            cursor.offset,
            cursor.fp,
        )
        unread = max(cursor.size_seen - cursor.position, 0)
        log.warning(
            "file truncated (copy-truncate?); reading it again from the start",
            extra={"file": cursor.path, "was": cursor.position},
        )
        self.stats.truncations += 1
        self.life.out.append(Restarted(cursor, old_key, old_prefix, old_offset))
        self.registry.release(cursor)
        cursor.restart_after_truncation()
        self.schedule.ready(cursor)
        group = self.life.groups[cursor.scope]
        copy = find_copy(self.fs, group, old_fp)
        if copy is not None:
            name, st = copy
            rest = self.life.make(group, name, st, cursor.stream, State.ROTATED, now)
            rest.set_key(old_key, old_fp)
            rest.offset = old_offset
            self.registry.by_key[old_key] = rest
            self.registry.moved(rest)
            self.life.enter(group, rest)
            self.life.open_if_room(rest, group)
        elif unread:
            self.life.losses.lost(cursor.real, "truncated_unread", unread)

    def read_failed(self, cursor: FileCursor, now: float, error: str) -> None:
        log.error("read failed; will retry", extra={"file": cursor.real, "error": error})
        self.life.close(cursor)
        cursor.read_errors += 1
        if cursor.state is not State.LIVE and cursor.read_errors >= MAX_READ_ERRORS:
            self.life.end(cursor, "unreadable", now)
        else:
            self.schedule.sleep(cursor, now, 1.0)
