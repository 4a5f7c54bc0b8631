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
judged alone (classify.py, outcomes.py). A 413 splits the request in halves until it fits; a single
document that cannot fit goes to dead letters.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from shipper.config import Elasticsearch
from shipper.document import DocumentEncoder
from shipper.observe import Metrics
from shipper.sinks.base import Batch
from shipper.sinks.elasticsearch import classify as verdicts
from shipper.sinks.elasticsearch.client import ApiError, Client, Transport, make_transport
from shipper.sinks.elasticsearch.deadletter import DeadLetters
from shipper.sinks.elasticsearch.outcomes import Outcomes
from shipper.sinks.elasticsearch.queue import BatchQueue, Work
from shipper.sinks.elasticsearch.retries import Retries
from shipper.sinks.elasticsearch.startup import (
    Server,
    SinkStartError,
    detect,
    fatal_error,
    install_templates,
)
from shipper.sinks.elasticsearch.templates import target_patterns
from shipper.sinks.elasticsearch.transport import TransportError

log = logging.getLogger(__name__)


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
        self._transport = transport
        self.client: Client | None = None
        self.server: Server | None = None
        self.queue = BatchQueue(cfg.bulk.concurrency, self._deliver)
        self._prepare_task: asyncio.Task[None] | None = None
        self._fatal: BaseException | None = None
        self._ready_once = False
        self._closing = False
        self.target = cfg.index or cfg.data_stream
        # What the template covers: the target, or every stream routing may name.
        self.patterns = patterns or target_patterns(cfg.data_stream, cfg.index)
        # Data stream: POST /<stream>/_bulk (routed actions name their own stream as
        # `_index`). Dated indices: POST /_bulk, _index per action.
        self._bulk_path = "/_bulk" if cfg.index else f"/{cfg.data_stream}/_bulk"
        self.retries = Retries(cfg.retry, metrics, sleep, clock)
        self.outcomes = Outcomes(cfg, metrics, self.retries, self._send)
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
        and the dead-letter writer over it, for the outcomes too: at start, and again on a
        config reload."""
        self.client = Client(self._transport or make_transport(self.cfg))
        self.dead_letters = DeadLetters(
            self.client,
            self.cfg.dead_letter_index,
            self.target,
            self.metrics,
            self.cfg.bulk.max_bytes,
            self.retries.pause,
            self.retries.log,
        )
        self.outcomes.connect(self.client, self.dead_letters)

    def reconfigure(self, cfg: Elasticsearch) -> None:
        """A config reload: new hosts, credentials (files read again), TLS, bulk and retry
        settings. Requests in flight finish on the old client (a retry takes the new
        one), which is closed once they can no longer be running. Where documents go
        (data stream, index, ids, templates) is fixed for the process: the reload keeps
        those keys (see shipper.reload)."""
        old_client, old_timeout = self.client, self.cfg.bulk.timeout
        self.cfg = cfg
        self.retries.settings = cfg.retry
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
        return self._ready_once and not self.retries.failing_for(self.cfg.unready_after)

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
                self.retries.log("elasticsearch not ready yet", exc)
            await self.retries.pause(attempt)
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
            unknown = await self.outcomes.skip_indexed(work, positions)
            if unknown is None:  # the lookup failed: never send uncertain documents blind
                await self.retries.pause(attempt)
                attempt += 1
                continue
            positions = unknown
            if not positions:
                return
            entries = work.batch.entries
            # Written in slices, never joined whole; positions are distinct, so as many
            # as there are entries are all of them.
            if len(positions) == len(entries):
                body, size = entries, work.batch.size
            else:
                body = [entries[p] for p in positions]
                size = sum(map(len, body))
            work.tried += 1
            log.debug(
                "bulk request",
                extra={"documents": len(positions), "bytes": size, "attempt": attempt + 1},
            )
            assert self.client is not None
            try:
                response = await self.client.bulk(
                    self._bulk_path, body, {"filter_path": verdicts.FILTER_PATH}, size
                )
            except TransportError as exc:
                self.metrics.bulk_requests.inc(1, "unreachable")
                self.metrics.retries.inc(len(positions), "connection")
                if exc.sent:  # it may have been executed: look before sending again
                    work.uncertain.update(positions)
                self.retries.failing()
                self.retries.log(
                    "elasticsearch unreachable; retrying", exc, documents=len(positions)
                )
                positions = self.retries.still_trying(work, positions, "connection")
            else:
                self.metrics.bytes_sent.inc(size)
                if response.status == 200:
                    positions = await self.outcomes.judge(work, positions, response.body)
                else:
                    positions = await self.outcomes.refused(
                        work, positions, response.status, response.body
                    )
                    if positions is None:
                        return
            if positions:
                await self.retries.pause(attempt)
                attempt += 1

    # ---- health --------------------------------------------------------------------------

    def _hosts_up(self) -> float:
        return float(self.client.hosts_alive()) if self.client is not None else 0.0


__all__ = ["ElasticsearchSink", "SinkStartError"]
