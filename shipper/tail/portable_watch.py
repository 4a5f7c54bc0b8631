"""Watching directories through watchdog (inotify, FSEvents, kqueue): where the single
inotify instance of shipper.tail.inotify is not available, e.g. `shipper tail` on macOS.
watchdog uses one thread (and, on Linux, one inotify instance) per watched directory."""

from __future__ import annotations

import contextlib
import logging
import os
import threading

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import ObservedWatch

from shipper.tail.changes import Changes

log = logging.getLogger(__name__)


# Only files and directories appearing, moving or vanishing: inotify then never reports
# writes (one event per write, each handled in Python by watchdog, cost more than the
# polling that finds new data), nor the opens and closes shipper's own reads cause.
_STRUCTURAL: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
]


class _Handler(FileSystemEventHandler):
    def __init__(self, changes: Changes) -> None:
        self._changes = changes

    def on_any_event(self, event: FileSystemEvent) -> None:
        src = os.fsdecode(event.src_path)
        if isinstance(event, FileMovedEvent):
            dst = os.fsdecode(event.dest_path)
            (sd, sn), (dd, dn) = os.path.split(src), os.path.split(dst)
            self._changes.add({sd, dd}, [(sd, sn, dd, dn)], {(dd, dn)})
        elif isinstance(event, FileCreatedEvent):
            self._changes.add({os.path.dirname(src)}, created={os.path.split(src)})
        else:
            self._changes.add(
                {src, os.path.dirname(src)} if event.is_directory else {os.path.dirname(src)}
            )


class Watcher:
    """inotify, FSEvents or kqueue (through watchdog) on the directories that matter.

    The observer thread reports to `changes` where a file or directory appeared, moved
    or vanished, and the renames.
    """

    def __init__(self, changes: Changes) -> None:
        self._observer = Observer()
        self._observer.daemon = True
        self._handler = _Handler(changes)
        self._watches: dict[tuple[str, bool], ObservedWatch] = {}
        self._lock = threading.Lock()
        self._started = False

    def start(self) -> None:
        self._observer.start()
        self._started = True

    def watch(self, directory: str, recursive: bool = False) -> None:
        """Start watching `directory` (idempotent; missing directories are skipped)."""
        key = (directory, recursive)
        with self._lock:
            if key in self._watches or not os.path.isdir(directory):
                return
            try:
                self._watches[key] = self._observer.schedule(
                    self._handler, directory, recursive=recursive, event_filter=_STRUCTURAL
                )
            except OSError as exc:
                # Out of inotify watches or the like: the periodic rescan still finds files.
                log.warning(
                    "cannot watch directory; relying on rescans",
                    extra={"directory": directory, "error": str(exc)},
                )

    def unwatch(self, directory: str, recursive: bool = False) -> None:
        with self._lock:
            watch = self._watches.pop((directory, recursive), None)
            if watch is not None:
                with contextlib.suppress(KeyError, OSError):
                    self._observer.unschedule(watch)

    def watched(self) -> set[str]:
        with self._lock:
            return {d for d, _ in self._watches}

    def stop(self) -> None:
        if self._started:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._started = False
