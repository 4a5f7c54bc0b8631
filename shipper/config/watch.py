"""Noticing that the config file, or a credential file it names, has new content.

Polled (about every second) rather than watched with inotify: a ConfigMap or Secret
update is a symlink swap (`..data` renamed over, the old timestamped directory deleted),
which leaves an inotify watch on the file or its old target dangling, while the path
itself never changes; an editor or `mv` renames a new file over the path; credential
files often live in other mounts than the config. Each poll is one stat() per file,
following the links, so the *resolved* target's (device, inode, mtime, size) show every
one of those; only when they differ is the file read and hashed, and only a different
hash is a change (a `touch`, or a ConfigMap update that rewrites the same text, is not).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

Signature = tuple[int, int, int, int]  # st_dev, st_ino, st_mtime_ns, st_size


@dataclass(slots=True)
class _Watched:
    path: str
    signature: Signature | None
    digest: bytes | None  # None: could not be read


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


class ContentWatch:
    """The content of a few named files, compared with what was seen last."""

    def __init__(
        self,
        stat: Callable[[str], os.stat_result] = os.stat,
        read: Callable[[str], bytes] = _read,
    ) -> None:
        self._stat, self._read = stat, read
        self._files: dict[str, _Watched] = {}

    def track(self, paths: dict[str, str]) -> dict[str, bytes | None]:
        """Watch exactly these files (name -> path) from now on; a name whose path is new
        takes what the file holds now as its baseline, which is returned (None if it
        cannot be read)."""
        out: dict[str, bytes | None] = {}
        for name in list(self._files):
            if name not in paths:
                del self._files[name]
        for name, path in paths.items():
            known = self._files.get(name)
            if known is not None and known.path == path:
                continue
            signature, content = self._look(path)
            self._files[name] = _Watched(path, signature, _digest(content))
            out[name] = content
        return out

    def changed(self) -> dict[str, bytes | None]:
        """The files whose content differs from the last seen (name -> new content, None
        if it cannot be read now); what is returned becomes the new baseline."""
        out: dict[str, bytes | None] = {}
        for name, w in self._files.items():
            try:
                st = self._stat(w.path)
                signature: Signature | None = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
            except OSError:
                signature = None
            if signature == w.signature:
                continue  # the same file, untouched: no read
            signature, content = self._look(w.path)
            digest = _digest(content)
            w.signature = signature
            if digest != w.digest:
                w.digest = digest
                out[name] = content
        return out

    def _look(self, path: str) -> tuple[Signature | None, bytes | None]:
        """Stat, read, stat again: a file replaced while it was read is read again, so the
        baseline always matches the content handed out."""
        for _ in range(3):
            try:
                before = self._stat(path)
                content = self._read(path)
                after = self._stat(path)
            except OSError:
                return None, None
            sig = (after.st_dev, after.st_ino, after.st_mtime_ns, after.st_size)
            if sig == (before.st_dev, before.st_ino, before.st_mtime_ns, before.st_size):
                return sig, content
        return sig, content


def _digest(content: bytes | None) -> bytes | None:
    return None if content is None else hashlib.sha256(content).digest()
