"""Writing log lines the way container runtimes do (for samples, tests and benchmarks)."""

from __future__ import annotations

from itertools import pairwise
from typing import TypeVar

import orjson

_Text = TypeVar("_Text", bytes, str)

RUNTIME_SPLIT = 16 * 1024  # docker and containerd both split lines longer than 16 KiB


def cri_record(
    message: bytes,
    stream: str = "stdout",
    time: str = "2024-01-01T00:00:00.000000000Z",
    split: int = RUNTIME_SPLIT,
    cuts: list[int] | None = None,
) -> bytes:
    """One message as containerd writes it: P fragments of `split` bytes (or at `cuts`), then F."""
    pieces = _cut(message, split, cuts)
    out = []
    for i, piece in enumerate(pieces):
        tag = b"F" if i == len(pieces) - 1 else b"P"
        out.append(b"%s %s %s %s\n" % (time.encode(), stream.encode(), tag, piece))
    return b"".join(out)


def docker_record(
    message: str,
    stream: str = "stdout",
    time: str = "2024-01-01T00:00:00.000000000Z",
    split: int = RUNTIME_SPLIT,
    cuts: list[int] | None = None,
) -> bytes:
    """One message as docker's json-file driver writes it: chunks, the last ending in \\n."""
    pieces = _cut(message, split, cuts)
    out = []
    for i, piece in enumerate(pieces):
        log = piece + "\n" if i == len(pieces) - 1 else piece
        out.append(orjson.dumps({"log": log, "stream": stream, "time": time}) + b"\n")
    return b"".join(out)


def _cut(message: _Text, split: int, cuts: list[int] | None) -> list[_Text]:
    if cuts is None:
        cuts = list(range(split, len(message), split))
    bounds = [0, *sorted(c for c in set(cuts) if 0 < c < len(message)), len(message)]
    return [message[a:b] for a, b in pairwise(bounds)]
