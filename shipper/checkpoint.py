"""Durable read positions, advanced only as far as the sink has acknowledged.

The store maps a file key (see shipper.tail.identity) to the offset up to which every line
has been delivered. It is written atomically with a checksum (shipper.storefile), and the
previous good copy is kept: a torn or corrupt store is detected on load and replaced by
that copy, with a warning.

Offsets are advanced by shipper.acks as the sink acknowledges what was read.

Beside each committed offset the store keeps a "sent up to" mark: no document at or past
it has been handed to the sink. The marks are a file of their own, written before a
batch reaching past one is sent (`Pipeline._dispatch`); a mark the committed offset has
caught up with is dropped, so that write stays as small as what is in flight. After a
restart the documents between the committed offset and the mark are the uncertain range:
they may already be indexed (`resent`), and the sink looks them up before writing them
again.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from shipper import storefile

log = logging.getLogger(__name__)

LOCK_NAME = "lock"


class CheckpointError(RuntimeError):
    """The checkpoint directory cannot be used."""


@dataclass(slots=True)
class Entry:
    """What is known of one file's text: how far it was delivered, where it was last seen,
    and what identifies it after a restart (see shipper.tail.registry)."""

    path: str  # as discovered: what documents show in log.file.path
    offset: int
    dev: int = 0
    ino: int = 0
    seen: float = 0.0
    scope: str = ""  # the directory the text was written in
    stream: str = ""  # the live file name it was written under ("" if unknown: old stores)
    fp: str = ""  # fingerprint of its first line
    real: str = ""  # where it was last seen (a rotation moves it)


@dataclass(slots=True)
class CheckpointStore:
    """File key -> committed offset and identity, indexed by directory.

    With `directory` None the store lives in memory only (`shipper tail`). `horizons` are
    kept from stores written before rotations were recorded as they happened: the newest
    kubelet rotation stamp of a directory that was history when it was first seen.
    """

    directory: Path | None = None
    forget_after: float = 7 * 24 * 3600.0
    files: dict[str, Entry] = field(default_factory=dict)
    horizons: dict[str, str] = field(default_factory=dict)
    scopes_seen: dict[str, float] = field(default_factory=dict)
    by_scope: dict[str, set[str]] = field(default_factory=dict)
    since: float = 0.0  # when the store was first written: 0.0 on the very first start
    # "sent up to" marks: what this run may hand to the sink (`mark_sent`), what the last
    # completed write holds (`sent_durable`), and what was loaded at start (`resent_until`)
    sent: dict[str, int] = field(default_factory=dict)
    sent_durable: dict[str, int] = field(default_factory=dict)
    resent_until: dict[str, int] = field(default_factory=dict)
    _sent_snapshot: dict[str, int] = field(default_factory=dict)
    _covered: dict[str, int] = field(default_factory=dict)  # marks the last snapshot covers
    _covered_before: dict[str, int] = field(default_factory=dict)  # ... and the one before
    dirty: bool = False
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
        store.dirty = not store.since  # the first start is recorded at the first save
        return store

    def close(self) -> None:
        """Release the directory lock."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def fresh(self) -> bool:
        """Nothing has ever been recorded here: the very first start on this node."""
        return not self.since and not self.files and not self.horizons

    def get(self, key: str) -> Entry | None:
        return self.files.get(key)

    def in_scope(self, scope: str) -> list[tuple[str, Entry]]:
        """The entries of texts written in directory `scope`."""
        keys = self.by_scope.get(scope)
        return [(k, self.files[k]) for k in keys] if keys else []

    def register(self, key: str, entry: Entry) -> Entry:
        """Record a text's identity (its offset starts at `entry.offset`); an entry already
        there keeps its offset and takes the new whereabouts."""
        old = self.files.get(key)
        if old is not None:
            self.track(key, entry.real, entry.dev, entry.ino)
            return old
        entry.seen = entry.seen or time.time()
        self.files[key] = entry
        self.by_scope.setdefault(entry.scope, set()).add(key)
        self.dirty = True
        return entry

    def track(self, key: str, real: str, dev: int, ino: int) -> None:
        """The text `key` is now at `real` (renamed, compressed)."""
        entry = self.files.get(key)
        if entry is not None and (entry.real, entry.dev, entry.ino) != (real, dev, ino):
            entry.real, entry.dev, entry.ino = real, dev, ino
            self.dirty = True

    def commit(self, key: str, offset: int) -> None:
        """Record that every line of `key` before `offset` is delivered (a key no longer
        registered, its file deleted meanwhile, is not brought back)."""
        entry = self.files.get(key)
        if entry is None or offset < entry.offset:
            return  # forgotten, or an older segment after a reset: never move backwards
        entry.offset, entry.seen = offset, time.time()
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
        entry = self.files.pop(key, None)
        if entry is not None:
            keys = self.by_scope.get(entry.scope)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.by_scope[entry.scope]
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

    def horizon(self, scope: str) -> str | None:
        return self.horizons.get(scope)

    def touch_scope(self, scope: str, now: float) -> None:
        if scope in self.horizons:
            self.scopes_seen[scope] = now

    def expire(self, now: float) -> list[str]:
        """Drop entries of files not seen for `forget_after` seconds; return their keys."""
        limit = now - self.forget_after
        gone = [k for k, e in self.files.items() if e.seen < limit]
        for key in gone:
            self.remove(key)
        old_scopes = [s for s in self.horizons if self.scopes_seen.get(s, 0.0) < limit]
        for scope in old_scopes:
            del self.horizons[scope]
            self.scopes_seen.pop(scope, None)
        if old_scopes:
            self.dirty = True
        return gone

    def snapshot(self) -> list[bytes]:
        """The serialised store (taken on the event loop; written by `write`, then
        `written` is told). The "sent up to" marks are not in it: see `marks`."""
        self.since = self.since or time.time()
        body = storefile.encode_store(self.files, self.horizons, self.scopes_seen, self.since)
        self.dirty = False
        # Marks at or below the offset this write records cover nothing; once two writes
        # in a row recorded that (a damaged newest copy is replaced by the previous one),
        # they are dropped, so `sent.json` holds only what is in flight.
        files = self.files
        self._covered = {
            k: m for k, m in self.sent.items() if (e := files.get(k)) is None or e.offset >= m
        }
        return storefile.framed(body, storefile.FORMAT, storefile.VERSION)

    def write(self, pieces: list[bytes]) -> None:
        """Write a snapshot durably (blocking: call from a thread)."""
        if self.directory is not None:
            storefile.write_durably(
                self.directory, storefile.STORE_NAME, pieces, storefile.PREVIOUS_NAME
            )
            self.last_save = time.time()

    def written(self) -> None:
        """The snapshot taken last is on disk (call on the event loop)."""
        covered, before = self._covered, self._covered_before
        for key, mark in covered.items():
            if before.get(key) == mark and self.sent.get(key) == mark:
                del self.sent[key]
                self.sent_durable.pop(key, None)
        self._covered_before, self._covered = covered, {}

    def marks(self) -> list[bytes]:
        """The serialised "sent up to" marks (taken on the event loop; written by
        `write_marks`)."""
        self._sent_snapshot = dict(self.sent)
        body = storefile.encode_marks(self._sent_snapshot)
        return storefile.framed(body, storefile.MARKS_FORMAT, storefile.MARKS_VERSION)

    def write_marks(self, pieces: list[bytes]) -> None:
        """Write the marks durably (blocking: call from a thread)."""
        if self.directory is not None:
            storefile.write_durably(self.directory, storefile.MARKS_NAME, pieces)
        self.sent_durable = self._sent_snapshot

    def save(self) -> None:
        """Snapshot and write the store and the marks now (blocking)."""
        self.write(self.snapshot())
        self.written()
        self.write_marks(self.marks())

    def _load(self) -> None:
        assert self.directory is not None
        current = self.directory / storefile.STORE_NAME
        previous = self.directory / storefile.PREVIOUS_NAME
        problem = None
        for candidate in (current, previous):
            if not candidate.exists():
                continue
            try:
                loaded = storefile.decode_store(candidate.read_bytes(), Entry)
            except storefile.NewerFormat as exc:
                raise CheckpointError(
                    f"{candidate}: written in checkpoint format version {exc.args[0]}, this "
                    f"shipper reads versions up to {storefile.VERSION}; run a newer shipper, "
                    "or move the directory away to start over"
                ) from None
            except (ValueError, KeyError, TypeError, IndexError, OSError) as exc:
                problem = f"{candidate}: {exc}"
                log.warning(
                    f"checkpoint store {candidate} unreadable ({exc}); trying the previous copy",
                    extra={"file": str(candidate), "error": str(exc)},
                )
                continue
            self._take(loaded)
            if candidate is previous and current.exists():
                self.recovered_from_previous = True
                log.warning(
                    "recovered checkpoints from the previous good copy; lines after it may be "
                    "sent again (their ids make Elasticsearch drop the repeats)",
                    extra={"file": str(previous)},
                )
            break
        else:
            if problem is not None:
                log.error(
                    f"no readable checkpoint store ({problem}); starting without checkpoints",
                    extra={"error": problem},
                )
        self._load_marks()

    def _take(self, loaded: storefile.Loaded) -> None:
        self.files, self.horizons, self.scopes_seen = (
            loaded.files,
            loaded.horizons,
            loaded.scopes_seen,
        )
        self.since = loaded.since
        self.sent = loaded.sent
        self.by_scope = {}
        for key, entry in self.files.items():
            self.by_scope.setdefault(entry.scope, set()).add(key)

    def _load_marks(self) -> None:
        assert self.directory is not None
        path = self.directory / storefile.MARKS_NAME
        if path.exists():
            try:
                marks = storefile.decode_marks(path.read_bytes())
            except (ValueError, KeyError, TypeError, OSError, storefile.NewerFormat) as exc:
                log.warning(
                    f"'sent up to' marks {path} unreadable ({exc}); lines sent just before "
                    "the stop may be written twice if the data stream rolled over since",
                    extra={"file": str(path), "error": str(exc)},
                )
                marks = {}
            for key, mark in marks.items():
                if mark > self.sent.get(key, 0):
                    self.sent[key] = mark
        self.resent_until, self.sent_durable = dict(self.sent), dict(self.sent)
