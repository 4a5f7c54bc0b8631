"""One followed file: an open descriptor read in large chunks and cut at line ends."""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass
from enum import Enum
from typing import Any, BinaryIO

from parsers.filename import ContainerRef
from shipper.tail.identity import (
    FINGERPRINT_BYTES,
    fingerprint,
    id_prefix,
    is_compressed,
    read_head,
)


class State(Enum):
    LIVE = "live"  # the discovered path still leads to this file
    ROTATED = "rotated"  # renamed away (or replaced): read to the end, then close
    DETACHED = "detached"  # its path disappeared (container removed): read to the end
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
    """The file no longer starts with the text it was identified by."""


class ReadError(OSError):
    """A read failed; carries the file for the log line."""


@dataclass(eq=False, slots=True)
class FileCursor:
    """Reading state of one file identity.

    `offset` is the first byte not yet handed out as a chunk (always a line start);
    bytes after it that were read but hold no newline yet are kept in `_carry`.
    """

    path: str  # as discovered: what documents show in log.file.path
    real: str  # the file it resolved to when opened
    scope: str  # its directory
    key: str
    dev: int
    ino: int
    offset: int
    max_line_bytes: int
    ref: ContainerRef | None = None
    origin: str = ""  # the live path its lines were written under (for a rotation)
    state: State = State.LIVE
    state_since: float = 0.0
    context: Any = None  # the pipeline's per-file state (decoder, encoder)
    id_prefix: bytes = b""
    compressed: bool = False
    dropped_bytes: int = 0  # skipped parts of over-long lines
    truncations: int = 0
    # scheduling
    queued: bool = False
    needs_key: bool = False
    finished: bool = False
    eof: bool = False
    superseded: bool = False  # rotated, and the runtime already writes to a new file
    next_poll: float = 0.0
    last_data: float = 0.0
    backoff: float = 0.0
    _fh: BinaryIO | None = None
    _carry: bytes = b""
    _skip_from: int = -1  # offset of an over-long line being skipped, -1 if none
    _skip_head: bytes = b""
    _position: int = 0
    _last_stat: tuple[int, int, int, int] = (-1, 0, 0, 0)

    def __post_init__(self) -> None:
        self.id_prefix = id_prefix(self.key)
        self.origin = self.origin or self.real
        self.compressed = is_compressed(self.real)

    @property
    def is_open(self) -> bool:
        return self._fh is not None

    @property
    def position(self) -> int:
        """Bytes of the file consumed so far (read position)."""
        return self._position

    def open(self, path: str | None = None) -> None:
        """Open the file (at `path`, default the real path) and seek to `offset`."""
        target = path or self.real
        if self.compressed:
            fh: BinaryIO = gzip.open(target, "rb")  # type: ignore[assignment]  # noqa: SIM115
            try:
                fh.seek(self.offset)
            except (EOFError, OSError, zlib.error):
                fh.close()
                raise
        else:
            fh = open(target, "rb", buffering=0)  # noqa: SIM115 - kept open across calls
            st = os.fstat(fh.fileno())
            if (st.st_dev, st.st_ino) != (self.dev, self.ino):
                fh.close()
                raise FileNotFoundError(f"{target} is no longer the file being followed")
            if st.st_size < self.offset:
                self.offset = 0
                self.truncations += 1
            fh.seek(self.offset)
        self._fh = fh
        self._forget_read_state()

    def close(self) -> None:
        """Close the descriptor; unconsumed bytes after `offset` will be read again."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self._forget_read_state()

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
        fh = self._fh
        assert fh is not None, "read on a closed cursor"
        try:
            data = fh.read(limit)
        except (OSError, EOFError, zlib.error) as exc:
            raise ReadError(f"reading {self.path} at byte {self._position}: {exc}") from exc
        if not data:
            self.eof = True
            return None
        if not self.compressed and self.head_changed():
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
        return fingerprint(self.head()) != self.key.partition("|")[0]

    def head(self) -> bytes:
        """The file's first bytes, through the descriptor when open (a deleted file too)."""
        if self._fh is not None and not self.compressed:
            return os.pread(self._fh.fileno(), FINGERPRINT_BYTES, 0)
        return read_head(self.real, self.compressed)

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
        st = os.fstat(self._fh.fileno())
        return st.st_size

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
        return st

    def links(self) -> int:
        """Hard links left (0: deleted, only our descriptor keeps it)."""
        if self._fh is None:
            return 1
        return os.fstat(self._fh.fileno()).st_nlink

    def restart_after_truncation(self) -> None:
        """The file shrank below what was read (copy-truncate): read again from byte 0."""
        self.truncations += 1
        self.offset = 0
        self._forget_read_state()
        if self._fh is not None:
            self._fh.seek(0)
