"""Per-file decoding: format detection, partial-line reassembly, size caps, multiline."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from parsers.events import NO_FLAGS, PARSE_ERROR, PARTIAL, TRUNCATED, LogEvent
from parsers.lines import STDERR, STDOUT, Parsed, parse_cri, parse_docker
from parsers.multiline import MultilineJoiner, MultilineRule

CRI = "cri"
DOCKER = "docker"

DEFAULT_MAX_EVENT_BYTES = 1 << 20
_TRUNCATED = (TRUNCATED,)
_PARSE_ERROR = (PARSE_ERROR,)
_PARSE_ERROR_TRUNCATED = (PARSE_ERROR, TRUNCATED)

# One common line of a block: (time, stream, message, offset of its first byte). What the
# block fast paths give, and what DocumentEncoder.encode_rows takes without making events.
Row = tuple[bytes, bytes, bytes, int]


@dataclass(frozen=True, slots=True)
class DecoderOptions:
    """Limits and rules for decoding one file."""

    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    partial_timeout: float = 5.0
    multiline: MultilineRule | None = None
    multiline_timeout: float = 1.0


@dataclass(slots=True)
class _Partial:
    start: int
    time: bytes
    parts: list[bytes]
    size: int
    last_seen: float
    truncated: bool = False


@dataclass(slots=True)
class FileDecoder:
    """Turns the lines of one log file into events.

    The format (CRI or docker json-file) is decided once, from the first line that parses
    as either, so it cannot flip mid-file. Partial lines are joined per stream; an event
    never grows past `max_event_bytes` (the rest is dropped, counted, and the event flagged
    `truncated`). `pending_start()` is the first byte of any event still being assembled:
    offsets past it must not be committed, or a restart would lose its beginning.
    """

    options: DecoderOptions = field(default_factory=DecoderOptions)
    format: str | None = None
    dropped_bytes: int = 0
    _parse: Callable[[bytes], Parsed | None] | None = None
    _partials: dict[bytes, _Partial] = field(default_factory=dict)
    _joiners: dict[bytes, MultilineJoiner] = field(default_factory=dict)

    def set_options(self, options: DecoderOptions) -> None:
        """New options (a config reload) without losing what is held: a partial line goes
        on being joined, a held multiline event goes on under the new rule (turned off,
        it is shipped when it expires)."""
        self.options = options
        for joiner in self._joiners.values():
            if options.multiline is not None:
                joiner.rule = options.multiline
            joiner.max_bytes, joiner.timeout = options.max_event_bytes, options.multiline_timeout

    def feed(self, offset: int, data: bytes, now: float) -> list[LogEvent]:
        """Decode `data`, whole lines each ending in a newline, that start at byte `offset`."""
        rows = self.rows(offset, data)
        return events_of(rows) if rows is not None else self.feed_lines(offset, data, now)

    def rows(self, offset: int, data: bytes) -> list[Row] | None:
        """`feed`'s events as rows when every line of `data` is a common one (a final line,
        UTC time, stdout or stderr, within the size cap) and nothing is being joined (no
        multiline rule, no partial line held); None: `feed` decides, line by line. Each
        row is exactly the event `feed` would give, without its flags (it has none)."""
        if self.options.multiline is not None or self._partials:
            return None
        parse = self._parse
        if parse is None:  # a file's first chunk: the format from its first line
            parse = self._detect([data[: data.find(b"\n")]])
        if parse is parse_cri:
            return _cri_rows(offset, data, self.options.max_event_bytes)
        if parse is parse_docker:
            return _docker_rows(offset, data, self.options.max_event_bytes)
        return None

    def feed_lines(self, offset: int, data: bytes, now: float) -> list[LogEvent]:
        """`feed` one line at a time (the path of any line the block fast paths refuse)."""
        cap = self.options.max_event_bytes
        plain = self.options.multiline is None
        partials = self._partials
        out: list[LogEvent] = []
        lines = data.split(b"\n")
        lines.pop()  # the empty remainder after the last newline
        parse = self._parse or self._detect(lines)
        append = out.append
        pos = offset
        for line in lines:
            start = pos
            pos += len(line) + 1
            parsed = parse(line)
            if parsed is None:
                self._emit(self._malformed(line, start), now, out)
                continue
            time, stream, final, message = parsed
            if final and plain and stream not in partials and len(message) <= cap:
                append(LogEvent(time, stream, message, start))
            else:
                self._fragment(time, stream, final, message, start, now, out)
        return out

    def feed_long_line(self, offset: int, head: bytes, now: float) -> list[LogEvent]:
        """Decode a line longer than the reader's limit, of which only `head` was kept."""
        out: list[LogEvent] = []
        parse = self._parse or self._detect([head])
        parsed = parse(head)
        if parsed is None:
            self._emit(self._malformed(head, offset, truncated=True), now, out)
            return out
        time, stream, final, message = parsed
        # The line's end was cut off: for docker the JSON no longer parses (above); for CRI
        # the message is cut, so make sure it is flagged whatever the cap.
        self._fragment(time, stream, final, message, offset, now, out, cut=True)
        return out

    def flush_expired(self, now: float) -> list[LogEvent]:
        """Emit partial and multiline events that have waited longer than their timeouts."""
        out: list[LogEvent] = []
        timeout = self.options.partial_timeout
        for stream, partial in list(self._partials.items()):
            if now - partial.last_seen >= timeout:
                del self._partials[stream]
                self._emit(self._finish(partial, stream, dangling=True), now, out)
        for joiner in self._joiners.values():
            joiner.flush(out, now)
        return out

    def flush_all(self, now: float) -> list[LogEvent]:
        """Emit everything still held (end of a rotated or deleted file, container exit)."""
        out: list[LogEvent] = []
        for stream, partial in list(self._partials.items()):
            del self._partials[stream]
            self._emit(self._finish(partial, stream, dangling=True), now, out)
        for joiner in self._joiners.values():
            joiner.flush(out)
        return out

    def pending_start(self) -> int | None:
        """First byte of the earliest event still being assembled, or None."""
        starts = [p.start for p in self._partials.values()]
        starts.extend(s for j in self._joiners.values() if (s := j.pending_start()) is not None)
        return min(starts) if starts else None

    def take_dropped(self) -> int:
        """Bytes cut from events (size caps, multiline joining) since the last call."""
        dropped = self.dropped_bytes
        self.dropped_bytes = 0
        for joiner in self._joiners.values():
            dropped += joiner.dropped_bytes
            joiner.dropped_bytes = 0
        return dropped

    def held_bytes(self) -> int:
        """Bytes held in unfinished events (for memory accounting)."""
        return sum(p.size for p in self._partials.values())

    def _detect(self, lines: list[bytes]) -> Callable[[bytes], Parsed | None]:
        for line in lines:
            if parse_cri(line) is not None:
                self.format, self._parse = CRI, parse_cri
                return parse_cri
            if parse_docker(line) is not None:
                self.format, self._parse = DOCKER, parse_docker
                return parse_docker
        return _undetected

    def _fragment(
        self,
        time: bytes,
        stream: bytes,
        final: bool,
        message: bytes,
        start: int,
        now: float,
        out: list[LogEvent],
        cut: bool = False,
    ) -> None:
        partial = self._partials.get(stream)
        if partial is None:
            partial = _Partial(start, time, [], 0, now)
            self._partials[stream] = partial
        partial.last_seen = now
        room = self.options.max_event_bytes - partial.size
        if partial.truncated or len(message) > room:
            if not partial.truncated and room > 0:
                partial.parts.append(message[:room])
                partial.size += room
            self.dropped_bytes += len(message) - max(room, 0)
            partial.truncated = True
        else:
            partial.parts.append(message)
            partial.size += len(message)
        partial.truncated = partial.truncated or cut
        if final:
            del self._partials[stream]
            self._emit(self._finish(partial, stream, dangling=False), now, out)

    @staticmethod
    def _finish(partial: _Partial, stream: bytes, dangling: bool) -> LogEvent:
        flags: tuple[str, ...] = NO_FLAGS
        if dangling:
            flags = (PARTIAL,)
        if partial.truncated:
            flags = (*flags, TRUNCATED)
        parts = partial.parts
        message = parts[0] if len(parts) == 1 else b"".join(parts)
        return LogEvent(partial.time, stream, message, partial.start, flags)

    def _malformed(self, line: bytes, start: int, truncated: bool = False) -> LogEvent:
        cap = self.options.max_event_bytes
        if len(line) > cap:
            self.dropped_bytes += len(line) - cap
            line = line[:cap]
            truncated = True
        return LogEvent(
            None, None, line, start, _PARSE_ERROR_TRUNCATED if truncated else _PARSE_ERROR
        )

    def _emit(self, event: LogEvent, now: float, out: list[LogEvent]) -> None:
        rule = self.options.multiline
        if rule is None or event.stream is None:
            out.append(event)
            return
        joiner = self._joiners.get(event.stream)
        if joiner is None:
            joiner = MultilineJoiner(
                rule, self.options.max_event_bytes, self.options.multiline_timeout
            )
            self._joiners[event.stream] = joiner
        joiner.feed(event, now, out)


def events_of(rows: list[Row]) -> list[LogEvent]:
    """The events of `FileDecoder.rows`."""
    return [LogEvent(time, stream, message, start) for time, stream, message, start in rows]


def _undetected(line: bytes) -> Parsed | None:
    return None


# The common CRI line: UTC time, final fragment, no extra tags. One regex pass over a whole
# block validates and splits every line in C; any other line sends the block the slow way.
_CRI_FINAL = re.compile(
    rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?Z) (stdout|stderr) F ([^\n]*)$", re.M
)


def _cri_rows(offset: int, data: bytes, cap: int) -> list[Row] | None:
    """Rows for a block of only common CRI lines, or None to take the per-line path. The
    stream is the line's own `stdout` or `stderr` (equal to STDOUT, STDERR)."""
    found = _CRI_FINAL.findall(data)
    if len(found) != data.count(b"\n"):
        return None
    out: list[Row] = []
    append = out.append
    pos = offset
    for time, stream, message in found:
        size = len(message)
        if size > cap:
            return None
        append((time, stream, message, pos))
        pos += len(time) + size + 11  # "<time> <stdout|stderr: 6 bytes> F <message>\n"
    return out


_DOCKER_STREAM = {"stdout": STDOUT, "stderr": STDERR}
# Every time of a block checked at once: UTC times as normalize_time leaves them, one a line.
_UTC_TIMES = re.compile(rb"(?:\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?Z\n)*").fullmatch


def _docker_rows(offset: int, data: bytes, cap: int) -> list[Row] | None:
    """Rows for a block of only common docker json-file records (a final line each, UTC
    time, stdout or stderr), or None to take the per-line path. Per line, only the JSON
    parse and the two fields; the times of the whole block are checked in one pass."""
    lines = data.split(b"\n")
    lines.pop()  # the empty remainder after the last newline
    loads = orjson.loads
    streams = _DOCKER_STREAM
    out: list[Row] = []
    append = out.append
    times: list[bytes] = []
    add_time = times.append
    pos = offset
    try:
        for line in lines:
            record = loads(line)
            log = record["log"]
            stream = streams[record["stream"]]
            time = record["time"].encode()
            if log[-1] != "\n":
                return None  # a partial chunk: joined on the per-line path
            message = log[:-1].encode()
            if len(message) > cap:
                return None
            add_time(time)
            append((time, stream, message, pos))
            pos += len(line) + 1
        stamps = b"\n".join(times) + b"\n"
    except (
        orjson.JSONDecodeError,
        KeyError,
        TypeError,
        IndexError,
        AttributeError,
        UnicodeEncodeError,
    ):
        return None  # not JSON, not a record, another shape: the per-line path decides
    if stamps.count(b"\n") != len(out) or _UTC_TIMES(stamps) is None:
        return None  # a time in another zone (or not a time): normalised per line
    return out
