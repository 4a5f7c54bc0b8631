"""One inotify instance for every watched directory (Linux).

watchdog opens an inotify instance and a thread per watched directory. shipper watches
each followed container's directory, and the kernel allows a user 128 instances by
default (`fs.inotify.max_user_instances`), shared with the kubelet and the container
runtime, which also run as root: a node with a hundred containers would have shipper
take them all. Here one instance holds one watch per directory (bounded by the far
larger `max_user_watches`), read by one thread.

Only structural events are asked for (a file or directory created, moved or deleted;
the watched directory itself moved or deleted): they say which directories to look at
again, and the two halves of a rename (paired by the kernel's cookie) say where a file
went. New data is found by polling (see shipper.tail.schedule), so writes are not watched.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import select
import struct
import threading

from shipper.tail.changes import Changes, Move

log = logging.getLogger(__name__)

IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

STRUCTURAL = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name


def _libc() -> ctypes.CDLL | None:
    # The symbols the interpreter is linked with, the C library's among them (dlopen of
    # NULL). `ctypes.util.find_library` would run `ldconfig -p` in a child process at
    # import, and a slim image may not have it.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    if not all(
        hasattr(libc, f) for f in ("inotify_init1", "inotify_add_watch", "inotify_rm_watch")
    ):
        return None
    return libc


_LIBC = _libc()


def available() -> bool:
    return _LIBC is not None


class InotifyWatcher:
    """Reports to `changes`, from its thread, the directories where something appeared,
    moved or vanished (for a recursive watch, any directory below it) and the renames."""

    def __init__(self, changes: Changes) -> None:
        assert _LIBC is not None, "inotify is not available"
        self._libc = _LIBC
        self._changes = changes
        self._move_from: dict[int, tuple[str, str]] = {}  # cookie -> first half of a rename
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self._fd = fd
        self._lock = threading.Lock()
        self._dirs: dict[int, str] = {}  # wd -> directory
        self._users: dict[int, int] = {}  # wd -> watches relying on it
        self._watches: dict[tuple[str, bool], list[int]] = {}  # (directory, recursive) -> wds
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="inotify", daemon=True)
        self._started = False
        self.events = 0  # structural events seen (tests, debugging)

    def start(self) -> None:
        self._thread.start()
        self._started = True

    def watch(self, directory: str, recursive: bool = False) -> None:
        """Start watching `directory` (idempotent; missing directories are skipped)."""
        key = (directory, recursive)
        with self._lock:
            if key in self._watches or not os.path.isdir(directory):
                return
            wds: list[int] = []
            self._watches[key] = wds
            self._add_tree(directory, recursive, wds)

    def unwatch(self, directory: str, recursive: bool = False) -> None:
        with self._lock:
            for wd in self._watches.pop((directory, recursive), []):
                self._release(wd)

    def watched(self) -> set[str]:
        with self._lock:
            return {d for d, _ in self._watches}

    def stop(self) -> None:
        if self._started:
            os.write(self._stop_w, b"x")
            self._thread.join(timeout=5)
            self._started = False
        if self._fd < 0:
            return  # closed already: never close descriptor numbers twice
        for fd in (self._fd, self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fd = -1

    # ---- inside the lock -------------------------------------------------------------

    def _add_tree(self, directory: str, recursive: bool, wds: list[int]) -> None:
        if not self._add(directory, wds) or not recursive:
            return
        try:
            entries = list(os.scandir(directory))
        except OSError:
            return
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                self._add_tree(entry.path, True, wds)

    def _add(self, directory: str, wds: list[int]) -> bool:
        wd = self._libc.inotify_add_watch(self._fd, os.fsencode(directory), STRUCTURAL | IN_ONLYDIR)
        if wd < 0:
            err = ctypes.get_errno()
            if err not in (errno.ENOENT, errno.ENOTDIR):
                # Out of watches (fs.inotify.max_user_watches) or the like: the periodic
                # rescan still finds every file, only later.
                log.warning(
                    "cannot watch directory; relying on rescans",
                    extra={"directory": directory, "error": os.strerror(err)},
                )
            return False
        if wd in wds:
            return True
        wds.append(wd)
        self._dirs[wd] = directory
        self._users[wd] = self._users.get(wd, 0) + 1
        return True

    def _release(self, wd: int) -> None:
        users = self._users.get(wd, 0) - 1
        if users > 0:
            self._users[wd] = users
            return
        self._users.pop(wd, None)
        self._dirs.pop(wd, None)
        self._libc.inotify_rm_watch(self._fd, wd)  # fails harmlessly if already gone

    def _forget(self, wd: int) -> None:
        """The kernel removed the watch (directory deleted or unmounted)."""
        self._users.pop(wd, None)
        self._dirs.pop(wd, None)
        for wds in self._watches.values():
            if wd in wds:
                wds.remove(wd)

    # ---- the thread ------------------------------------------------------------------

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if self._stop_r in ready:
                return
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                continue
            except OSError:
                return
            self._handle(data)

    def _handle(self, data: bytes) -> None:
        """Apply the events to the watch table and report them."""
        dirs: set[str] = set()
        moves: list[Move] = []
        created: set[tuple[str, str]] = set()
        overflow = False
        pos = 0
        with self._lock:
            while pos + _EVENT.size <= len(data):
                wd, mask, cookie, length = _EVENT.unpack_from(data, pos)
                start = pos + _EVENT.size
                name = os.fsdecode(data[start : start + length].rstrip(b"\0"))
                pos = start + length
                if mask & IN_Q_OVERFLOW:
                    overflow = True  # events were lost: only a full look knows what happened
                    continue
                if mask & IN_IGNORED:
                    self._forget(wd)
                    continue
                directory = self._dirs.get(wd)
                if directory is None:
                    continue
                self.events += 1
                dirs.add(directory)
                if mask & IN_ISDIR:
                    pass
                elif mask & IN_MOVED_FROM:
                    if len(self._move_from) > 4096:  # halves whose other half never came
                        self._move_from.clear()
                    self._move_from[cookie] = (directory, name)
                elif mask & (IN_MOVED_TO | IN_CREATE):
                    created.add((directory, name))
                    source = self._move_from.pop(cookie, None) if mask & IN_MOVED_TO else None
                    if source is not None:
                        moves.append((*source, directory, name))
                if mask & IN_ISDIR and mask & (IN_CREATE | IN_MOVED_TO):
                    self._grow(wd, name)
        self._changes.add(dirs, moves, created, overflow)

    def _grow(self, parent_wd: int, name: str) -> None:
        """A directory appeared under a recursively watched one: watch it (and below)."""
        parent = self._dirs.get(parent_wd)
        if parent is None:
            return
        for (_, recursive), wds in self._watches.items():
            if recursive and parent_wd in wds:
                self._add_tree(os.path.join(parent, name), True, wds)
