"""One followed file: an open descriptor read in large chunks and cut at line ends."""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass
from enum import Enum
from typing import BinaryIO

from parsers.filename import ContainerRef
from shipper.tail.fs import FINGERPRINT_BYTES, REAL, FileSystem
from shipper.tail.identity import fingerprint, id_prefix, is_compressed, same_file


class State(Enum):
    LIVE = "live"  # the discovered path still leads to this file
    ROTATED = "rotated"  # renamed away (or replaced): read to the end, then close
    DETACHED = "detached"  # moved out of its directory, or its link removed: read to the end
    DELETED = "deleted"  # unlinked: only the descriptor keeps it; read to the end


@dataclass(slots=True)
class Chunk:
    """Whole lines of one file: `data` spans bytes [offset, end) and ends in a newline.

    A `long` chunk is the first `max_line_bytes` of one over-long line; `end` is the byte
    after that line's newline (the rest was skipped and counted).
    """

    cursor: FileCursor
    offset: int
    data: bytes
    end: int
    long: bool = False
    id_prefix: bytes = b""  # of the file's key when read (a truncation changes the key)
    key: str = ""


class ContentReplaced(Exception):
    """The file no longer starts with the text it was identified by, or shrank below what
    was read: truncated (copy-truncate) or rewritten in place."""


class ReadError(OSError):
    """A read failed; carries the file for the log line."""


@dataclass(eq=False, slots=True)
class FileCursor:
    """Reading state of one text (a file, followed through renames and compression).

    `offset` is the first byte not yet handed out as a chunk (always a line start);
    bytes after it that were read but hold no newline yet are kept in `_carry`. `key` is
    "" until the first line is complete (see shipper.tail.registry).
    """

    path: str  # as discovered: what documents show in log.file.path
    real: str  # where the text is now
    scope: str  # the directory it was written in
    stream: str  # the live file name it was written under
    dev: int
    ino: int
    offset: int
    max_line_bytes: int
    ref: ContainerRef | None = None
    container_id: str = ""
    key: str = ""
    fp: str = ""
    state: State = State.LIVE
    state_since: float = 0.0
    id_prefix: bytes = b""
    compressed: bool = False
    copy: str = ""  # a compressed copy of this text beside it (its plain file may go)
    size_seen: int = 0  # the largest size seen, for what is lost if it vanishes unread
    order: bytes = b""  # its first line's time: rotations of a stream are read in order
    read_errors: int = 0
    dropped_bytes: int = 0  # skipped parts of over-long lines, not yet counted
    finished: bool = False
    eof: bool = False
    superseded: bool = False  # rotated, and the runtime already writes to a new file
    fs: FileSystem = REAL
    _fh: BinaryIO | None = None
    _gz: BinaryIO | None = None  # decompressing reader of a compressed file being read
    _carry: bytes = b""
    _skip_from: int = -1  # offset of an over-long line being skipped, -1 if none
    _skip_head: bytes = b""
    _position: int = 0
    _last_stat: tuple[int, int, int, int] = (-1, 0, 0, 0)

    def __post_init__(self) -> None:
        self.compressed = is_compressed(self.real)

    def set_key(self, key: str, fp: str) -> None:
        self.key, self.fp, self.id_prefix = key, fp, id_prefix(key)

    def resume_at(self, offset: int) -> None:
        """Read on from `offset` (a checkpoint found once the text was known)."""
        if offset != self.offset or self._position != offset:
            self.offset = offset
            self._drop_decompressor()
            if self._fh is not None and not self.compressed:
                self._fh.seek(offset)
            self._forget_read_state()

    @property
    def is_open(self) -> bool:
        return self._fh is not None

    @property
    def position(self) -> int:
        """Bytes of the file consumed so far (read position)."""
        return self._position

    def open(self) -> None:
        """Open the file where the text is now and seek to `offset`.

        FileNotFoundError if that is no longer the file (or gone); ContentReplaced if it
        shrank below `offset` while closed.
        """
        fh = self.fs.open(self.real)
        try:
            st = os.fstat(fh.fileno())
            if not same_file(st, self.dev, self.ino):
                raise FileNotFoundError(f"{self.real} is no longer the file being followed")
            if not self.compressed:
                self.size_seen = max(self.size_seen, st.st_size)
                if st.st_size < self.offset:
                    raise ContentReplaced(self.real)
                fh.seek(self.offset)
        except BaseException:
            fh.close()
            raise
        self._fh = fh
        self._forget_read_state()

    def close(self) -> None:
        """Close the descriptor; unconsumed bytes after `offset` will be read again."""
        self._drop_decompressor()
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self._forget_read_state()

    def _decompressor(self) -> BinaryIO:
        """A compressed file is decompressed only while it is being read: holding its
        descriptor costs nothing, a decompressor some 50 KiB."""
        if self._gz is None:
            assert self._fh is not None
            self._fh.seek(0)
            gz: BinaryIO = gzip.GzipFile(fileobj=self._fh, mode="rb")  # type: ignore[assignment]
            gz.seek(self.offset)
            self._gz = gz
        return self._gz

    def _drop_decompressor(self) -> None:
        if self._gz is not None:
            self._gz.close()  # leaves the file itself open
            self._gz = None

    def _forget_read_state(self) -> None:
        """Reading starts over at `offset`: no carried partial line, skip or last stat."""
        self._carry = b""
        self._skip_from = -1
        self._skip_head = b""
        self._position = self.offset
        self._last_stat = (-1, 0, 0, 0)

    def read(self, limit: int) -> list[Chunk] | None:
        """Read up to `limit` bytes; return the complete lines as chunks (maybe none).

        None means end of file: nothing was there to read.
        """
        assert self._fh is not None, "read on a closed cursor"
        try:
            data = (self._decompressor() if self.compressed else self._fh).read(limit)
        except (OSError, EOFError, zlib.error) as exc:
            raise ReadError(f"reading {self.path} at byte {self._position}: {exc}") from exc
        if not data:
            self.eof = True
            return None
        if not self.compressed and self.key and self.head_changed():
            # Truncated and written again past our position: what was just read belongs
            # to new text at an unknown offset. Drop it; the tailer starts over.
            raise ContentReplaced(self.path)
        self.eof = len(data) < limit and not self.compressed
        self._position += len(data)
        chunks: list[Chunk] = []  # not kept on the cursor: it would pin the block
        if self._skip_from >= 0:
            data = self._skip(data, chunks)
            if data is None:
                return chunks
        buf = self._carry + data if self._carry else data
        cut = buf.rfind(b"\n")
        if cut < 0:
            self._carry = buf
        else:
            cut += 1
            block = buf[:cut] if cut < len(buf) else buf
            self._carry = buf[cut:]
            start = self.offset
            self.offset = start + cut
            chunks.append(Chunk(self, start, block, self.offset, False, self.id_prefix, self.key))
        if len(self._carry) > self.max_line_bytes:
            self._skip_from = self.offset
            self._skip_head = self._carry[: self.max_line_bytes]
            self.dropped_bytes += len(self._carry) - self.max_line_bytes
            self._carry = b""
        return chunks

    def _skip(self, data: bytes, chunks: list[Chunk]) -> bytes | None:
        """Consume the rest of an over-long line; return what follows it, if anything."""
        end = data.find(b"\n")
        if end < 0:
            self.dropped_bytes += len(data)
            return None
        self.dropped_bytes += end
        line_end = self._position - len(data) + end + 1
        chunks.append(
            Chunk(self, self._skip_from, self._skip_head, line_end, True, self.id_prefix, self.key)
        )
        self.offset = line_end
        self._skip_from = -1
        self._skip_head = b""
        return data[end + 1 :]

    def head_changed(self) -> bool:
        """The file no longer begins with the line it was identified by (rewritten)."""
        return fingerprint(self.head()) != self.fp

    def head(self) -> bytes:
        """The file's first bytes, through the descriptor when open (a deleted file too);
        closed, by its name, b"" if that no longer leads to it (stat after the read: a
        file that took the name meanwhile is never taken for this one)."""
        if self._fh is None:
            head = self.fs.read_head(self.real, self.compressed)
            try:
                st = self.fs.stat(self.real)
            except OSError:
                return b""
            return head if same_file(st, self.dev, self.ino) else b""
        if not self.compressed:
            return os.pread(self._fh.fileno(), FINGERPRINT_BYTES, 0)
        return decompressed_head(self._fh.fileno())

    def unterminated_tail(self) -> Chunk | None:
        """At the final end of a file (rotated, deleted): its last line if it has no newline.

        Runtimes always end lines with a newline, so this is a file cut short; the bytes
        are still shipped (as a line that will most likely be flagged unparsable).
        """
        if self._skip_from >= 0:
            chunk = Chunk(
                self,
                self._skip_from,
                self._skip_head,
                self._position,
                True,
                self.id_prefix,
                self.key,
            )
            self._skip_from, self._skip_head = -1, b""
        elif self._carry:
            chunk = Chunk(
                self, self.offset, self._carry, self._position, True, self.id_prefix, self.key
            )
            self._carry = b""
        else:
            return None
        self.offset = self._position
        return chunk

    def stat_size(self) -> int | None:
        """Current size of the open file (None for compressed or closed files)."""
        if self._fh is None or self.compressed:
            return None
        size = os.fstat(self._fh.fileno()).st_size
        self.size_seen = max(self.size_seen, size)
        return size

    def stat_if_changed(self) -> os.stat_result | None:
        """fstat of the open file if its size, times or links changed since the last call;
        None when closed, compressed or unchanged (an idle file costs one fstat a poll)."""
        if self._fh is None or self.compressed:
            return None
        st = os.fstat(self._fh.fileno())
        seen = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_nlink)
        if seen == self._last_stat:
            return None
        self._last_stat = seen
        self.size_seen = max(self.size_seen, st.st_size)
        return st

    def links(self) -> int:
        """Hard links left (0: deleted, only our descriptor keeps it)."""
        if self._fh is None:
            return 1
        return os.fstat(self._fh.fileno()).st_nlink

    def last_line_end(self) -> int:
        """Offset just after the last newline in the file (where `read_from: end` starts)."""
        if self._fh is None or self.compressed:
            return 0
        fd = self._fh.fileno()
        pos = os.fstat(fd).st_size
        while pos > 0:
            start = max(0, pos - 65536)
            cut = os.pread(fd, pos - start, start).rfind(b"\n")
            if cut >= 0:
                return start + cut + 1
            pos = start
        return 0

    def caught_up(self) -> bool:
        """Read to the current end of the file (a closed one cannot tell: False)."""
        if self._fh is None:
            return False
        if self.compressed:
            return self.eof
        return os.fstat(self._fh.fileno()).st_size <= self._position

    def unread_bytes(self) -> int:
        """Bytes of the file past what was handed out (its size as last seen if closed)."""
        size = self.stat_size()
        return max((self.size_seen if size is None else size) - self.offset, 0)

    def take_dropped(self) -> int:
        """Bytes of over-long lines skipped since the last call."""
        dropped, self.dropped_bytes = self.dropped_bytes, 0
        return dropped

    def restart_after_truncation(self) -> None:
        """The file shrank below what was read (copy-truncate): read again from byte 0,
        as a text without a key until its first line is complete."""
        self.offset = 0
        self.size_seen = 0
        self.key, self.fp, self.id_prefix = "", "", b""
        self._forget_read_state()
        if self._fh is not None:
            self._fh.seek(0)


def decompressed_head(fd: int) -> bytes:
    """The first FINGERPRINT_BYTES of the gzip file open as `fd` (b"" if unreadable)."""
    inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    out = b""
    at = 0
    try:
        while len(out) < FINGERPRINT_BYTES:
            block = os.pread(fd, 16384, at)
            if not block:
                break
            at += len(block)
            out += inflate.decompress(block, FINGERPRINT_BYTES - len(out))
            if inflate.eof:
                break
    except (OSError, zlib.error):
        return b""
    return out[:FINGERPRINT_BYTES]
