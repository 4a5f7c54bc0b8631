"""How the sink keeps trying while Elasticsearch fails: backoff with full jitter between
attempts, the attempt limit (`retry.max_attempts`, off by default), since when requests
have been failing (readiness reads it), and warnings at most one now and then.

One per sink, for the life of the process; a config reload replaces its `settings`.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

from shipper.config import Retry
from shipper.observe import Metrics
from shipper.sinks.elasticsearch.client import ApiError
from shipper.sinks.elasticsearch.queue import Work
from shipper.sinks.elasticsearch.transport import ConnectFailed, TransportError

# The sink's lines keep the logger they were always written under (filters name it).
log = logging.getLogger("shipper.sinks.elasticsearch.sink")

BLOCK_LOG_INTERVAL = 30.0
RETRY_LOG_INTERVAL = 10.0


class Retries:
    def __init__(
        self,
        settings: Retry,
        metrics: Metrics,
        sleep: Callable[[float], Any],
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self._sleep = sleep
        self._clock = clock
        self._failing_since: float | None = None
        self._last_log: dict[str, float] = {}

    async def pause(self, attempt: int) -> None:
        r = self.settings
        ceiling = min(r.max_backoff, r.initial_backoff * (2 ** min(attempt, 30)))
        await self._sleep(random.uniform(r.initial_backoff / 2, ceiling))  # full jitter, floor

    def still_trying(self, work: Work, positions: list[int], reason: str) -> list[int]:
        """`positions`, or none once `work` has used its attempts (they are given up)."""
        limit = self.settings.max_attempts
        if not limit or work.tried < limit or not positions:
            return positions
        self.metrics.lines_given_up.inc(len(positions), "retries_exhausted")
        log.error(
            "giving documents up after retry.max_attempts attempts",
            extra={"documents": len(positions), "attempts": limit, "last_reason": reason},
        )
        work.account(positions)
        return []

    # ---- health --------------------------------------------------------------------------

    def failing(self) -> None:
        if self._failing_since is None:
            self._failing_since = self._clock()

    def recovered(self) -> None:
        """Documents were accepted: not failing, not blocked."""
        self._failing_since = None
        self.metrics.sink_blocked.set(0.0)

    def failing_for(self, seconds: float) -> bool:
        """Requests have been failing for `seconds` or longer."""
        since = self._failing_since
        return since is not None and self._clock() - since >= seconds

    def blocked(self, documents: int, status: int, reason: str) -> None:
        """Writes refused by a cluster block: retried, counted, one line now and then."""
        self.metrics.retries.inc(documents, "cluster_block")
        self.metrics.sink_blocked.set(1.0)
        if self._due("block", BLOCK_LOG_INTERVAL):
            log.warning(
                "writes refused by a cluster block (index.blocks.write, or the flood-stage disk "
                "watermark's read_only_allow_delete); retrying until it is lifted",
                extra={"documents": documents, "status": status, "reason": reason[:300]},
            )

    # ---- logging ---------------------------------------------------------------------------

    def log(self, message: str, exc: BaseException | None, **fields: Any) -> None:
        # At most one line every 10 s while failing: loud enough, never a flood.
        if not self._due("retry", RETRY_LOG_INTERVAL):
            return
        if exc is not None:
            fields["error"] = describe(exc)
        log.warning(message, extra=fields)

    def _due(self, what: str, interval: float) -> bool:
        now = time.monotonic()
        if now - self._last_log.get(what, -interval) < interval:
            return False
        self._last_log[what] = now
        return True


def describe(exc: BaseException) -> str:
    """A short, secret-free description (no headers, no bodies)."""
    if isinstance(exc, ApiError):
        return f"HTTP {exc.status} {exc.type}"
    if isinstance(exc, ConnectFailed | TransportError):
        return str(exc)[:300]
    return f"{exc.__class__.__name__}: {str(exc)[:300]}"
