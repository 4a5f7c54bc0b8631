"""What the per-file stage applies to each container's lines, built from the config in one place.

`line_controls(cfg)` is the only reader of `parsing.level`, `routing.*`, `limits.*` and
`redaction.*` for the path of a line; the stage holds the result and each file context
takes what concerns it (its target stream, its rate limiter) when it is made, when its
pod's metadata changes, and when the stage is given new controls (a reload builds them
again from the new config and hands them over with `FileStage.set_controls`).

Off by default, and then free per line: no router fields in dated-index mode, no limiter
for an unlimited container, no redactor without rules. Only level detection is per-line
work in the default configuration.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from parsers.redact import BUILTINS, Redactor, redactor
from shipper.datastream import DataStream, Router
from shipper.limits import ContainerLimiter, LimitPolicy, RateLimit

if TYPE_CHECKING:
    from shipper.config import Config
    from shipper.kube.fragment import MetadataHandle
    from shipper.observe import Metrics

log = logging.getLogger(__name__)

THROTTLE_LOG_INTERVAL = 10.0


@dataclass(frozen=True, slots=True)
class Controls:
    """Level detection, routing, rate limits and redaction for the path of a line."""

    level: bool = True
    router: Router | None = None  # None: documents carry no data_stream fields
    routed: bool = False  # each file's bulk actions name its stream (routing is on)
    limits: LimitPolicy | None = None  # None: no container is limited
    redactor: Redactor | None = None  # None: no rules

    def stream(self, namespace: str, handle: MetadataHandle) -> DataStream | None:
        """The stream a container of `namespace` with this metadata writes to."""
        if self.router is None:
            return None
        return self.router.target(namespace, handle.dataset)

    def index_name(self, stream: DataStream | None) -> str | None:
        """What a file's bulk actions name as `_index`: only routed streams other than the
        configured one (that one is the request's default target)."""
        if not self.routed or stream is None or self.router is None:
            return None
        return None if stream is self.router.base else stream.name

    def limit(self, namespace: str, handle: MetadataHandle) -> RateLimit | None:
        """The container's rate limit, None when it has none."""
        if self.limits is None:
            return None
        limit = self.limits.for_container(namespace, handle.rate_limit)
        return None if limit.unlimited else limit


def line_controls(cfg: Config) -> Controls:
    """The controls a config asks for (validated first: routing needs a scheme name)."""
    es = cfg.elasticsearch
    router = None if es.index else Router.from_config(es.data_stream, cfg.routing)
    routing = cfg.routing.per_namespace or cfg.routing.dataset_annotation
    r = cfg.redaction
    builtins = [name for name in BUILTINS if getattr(r.builtin, name)]
    custom = [(rule.name, rule.pattern, rule.replacement) for rule in r.rules]
    return Controls(
        level=cfg.parsing.level,
        router=router,
        routed=routing and router is not None,
        limits=LimitPolicy(cfg.limits),
        redactor=redactor(builtins, custom, r.marker),
    )


def template_patterns(cfg: Config) -> list[str] | None:
    """The index patterns shipper's template must cover when routing names several
    streams; None: the configured target alone."""
    controls = line_controls(cfg)
    if not controls.routed or controls.router is None:
        return None
    return controls.router.patterns()


# ---- rate limits, per container --------------------------------------------------------

ContainerKey = tuple[str, str, str]  # namespace, pod, container


@dataclass(slots=True)
class _Shared:
    limiter: ContainerLimiter
    users: int = 1


@dataclass(slots=True)
class Throttle:
    """One limiter per container, shared by its files (a rotated file read to its end and
    the new one), and the counting and logging of what the limiters drop."""

    metrics: Metrics
    interval: float = THROTTLE_LOG_INTERVAL
    limiters: dict[ContainerKey, _Shared] = field(default_factory=dict)
    _pending: dict[ContainerKey, list[int]] = field(default_factory=dict)
    _next_log: float = 0.0

    def acquire(
        self, key: ContainerKey, limit: RateLimit | None, now: float, old: ContainerLimiter | None
    ) -> ContainerLimiter | None:
        """The container's limiter for `limit` (one file more uses it); `old` is the one the
        file used until now, released."""
        if old is not None:
            self.release(key, old)
        if limit is None:
            return None
        shared = self.limiters.get(key)
        if shared is None or shared.limiter.limit != limit:
            # New, or its limit changed: the container's other files join when they see
            # the change (their release of the old limiter is then a no-op).
            shared = self.limiters[key] = _Shared(ContainerLimiter(limit, now))
        else:
            shared.users += 1
        return shared.limiter

    def release(self, key: ContainerKey, limiter: ContainerLimiter) -> None:
        shared = self.limiters.get(key)
        if shared is not None and shared.limiter is limiter:
            shared.users -= 1
            if shared.users <= 0:
                del self.limiters[key]

    def dropped(self, key: ContainerKey, lines: int, size: int, now: float) -> None:
        """Count what a limiter dropped; log (at most every `interval`) what was dropped."""
        self.metrics.events_throttled.inc(lines, key[0])
        self.metrics.bytes_throttled.inc(size, key[0])
        pending = self._pending.setdefault(key, [0, 0])
        pending[0] += lines
        pending[1] += size
        self.report(now)

    def report(self, now: float, force: bool = False) -> None:
        """The line saying which containers lost lines to their limits since the last one
        (`force`: now, even within the interval, as a run ends)."""
        if not self._pending or (now < self._next_log and not force):
            return
        self._next_log = now + self.interval
        pending, self._pending = self._pending, {}
        log.warning(
            "lines over their container's rate limit were dropped",
            extra={
                "containers": {
                    f"{ns}/{pod}/{container}": {"lines": lines, "bytes": size}
                    for (ns, pod, container), (lines, size) in pending.items()
                },
                "lines": sum(p[0] for p in pending.values()),
                "interval_seconds": self.interval,
            },
        )
