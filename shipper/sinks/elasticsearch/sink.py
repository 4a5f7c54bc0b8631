"""Bulk indexing into Elasticsearch or OpenSearch: nothing lost, nothing duplicated, nothing
silent.

Each batch is one `Work` that ends only when every document in it is accounted for:
indexed (201), already there (409 on create, or found by the uncertain-range lookup),
dead-lettered with its reason, or given up after `retry.max_attempts` (off by default)
with a counter and a log line. Then, and only then, the batch is acknowledged and its
files' offsets may be committed.

Request failures (connection errors, timeouts, 429, 5xx, auth, cluster blocks) retry the
request with exponential backoff and full jitter, without limit by default: the files
are the buffer. A request that failed after it was written (timeout, connection lost,
5xx) may have been executed, so its documents become uncertain and are looked up in the
whole target before they are sent again (see lookup.py). In a bulk answer each item is
judged alone (classify.py). A 413 splits the request in halves until it fits; a single
document that cannot fit goes to dead letters.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from shipper.config import Elasticsearch
from shipper.document import DocumentEncoder
from shipper.observe import Metrics
from shipper.sinks.base import Batch
from shipper.sinks.elasticsearch import classify as verdicts
from shipper.sinks.elasticsearch.client import ApiError, Client, Transport, error_of, make_transport
from shipper.sinks.elasticsearch.deadletter import DeadLetters, Letter
from shipper.sinks.elasticsearch.lookup import already_indexed, entry_target
from shipper.sinks.elasticsearch.queue import BatchQueue, Work
from shipper.sinks.elasticsearch.startup import (
    Server,
    SinkStartError,
    detect,
    fatal_error,
    install_templates,
)
from shipper.sinks.elasticsearch.templates import target_patterns
from shipper.sinks.elasticsearch.transport import ConnectFailed, TransportError

log = logging.getLogger(__name__)

BLOCK_LOG_INTERVAL = 30.0
RETRY_LOG_INTERVAL = 10.0


class ElasticsearchSink:
    def __init__(
        self,
        cfg: Elasticsearch,
        ack: Callable[[Batch], None],
        metrics: Metrics,
        sleep: Callable[[float], Any] = asyncio.sleep,
        transport: Transport | None = None,
        clock: Callable[[], float] = time.monotonic,
        patterns: list[str] | None = None,
    ) -> None:
        self.cfg = cfg
        self._ack = ack
        self.metrics = metrics
        self._sleep = sleep
        self._clock = clock
        self._transport = transport
        self.client: Client | None = None
        self.server: Server | None = None
        self.queue = BatchQueue(cfg.bulk.concurrency, self._deliver)
        self._prepare_task: asyncio.Task[None] | None = None
        self._fatal: BaseException | None = None
        self._ready_once = False
        self._failing_since: float | None = None
        self._closing = False
        self.target = cfg.index or cfg.data_stream
        # What the template covers: the target, or every stream routing may name.
        self.patterns = patterns or target_patterns(cfg.data_stream, cfg.index)
        # Where the uncertain range is looked for: the data stream (all backing indices),
        # or every index a dated pattern can produce. A routed document is looked for in
        # the stream its action names.
        self._lookup_target = ",".join(target_patterns(cfg.data_stream, cfg.index))
        # Data stream: POST /<stream>/_bulk (routed actions name their own stream as
        # `_index`). Dated indices: POST /_bulk, _index per action.
        self._bulk_path = "/_bulk" if cfg.index else f"/{cfg.data_stream}/_bulk"
        self._last_log: dict[str, float] = {}
        self.dead_letters: DeadLetters | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        metrics.sink_hosts_up.read = self._hosts_up

    # ---- the Sink protocol -----------------------------------------------------------

    def encoder(self, path: str, metadata: bytes, id_prefix: bytes) -> DocumentEncoder:
        return DocumentEncoder(
            path=path,
            metadata=metadata,
            actions=True,
            id_prefix=id_prefix if self.cfg.deterministic_ids else None,
            index_format=self.cfg.index or None,
        )

    async def start(self) -> None:
        """Connect and install templates in the background; batches wait for it."""
        self._connect()
        self._prepare_task = asyncio.create_task(self._prepare())
        self._prepare_task.add_done_callback(self._prepared_or_failed)

    def _connect(self) -> None:
        """The client (hosts, credentials read from their files now, TLS, bulk settings)
        and the dead-letter writer over it: at start, and again on a config reload."""
        self.client = Client(self._transport or make_transport(self.cfg))
        self.dead_letters = DeadLetters(
            self.client,
            self.cfg.dead_letter_index,
            self.target,
            self.metrics,
            self.cfg.bulk.max_bytes,
            self._pause,
            self._log_retry,
        )

    def reconfigure(self, cfg: Elasticsearch) -> None:
        """A config reload: new hosts, credentials (files read again), TLS, bulk and retry
        settings. Requests in flight finish on the old client (a retry takes the new
        one), which is closed once they can no longer be running. Where documents go
        (data stream, index, ids, templates) is fixed for the process: the reload keeps
        those keys (see shipper.reload)."""
        old_client, old_timeout = self.client, self.cfg.bulk.timeout
        self.cfg = cfg
        self._connect()  # raises ConfigError (unreadable credentials): the old one stays
        self.queue.concurrency = cfg.bulk.concurrency
        self.queue.pump()
        if old_client is not None and self._transport is None:
            task = asyncio.get_running_loop().create_task(self._retire(old_client, old_timeout))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    @staticmethod
    async def _retire(client: Client, timeout: float) -> None:
        try:
            await asyncio.sleep(timeout + 1.0)  # its last request has ended (or timed out)
        finally:
            await client.close()

    def _prepared_or_failed(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._fatal = task.exception()
        elif not task.cancelled():
            self.queue.open()

    async def send(self, batch: Batch) -> None:
        """Queue a batch. Never blocks: the pipeline's byte budget bounds the queue."""
        self.queue.put(Work.of(batch))

    async def drain(self, timeout: float | None = None) -> bool:
        if self._fatal is not None:  # nothing will be delivered: do not wait for the grace
            return self.queue.empty()
        return await self.queue.drain(timeout)

    async def close(self) -> None:
        self._closing = True
        if self._prepare_task is not None:
            self._prepare_task.cancel()
        await self.queue.close()
        for task in list(self._retiring):
            task.cancel()
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        if self.client is not None:
            await self.client.close()

    def ready(self) -> bool:
        """Templates installed, and not unreachable or refusing for `unready_after`."""
        if not self._ready_once:
            return False
        since = self._failing_since
        return since is None or self._clock() - since < self.cfg.unready_after

    def fatal(self) -> BaseException | None:
        """An error that retrying cannot fix (the daemon exits 1 with it)."""
        return self._fatal

    # ---- start-up ----------------------------------------------------------------------

    async def _prepare(self) -> None:
        """Wait for the cluster, then install the templates (retried until it works)."""
        assert self.client is not None
        attempt = 0
        while not self._closing:
            try:
                self.server = await detect(self.client)
                if self.cfg.install_template:
                    await install_templates(self.client, self.cfg, self.server, self.patterns)
                self._ready_once = True
                log.info(
                    "elasticsearch ready",
                    extra={
                        "engine": self.server.engine,
                        "version": self.server.version,
                        "target": self.target,
                        "failure_store": self.server.has_failure_store and not self.cfg.index,
                    },
                )
                return
            except (TransportError, ApiError) as exc:
                fatal = fatal_error(exc, self.cfg)
                if fatal is not None:
                    raise fatal from None
                self._log_retry("elasticsearch not ready yet", exc)
            await self._pause(attempt)
            attempt += 1

    # ---- delivery ------------------------------------------------------------------------

    async def _deliver(self, work: Work) -> None:
        try:
            await self._send(work, work.pending())
        except asyncio.CancelledError:
            return  # shutting down: not acknowledged, so read and sent again next start
        except Exception:  # a bug must not silently stall the pipeline's acknowledgements
            log.exception(
                "unexpected error delivering a batch; its unaccounted documents will be sent again",
                extra={"documents": len(work.left)},
            )
            await self._sleep(1.0)
            self.queue.put(work)
            return
        self._ack(work.batch)

    async def _send(self, work: Work, positions: list[int]) -> None:
        """Send `positions` of `work` until each one is accounted for."""
        attempt = 0
        while positions:
            unknown = await self._skip_indexed(work, positions)
            if unknown is None:  # the lookup failed: never send uncertain documents blind
                await self._pause(attempt)
                attempt += 1
                continue
            positions = unknown
            if not positions:
                return
            entries = work.batch.entries
            body = [entries[p] for p in positions]  # written in slices, never joined whole
            size = work.batch.size if len(body) == len(entries) else sum(map(len, body))
            work.tried += 1
            log.debug(
                "bulk request",
                extra={"documents": len(positions), "bytes": size, "attempt": attempt + 1},
            )
            assert self.client is not None
            try:
                response = await self.client.bulk(
                    self._bulk_path, body, {"filter_path": verdicts.FILTER_PATH}
                )
            except TransportError as exc:
                self.metrics.bulk_requests.inc(1, "unreachable")
                self.metrics.retries.inc(len(positions), "connection")
                if exc.sent:  # it may have been executed: look before sending again
                    work.uncertain.update(positions)
                self._failing()
                self._log_retry(
                    "elasticsearch unreachable; retrying", exc, documents=len(positions)
                )
                positions = self._still_trying(work, positions, "connection")
            else:
                self.metrics.bytes_sent.inc(size)
                if response.status == 200:
                    positions = await self._judge(work, positions, response.body)
                else:
                    positions = await self._refused(work, positions, response.status, response.body)
                    if positions is None:
                        return
            if positions:
                await self._pause(attempt)
                attempt += 1

    async def _skip_indexed(self, work: Work, positions: list[int]) -> list[int] | None:
        """Account for the uncertain documents among `positions` the target already holds;
        the rest, or None when the lookup failed (try again later)."""
        uncertain = [p for p in positions if p in work.uncertain]
        if not uncertain or not self.cfg.deterministic_ids:
            return positions
        entries = work.batch.entries
        ids: dict[int, str | None] = {}
        # Each document is looked for where it was sent: its own stream when its action
        # names one (routing), else the configured target. Dated indices: the pattern.
        by_target: dict[str, list[str]] = {}
        for p in uncertain:
            index, id_ = entry_target(entries[p])
            ids[p] = id_
            if id_:
                where = self._lookup_target if self.cfg.index or not index else index
                by_target.setdefault(where, []).append(id_)
        assert self.client is not None
        try:
            found: set[str] = set()
            for where, wanted in by_target.items():
                found |= await already_indexed(self.client, where, wanted)
        except (TransportError, ApiError) as exc:
            self._failing()
            self._log_retry("looking up re-sent documents failed; retrying", exc)
            return None
        there = [p for p, i in ids.items() if i in found]
        self.metrics.documents_checked.inc(len(there), "found")
        self.metrics.documents_checked.inc(len(uncertain) - len(there), "absent")
        self.metrics.documents_duplicate.inc(len(there))
        work.account(there)
        work.uncertain.difference_update(uncertain)  # known absent now
        gone = set(there)
        return [p for p in positions if p not in gone]

    async def _refused(
        self, work: Work, positions: list[int], status: int, body: bytes
    ) -> list[int] | None:
        """A `_bulk` refused as a whole: the positions to retry, None when handled."""
        kind, reason = error_of(body, status)
        outcome = verdicts.request_outcome(status, kind, len(positions))
        if outcome == verdicts.SPLIT:
            self.metrics.bulk_requests.inc(1, "split")
            if len(positions) == 1:
                await self._reject(work, [(positions[0], 413, "request_too_large", reason)])
                return None
            half = len(positions) // 2
            await self._send(work, positions[:half])
            await self._send(work, positions[half:])
            return None
        if outcome == verdicts.REJECT_ONE:
            await self._reject(work, [(positions[0], status, kind, reason)])
            return None
        self.metrics.bulk_requests.inc(1, "error")
        self._failing()
        if outcome == verdicts.BLOCKED:
            self._blocked(len(positions), status, reason)
        else:
            self.metrics.retries.inc(len(positions), f"http_{status}")
            self._log_retry(
                "bulk request failed; retrying",
                None,
                status=status,
                error_type=kind,
                documents=len(positions),
            )
            if status >= 500:  # a proxy's 502/504 or a node failing mid-request
                work.uncertain.update(positions)
        return self._still_trying(work, positions, f"http_{status}")

    async def _judge(self, work: Work, positions: list[int], body: bytes) -> list[int]:
        """Account for each item of a bulk answer; return the positions to try again."""
        verdict = verdicts.classify(body, len(positions))
        metrics = self.metrics
        if verdict.mismatch:
            log.error(
                "bulk response does not match the request; sending it again",
                extra={"documents": len(positions)},
            )
            work.uncertain.update(positions)
            return self._still_trying(work, positions, "bad_response")
        retry = [positions[i] for i in verdict.retry]
        accepted = len(positions) - len(retry) - len(verdict.rejected)
        if accepted:
            self._failing_since = None
            metrics.sink_blocked.set(0.0)
        elif retry:
            self._failing()
        metrics.documents_indexed.inc(verdict.indexed + verdict.failure_store)
        metrics.documents_duplicate.inc(verdict.duplicate)
        metrics.dead_letters.inc(verdict.failure_store)
        partial = bool(retry or verdict.rejected or verdict.failure_store)
        metrics.bulk_requests.inc(1, "partial" if partial else "ok")
        if verdict.rejected:
            rejected = verdict.rejected
            await self._reject(
                work, [(positions[r.position], r.status, r.type, r.reason) for r in rejected]
            )
        done = set(positions) - set(retry)
        work.account(done)
        if verdict.blocked:
            self._blocked(verdict.blocked, 0, "")
        others = len(retry) - verdict.blocked
        if others:
            metrics.retries.inc(others, verdict.retry_reason())
            self._log_retry(
                "some documents were refused for now; retrying them", None, documents=others
            )
        return self._still_trying(work, retry, "item")

    async def _reject(self, work: Work, rejected: list[tuple[int, int, str, str]]) -> None:
        """Dead-letter these positions (one request for all of them), then account them."""
        assert self.dead_letters is not None
        entries = work.batch.entries
        await self.dead_letters.write([Letter(entries[p], s, t, r) for p, s, t, r in rejected])
        work.account([p for p, *_ in rejected])

    def _still_trying(self, work: Work, positions: list[int], reason: str) -> list[int]:
        limit = self.cfg.retry.max_attempts
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

    def _failing(self) -> None:
        if self._failing_since is None:
            self._failing_since = self._clock()

    def _blocked(self, documents: int, status: int, reason: str) -> None:
        """Writes refused by a cluster block: retried, counted, one line now and then."""
        self.metrics.retries.inc(documents, "cluster_block")
        self.metrics.sink_blocked.set(1.0)
        if self._due("block", BLOCK_LOG_INTERVAL):
            log.warning(
                "writes refused by a cluster block (index.blocks.write, or the flood-stage disk "
                "watermark's read_only_allow_delete); retrying until it is lifted",
                extra={"documents": documents, "status": status, "reason": reason[:300]},
            )

    def _hosts_up(self) -> float:
        return float(self.client.hosts_alive()) if self.client is not None else 0.0

    # ---- plumbing ---------------------------------------------------------------------------

    async def _pause(self, attempt: int) -> None:
        r = self.cfg.retry
        ceiling = min(r.max_backoff, r.initial_backoff * (2 ** min(attempt, 30)))
        await self._sleep(random.uniform(r.initial_backoff / 2, ceiling))  # full jitter, floor

    def _due(self, what: str, interval: float) -> bool:
        now = time.monotonic()
        if now - self._last_log.get(what, -interval) < interval:
            return False
        self._last_log[what] = now
        return True

    def _log_retry(self, message: str, exc: BaseException | None, **fields: Any) -> None:
        # At most one line every 10 s while failing: loud enough, never a flood.
        if not self._due("retry", RETRY_LOG_INTERVAL):
            return
        if exc is not None:
            fields["error"] = _describe(exc)
        log.warning(message, extra=fields)


def _describe(exc: BaseException) -> str:
    """A short, secret-free description (no headers, no bodies)."""
    if isinstance(exc, ApiError):
        return f"HTTP {exc.status} {exc.type}"
    if isinstance(exc, ConnectFailed | TransportError):
        return str(exc)[:300]
    return f"{exc.__class__.__name__}: {str(exc)[:300]}"


__all__ = ["ElasticsearchSink", "SinkStartError"]
