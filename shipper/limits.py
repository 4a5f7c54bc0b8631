"""Per-container rate limits: token buckets for lines and bytes, with burst.

One `ContainerLimiter` per container (per file being read): each event takes one line
token and its message size in byte tokens; an event that finds either bucket short is
dropped and counted (the caller still acknowledges its offset, so checkpoints advance).
Buckets refill continuously at the configured rate up to the burst; the clock is passed
in, so the limiter is pure logic. An event larger than the byte burst passes when the
bucket is full and leaves it in debt, so a big event is delayed, never always dropped.

Limits come from three places, each key falling back to the wider one:
the `shipper.io/rate-limit` annotation (per container with the `-<container>` suffix),
`limits.namespaces.<namespace or glob>` in the config, and `limits.*`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from parsers.events import LogEvent
from shipper.config.kinds import parse_size

if TYPE_CHECKING:
    from shipper.config.controls import Limits, NamespaceLimit

KEYS = ("lines_per_second", "bytes_per_second", "burst_lines", "burst_bytes")
OFF = "off"


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Rates per second (0: no limit) and bursts (0: one second's worth)."""

    lines_per_second: float = 0.0
    bytes_per_second: float = 0.0
    burst_lines: float = 0.0
    burst_bytes: float = 0.0

    @property
    def unlimited(self) -> bool:
        return not self.lines_per_second and not self.bytes_per_second

    def merged(self, override: LimitOverride | NamespaceLimit | None) -> RateLimit:
        """This limit with the keys `override` sets replaced."""
        if override is None:
            return self
        changes = {k: float(v) for k in KEYS if (v := getattr(override, k)) is not None}
        return replace(self, **changes) if changes else self


@dataclass(frozen=True, slots=True)
class LimitOverride:
    """What a pod's annotation sets; None keeps the value from the config."""

    lines_per_second: float | None = None
    bytes_per_second: float | None = None
    burst_lines: float | None = None
    burst_bytes: float | None = None


UNLIMITED = LimitOverride(0.0, 0.0, 0.0, 0.0)


def parse_rate_limit(text: str) -> LimitOverride:
    """The value of a `shipper.io/rate-limit` annotation: `off`, or comma-separated
    `key=value` with keys lines_per_second, bytes_per_second (a size: 512KiB, 1MiB),
    burst_lines, burst_bytes. ValueError saying what is accepted."""
    text = text.strip()
    if text.lower() in (OFF, "none", "0"):
        return UNLIMITED
    values: dict[str, float] = {}
    for part in text.split(","):
        key, eq, value = (p.strip() for p in part.partition("="))
        if not eq or key not in KEYS or key in values:
            raise ValueError(
                f"{part.strip()!r}: expected off, or key=value pairs with the keys "
                f"{', '.join(KEYS)} (each once), e.g. lines_per_second=500,bytes_per_second=1MiB"
            )
        try:
            number = float(parse_size(value) if "bytes" in key else value)
        except ValueError:
            number = -1.0
        if not 0 <= number < float("inf") or (key == "burst_lines" and 0 < number < 1):
            raise ValueError(f"{key}={value!r}: expected a number at least 0 (bursts at least 1)")
        values[key] = number
    return LimitOverride(**values)


class LimitPolicy:
    """The limit of each container, from the config and its pod's annotation."""

    def __init__(self, limits: Limits) -> None:
        self.default = RateLimit(
            limits.lines_per_second,
            limits.bytes_per_second,
            limits.burst_lines,
            limits.burst_bytes,
        )
        self.annotations = limits.annotations
        self._exact = {k: v for k, v in limits.namespaces.items() if not _is_glob(k)}
        self._globs = [(k, v) for k, v in limits.namespaces.items() if _is_glob(k)]

    def for_container(self, namespace: str, override: LimitOverride | None = None) -> RateLimit:
        """The limit for a container of `namespace` whose pod's annotation says `override`."""
        entry = self._exact.get(namespace)
        if entry is None:
            entry = next((v for k, v in self._globs if fnmatch.fnmatchcase(namespace, k)), None)
        limit = self.default.merged(entry)
        return limit.merged(override) if self.annotations else limit


def _is_glob(name: str) -> bool:
    return any(ch in name for ch in "*?[")


class TokenBucket:
    """`rate` tokens a second, at most `capacity` (default: one second's worth, and never
    less than `least`) held; starts full."""

    __slots__ = ("capacity", "rate", "tokens", "updated")

    def __init__(self, rate: float, capacity: float, now: float, least: float = 0.0) -> None:
        self.rate = rate
        self.capacity = max(capacity or rate, least)
        self.tokens = self.capacity
        self.updated = now

    def refill(self, now: float) -> float:
        elapsed = now - self.updated
        if elapsed > 0:  # a clock that steps back adds nothing
            self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
            self.updated = now
        return self.tokens


class ContainerLimiter:
    """Keeps or drops each event of one container; counts what it dropped."""

    __slots__ = ("_bytes", "_lines", "dropped_bytes", "dropped_events", "limit")

    def __init__(self, limit: RateLimit, now: float) -> None:
        self.limit = limit
        self.dropped_events = 0
        self.dropped_bytes = 0
        self._lines = self._bytes = None
        if limit.lines_per_second:  # a line needs a whole token, whatever the rate
            self._lines = TokenBucket(limit.lines_per_second, limit.burst_lines, now, least=1)
        if limit.bytes_per_second:
            self._bytes = TokenBucket(limit.bytes_per_second, limit.burst_bytes, now)

    def allow(self, size: int, now: float) -> bool:
        """Whether one event of `size` message bytes may go now (taking its tokens)."""
        lines, sizes = self._lines, self._bytes
        if lines is not None and lines.refill(now) < 1:
            return self._drop(size)
        if sizes is not None and sizes.refill(now) < min(size, sizes.capacity):
            return self._drop(size)
        if lines is not None:
            lines.tokens -= 1
        if sizes is not None:
            sizes.tokens -= size
        return True

    def keep(self, events: Sequence[LogEvent], now: float) -> Sequence[LogEvent]:
        """The events that may go now, in order; the same sequence when all may."""
        lines, sizes = self._lines, self._bytes
        if lines is None and sizes is None:
            return events
        total = sum(len(e.message) for e in events) if sizes is not None else 0
        # The common case: the whole chunk fits in what the buckets hold.
        if (lines is None or lines.refill(now) >= len(events)) and (
            sizes is None or sizes.refill(now) >= total
        ):
            if lines is not None:
                lines.tokens -= len(events)
            if sizes is not None:
                sizes.tokens -= total
            return events
        return [e for e in events if self.allow(len(e.message), now)]

    def _drop(self, size: int) -> bool:
        self.dropped_events += 1
        self.dropped_bytes += size
        return False
