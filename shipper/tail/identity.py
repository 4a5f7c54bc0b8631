"""File identity: which file a cursor, a checkpoint and a document id belong to.

A file is known by a fingerprint of its first line (at most FINGERPRINT_BYTES) within the
directory it lives in. Container log lines begin with a nanosecond timestamp, so the first
line tells files apart; the directory keeps two containers' files apart even if their first
lines were equal. The key survives a rename (rotation) and gzip compression (the
fingerprint is taken from the decompressed bytes), and a reused inode with new content
gets a new key. Device and inode are kept beside the key to follow a file that is open.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib

FINGERPRINT_BYTES = 1024


def fingerprint(head: bytes) -> str | None:
    """Fingerprint of a file's first bytes; None while its first line is still incomplete."""
    end = head.find(b"\n", 0, FINGERPRINT_BYTES)
    if end == -1:
        if len(head) < FINGERPRINT_BYTES:
            return None
        end = FINGERPRINT_BYTES - 1
    return hashlib.blake2b(head[: end + 1], digest_size=8).hexdigest()


def read_head(path: str, compressed: bool) -> bytes:
    """The first FINGERPRINT_BYTES of a file (decompressed for .gz); b"" if unreadable."""
    try:
        if compressed:
            with gzip.open(path, "rb") as fh:
                return fh.read(FINGERPRINT_BYTES)
        fd = os.open(path, os.O_RDONLY)
        try:
            return os.pread(fd, FINGERPRINT_BYTES, 0)
        finally:
            os.close(fd)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile):
        return b""


def file_key(scope: str, fp: str) -> str:
    """The checkpoint key of a file: fingerprint and directory."""
    return f"{fp}|{scope}"


def id_prefix(key: str) -> bytes:
    """Document id prefix for a file; the id is this plus the record's offset in hex."""
    return hashlib.blake2b(key.encode(), digest_size=10).hexdigest().encode()


def is_compressed(path: str) -> bool:
    return path.endswith(".gz")


def gzip_size_matches(path: str, offset: int) -> bool:
    """True if a gzip file's uncompressed length (its trailer, modulo 2**32) is `offset`."""
    if offset <= 0:
        return False
    try:
        with open(path, "rb") as fh:
            fh.seek(-4, os.SEEK_END)
            trailer = fh.read(4)
    except OSError:
        return False
    return len(trailer) == 4 and int.from_bytes(trailer, "little") == offset % (1 << 32)
