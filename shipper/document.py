"""Turning log events into Elasticsearch documents (ECS field names), as NDJSON bytes.

Everything that is the same for every line of a file (its path, the container's metadata,
the bulk action's id prefix) is serialised once per file; per line only the time, the
message, the stream and the offset are written.
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from parsers.decoder import Row
from parsers.events import INVALID_UTF8, NO_FLAGS, REDACTED, LogEvent
from parsers.level import LEVELS, detect_level
from parsers.redact import Redactor


class _LevelFields(dict[bytes | None, bytes]):
    """`,"level":"<level>"` by what detection found: the normalised levels made once, None
    no field, another value (kept as written under a level key) made when it comes."""

    def __missing__(self, found: bytes | None) -> bytes:
        return b',"level":"%s"' % found if found else b""


_LEVEL_FIELDS = _LevelFields({lv: b',"level":"%s"' % lv for lv in LEVELS})
_LEVEL_FIELDS[None] = b""
# The common document: its create action with a deterministic id, then the document with
# no flags and no JSON fields (id head, offset, time, message, stream, offset, level, tail).
_PLAIN = b'%s%x"}}\n{"@timestamp":"%s","message":%s,"stream":"%s","log":{"offset":%d%s%s'


@dataclass(slots=True)
class EncodeStats:
    """Counts of events that took a slow path (flags), read by the metrics."""

    flags: dict[str, int] = field(default_factory=dict)

    def count(self, flags: tuple[str, ...]) -> None:
        for flag in flags:
            self.flags[flag] = self.flags.get(flag, 0) + 1


def utc_now_rfc3339() -> bytes:
    """The current time in the format documents use for lines without a runtime time."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()


@dataclass(slots=True)
class DocumentEncoder:
    """Encodes the events of one file into NDJSON lines, each with its bulk action if any.

    `id_prefix` set: each document gets `_id = id_prefix + hex(offset)` and `op_type:
    create`, so a re-sent line is answered 409 instead of being indexed twice. None with
    `actions` on: create with an Elasticsearch-generated id. `index_format` set (strftime
    of the line's UTC date, e.g. "logs-%Y.%m.%d"): the action names a per-day index.
    `set_stream`: the file's target stream, its fields in every document and (routing) its
    name in every action. `level`: `log.level` from each message; `redactor`: secrets
    replaced (and `redacted` flagged) before the message is written.
    """

    path: str
    metadata: bytes = b""
    actions: bool = False
    id_prefix: bytes | None = None
    index_format: str | None = None
    parse_json: bool = False  # `shipper.io/parser: json`: JSON messages also go to `json`
    level: bool = False
    redactor: Redactor | None = None
    stats: EncodeStats = field(default_factory=EncodeStats)
    _tail: bytes = b""
    _stream: bytes = b""  # `"data_stream":{...},"event":{...}` of the file's target
    _index: bytes = b""  # `"_index":"<stream>",` when each action names the target
    _index_actions: dict[bytes, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.set_metadata(self.metadata)

    def set_metadata(self, metadata: bytes) -> None:
        """Replace the container fragment (`"kubernetes":{...},...` without braces)."""
        self.metadata = metadata
        tail = b',"file":{"path":' + orjson.dumps(self.path) + b"}}"
        if metadata:
            tail += b"," + metadata
        if self._stream:
            tail += b"," + self._stream
        self._tail = tail + b"}\n"

    def set_stream(self, fields: bytes, index: str | None = None) -> None:
        """The file's target: its document fields (DataStream.fields; b"" for none) and the
        name each action gives as `_index` (None: the request's default target)."""
        self._stream = fields
        self._index = b'"_index":' + orjson.dumps(index) + b"," if index else b""
        self.set_metadata(self.metadata)

    def encode(self, events: Sequence[LogEvent], now: bytes, out: list[bytes]) -> int:
        """Append one NDJSON entry per event to `out`; return the number of bytes added."""
        tail = self._tail
        dumps = orjson.dumps
        size = 0
        action = self._action_for if self.actions else None
        # The common case, a deterministic id and one target, formats action and document
        # in one operation.
        id_head = self._id_head()
        if id_head is not None:
            action = None
        parse_json = self.parse_json
        # From the bytes, JSON too (as its parsed fields give), before any redaction.
        levels = self._levels([ev.message for ev in events])
        redactor = self.redactor
        redact = redactor.redact if redactor is not None else None
        for ev, level in zip(events, levels, strict=True):
            message = ev.message
            flags = ev.flags
            if redact is not None:
                message, changed = redact(message)
                if changed:
                    flags = (*flags, REDACTED)
            try:
                text = message.decode()
            except UnicodeDecodeError:
                text = message.decode("utf-8", "replace")
                flags = (*flags, INVALID_UTF8)
            time = ev.time or now
            extra = b""
            if parse_json:
                extra, changed = _json_field(ev.message, redactor)
                if changed and REDACTED not in flags:
                    flags = (*flags, REDACTED)
            if flags is NO_FLAGS and id_head is not None and not extra:
                doc = _PLAIN % (
                    id_head,
                    ev.offset,
                    time,
                    dumps(text),
                    ev.stream,
                    ev.offset,
                    level,
                    tail,
                )
                out.append(doc)
                size += len(doc)
                continue
            if flags is NO_FLAGS:
                doc = b'{"@timestamp":"%s","message":%s%s,"stream":"%s","log":{"offset":%d%s%s' % (
                    time,
                    dumps(text),
                    extra,
                    ev.stream,
                    ev.offset,
                    level,
                    tail,
                )
            else:
                self.stats.count(flags)
                stream = b',"stream":"%s"' % ev.stream if ev.stream else b""
                doc = b'{"@timestamp":"%s","message":%s%s%s,"log":{"offset":%d%s,"flags":%s%s' % (
                    time,
                    dumps(text),
                    extra,
                    stream,
                    ev.offset,
                    level,
                    dumps(flags),
                    tail,
                )
            if id_head is not None:
                doc = b'%s%x"}}\n%s' % (id_head, ev.offset, doc)
            elif action is not None:
                doc = action(ev.offset, time) + doc
            out.append(doc)
            size += len(doc)
        return size

    def takes_rows(self) -> bool:
        """Whether `encode_rows` applies: deterministic ids into one target, and nothing
        that changes or adds to a message (redaction, JSON fields)."""
        return self._id_head() is not None and self.redactor is None and not self.parse_json

    def encode_rows(self, rows: Sequence[Row], now: bytes, out: list[bytes]) -> int:
        """`encode` of the rows' events (FileDecoder.rows: common lines, no flags) when
        `takes_rows()`: the same bytes, without making an event per line."""
        id_head = self._id_head()
        assert id_head is not None
        tail = self._tail
        dumps = orjson.dumps
        levels = self._levels([row[2] for row in rows])
        append = out.append
        size = 0
        for (time, stream, message, offset), level in zip(rows, levels, strict=True):
            try:
                text = message.decode()
            except UnicodeDecodeError:  # flagged: the general path
                size += self.encode([LogEvent(time, stream, message, offset)], now, out)
                continue
            doc = _PLAIN % (id_head, offset, time, dumps(text), stream, offset, level, tail)
            append(doc)
            size += len(doc)
        return size

    def _id_head(self) -> bytes | None:
        """`{"create":{..."_id":"<prefix>` when every action is a create with a
        deterministic id into one target (the common case, formatted with its document in
        one operation); None otherwise."""
        if self.actions and self.id_prefix is not None and self.index_format is None:
            return b'{"create":{' + self._index + b'"_id":"' + self.id_prefix
        return None

    def _levels(self, messages: list[bytes]) -> list[bytes]:
        """The `,"level":...` field of each message (b"" each with detection off). A loop
        of its own, before the documents are formatted: the detector's patterns then stay
        in the CPU's caches (interleaved with the formatting, the same detection cost
        about twice as much)."""
        if not self.level:
            return [b""] * len(messages)
        fields = _LEVEL_FIELDS
        return [fields[detect_level(message)] for message in messages]

    def _action_for(self, offset: int, time: bytes) -> bytes:
        head = b'{"create":{' + self._index
        if self.index_format is not None:
            head += self._index_action(time[:10])
        if self.id_prefix is None:
            return head.rstrip(b",") + b"}}\n"
        return b'%s"_id":"%s%x"}}\n' % (head, self.id_prefix, offset)

    def _index_action(self, day: bytes) -> bytes:
        cached = self._index_actions.get(day)
        if cached is None:
            try:
                date = datetime.strptime(day.decode(), "%Y-%m-%d")
            except ValueError:
                date = datetime.now(UTC)
            name = date.strftime(self.index_format or "")
            cached = b'"_index":' + orjson.dumps(name) + b","
            if len(self._index_actions) > 64:
                self._index_actions.clear()
            self._index_actions[day] = cached
        return cached


def _json_field(message: bytes, redactor: Redactor | None) -> tuple[bytes, bool]:
    """`,"json":{...}` for a message that is a JSON object (else b""), and whether
    redaction changed its fields."""
    if not message.startswith(b"{"):
        return b"", False
    try:
        value = orjson.loads(message)
    except orjson.JSONDecodeError:
        return b"", False
    if not isinstance(value, dict) or not value:
        return b"", False
    changed = False
    if redactor is not None:
        value, changed = redactor.redact_fields(value)
    return b',"json":' + orjson.dumps(value), changed


def epoch_seconds(ts: bytes | None) -> float:
    """Seconds since the epoch of a normalised RFC 3339 timestamp (second resolution is
    enough for the delay histogram); 0.0 when unknown."""
    if not ts or len(ts) < 20:
        return 0.0
    try:
        return float(
            calendar.timegm(
                (
                    int(ts[0:4]),
                    int(ts[5:7]),
                    int(ts[8:10]),
                    int(ts[11:13]),
                    int(ts[14:16]),
                    int(ts[17:19]),
                    0,
                    0,
                    0,
                )
            )
        ) + (float(b"0" + ts[19:-1]) if ts[19:20] == b"." else 0.0)
    except ValueError:
        return 0.0
