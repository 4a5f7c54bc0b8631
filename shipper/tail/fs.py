"""The tailer's only way to the filesystem by path.

Everything the tailer learns about names (globs, links, directory listings, first lines,
opening) goes through one `FileSystem` object, so a test can stage the races real nodes
produce (a file rotated between its match and the read of its first line, a listing taken
while a rotation is being compressed) by overriding one method. Reads and `fstat` of an
open descriptor stay plain `os` calls: they follow the file, not a name.
"""

from __future__ import annotations

import glob
import gzip
import os
import zlib
from typing import BinaryIO

FINGERPRINT_BYTES = 1024


class FileSystem:
    """The real filesystem."""

    def glob(self, pattern: str) -> list[str]:
        return sorted(glob.iglob(pattern))

    def readlink(self, path: str) -> str:
        """Where the link `path` points ("" if it is not a link); OSError if it is gone."""
        try:
            return os.readlink(path)
        except OSError as exc:
            if exc.errno == 22:  # EINVAL: not a link
                return ""
            raise

    def realpath(self, path: str) -> str:
        return os.path.realpath(path)

    def stat(self, path: str) -> os.stat_result:
        return os.stat(path)

    def isdir(self, path: str) -> bool:
        return os.path.isdir(path)

    def listdir(self, directory: str) -> dict[str, int] | None:
        """Regular files of `directory`, name -> inode (from the directory entries: no stat
        per file); None if the directory cannot be read (gone)."""
        try:
            with os.scandir(directory) as it:
                return {e.name: e.inode() for e in it if e.is_file(follow_symlinks=False)}
        except OSError:
            return None

    def open(self, path: str) -> BinaryIO:
        """The file itself, unbuffered (compressed files are decompressed by the reader)."""
        return open(path, "rb", buffering=0)

    def read_head(self, path: str, compressed: bool) -> bytes:
        """The first FINGERPRINT_BYTES of a file (decompressed for .gz); b"" if unreadable."""
        try:
            if compressed:
                with gzip.open(path, "rb") as fh:
                    return fh.read(FINGERPRINT_BYTES)
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                return os.pread(fd, FINGERPRINT_BYTES, 0)
            finally:
                os.close(fd)
        except (OSError, EOFError, zlib.error, gzip.BadGzipFile):
            return b""

    def gzip_length(self, path: str) -> int | None:
        """A gzip file's uncompressed length modulo 2**32 (its trailer); None if unreadable."""
        try:
            with open(path, "rb") as fh:
                fh.seek(-4, os.SEEK_END)
                trailer = fh.read(4)
        except OSError:
            return None
        return int.from_bytes(trailer, "little") if len(trailer) == 4 else None


REAL = FileSystem()
