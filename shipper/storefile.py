"""The checkpoint store on disk: its two files, their format, and when and how they are
written.

`checkpoints.json` holds every file's committed offset and identity; it is written every
`checkpoint.interval` while something changed, and the previous good copy is kept beside
it. `sent.json` holds the "sent up to" marks of the files with documents in flight; it
is written before a batch reaching past a mark is sent, so its size follows what is in
flight, not how many files are remembered. Both files are a header line (format,
version, sha256 of the body) and a JSON body, written to a temporary file, fsynced,
renamed over the old one, and the directory fsynced.

Format version 2 of `checkpoints.json` groups entries by directory and writes each as an
array, with the strings a directory shares (its live files' paths, stream names) written
once: a node remembering tens of thousands of rotations writes a few MiB, not tens.
Version 1 stores (one object per entry, marks inside) are still read.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from shipper.checkpoint import CheckpointStore, Entry

log = logging.getLogger(__name__)

FORMAT = "shipper-checkpoints"
VERSION = 2
MARKS_FORMAT = "shipper-sent-marks"
MARKS_VERSION = 1
STORE_NAME = "checkpoints.json"
PREVIOUS_NAME = "checkpoints.json.prev"
MARKS_NAME = "sent.json"


class NewerFormat(Exception):
    """The file was written in a format this version does not read."""


@dataclass(slots=True)
class Loaded:
    """What a `checkpoints.json` holds."""

    files: dict[str, Entry]
    horizons: dict[str, str]
    scopes_seen: dict[str, float]
    since: float
    sent: dict[str, int] = field(default_factory=dict)  # version 1 kept the marks inside


def encode_store(
    files: dict[str, Entry], horizons: dict[str, str], seen: dict[str, float], since: float
) -> bytes:
    """The body of `checkpoints.json` (format version 2).

    An entry is `[key, path, offset, dev, ino, seen, stream, fp, real]` under its scope.
    A string there is relative to what the scope gives (`key` after `fp|scope|stream`,
    `real` a name in the scope's directory); an integer is a position in the scope's
    `strings`, which hold what cannot be made relative and the shared paths and streams.
    """
    scopes: dict[str, tuple[list[Any], dict[str, int], str]] = {}
    for key, e in files.items():
        scope = e.scope
        group = scopes.get(scope)
        if group is None:  # a path never holds NUL: nothing is relative to no directory
            group = scopes[scope] = ([], {}, scope + "/" if scope else "\0")
        rows, strings, under = group
        ref = strings.setdefault  # a string's position, given the next one if it is new
        head = f"{e.fp}|{scope}|{e.stream}"
        real = e.real
        name = real[len(under) :] if real.startswith(under) else ""
        rows.append(
            [
                key[len(head) :] if key.startswith(head) else ref(key, len(strings)),
                ref(e.path, len(strings)),
                e.offset,
                e.dev,
                e.ino,
                int(e.seen),
                ref(e.stream, len(strings)),
                e.fp,
                name if name and "/" not in name else ref(real, len(strings)),
            ]
        )
    return orjson.dumps(
        {
            "scopes": {
                s: {"strings": list(t), "files": rows} for s, (rows, t, _) in scopes.items()
            },
            "horizons": {
                s: {"horizon": h, "seen": round(seen.get(s, 0.0), 3)} for s, h in horizons.items()
            },
            "since": round(since, 3),
        }
    )


def decode_store(raw: bytes, entry: type[Entry]) -> Loaded:
    """Read `checkpoints.json` (version 1 or 2); ValueError, KeyError or TypeError if it is
    damaged, NewerFormat if it is newer than this version."""
    data, version = _checked(raw, FORMAT, VERSION)
    horizons = {str(k): str(v["horizon"]) for k, v in data["horizons"].items()}
    seen = {str(k): float(v["seen"]) for k, v in data["horizons"].items()}
    since = float(data.get("since", 0.0)) or 1.0  # older stores: started long ago
    if version == 1:
        files = {k: _entry_v1(entry, k, v) for k, v in data["files"].items()}
        sent = {str(k): int(v) for k, v in data.get("sent", {}).items()}  # absent before marks
        return Loaded(files, horizons, seen, since, sent)
    files = {}
    for scope, group in data["scopes"].items():
        strings = [str(s) for s in group["strings"]]
        for k, path, offset, dev, ino, when, stream, fp, real in group["files"]:
            fp, stream_name = str(fp), strings[stream]
            key = f"{fp}|{scope}|{stream_name}{k}" if isinstance(k, str) else strings[k]
            where = f"{scope}/{real}" if isinstance(real, str) else strings[real]
            files[key] = entry(
                strings[path],
                int(offset),
                int(dev),
                int(ino),
                float(when),
                scope,
                stream_name,
                fp,
                where,
            )
    return Loaded(files, horizons, seen, since)


def _entry_v1(entry: type[Entry], key: str, v: dict[str, Any]) -> Entry:
    """An entry as version 1 stored it; those written before identities were recorded
    (no `scope`) have keys `<fingerprint>|<directory>`, which say as much."""
    fp, _, scope = key.partition("|")
    return entry(
        str(v["path"]),
        int(v["offset"]),
        int(v["dev"]),
        int(v["ino"]),
        float(v["seen"]),
        str(v.get("scope", scope)),
        str(v.get("stream", "")),
        str(v.get("fp", fp)),
        str(v.get("real", "")),
    )


def encode_marks(sent: dict[str, int]) -> bytes:
    return orjson.dumps({"sent": sent})


def decode_marks(raw: bytes) -> dict[str, int]:
    data, _ = _checked(raw, MARKS_FORMAT, MARKS_VERSION)
    return {str(k): int(v) for k, v in data["sent"].items()}


def framed(body: bytes, fmt: str, version: int) -> list[bytes]:
    """A file's pieces: its header line (with the body's checksum) and its body."""
    header = orjson.dumps(
        {"format": fmt, "version": version, "sha256": hashlib.sha256(body).hexdigest()}
    )
    return [header, b"\n", body, b"\n"]


def _checked(raw: bytes, fmt: str, newest: int) -> tuple[dict[str, Any], int]:
    header_raw, sep, rest = raw.partition(b"\n")
    header = orjson.loads(header_raw)
    if not sep or not isinstance(header, dict) or header.get("format") != fmt:
        raise ValueError(f"not a {fmt} file")
    version = header.get("version")
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"no format version in the header ({version!r})")
    if version > newest:
        raise NewerFormat(version)
    body = rest.rstrip(b"\n")
    if hashlib.sha256(body).hexdigest() != header.get("sha256"):
        raise ValueError("checksum mismatch (torn or edited file)")
    return orjson.loads(body), version


def write_durably(directory: Path, name: str, pieces: list[bytes], keep_previous: str = "") -> None:
    """Replace `directory/name` with `pieces` atomically and durably (blocking); the old
    copy becomes `keep_previous` if that is given."""
    tmp = directory / f".{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        views = [memoryview(p) for p in pieces if p]
        while views:
            written = os.writev(fd, views)
            while views and written >= len(views[0]):
                written -= len(views.pop(0))
            if views and written:
                views[0] = views[0][written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    current = directory / name
    if keep_previous and current.exists():
        os.replace(current, directory / keep_previous)
    os.replace(tmp, current)
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class CheckpointWriter:
    """Writes the store every `interval` while it changed, and the marks whenever they
    must be durable, off the event loop: the loop takes a snapshot (a serialisation), a
    thread writes and fsyncs it, and reading never waits for the disk."""

    def __init__(self, store: CheckpointStore, interval: float) -> None:
        self.store = store
        self.interval = interval
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()  # one write of each file at a time: each has its own
        self._marks_lock = asyncio.Lock()  # temporary file
        self._took = 0.0  # how long the last snapshot of the store took
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self._stop.is_set():
            # A store of many thousand files takes a while to serialise, on the loop: it
            # is written less often rather than take more than a twentieth of the loop.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), max(self.interval, 20 * self._took))
            if self.store.dirty:
                await self._write(background=True)

    async def write_now(self) -> None:
        """Write the "sent up to" marks now and return once they are on disk (they must be
        durable before what they cover is sent). A write that fails is logged: delivery
        goes on, the exactly-once guarantee is weaker for that batch."""
        async with self._marks_lock:
            pieces = self.store.marks()
            try:
                await asyncio.to_thread(self.store.write_marks, pieces)
            except OSError as exc:
                log.error("cannot write the 'sent up to' marks", extra={"error": str(exc)})

    async def _write(self, background: bool) -> None:
        async with self._lock:
            started = time.monotonic()
            pieces = self.store.snapshot()
            self._took = time.monotonic() - started
            try:
                if background:
                    await asyncio.to_thread(self.store.write, pieces)
                else:
                    self.store.write(pieces)
            except OSError as exc:
                self.store.dirty = True
                log.error("cannot write checkpoints", extra={"error": str(exc)})
                return
            self.store.written()

    async def stop(self) -> None:
        """Finish a write in progress, then write what is committed now."""
        self._stop.set()
        if self._task is not None:
            await self._task
        await self._write(background=False)
        await self.write_now()
