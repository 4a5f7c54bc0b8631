"""Durable read positions, advanced only as far as the sink has acknowledged.

The store maps a file key (see shipper.tail.identity) to the offset up to which every line
has been delivered. It is written atomically (temporary file, fsync, rename, fsync of the
directory) with a checksum, and the previous good copy is kept: a torn or corrupt store
is detected on load and replaced by that copy, with a warning.

Offsets are advanced by shipper.acks as the sink acknowledges what was read.

Beside each committed offset the store keeps a "sent up to" mark: no document at or past
it has been handed to the sink. It is written before a batch reaching past it is sent
(`Pipeline._dispatch`), so after a restart the documents between the committed offset and
the mark are the uncertain range: they may already be indexed (`resent`), and the sink
looks them up before writing them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import time
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
                self.dirty = True

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

    def snapshot(self) -> bytes:
        """The serialised store (taken on the event loop; written by `write`)."""
        self.since = self.since or time.time()
        body = orjson.dumps(
            {
                "files": {
                    k: {
                        "path": e.path,
                        "offset": e.offset,
                        "dev": e.dev,
                        "ino": e.ino,
                        "seen": round(e.seen, 3),
                        "scope": e.scope,
                        "stream": e.stream,
                        "fp": e.fp,
                        "real": e.real,
                    }
                    for k, e in self.files.items()
                },
                "horizons": {
                    s: {"horizon": h, "seen": round(self.scopes_seen.get(s, 0.0), 3)}
                    for s, h in self.horizons.items()
                },
                "since": round(self.since, 3),
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
        self.dirty = False
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
        self.sent_durable = self._sent_snapshot
        self.last_save = time.time()

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
        files = {k: _entry(k, v) for k, v in data["files"].items()}
        horizons = {str(k): str(v["horizon"]) for k, v in data["horizons"].items()}
        seen = {str(k): float(v["seen"]) for k, v in data["horizons"].items()}
        sent = {str(k): int(v) for k, v in data.get("sent", {}).items()}  # absent before marks
        self.files, self.horizons, self.scopes_seen = files, horizons, seen
        self.sent, self.resent_until, self.sent_durable = dict(sent), dict(sent), dict(sent)
        self.since = float(data.get("since", 0.0)) or 1.0  # older stores: started long ago
        self.by_scope = {}
        for key, entry in files.items():
            self.by_scope.setdefault(entry.scope, set()).add(key)


def _entry(key: str, v: dict[str, object]) -> Entry:
    """An entry as stored; those written before identities were recorded (no `scope`)
    have keys `<fingerprint>|<directory>`, which say as much."""
    fp, _, scope = key.partition("|")
    return Entry(
        str(v["path"]),
        int(v["offset"]),  # type: ignore[call-overload]
        int(v["dev"]),  # type: ignore[call-overload]
        int(v["ino"]),  # type: ignore[call-overload]
        float(v["seen"]),  # type: ignore[arg-type]
        str(v.get("scope", scope)),
        str(v.get("stream", "")),
        str(v.get("fp", fp)),
        str(v.get("real", "")),
    )


class CheckpointWriter:
    """Writes the store every `interval` while it changed, off the event loop: the loop
    takes a snapshot (a serialisation), a thread writes and fsyncs it, and reading never
    waits for the disk."""

    def __init__(self, store: CheckpointStore, interval: float) -> None:
        self.store = store
        self.interval = interval
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()  # one write at a time: they share a temporary file
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval)
            if self.store.dirty:
                await self._write(background=True)

    async def write_now(self) -> None:
        """Write the store now and return once it is on disk (the "sent up to" marks must
        be durable before what they cover is sent). A write that fails is logged: delivery
        goes on, the exactly-once guarantee is weaker for that batch."""
        await self._write(background=True)

    async def _write(self, background: bool) -> None:
        async with self._lock:
            data = self.store.snapshot()
            try:
                if background:
                    await asyncio.to_thread(self.store.write, data)
                else:
                    self.store.write(data)
            except OSError as exc:
                self.store.dirty = True
                log.error("cannot write checkpoints", extra={"error": str(exc)})

    async def stop(self) -> None:
        """Finish a write in progress, then write what is committed now."""
        self._stop.set()
        if self._task is not None:
            await self._task
        await self._write(background=False)
