"""Durable read positions, advanced only as far as the sink has acknowledged.

The store maps a file key (see shipper.tail.identity) to the offset up to which every line
has been delivered. It is written atomically (temporary file, fsync, rename, fsync of the
directory) with a checksum, and the previous good copy is kept: a torn or corrupt store
is detected on load and replaced by that copy, with a warning.

The tracker turns acknowledgements into offsets. Each chunk of a file read becomes a
segment: the offset the file may be committed to once the segment's documents (and those
of every earlier segment of that file) are acknowledged. Segments complete in any order;
offsets only advance over a contiguous run, so a crash can re-send but never skip.

Beside each committed offset the store keeps a "sent up to" mark: no document at or past
it has been handed to the sink. It is written before a batch reaching past it is sent
(`Pipeline._dispatch`), so after a restart the documents between the committed offset and
the mark are the uncertain range: they may already be indexed (`resent`), and the sink
looks them up before writing them again.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
STORE_NAME = "checkpoints.json"
PREVIOUS_NAME = "checkpoints.json.prev"
LOCK_NAME = "lock"


class CheckpointError(RuntimeError):
    """The checkpoint directory cannot be used."""


class _NewerFormat(Exception):
    """The store was written in a format this version does not read."""


@dataclass(slots=True)
class Entry:
    """What is known of one file: where it was last seen and how far it was delivered."""

    path: str
    offset: int
    dev: int = 0
    ino: int = 0
    seen: float = 0.0


@dataclass(slots=True)
class CheckpointStore:
    """File key -> committed offset, plus per-directory rotation horizons.

    With `directory` None the store lives in memory only (`shipper tail`).
    """

    directory: Path | None = None
    forget_after: float = 7 * 24 * 3600.0
    files: dict[str, Entry] = field(default_factory=dict)
    horizons: dict[str, str] = field(default_factory=dict)
    scopes_seen: dict[str, float] = field(default_factory=dict)
    # "sent up to" marks: what this run may hand to the sink (`mark_sent`), what the last
    # completed write holds (`sent_durable`), and what was loaded at start (`resent_until`)
    sent: dict[str, int] = field(default_factory=dict)
    sent_durable: dict[str, int] = field(default_factory=dict)
    resent_until: dict[str, int] = field(default_factory=dict)
    _sent_snapshot: dict[str, int] = field(default_factory=dict)
    dirty: bool = False
    urgent: bool = False
    last_save: float = 0.0
    recovered_from_previous: bool = False
    _lock_fd: int | None = None

    @classmethod
    def open(cls, directory: Path | None, forget_after: float = 7 * 24 * 3600.0) -> CheckpointStore:
        """Load the store in `directory` (created if missing), taking an exclusive lock."""
        store = cls(directory=directory, forget_after=forget_after)
        if directory is None:
            return store
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise CheckpointError(f"checkpoint.path {str(directory)!r}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise CheckpointError(
                f"checkpoint.path {str(directory)!r} is in use by another shipper process"
            ) from None
        store._lock_fd = fd
        store._load()
        return store

    def close(self) -> None:
        """Release the directory lock."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def get(self, key: str) -> Entry | None:
        return self.files.get(key)

    def commit(self, key: str, offset: int, path: str, dev: int, ino: int) -> None:
        """Record that every line of `key` before `offset` is delivered."""
        entry = self.files.get(key)
        now = time.time()
        if entry is None:
            self.files[key] = Entry(path, offset, dev, ino, now)
        else:
            if offset < entry.offset:
                return  # an older segment after a reset; never move backwards
            entry.offset, entry.path, entry.dev, entry.ino, entry.seen = offset, path, dev, ino, now
        self.dirty = True

    def touch(self, key: str, now: float) -> None:
        """Note that the file is still there, so its entry is kept."""
        entry = self.files.get(key)
        if entry is not None:
            entry.seen = now

    def reset(self, key: str, offset: int = 0) -> None:
        """Set a file's offset (operators: `shipper checkpoints --reset`)."""
        entry = self.files.get(key)
        if entry is not None:
            entry.offset = offset
            self.dirty = True

    def remove(self, key: str) -> None:
        self.sent.pop(key, None)
        if self.files.pop(key, None) is not None:
            self.dirty = True

    # ---- the uncertain range -------------------------------------------------------------

    def resent(self, key: str, offset: int) -> bool:
        """The document at `offset` may have been indexed before this run started."""
        return offset < self.resent_until.get(key, 0)

    def unmarked(self, ends: list[tuple[str, int]]) -> bool:
        """Some (key, end) reaches past the durable "sent up to" mark of its file."""
        durable = self.sent_durable
        return any(end > durable.get(key, 0) for key, end in ends)

    def mark_sent(self, ends: dict[str, int]) -> None:
        """Raise the "sent up to" marks (written by the next save)."""
        sent = self.sent
        for key, end in ends.items():
            if end > sent.get(key, 0):
                sent[key] = end
                self.dirty = True

    def horizon(self, scope: str) -> str | None:
        return self.horizons.get(scope)

    def set_horizon(self, scope: str, horizon: str) -> None:
        if self.horizons.get(scope) != horizon:
            self.horizons[scope] = horizon
            self.scopes_seen[scope] = time.time()
            # Saved at once: after a crash, a directory without its horizon would have its
            # rotations taken for history.
            self.dirty = self.urgent = True

    def touch_scope(self, scope: str, now: float) -> None:
        if scope in self.horizons:
            self.scopes_seen[scope] = now

    def expire(self, now: float) -> list[str]:
        """Drop entries of files not seen for `forget_after` seconds; return their keys."""
        limit = now - self.forget_after
        gone = [k for k, e in self.files.items() if e.seen < limit]
        for key in gone:
            del self.files[key]
            self.sent.pop(key, None)
        old_scopes = [s for s in self.horizons if self.scopes_seen.get(s, 0.0) < limit]
        for scope in old_scopes:
            del self.horizons[scope]
            self.scopes_seen.pop(scope, None)
        if gone or old_scopes:
            self.dirty = True
        return gone

    def snapshot(self) -> bytes:
        """The serialised store (taken on the event loop; written by `write`)."""
        body = orjson.dumps(
            {
                "files": {
                    k: {
                        "path": e.path,
                        "offset": e.offset,
                        "dev": e.dev,
                        "ino": e.ino,
                        "seen": round(e.seen, 3),
                    }
                    for k, e in self.files.items()
                },
                "horizons": {
                    s: {"horizon": h, "seen": round(self.scopes_seen.get(s, 0.0), 3)}
                    for s, h in self.horizons.items()
                },
                "sent": dict(self.sent),
            },
            option=orjson.OPT_SORT_KEYS,
        )
        header = orjson.dumps(
            {
                "format": "shipper-checkpoints",
                "version": FORMAT_VERSION,
                "sha256": hashlib.sha256(body).hexdigest(),
            }
        )
        self.dirty = self.urgent = False
        self._sent_snapshot = dict(self.sent)
        return header + b"\n" + body + b"\n"

    def write(self, data: bytes) -> None:
        """Write a snapshot durably (blocking: call from a thread)."""
        if self.directory is None:
            return
        directory = self.directory
        tmp = directory / f".{STORE_NAME}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        current = directory / STORE_NAME
        if current.exists():
            os.replace(current, directory / PREVIOUS_NAME)
        os.replace(tmp, current)
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self.last_save = time.time()
        self.sent_durable = self._sent_snapshot

    def save(self) -> None:
        """Snapshot and write now (blocking)."""
        self.write(self.snapshot())

    def _load(self) -> None:
        assert self.directory is not None
        current = self.directory / STORE_NAME
        previous = self.directory / PREVIOUS_NAME
        problem = None
        for candidate in (current, previous):
            if not candidate.exists():
                continue
            try:
                self._parse(candidate.read_bytes())
            except _NewerFormat as exc:
                raise CheckpointError(
                    f"{candidate}: written in checkpoint format version {exc.args[0]}, this "
                    f"shipper reads version {FORMAT_VERSION}; run a newer shipper, or move "
                    "the directory away to start over"
                ) from None
            except (ValueError, KeyError, TypeError, OSError) as exc:
                problem = f"{candidate}: {exc}"
                log.warning(
                    f"checkpoint store {candidate} unreadable ({exc}); trying the previous copy",
                    extra={"file": str(candidate), "error": str(exc)},
                )
                continue
            if candidate is previous and current.exists():
                self.recovered_from_previous = True
                log.warning(
                    "recovered checkpoints from the previous good copy; lines after it may be "
                    "sent again (their ids make Elasticsearch drop the repeats)",
                    extra={"file": str(previous)},
                )
            return
        if problem is not None:
            log.error(
                f"no readable checkpoint store ({problem}); starting without checkpoints",
                extra={"error": problem},
            )

    def _parse(self, raw: bytes) -> None:
        header_raw, sep, rest = raw.partition(b"\n")
        header = orjson.loads(header_raw)
        if not sep or header.get("format") != "shipper-checkpoints":
            raise ValueError("not a shipper checkpoint store")
        if header.get("version") != FORMAT_VERSION:
            raise _NewerFormat(header.get("version"))
        body = rest.rstrip(b"\n")
        if hashlib.sha256(body).hexdigest() != header.get("sha256"):
            raise ValueError("checksum mismatch (torn or edited file)")
        data = orjson.loads(body)
        files = {
            k: Entry(v["path"], int(v["offset"]), int(v["dev"]), int(v["ino"]), float(v["seen"]))
            for k, v in data["files"].items()
        }
        horizons = {str(k): str(v["horizon"]) for k, v in data["horizons"].items()}
        seen = {str(k): float(v["seen"]) for k, v in data["horizons"].items()}
        sent = {str(k): int(v) for k, v in data.get("sent", {}).items()}  # absent before marks
        self.files, self.horizons, self.scopes_seen = files, horizons, seen
        self.sent, self.resent_until, self.sent_durable = dict(sent), dict(sent), dict(sent)


@dataclass(slots=True)
class Segment:
    """Documents of one chunk of one file, and the offset their delivery allows."""

    key: str
    end: int
    remaining: int
    size: int
    path: str = ""
    dev: int = 0
    ino: int = 0
    oldest: float = 0.0
    uncertain: bool = False  # documents that may be indexed already (CheckpointStore.resent)


@dataclass(slots=True)
class AckTracker:
    """Advances committed offsets over contiguous runs of fully acknowledged segments."""

    store: CheckpointStore
    on_release: Callable[[int], None] | None = None
    _queues: dict[str, deque[Segment]] = field(default_factory=dict)
    in_flight_bytes: int = 0

    def open(
        self, key: str, end: int, docs: int, size: int, path: str, dev: int, ino: int
    ) -> Segment:
        """Register a chunk whose `docs` documents (of `size` bytes) are about to be sent."""
        segment = Segment(key, end, docs, size, path, dev, ino)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
        queue.append(segment)
        self.in_flight_bytes += size
        if docs == 0:
            self._advance(queue)
        return segment

    def ack(self, segment: Segment, docs: int, size: int) -> None:
        """`docs` documents of `segment` (of `size` bytes) are delivered or accounted for."""
        segment.remaining -= docs
        self.in_flight_bytes -= size
        if self.on_release is not None:
            self.on_release(size)
        if segment.remaining <= 0:
            queue = self._queues.get(segment.key)
            if queue is not None and queue[0] is segment:
                self._advance(queue)

    def _advance(self, queue: deque[Segment]) -> None:
        last = None
        while queue and queue[0].remaining <= 0:
            last = queue.popleft()
        if last is not None:
            self.store.commit(last.key, last.end, last.path, last.dev, last.ino)
            if not queue:
                del self._queues[last.key]

    def read_ends(self) -> dict[str, int]:
        """Per file, the end of the last segment handed out (everything read so far)."""
        return {key: queue[-1].end for key, queue in self._queues.items()}

    def pending(self, key: str) -> int:
        """Segments of `key` not yet committed."""
        queue = self._queues.get(key)
        return len(queue) if queue else 0

    def idle(self) -> bool:
        """True when nothing is waiting for an acknowledgement."""
        return not self._queues
