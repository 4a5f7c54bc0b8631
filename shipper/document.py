"""Turning log events into Elasticsearch documents (ECS field names), as NDJSON bytes.

Everything that is the same for every line of a file (its path, the container's metadata,
the bulk action's id prefix) is serialised once per file; per line only the time, the
message, the stream and the offset are written.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from parsers.events import INVALID_UTF8, NO_FLAGS, LogEvent


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
    """

    path: str
    metadata: bytes = b""
    actions: bool = False
    id_prefix: bytes | None = None
    index_format: str | None = None
    parse_json: bool = False  # `shipper.io/parser: json`: JSON messages also go to `json`
    stats: EncodeStats = field(default_factory=EncodeStats)
    _tail: bytes = b""
    _index_actions: dict[bytes, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.set_metadata(self.metadata)

    def set_metadata(self, metadata: bytes) -> None:
        """Replace the container fragment (`"kubernetes":{...},...` without braces)."""
        self.metadata = metadata
        tail = b',"file":{"path":' + orjson.dumps(self.path) + b"}}"
        if metadata:
            tail += b"," + metadata
        self._tail = tail + b"}\n"

    def encode(self, events: list[LogEvent], now: bytes, out: list[bytes]) -> int:
        """Append one NDJSON entry per event to `out`; return the number of bytes added."""
        tail = self._tail
        dumps = orjson.dumps
        size = 0
        action = self._action_for if self.actions else None
        # The common case, a deterministic id and one target, formats action and document
        # in one operation.
        id_head = None
        if self.actions and self.id_prefix is not None and self.index_format is None:
            id_head, action = b'{"create":{"_id":"' + self.id_prefix, None
        parse_json = self.parse_json
        for ev in events:
            try:
                text = ev.message.decode()
                flags = ev.flags
            except UnicodeDecodeError:
                text = ev.message.decode("utf-8", "replace")
                flags = (*ev.flags, INVALID_UTF8)
            time = ev.time or now
            extra = _json_field(ev.message) if parse_json else b""
            if flags is NO_FLAGS and id_head is not None and not extra:
                doc = (
                    b'%s%x"}}\n{"@timestamp":"%s","message":%s,"stream":"%s","log":{"offset":%d%s'
                    % (id_head, ev.offset, time, dumps(text), ev.stream, ev.offset, tail)
                )
                out.append(doc)
                size += len(doc)
                continue
            if flags is NO_FLAGS:
                doc = b'{"@timestamp":"%s","message":%s%s,"stream":"%s","log":{"offset":%d%s' % (
                    time,
                    dumps(text),
                    extra,
                    ev.stream,
                    ev.offset,
                    tail,
                )
            else:
                self.stats.count(flags)
                stream = b',"stream":"%s"' % ev.stream if ev.stream else b""
                doc = b'{"@timestamp":"%s","message":%s%s%s,"log":{"offset":%d,"flags":%s%s' % (
                    time,
                    dumps(text),
                    extra,
                    stream,
                    ev.offset,
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

    def _action_for(self, offset: int, time: bytes) -> bytes:
        head = b'{"create":{'
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


def _json_field(message: bytes) -> bytes:
    """`,"json":{...}` for a message that is a JSON object, else b""."""
    if not message.startswith(b"{"):
        return b""
    try:
        value = orjson.loads(message)
    except orjson.JSONDecodeError:
        return b""
    if not isinstance(value, dict) or not value:
        return b""
    return b',"json":' + orjson.dumps(value)


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
