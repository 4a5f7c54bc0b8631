"""Following many log files through rotation, truncation and deletion.

The tailer is driven by the pipeline: `read` hands out the next batch of chunks (whole
lines, one chunk per file in turn) and `discover` keeps the picture of the files up to
date; the pipeline calls it on every pass, also while reading is paused because the
sink is behind, so rotations are followed as they happen even then. Between calls it
sleeps until `next_wakeup` or until the watcher reports a change.

The seams: shipper.tail.prospector (globs, listings and rename events turned into
transitions), shipper.tail.lifecycle (the only place a cursor's state changes),
shipper.tail.schedule (when each file is read), shipper.tail.budget (descriptors and
deleted files), shipper.tail.registry (which text a file holds, and its checkpoint).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import time
from collections.abc import Callable

from shipper.checkpoint import CheckpointStore
from shipper.tail import departures
from shipper.tail.budget import Budget
from shipper.tail.changes import Changes
from shipper.tail.discovery import DirectoryWatcher, excluded, make_watcher, watch_roots
from shipper.tail.ends import Ends
from shipper.tail.follow import Follower
from shipper.tail.fs import REAL, FileSystem
from shipper.tail.items import Finished, Item, Restarted, TailStats
from shipper.tail.lifecycle import Lifecycle
from shipper.tail.options import BEGINNING, END, TailOptions
from shipper.tail.prospector import Prospector, Transition
from shipper.tail.reader import ContentReplaced, FileCursor, ReadError, State
from shipper.tail.registry import Registry
from shipper.tail.schedule import Schedule

__all__ = ["BEGINNING", "END", "Finished", "Item", "Restarted", "TailOptions", "Tailer"]

log = logging.getLogger(__name__)

GLOB_INTERVAL = 0.2  # globs matched again at most this often on watcher events
BOUNDS_INTERVAL = 0.25  # deleted-file bounds checked at most this often


class Tailer:
    """Discovers and reads files; hands out chunks of whole lines in fair rotation."""

    def __init__(
        self,
        options: TailOptions,
        store: CheckpointStore | None = None,
        clock: Callable[[], float] = time.monotonic,
        fs: FileSystem = REAL,
    ) -> None:
        self.options = options
        self.store = store if store is not None else CheckpointStore()
        self.clock = clock
        self.stats = TailStats()
        self.changes = Changes()
        self.prospector = Prospector(list(options.paths), list(options.exclude), fs, options.share)
        self.registry = Registry(self.store)
        self.schedule = Schedule(options.idle_poll_max)
        self.budget = Budget(
            options.max_open_files,
            options.deleted_max_files,
            options.deleted_max_seconds,
            options.rotate_wait,
        )
        self.lifecycle = Lifecycle(
            options, fs, self.registry, self.schedule, self.budget, self.stats, self.prospector
        )
        self.follower = Follower(self.lifecycle, fs)
        self.ends = Ends(self.lifecycle)
        self._watcher: DirectoryWatcher | None = None
        self._watched: set[str] = set()
        self._next_rescan = 0.0
        self._next_glob = 0.0
        self._next_bounds = 0.0
        self.rescans = 0
        self.deleted_only = False  # stopping: only files that die with the process are read

    @property
    def wakeup(self) -> Callable[[], None] | None:
        return self.changes.wake

    @wakeup.setter
    def wakeup(self, wake: Callable[[], None] | None) -> None:
        self.changes.wake = wake

    # ---- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start watching (inotify) and run the first scan."""
        if self.options.watch:
            self._watcher = make_watcher(self.changes)
        if self._watcher is not None:
            self._watcher.start()
            for directory, recursive in watch_roots(list(self.options.paths)):
                self._watcher.watch(directory, recursive)
        self.rescan()

    def stop(self) -> None:
        """Stop watching and close every file (unread bytes stay for the next run; what
        is left of deleted files is given up, counted and logged)."""
        if self._watcher is not None:
            self._watcher.stop()
        self.lifecycle.stop()

    def reconfigure(self, options: TailOptions) -> None:
        """New inputs while running (a config reload), between passes: files newly
        excluded, or no longer matched by any glob, are finished where they are (their
        checkpoint kept, the lines read so far delivered); new globs are matched at the
        next pass; files still included read on. `watch` and `share` keep their values
        (fixed for the process)."""
        options = dataclasses.replace(options, watch=self.options.watch, share=self.options.share)
        old, self.options = self.options, options
        self.lifecycle.o = options
        self.schedule.idle_poll_max = options.idle_poll_max
        b = self.budget
        b.max_open_files, b.rotate_wait = options.max_open_files, options.rotate_wait
        b.deleted_max_files = options.deleted_max_files
        b.deleted_max_seconds = options.deleted_max_seconds
        p = self.prospector
        p.paths, p.exclude = list(options.paths), list(options.exclude)
        if (options.paths, options.exclude) == (old.paths, old.exclude):
            return
        now = self.clock()
        for group in list(p.groups.values()):
            for name, live in list(group.lives.items()):
                if included(live.path, options.paths, options.exclude):
                    continue
                del group.lives[name]
                group.unmatched.pop(name, None)
                for cursor in list(group.stream(name)):
                    self.lifecycle.unfollow(cursor, now)
                group.streams.pop(name, None)
        if self._watcher is not None:
            for directory, recursive in watch_roots(list(options.paths)):
                self._watcher.watch(directory, recursive)
        self._next_rescan = 0.0  # the new globs are matched at the next pass

    @property
    def cursors(self) -> list[FileCursor]:
        return [c for c in self.lifecycle.cursors if c.key]

    def open_files(self) -> int:
        return self.budget.open

    # ---- discovery -------------------------------------------------------------------

    def rescan(self, now: float | None = None) -> None:
        """Match the globs and look at every directory again (periodically, and in tests)."""
        self.discover(self.clock() if now is None else now, full=True)

    def discover(self, now: float, full: bool = False) -> None:
        """Bring the picture up to date: what the watcher reported, the periodic rescan."""
        drained = self.changes.drain()
        groups = self.prospector.groups
        glob_now = full or drained.overflow or now >= self._next_rescan
        for src_dir, src, dst_dir, dst in drained.moves:
            if src_dir == dst_dir and src_dir in groups:
                groups[src_dir].renamed[dst] = src
        for directory, name in drained.created:
            if directory in groups:
                groups[directory].created.add(name)
        for directory in drained.dirs:
            group = groups.get(directory)
            if group is not None:
                group.dirty = True
            elif now >= self._next_glob:
                glob_now = True  # a directory of links, or one not followed yet
        changed: list[Transition] = []
        looked = []
        if glob_now:
            if full or drained.overflow or now >= self._next_rescan:
                self._next_rescan = now + self.options.rescan_interval
                self.rescans += 1
                for group in groups.values():
                    group.dirty, group.next_look = True, 0.0
            self._next_glob = now + GLOB_INTERVAL
            self.prospector.match(changed)
        for group in list(self.prospector.due):
            if now >= group.next_look:
                changed += self.prospector.look(group, now)
                looked.append(group)
        life = self.lifecycle
        self.follower.apply(changed, now)
        for group in looked:
            for cursor in list(group.tracked.values()):
                if cursor.state is State.LIVE and cursor.is_open:
                    self.ends.check_replaced(cursor, now)
                elif not (cursor.key or cursor.is_open or cursor.finished):
                    life.identify_closed(group, cursor, now)
        departures.forget_gone(life, looked, now)  # `gone` counts looks: only a look can change it
        if life.deleted and (glob_now or now >= self._next_bounds):
            self._next_bounds = now + BOUNDS_INTERVAL
            departures.check_bounds(life, now)
        if glob_now:
            self._tidy(now)
        self.lifecycle.initial = False

    def _tidy(self, now: float) -> None:
        """Forget directories nothing is followed in; keep checkpoints of what is on disk;
        watch the directories that are followed."""
        groups = self.prospector.groups
        wall = time.time()
        for scope, group in list(groups.items()):
            if group.idle() and not group.done:
                group.dirty = False
                del groups[scope]
                continue
            for cursor in group.tracked.values():
                if cursor.key:
                    self.store.touch(cursor.key, wall)
            for key, _ in group.done.values():
                self.store.touch(key, wall)
        if self._watcher is not None:
            for scope in set(groups) - self._watched:
                self._watcher.watch(scope)
            for scope in self._watched - set(groups):
                self._watcher.unwatch(scope)
            self._watched = set(groups)

    # ---- reading ---------------------------------------------------------------------

    def read(self, max_bytes: int) -> list[Item]:
        """Up to about `max_bytes` of complete lines, one chunk per file in turn (with
        `max_bytes` 0: only the picture is brought up to date)."""
        now = self.clock()
        self.discover(now)
        life, schedule, ends = self.lifecycle, self.schedule, self.ends
        schedule.wake_due(now)
        out = life.take()
        budget = max_bytes
        chunk_bytes = self.options.chunk_bytes
        groups = self.prospector.groups
        while budget > 0:
            cursor = schedule.pop()
            if cursor is None:
                break
            if self.deleted_only:
                if cursor.state is not State.DELETED:
                    continue
            elif not groups[cursor.scope].is_head(cursor):
                continue  # read once the older files of its stream are done
            if not cursor.key and not life.try_key(cursor, now):
                if not cursor.finished:
                    schedule.sleep(cursor, now)
                continue
            before = cursor.position
            try:
                if not cursor.is_open and not life.reopen(cursor, now):
                    continue
                chunks = cursor.read(min(chunk_bytes, budget))
            except ContentReplaced:
                ends.replaced(cursor, now)
                continue
            except ReadError as exc:
                ends.read_failed(cursor, now, str(exc))
                continue
            self.stats.truncated_bytes += cursor.take_dropped()
            if chunks is None:
                ends.at_end(cursor, now)
                continue
            out.extend(chunks)
            budget -= max(cursor.position - before, 1)
            schedule.gave_data(cursor, now)
            if cursor.eof:
                schedule.sleep(cursor, now)
            else:
                schedule.ready(cursor)
        out.extend(life.take())
        return out

    def next_wakeup(self) -> float:
        """Monotonic time at which `read` has something to do, absent notifications."""
        if self.schedule.has_ready():
            return self.clock()
        idle = self.schedule.next_wakeup()
        return min(self.next_discovery(), idle if idle is not None else float("inf"))

    def read_deleted_first(self) -> int:
        """Stopping: from now on only deleted files held open are read (their descriptors
        die with the process, and their text with them); returns the bytes they hold."""
        self.deleted_only = True
        unread = 0
        now = self.clock()
        for cursor in list(self.lifecycle.cursors):
            if cursor.is_open and cursor.key and cursor.links() == 0:
                self.lifecycle.set_state(cursor, State.DELETED, now)  # maybe not looked at yet
                left = cursor.unread_bytes()
                if left:
                    unread += left
                    self.schedule.ready(cursor)
        return unread

    def next_discovery(self) -> float:
        """When the picture is next due to be brought up to date (while reading is paused:
        rotations go on)."""
        times = [self._next_rescan]
        times += [g.next_look for g in self.prospector.due]
        return min(times)

    def has_ready(self) -> bool:
        return self.schedule.has_ready()

    def all_read(self) -> bool:
        """Every file has been read to its current end (for --once); wakes those that have
        not."""
        done = not self.schedule.has_ready()
        for cursor in self.lifecycle.cursors:
            if not cursor.key:
                continue  # no complete first line: nothing to read
            if cursor.is_open:
                if not cursor.eof:
                    done = False
                    self.schedule.ready(cursor)
                continue
            try:
                size = cursor.fs.stat(cursor.real).st_size
            except OSError:
                size = 0  # gone: the next look says where
            if cursor.compressed or size > cursor.offset:
                done = False
                self.schedule.ready(cursor)
        return done


def included(path: str, paths: tuple[str, ...], exclude: tuple[str, ...]) -> bool:
    """`path` may be matched by one of the globs and is not excluded (fnmatch's `*` also
    crosses `/`, so a path no glob can match is surely not matched)."""
    return not excluded(path, list(exclude)) and any(fnmatch.fnmatchcase(path, p) for p in paths)
