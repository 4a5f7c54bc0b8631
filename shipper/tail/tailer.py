"""Following many log files through rotation, truncation and deletion.

The tailer owns every open file. It is driven by the pipeline, which calls `read` for
the next batch of chunks; between calls it sleeps until `next_wakeup` or until the
watcher reports a change. Discovery is a glob rescan, run periodically and soon after
inotify reports a file appearing, moving or vanishing. New data is found by polling: a
file that just gave data is read again 50 ms later, an idle one at most `idle_poll_max`
later. Asking inotify for every write cost more than the reads it saved (one event per
write, each handled in Python), and a busy file is read every pass anyway.

Rotation (kubelet, containerd): `0.log` is renamed to `0.log.<stamp>` and a new `0.log`
created. The renamed file keeps its cursor (same descriptor, same key) and is read to its
end, then closed once it has been quiet for `rotate_wait`; the new file is read from byte
0. Rotations that happened while shipper was stopped or behind are found beside the live
file and read in order; each directory remembers the newest rotation that already existed
when it was first seen (its horizon), so history from before shipper is not replayed.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from parsers.filename import container_ref
from shipper.checkpoint import CheckpointStore
from shipper.tail.discovery import (
    DirectoryWatcher,
    Found,
    Resolved,
    Sibling,
    expand,
    make_watcher,
    rotated_siblings,
    rotations_among,
    watch_roots,
)
from shipper.tail.identity import (
    file_key,
    fingerprint,
    gzip_size_matches,
    id_prefix,
    is_compressed,
    read_head,
)
from shipper.tail.reader import Chunk, ContentReplaced, FileCursor, ReadError, State

log = logging.getLogger(__name__)

BEGINNING = "beginning"
END = "end"


@dataclass(frozen=True, slots=True)
class TailOptions:
    """How files are found and read (the `inputs` section of the config)."""

    paths: tuple[str, ...] = ("/var/log/containers/*.log",)
    exclude: tuple[str, ...] = ()
    read_from: str = BEGINNING
    chunk_bytes: int = 256 * 1024
    max_line_bytes: int = 2 * 1024 * 1024
    max_open_files: int = 1024
    rotate_wait: float = 5.0
    deleted_max_seconds: float = 600.0
    deleted_max_files: int = 64
    rescan_interval: float = 5.0
    idle_poll_max: float = 0.5
    watch: bool = True


@dataclass(slots=True)
class Finished:
    """A file was read to its final end and closed: flush what its decoder holds."""

    cursor: FileCursor


@dataclass(slots=True)
class Restarted:
    """A file was truncated (copy-truncate): what its decoder holds belongs to the old text.

    `key` and `id_prefix` are those of the old text, `end` how far it was read.
    """

    cursor: FileCursor
    key: str
    id_prefix: bytes
    end: int


Item = Chunk | Finished | Restarted


@dataclass(slots=True)
class TailStats:
    """Counters the metrics read."""

    files_opened: int = 0
    files_closed: int = 0
    rotations: int = 0
    truncations: int = 0
    parked: int = 0
    given_up_bytes: dict[str, int] = field(default_factory=dict)
    given_up_files: dict[str, int] = field(default_factory=dict)

    def give_up(self, reason: str, nbytes: int) -> None:
        self.given_up_bytes[reason] = self.given_up_bytes.get(reason, 0) + nbytes
        self.given_up_files[reason] = self.given_up_files.get(reason, 0) + 1


@dataclass(slots=True)
class _Group:
    """The files of one directory (one container's log and its rotations)."""

    live_real: str
    horizon: str
    # Names in the directory already looked at (rotations handled, other files), so a
    # directory holding hundreds of old rotations costs a listing, not a parse of each.
    seen: set[str] = field(default_factory=set)
    finished: dict[str, int] = field(default_factory=dict)  # key -> end, for closed files
    keys: dict[str, str] = field(default_factory=dict)  # rotation's name -> its file key
    names: dict[str, int] = field(default_factory=dict)  # key -> how many names hold it
    orphans: set[str] = field(default_factory=set)  # keys whose last name vanished
    orphans_before: set[str] = field(default_factory=set)  # ... at the previous look

    def handled(self, name: str, key: str) -> None:
        """The rotation `name` (text `key`) is accounted for: not looked at again."""
        self.seen.add(name)
        self.keys[name] = key
        self.names[key] = self.names.get(key, 0) + 1

    def unname(self, name: str) -> None:
        key = self.keys.pop(name, None)
        if key is None:
            return
        left = self.names[key] - 1
        if left:
            self.names[key] = left
        else:
            del self.names[key]
            self.orphans.add(key)


class Tailer:
    """Discovers and reads files; hands out chunks of whole lines in fair rotation."""

    def __init__(
        self,
        options: TailOptions,
        store: CheckpointStore | None = None,
        on_open: Callable[[FileCursor], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = options
        self.store = store if store is not None else CheckpointStore()
        self.on_open = on_open
        self.clock = clock
        self.stats = TailStats()
        self.by_key: dict[str, FileCursor] = {}
        self.by_path: dict[str, FileCursor] = {}
        self._by_real: dict[str, FileCursor] = {}
        self._pending: dict[str, Found] = {}  # matched, but first line not complete yet
        self._aliases: set[str] = set()  # paths leading to a file followed under another
        self._groups: dict[str, _Group] = {}
        self._ready: deque[FileCursor] = deque()
        self._idle: list[tuple[float, int, FileCursor]] = []
        self._seq = itertools.count()
        self._initial = True
        self._next_rescan = 0.0
        self._stopped = False
        self._lock = threading.Lock()
        self._structural = False
        self._next_pending_check = 0.0
        self._pending_backoff = 0.0
        self.wakeup: Callable[[], None] | None = None
        self._watcher: DirectoryWatcher | None = None
        self._watched_scopes: dict[str, int] = {}
        self._later: list[Item] = []  # items produced outside `read` (rescans)
        self._resolved: Resolved = {}
        self._rescans = 0
        self._last_rescan = -1.0
        self._open = 0  # cursors holding a descriptor
        self._cap_retry = 0.0  # at the descriptor cap with nothing to close: retry then

    # ---- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start watching (inotify) and run the first scan."""
        if self.options.watch:
            self._watcher = make_watcher(self.notify)
        if self._watcher is not None:
            self._watcher.start()
            for directory, recursive in watch_roots(list(self.options.paths)):
                self._watcher.watch(directory, recursive)
        self.rescan()

    def stop(self) -> None:
        """Stop watching and close every file (unread bytes stay for the next run).

        A deleted file cannot be read by the next run: what is left of it is given up,
        counted and logged.
        """
        self._stopped = True
        if self._watcher is not None:
            self._watcher.stop()
        for cursor in list(self.by_key.values()) + list(self.by_path.values()):
            if cursor.is_open and cursor.links() == 0:
                left = max((cursor.stat_size() or 0) - cursor.offset, 0)
                if left:
                    self.stats.give_up("deleted_at_shutdown", left)
                    log.warning(
                        "stopping with a deleted file not read to its end",
                        extra={"file": cursor.path, "bytes_given_up": left},
                    )
            self._close(cursor)

    @property
    def cursors(self) -> list[FileCursor]:
        return list(self.by_key.values())

    def open_files(self) -> int:
        return self._open

    def _close(self, cursor: FileCursor) -> None:
        """Close a cursor's descriptor (it can be opened again at its offset)."""
        if cursor.is_open:
            self._open -= 1
        cursor.close()

    # ---- notifications (any thread) --------------------------------------------------

    def notify(self) -> None:
        """A file appeared, moved or vanished (from the watcher thread): rescan soon."""
        with self._lock:
            first = not self._structural
            self._structural = True
        if first and self.wakeup is not None:
            self.wakeup()

    def _drain_notifications(self, now: float) -> None:
        with self._lock:
            structural, self._structural = self._structural, False
        if structural:
            # Soon, but not more than 5 times a second: a burst of rotations in many
            # directories is one rescan, not one per event.
            soon = max(now, self._last_rescan + 0.2)
            self._next_rescan = min(self._next_rescan, soon)

    def _check_pending(self, now: float) -> None:
        """Files matched before their first line was complete: look at them again, soon
        after they appeared and then less often (a container may never write)."""
        if not self._pending or now < self._next_pending_check:
            return
        for f in list(self._pending.values()):
            try:
                st = os.stat(f.real)
            except OSError:
                st = None
            if st is None or (st.st_dev, st.st_ino) != (f.dev, f.ino):
                # Replaced since it was matched (rotated before its first line was
                # complete): only a rescan sees the whole picture, rotations included.
                self._next_rescan = min(self._next_rescan, now)
                continue
            self._adopt(Found(f.path, f.real, f.dev, f.ino, st.st_size), now)
        self._pending_backoff = self._backoff(self._pending_backoff)
        self._next_pending_check = now + self._pending_backoff

    # ---- reading ---------------------------------------------------------------------

    def read(self, max_bytes: int) -> list[Item]:
        """Up to about `max_bytes` of complete lines, one chunk per file in turn."""
        now = self.clock()
        self._drain_notifications(now)
        if now >= self._next_rescan:
            self.rescan(now)
        self._check_pending(now)
        self._wake_due(now)
        out: list[Item] = self._later
        self._later = []
        budget = max_bytes
        chunk_bytes = self.options.chunk_bytes
        ready = self._ready
        while ready and budget > 0:
            cursor = ready.popleft()
            cursor.queued = False
            if cursor.finished:
                continue
            if cursor.needs_key and not self._rekey(cursor, out):
                if not cursor.finished:
                    self._sleep(cursor, now, 0.25)
                continue
            if not cursor.is_open and not self._reopen(cursor, now, out):
                continue
            before = cursor.position
            try:
                chunks = cursor.read(min(chunk_bytes, budget))
            except ContentReplaced:
                self._truncated(cursor, cursor.stat_size() or 0, now, out)
                continue
            except ReadError as exc:
                log.error("read failed; will retry", extra={"file": cursor.path, "error": str(exc)})
                self._close(cursor)
                self._sleep(cursor, now, 1.0)
                continue
            if chunks is None:
                self._at_end(cursor, now, out)
                continue
            out.extend(chunks)
            budget -= max(cursor.position - before, 1)
            cursor.backoff = 0.0
            cursor.last_data = now
            if cursor.eof:
                self._sleep(cursor, now, 0.0)
            else:
                self._make_ready(cursor)
        return out

    def next_wakeup(self) -> float:
        """Monotonic time at which `read` has something to do, absent notifications."""
        if self._ready:
            return self.clock()
        times = [self._next_rescan]
        if self._pending:
            times.append(self._next_pending_check)
        if self._idle:
            times.append(self._idle[0][0])
        return min(times)

    def has_ready(self) -> bool:
        return bool(self._ready)

    def all_read(self) -> bool:
        """Every file has been read to its current end (for --once); wakes those that have not."""
        if self._ready or self._pending:
            return False
        done = True
        for cursor in self.by_key.values():
            if cursor.needs_key:
                continue  # truncated and still empty: nothing to read
            if cursor.is_open:
                if not cursor.eof:
                    done = False
                    self._make_ready(cursor)
                continue
            try:
                size = os.stat(cursor.real).st_size
            except OSError:
                continue
            if size > cursor.offset and not cursor.compressed:
                done = False
                self._make_ready(cursor)
        return done

    def _make_ready(self, cursor: FileCursor) -> None:
        if not cursor.queued and not cursor.finished:
            cursor.queued = True
            self._ready.append(cursor)

    def _backoff(self, previous: float, minimum: float = 0.0) -> float:
        """The next wait for something idle: 50 ms, doubling up to `idle_poll_max`."""
        return min(max(previous * 2, 0.05, minimum), self.options.idle_poll_max)

    def _sleep(self, cursor: FileCursor, now: float, minimum: float) -> None:
        """Poll the cursor again later, backing off while it stays idle."""
        backoff = self._backoff(cursor.backoff, minimum)
        if cursor.state is not State.LIVE:
            backoff = min(backoff, 0.25)
        cursor.backoff = backoff
        cursor.next_poll = now + backoff
        heapq.heappush(self._idle, (cursor.next_poll, next(self._seq), cursor))

    def _wake_due(self, now: float) -> None:
        idle = self._idle
        while idle and idle[0][0] <= now:
            _, _, cursor = heapq.heappop(idle)
            if cursor.next_poll <= now:
                self._make_ready(cursor)

    def _at_end(self, cursor: FileCursor, now: float, out: list[Item]) -> None:
        """Nothing more to read for now: check for truncation, deletion and final close."""
        st = cursor.stat_if_changed()
        if st is not None and (st.st_size < cursor.position or cursor.head_changed()):
            self._truncated(cursor, st.st_size, now, out)
            return
        if cursor.state is State.LIVE:
            if st is not None and st.st_nlink == 0:
                self._set_state(cursor, State.DELETED, now)
            else:
                self._sleep(cursor, now, 0.0)
                return
        if self._complete(cursor) or now - cursor.state_since >= self.options.rotate_wait:
            self._finish(cursor, out)
        else:
            self._sleep(cursor, now, 0.0)

    def _complete(self, cursor: FileCursor) -> bool:
        """A file no longer live (rotated, and maybe deleted since, as the plain copy of a
        compressed rotation is), read to its end, will get no more lines: it is compressed,
        or the runtime was already writing to a new file at its path before this end was
        reached. Finishing then, not `rotate_wait` later, keeps the descriptors held by a
        burst of rotations down to about one per container.

        The runtime reopens its log after the rename and then writes only to the new file,
        so new lines there mean the old one is done. They are looked for first and the old
        file read once more after, or its last lines (written just before the reopen)
        could be missed; until then, or if the new file stays empty, `rotate_wait` holds.
        """
        if cursor.compressed or cursor.superseded:
            return True
        try:
            st = os.stat(cursor.origin)
        except OSError:
            return False
        if st.st_size > 0 and (st.st_dev, st.st_ino) != (cursor.dev, cursor.ino):
            cursor.superseded = True  # the next end reached is the last
        return False

    def _truncated(self, cursor: FileCursor, size: int, now: float, out: list[Item]) -> None:
        log.warning(
            "file truncated (copy-truncate?); reading it again from the start",
            extra={"file": cursor.path, "was": cursor.position, "now": size},
        )
        self.stats.truncations += 1
        old_key, old_offset = cursor.key, cursor.offset
        out.append(Restarted(cursor, old_key, cursor.id_prefix, old_offset))
        cursor.restart_after_truncation()
        self._forget_key(cursor)
        cursor.needs_key = True
        self._make_ready(cursor)
        # copy-truncate leaves the old text in a copy beside the file: finish reading there.
        group = self._groups.get(cursor.scope)
        if group is None:
            return
        for sib in reversed(rotated_siblings(group.live_real)):
            if _holds_text(sib.path, sib.compressed, cursor.scope, old_key):
                try:
                    st = os.stat(sib.path)
                except OSError:
                    break
                group.handled(os.path.basename(sib.path), old_key)
                self._new_cursor(
                    sib.path,
                    sib.path,
                    cursor.scope,
                    old_key,
                    st.st_dev,
                    st.st_ino,
                    old_offset,
                    now,
                    State.ROTATED,
                    origin=cursor.real,
                )
                break

    def _rekey(self, cursor: FileCursor, out: list[Item]) -> bool:
        """Give a truncated file the key of its new content, once its first line is there."""
        fp = fingerprint(cursor.head())
        if fp is None:
            if cursor.state is not State.LIVE:
                # Gone (deleted, rotated) before a first line was complete: no new text
                # can be told apart from another file's any more; it ends here.
                self._end_unkeyed(cursor, out)
            return False
        key = file_key(cursor.scope, fp)
        if key in self.by_key:
            # Another cursor already follows this text (it was renamed and found as a
            # rotation first); this one has read nothing of it, so it simply ends.
            self._end_unkeyed(cursor, out)
            return False
        cursor.key = key
        cursor.id_prefix = id_prefix(key)
        cursor.needs_key = False
        self.by_key[key] = cursor
        return True

    def _end_unkeyed(self, cursor: FileCursor, out: list[Item]) -> None:
        if cursor.state is State.DELETED or cursor.state is State.DETACHED:
            # Whatever it holds (an unfinished first line) is counted and logged.
            self._give_up(cursor, "deleted_before_first_line")
            return
        cursor.finished = True
        self._drop(cursor)
        out.append(Finished(cursor))  # releases its metadata; nothing is left to flush

    def _forget_key(self, cursor: FileCursor) -> None:
        if self.by_key.get(cursor.key) is cursor:
            del self.by_key[cursor.key]

    def _finish(self, cursor: FileCursor, out: list[Item]) -> None:
        """The file is done: hand out an unterminated last line, then close it for good."""
        tail = cursor.unterminated_tail()
        if tail is not None:
            out.append(tail)
        cursor.finished = True
        group = self._groups.get(cursor.scope)
        if group is not None:
            group.finished[cursor.key] = cursor.offset
            if len(group.finished) > 64:
                del group.finished[next(iter(group.finished))]
        out.append(Finished(cursor))
        self._drop(cursor)
        self.stats.files_closed += 1

    def _drop(self, cursor: FileCursor) -> None:
        self._close(cursor)
        self._forget_key(cursor)
        if self.by_path.get(cursor.path) is cursor:
            del self.by_path[cursor.path]
        if self._by_real.get(cursor.real) is cursor:
            del self._by_real[cursor.real]
        self._unwatch_scope(cursor.scope)

    def _set_state(self, cursor: FileCursor, state: State, now: float) -> None:
        if cursor.state is state:
            return
        if cursor.state is State.LIVE and state is State.ROTATED:
            self.stats.rotations += 1
        cursor.state = state
        cursor.state_since = now
        if self.by_path.get(cursor.path) is cursor:
            del self.by_path[cursor.path]
        if self._by_real.get(cursor.real) is cursor:
            del self._by_real[cursor.real]
        self._make_ready(cursor)

    # ---- discovery -------------------------------------------------------------------

    def rescan(self, now: float | None = None) -> None:
        """Match the globs again: new files, rotations, vanished links, rotated siblings."""
        now = self.clock() if now is None else now
        self._next_rescan = now + self.options.rescan_interval
        self._last_rescan = now
        self._rescans += 1
        if self._rescans % 12 == 0:  # a moved directory link is noticed within 12 rescans
            self._resolved.clear()
        found = expand(list(self.options.paths), list(self.options.exclude), self._resolved)
        for path, cursor in list(self.by_path.items()):
            f = found.get(path)
            if f is None:
                self._set_state(
                    cursor, State.DELETED if cursor.links() == 0 else State.DETACHED, now
                )
            elif (f.dev, f.ino) != (cursor.dev, cursor.ino):
                self._set_state(cursor, State.ROTATED, now)
            elif not cursor.needs_key and not cursor.compressed:
                self._verify_content(cursor, f, now)
                if not cursor.is_open and f.size > cursor.offset:
                    self._make_ready(cursor)
        self._aliases &= set(found)
        for path in list(self._pending):
            if path not in found:
                del self._pending[path]
        for path, f in found.items():
            if path not in self.by_path and path not in self._aliases:
                self._adopt(f, now)
        for scope in list(self._groups):
            self._catch_up(scope, now)
        self._check_open(now)
        wall = time.time()
        for key in self.by_key:
            self.store.touch(key, wall)
        for scope in self._groups:
            self.store.touch_scope(scope, wall)
        self._initial = False

    def _verify_content(self, cursor: FileCursor, f: Found, now: float) -> None:
        """Same inode, other first line: rewritten in place (truncated and refilled past
        the read position between two looks); treat it as a truncation."""
        fp = fingerprint(cursor.head())
        if not cursor.is_open and not _holds(cursor):
            return  # read through its path, which has since led to the next file
        # No complete first line any more also means the text it was keyed on is gone.
        if fp is None or file_key(cursor.scope, fp) != cursor.key:
            self._truncated(cursor, f.size, now, self._later)

    def _adopt(self, f: Found, now: float) -> None:
        compressed = is_compressed(f.real)
        scope = os.path.dirname(f.real)
        # The directory is registered even while the live file is empty: its rotations may
        # still hold unread lines.
        group_known = self._group(scope, f.real, now)
        fp = fingerprint(read_head(f.real, compressed))
        if not _still_at(f.real, f.dev, f.ino):
            # Rotated between the match and this read: the first line may be the next
            # file's. The next rescan sees the new state.
            self._next_rescan = min(self._next_rescan, now + 0.05)
            return
        if fp is None:
            if f.path not in self._pending:
                self._watch_scope(scope)
                self._pending_backoff = 0.0
                self._next_pending_check = now + 0.05
            self._pending[f.path] = f  # as last matched: the inode it must still be
            return
        if self._pending.pop(f.path, None) is not None:
            self._unwatch_scope(scope)
            group_known = True
        key = file_key(scope, fp)
        existing = self.by_key.get(key)
        if existing is not None:
            if existing.state is State.LIVE and existing.path in self.by_path:
                self._aliases.add(f.path)  # the same file under a second name
                return
            # A rotated or detached cursor whose file is matched again: follow it as live.
            existing.state = State.LIVE
            existing.path, existing.real, existing.origin = f.path, f.real, f.real
            existing.superseded = False
            self.by_path[f.path] = existing
            self._by_real[f.real] = existing
            self._make_ready(existing)
            return
        entry = self.store.get(key)
        finished = self._groups[scope].finished.get(key)
        if entry is not None:
            offset = entry.offset
        elif finished is not None:
            offset = finished
        elif self._initial and not group_known and self.options.read_from == END:
            offset = _last_line_end(f.real, f.size)
        else:
            offset = 0
        cursor = self._new_cursor(f.path, f.real, scope, key, f.dev, f.ino, offset, now)
        self.by_path[f.path] = cursor
        self._by_real[f.real] = cursor

    def _new_cursor(
        self,
        path: str,
        real: str,
        scope: str,
        key: str,
        dev: int,
        ino: int,
        offset: int,
        now: float,
        state: State = State.LIVE,
        origin: str = "",
    ) -> FileCursor:
        cursor = FileCursor(
            path=path,
            real=real,
            origin=origin or real,
            scope=scope,
            key=key,
            dev=dev,
            ino=ino,
            offset=offset,
            max_line_bytes=self.options.max_line_bytes,
            ref=container_ref(path, real),
            state=state,
            state_since=now,
        )
        self.by_key[key] = cursor
        self._watch_scope(scope)
        log.debug("following file", extra={"file": path, "offset": offset, "state": state.value})
        if self.on_open is not None:
            self.on_open(cursor)
        self._make_ready(cursor)
        return cursor

    def _group(self, scope: str, real: str, now: float) -> bool:
        """Register a directory; True if it was known before (this run or a checkpoint)."""
        group = self._groups.get(scope)
        if group is not None:
            if group.live_real != real:  # another live file (container restarted)
                group.live_real = real
                group.seen.clear()  # names skipped as not its rotations may be now
                group.keys.clear()
                group.names.clear()
            return True
        horizon = self.store.horizon(scope)
        known = horizon is not None
        if horizon is None:
            # Rotations present at start-up are history from before shipper; a directory
            # that appears while running is new, and all of it is read.
            siblings = rotated_siblings(real) if self._initial else []
            horizon = siblings[-1].stamp if siblings else ""
            self.store.set_horizon(scope, horizon)
        self._groups[scope] = _Group(real, horizon)
        return known

    def _catch_up(self, scope: str, now: float) -> None:
        """Open rotations of a followed file that no cursor has read (rotated while behind),
        and forget the checkpoints of rotations the runtime has deleted."""
        group = self._groups[scope]
        try:
            names = set(os.listdir(scope))
        except OSError:
            names = set()
        seen = group.seen
        new = names - seen
        vanished = seen - names
        directory, live = os.path.split(group.live_real)
        prefix = live + "."
        for name in new:
            if not name.startswith(prefix):
                seen.add(name)  # not a rotation of the live file: looked at once
            elif name.endswith(".gz") and name[:-3] in group.keys:
                # The compressed copy of a rotation already handled (its plain copy maybe
                # deleted since, so this comes before forgetting vanished names): same text.
                group.handled(name, group.keys[name[:-3]])
        seen -= vanished
        for name in vanished:
            group.unname(name)
        fresh = new - seen  # names that may be rotations not accounted for yet
        if fresh:
            for sib in rotations_among(directory, live, fresh):
                self._catch_up_one(group, sib, now)
        # A text whose last file vanished at the previous look and has not reappeared
        # under another name since (two looks: a listing taken while a rotation is being
        # compressed may show neither name): deleted, so its checkpoint can go.
        for key in group.orphans_before:
            if key not in group.names and key not in self.by_key:
                self.store.remove(key)
        group.orphans_before, group.orphans = group.orphans, set()
        gone = not names and not os.path.isdir(scope)
        if gone and not any(c.scope == scope for c in self.by_key.values()):
            del self._groups[scope]

    def _catch_up_one(self, group: _Group, sib: Sibling, now: float) -> None:
        name = os.path.basename(sib.path)
        if sib.stamp <= group.horizon:
            group.seen.add(name)
            return
        fp = fingerprint(read_head(sib.path, sib.compressed))
        if fp is None:
            return  # still empty, or compression still being written: look again later
        key = file_key(os.path.dirname(sib.path), fp)
        if self._take_rotation(group, sib, key, now):
            group.handled(name, key)  # and its compressed copy, when it appears

    def _take_rotation(self, group: _Group, sib: Sibling, key: str, now: float) -> bool:
        """See that the rotation `sib` (text `key`) is or will be read to its end; False if
        that cannot be told now (it vanished, e.g. compressed meanwhile: look again)."""
        cursor = self.by_key.get(key)
        if cursor is not None:
            if not cursor.is_open and cursor.real != sib.path and not _holds(cursor):
                # A parked file was rotated (and maybe compressed): follow it there.
                cursor.real, cursor.compressed = sib.path, sib.compressed
            return True
        if key in group.finished:
            return True
        entry = self.store.get(key)
        offset = entry.offset if entry is not None else 0
        try:
            st = os.stat(sib.path)
        except OSError:
            return False
        if offset >= st.st_size if not sib.compressed else gzip_size_matches(sib.path, offset):
            return True
        log.debug(
            "reading a rotation no cursor had opened",
            extra={"file": sib.path, "offset": offset},
        )
        self.stats.rotations += 1  # rotated before it was followed (or while shipper was down)
        self._new_cursor(
            sib.path,
            sib.path,
            os.path.dirname(sib.path),
            key,
            st.st_dev,
            st.st_ino,
            offset,
            now,
            State.ROTATED,
            origin=group.live_real,
        )
        return True

    def _check_open(self, now: float) -> None:
        """Notice deletions, and enforce the bounds on deleted files held open."""
        deleted = []
        for cursor in self.by_key.values():
            if not cursor.is_open:
                continue
            if cursor.state is State.LIVE:
                continue
            if cursor.state is not State.DELETED and cursor.links() == 0:
                cursor.state = State.DELETED
                cursor.state_since = now
            if cursor.state is State.DELETED:
                deleted.append(cursor)
        deleted.sort(key=lambda c: c.state_since)
        excess = len(deleted) - self.options.deleted_max_files
        for i, cursor in enumerate(deleted):
            age = now - cursor.state_since
            too_old = age > self.options.deleted_max_seconds
            # Over the count only once it has had `rotate_wait` to be read: a burst of
            # small rotations deleted as they are compressed is read, not given up.
            if (i < excess and age >= self.options.rotate_wait) or too_old:
                self._give_up(
                    cursor, "deleted_file_limit" if i < excess else "deleted_file_timeout"
                )

    def _give_up(self, cursor: FileCursor, reason: str) -> None:
        size = cursor.stat_size() or cursor.position
        lost = max(size - cursor.offset, 0)
        if lost:
            log.warning(
                "giving up a deleted file before reading it to the end",
                extra={"file": cursor.path, "reason": reason, "bytes_given_up": lost},
            )
            self.stats.give_up(reason, lost)
        else:  # read to its end already: only the wait for late writes is cut short
            log.debug("closing a deleted file early", extra={"file": cursor.path, "reason": reason})
        # The cursor ends here: what was read is still delivered and committed.
        cursor.finished = True
        self._drop(cursor)
        self._later.append(Finished(cursor))

    def _reopen(self, cursor: FileCursor, now: float, out: list[Item]) -> bool:
        """Open a parked cursor, first closing an idle one if the descriptor cap is reached."""
        if self.open_files() >= self.options.max_open_files and (
            now < self._cap_retry or not self._park_one(cursor)
        ):
            # Nothing to close (every open file busy or not live): wait, and do not look
            # again for each of the files waiting to be opened.
            self._cap_retry = max(self._cap_retry, now + 0.25)
            self._sleep(cursor, now, 0.25)
            return False
        try:
            cursor.open()
        except (OSError, EOFError) as exc:
            moved = self._find_moved(cursor)
            if moved is None:
                log.warning(
                    "a file vanished before it could be read to the end",
                    extra={"file": cursor.path, "error": str(exc)},
                )
                self.stats.give_up("vanished_while_parked", 0)
                cursor.finished = True
                self._drop(cursor)
                out.append(Finished(cursor))
                return False
            cursor.real, cursor.compressed = moved, is_compressed(moved)
            cursor.state, cursor.state_since = State.ROTATED, now
            try:
                cursor.open()
            except (OSError, EOFError):
                return False
        self._open += 1
        self.stats.files_opened += 1
        return True

    def _find_moved(self, cursor: FileCursor) -> str | None:
        """Where a file that could not be opened went: its compressed copy, a rotation
        (same inode), or any rotation with its first line (looked at last: each .gz one
        costs a decompression, and a directory may hold hundreds)."""
        group = self._groups.get(cursor.scope)
        if group is None:
            return None
        gz = cursor.real + ".gz"
        if not cursor.compressed and _holds_text(gz, True, cursor.scope, cursor.key):
            return gz
        siblings = rotated_siblings(group.live_real)
        for sib in reversed(siblings):
            if not sib.compressed and _still_at(sib.path, cursor.dev, cursor.ino):
                return sib.path
        for sib in reversed(siblings):
            if _holds_text(sib.path, sib.compressed, cursor.scope, cursor.key):
                return sib.path
        return None

    def _park_one(self, wanted: FileCursor) -> bool:
        """Close the live file idle the longest, so another can be opened."""
        candidates = [
            c
            for c in self.by_key.values()
            if c.is_open and c is not wanted and c.state is State.LIVE and c.eof
        ]
        if not candidates:
            return False
        victim = min(candidates, key=lambda c: c.last_data)
        self._close(victim)
        self.stats.parked += 1
        return True

    # ---- watches ---------------------------------------------------------------------

    def _watch_scope(self, scope: str) -> None:
        if self._watcher is None:
            return
        count = self._watched_scopes.get(scope, 0)
        if count == 0:
            self._watcher.watch(scope)
        self._watched_scopes[scope] = count + 1

    def _unwatch_scope(self, scope: str) -> None:
        if self._watcher is None:
            return
        count = self._watched_scopes.get(scope, 0) - 1
        if count <= 0:
            self._watched_scopes.pop(scope, None)
            self._watcher.unwatch(scope)
        else:
            self._watched_scopes[scope] = count


def _still_at(path: str, dev: int, ino: int) -> bool:
    """`path` leads to the file (dev, ino)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def _holds(cursor: FileCursor) -> bool:
    """The cursor's file is still where the cursor last saw it."""
    return _still_at(cursor.real, cursor.dev, cursor.ino)


def _holds_text(path: str, compressed: bool, scope: str, key: str) -> bool:
    """The file at `path` begins with the first line `key` was made from."""
    fp = fingerprint(read_head(path, compressed))
    return fp is not None and file_key(scope, fp) == key


def _last_line_end(path: str, size: int) -> int:
    """Offset just after the last newline in the file (where `read_from: end` starts)."""
    if size == 0:
        return 0
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return 0
    try:
        pos = size
        while pos > 0:
            start = max(0, pos - 65536)
            block = os.pread(fd, pos - start, start)
            cut = block.rfind(b"\n")
            if cut >= 0:
                return start + cut + 1
            pos = start
        return 0
    finally:
        os.close(fd)
