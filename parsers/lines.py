"""Single-line parsers for the CRI (containerd, CRI-O) and docker json-file formats."""

from __future__ import annotations

import json

import orjson

from parsers.timestamp import normalize_time

STDOUT = b"stdout"
STDERR = b"stderr"
_STREAMS = {b"stdout": STDOUT, b"stderr": STDERR, "stdout": STDOUT, "stderr": STDERR}

# (time, stream, is_final, message) or None when the line does not fit the format.
Parsed = tuple[bytes, bytes, bool, bytes]


def parse_cri(line: bytes) -> Parsed | None:
    """Parse `<RFC3339 time> <stdout|stderr> <P|F>[:tag]... <message>` (no trailing newline)."""
    parts = line.split(b" ", 3)
    if len(parts) < 3:
        return None
    stream = _STREAMS.get(parts[1])
    if stream is None:
        return None
    tag = parts[2]
    kind = tag[:1]
    if kind == b"F":
        final = True
    elif kind == b"P":
        final = False
    else:
        return None
    if len(tag) > 1 and tag[1] != 0x3A:  # tags after the first are ':'-separated
        return None
    time = normalize_time(parts[0])
    if time is None:
        return None
    return time, stream, final, parts[3] if len(parts) == 4 else b""


def parse_docker(line: bytes) -> Parsed | None:
    """Parse one docker json-file record; a `log` value without a newline is a partial chunk."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        record = _lenient_json(line)
    if type(record) is not dict:
        return None
    log = record.get("log")
    raw_stream = record.get("stream")
    stream = _STREAMS.get(raw_stream) if type(raw_stream) is str else None
    raw_time = record.get("time")
    if type(log) is not str or stream is None or type(raw_time) is not str:
        return None
    time = normalize_time(raw_time.encode())
    if time is None:
        return None
    final = log.endswith("\n")
    if final:
        log = log[:-1]
    try:
        message = log.encode()
    except UnicodeEncodeError:  # lone surrogates from \udXXX escapes
        message = log.encode("utf-8", "replace")
    return time, stream, final, message


def _lenient_json(line: bytes) -> object:
    # orjson refuses lone surrogate escapes that Python's json accepts; docker never writes
    # them, but a hand-made or corrupted file might, and the text is still worth shipping.
    try:
        return json.loads(line)
    except (ValueError, RecursionError):
        return None
