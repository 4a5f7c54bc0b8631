"""File identity: which text a cursor, a checkpoint and a document id belong to.

A text is known by the directory it was written in, the live file name it was written
under (its stream: `0.log` and all its rotations are one stream), the container id from
the kubelet link that led to it, and a fingerprint of its first line. The key made of
these survives renames (rotation) and gzip compression (the fingerprint is taken from the
decompressed bytes); two files that begin with the same line in one directory are still
two texts when they are two streams, and a reused inode with a new first line is a new
text. While a file is open, its (device, inode) follows it whatever its name.
"""

from __future__ import annotations

import hashlib
import os

from shipper.tail.fs import FINGERPRINT_BYTES


def fingerprint(head: bytes, final: bool = False) -> str | None:
    """Fingerprint of a file's first bytes; None while its first line is still incomplete.
    A `final` file (rotated: it will not grow) is known by what it holds even without a
    newline, unless it is empty."""
    end = head.find(b"\n", 0, FINGERPRINT_BYTES)
    if end == -1:
        if len(head) < FINGERPRINT_BYTES and not (final and head):
            return None
        end = min(len(head), FINGERPRINT_BYTES) - 1
    return hashlib.blake2b(head[: end + 1], digest_size=8).hexdigest()


def file_key(fp: str, scope: str, stream: str, container_id: str = "") -> str:
    """The checkpoint key of a text (stores written by older versions hold `fp|scope`)."""
    key = f"{fp}|{scope}|{stream}"
    return f"{key}|{container_id[:16]}" if container_id else key


def id_prefix(key: str) -> bytes:
    """Document id prefix for a text; the id is this plus the record's offset in hex."""
    return hashlib.blake2b(key.encode(), digest_size=10).hexdigest().encode()


def is_compressed(path: str) -> bool:
    return path.endswith(".gz")


def same_file(st: os.stat_result | None, dev: int, ino: int) -> bool:
    """`st` (of a path, or None if it is gone) is the file (dev, ino)."""
    return st is not None and st.st_ino == ino and st.st_dev == dev
