"""The log event: one reassembled record of a container's output."""

from __future__ import annotations

from dataclasses import dataclass

PARTIAL = "partial"  # flushed before its last fragment arrived (timeout, rotation, exit)
MULTILINE = "multiline"  # several lines joined by a multiline rule
TRUNCATED = "truncated"  # longer than the event size cap; the rest was dropped and counted
PARSE_ERROR = "parse_error"  # neither CRI nor docker json-file; message holds the raw line
INVALID_UTF8 = "invalid_utf8"  # bytes that are not UTF-8 were replaced by U+FFFD when shipped
REDACTED = "redacted"  # a redaction rule replaced part of the message (or its JSON fields)

NO_FLAGS: tuple[str, ...] = ()


@dataclass(slots=True)
class LogEvent:
    """One record: runtime time (UTC RFC 3339, None if unknown), stream, text, first byte."""

    time: bytes | None
    stream: bytes | None
    message: bytes
    offset: int
    flags: tuple[str, ...] = NO_FLAGS
