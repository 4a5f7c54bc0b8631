"""Finding log files: globs and excludes, symlinks, and the watcher of their directories."""

from __future__ import annotations

import fnmatch
import glob
import logging
import os
from dataclasses import dataclass
from typing import Protocol

from shipper.tail import inotify
from shipper.tail.changes import Changes
from shipper.tail.fs import REAL, FileSystem

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Found:
    """A file a glob matched: the path as matched, and what it resolves to."""

    path: str
    real: str
    dev: int
    ino: int
    size: int


# What a matched path resolved to, and where the path itself pointed ("" if not a link).
Resolved = dict[str, tuple[str, str]]


def expand(
    patterns: list[str],
    exclude: list[str],
    resolved: Resolved | None = None,
    fs: FileSystem = REAL,
) -> dict[str, Found]:
    """Every regular file the patterns match (following symlinks), minus the excluded.

    `resolved` (kept by the caller between scans, replaced in place) spares resolving a
    path again while it is the same link to the same target (or still not a link):
    `os.path.realpath` walks every component, and was most of an idle rescan's cost.
    The caller clears it now and then, so a moved directory link is noticed too.
    """
    found: dict[str, Found] = {}
    cache: Resolved = {} if resolved is None else resolved
    seen: Resolved = {}
    for pattern in patterns:
        for path in fs.glob(pattern):
            if path in found or excluded(path, exclude):
                continue
            try:
                link = fs.readlink(path)
                hit = cache.get(path)
                real = hit[1] if hit is not None and hit[0] == link else fs.realpath(path)
                st = fs.stat(real)
            except OSError:
                continue  # a dangling link or a file gone between glob and stat
            seen[path] = (link, real)
            if not _is_regular(st.st_mode):
                continue
            found[path] = Found(path, real, st.st_dev, st.st_ino, st.st_size)
    if resolved is not None:
        resolved.clear()
        resolved.update(seen)
    return found


def _is_regular(mode: int) -> bool:
    return (mode & 0o170000) == 0o100000


def excluded(path: str, exclude: list[str]) -> bool:
    """True if `path` (or its file name) matches one of the exclude globs."""
    name = os.path.basename(path)
    return any(fnmatch.fnmatchcase(path, p) or fnmatch.fnmatchcase(name, p) for p in exclude)


def watch_roots(patterns: list[str]) -> list[tuple[str, bool]]:
    """Directories to watch for new files: (directory, recursive) per pattern."""
    roots = []
    for pattern in patterns:
        parts = pattern.split(os.sep)
        fixed = []
        for part in parts[:-1]:
            if glob.has_magic(part):
                break
            fixed.append(part)
        directory = os.sep.join(fixed) or os.sep
        recursive = len(fixed) < len(parts) - 1
        roots.append((directory, recursive))
    return roots


class DirectoryWatcher(Protocol):
    """Reports to a `Changes`, from its own thread, where files appear, move or vanish."""

    def start(self) -> None: ...
    def watch(self, directory: str, recursive: bool = False) -> None: ...
    def unwatch(self, directory: str, recursive: bool = False) -> None: ...
    def watched(self) -> set[str]: ...
    def stop(self) -> None: ...


def make_watcher(changes: Changes) -> DirectoryWatcher | None:
    """One inotify instance on Linux; watchdog elsewhere (`shipper tail` on a laptop);
    None if neither can be had (the periodic rescan then finds everything)."""
    if inotify.available():
        try:
            return inotify.InotifyWatcher(changes)
        except OSError as exc:
            log.warning(
                "cannot use inotify; relying on rescans (inputs.rescan_interval)",
                extra={"error": str(exc)},
            )
            return None
    from shipper.tail.portable_watch import Watcher  # watchdog: only where it is needed

    return Watcher(changes)
