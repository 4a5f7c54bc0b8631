"""Opt-in joining of several lines (stack traces) into one event."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from parsers.events import MULTILINE, TRUNCATED, LogEvent


@dataclass(frozen=True, slots=True)
class MultilineRule:
    """Which lines continue an event, and optionally which lines may begin one.

    A line matching `continuation` is appended to the event held before it. Any other line
    ends the held event; it is held itself if `start` is None or matches it, else shipped
    at once. Matching is against the line's message, from its first byte.
    """

    name: str
    continuation: re.Pattern[bytes]
    start: re.Pattern[bytes] | None = None


def rule(name: str, continuation: str, start: str | None = None) -> MultilineRule:
    """Build a rule from regular expression source text (matched against UTF-8 bytes)."""
    return MultilineRule(
        name=name,
        continuation=re.compile(continuation.encode()),
        start=re.compile(start.encode()) if start is not None else None,
    )


BUILTIN: dict[str, MultilineRule] = {
    # "\tat com.x.Y.m(Y.java:1)", "\t... 5 more", "Caused by: ...", "\tSuppressed: ..."
    "java": rule(
        "java",
        continuation=r"[ \t]+(?:at |\.\.\. \d+|Suppressed: )|Caused by: |[ \t]+[\w$.]+\(",
    ),
    # Traceback header, indented frames and source, the exception line, chained exceptions.
    "python": rule(
        "python",
        start=r"Traceback \(most recent call last\):",
        continuation=(
            r"[ \t]|$|Traceback \(most recent call last\):"
            r"|[A-Za-z_][\w.]*(?:Error|Exception|Warning|Exit|Interrupt|Iteration)\b"
            r"|During handling of the above exception|The above exception was the direct cause"
        ),
    ),
    # panic header, blank lines, goroutine headers, frames and their tab-indented file lines.
    "go": rule(
        "go",
        start=r"(?:panic: |fatal error: )",
        continuation=(
            r"$|goroutine \d+ \[|[ \t]|created by |\[signal |exit status \d+"
            r"|[\w./*()\-]+\(.*\)$|panic: .*\[recovered\]"
        ),
    ),
}


@dataclass(slots=True)
class _Held:
    event: LogEvent
    parts: list[bytes]
    size: int
    last_seen: float
    truncated: bool = False
    lines: int = 1


@dataclass(slots=True)
class MultilineJoiner:
    """Joins events of one stream of one file according to a rule."""

    rule: MultilineRule
    max_bytes: int
    timeout: float
    dropped_bytes: int = 0
    _held: _Held | None = field(default=None)

    def feed(self, event: LogEvent, now: float, out: list[LogEvent]) -> None:
        """Add one event; completed events are appended to `out`."""
        held = self._held
        message = event.message
        if held is not None and self.rule.continuation.match(message) is not None:
            held.last_seen = now
            held.lines += 1
            room = self.max_bytes - held.size - 1
            if held.truncated or room < len(message):
                if not held.truncated and room > 0:
                    held.parts.append(message[:room])
                    held.size = self.max_bytes
                self.dropped_bytes += len(message) - max(room, 0)
                held.truncated = True
            else:
                held.parts.append(message)
                held.size += len(message) + 1
            return
        if held is not None:
            out.append(self._finish(held))
            self._held = None
        start = self.rule.start
        if start is None or start.match(message) is not None:
            self._held = _Held(event, [message], len(message), now)
        else:
            out.append(event)

    def flush(self, out: list[LogEvent], now: float | None = None) -> None:
        """Emit the held event (all of it, or only if idle for the timeout when `now` is given)."""
        held = self._held
        if held is None or (now is not None and now - held.last_seen < self.timeout):
            return
        out.append(self._finish(held))
        self._held = None

    def pending_start(self) -> int | None:
        """First byte of the held event, which must not be committed past."""
        return self._held.event.offset if self._held is not None else None

    @staticmethod
    def _finish(held: _Held) -> LogEvent:
        event = held.event
        if held.lines == 1:
            return event
        flags = [*event.flags, MULTILINE]
        if held.truncated and TRUNCATED not in flags:
            flags.append(TRUNCATED)
        return LogEvent(
            event.time, event.stream, b"\n".join(held.parts), event.offset, tuple(flags)
        )
