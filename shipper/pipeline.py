"""The one place that knows every stage: tail -> decode -> enrich -> encode -> sink -> commit.

One asyncio loop runs it. Each pass brings the tailer's picture of the files up to date,
reads a batch of chunks (whole lines, one chunk per file in turn), decodes and encodes
them into the current bulk batch, and hands full or old batches to the sink. Reading
pauses while the bytes read but not yet acknowledged exceed the buffer budget, so memory
stays bounded however slow the sink is: the files on disk are the buffer. The picture is
kept up to date while reading is paused too, so rotations are followed as they happen.
Offsets are committed only through the acknowledgement tracker, and written to disk by a
task of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from parsers.decoder import DecoderOptions
from shipper import gauges
from shipper.acks import AckTracker
from shipper.batching import Batcher
from shipper.checkpoint import CheckpointStore
from shipper.controls import Controls
from shipper.files import FileStage, MetadataSource
from shipper.observe import Metrics
from shipper.outbox import Outbox
from shipper.sinks.base import Batch, Sink
from shipper.storefile import CheckpointWriter
from shipper.tail.fs import REAL, FileSystem
from shipper.tail.options import TailOptions
from shipper.tail.reader import Chunk, FileCursor
from shipper.tail.tailer import Tailer

WAKE_INTERVAL = 0.05  # seconds between read passes when data trickles in

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PipelineOptions:
    tail: TailOptions = field(default_factory=TailOptions)
    decoder: DecoderOptions = field(default_factory=DecoderOptions)
    batch_max_bytes: int = 5 * 1024 * 1024
    batch_max_docs: int = 10_000
    batch_max_delay: float = 1.0
    buffer_max_bytes: int = 64 * 1024 * 1024
    read_bytes: int = 1024 * 1024  # per pass, across files
    checkpoint_interval: float = 1.0
    shutdown_grace: float = 20.0
    once: bool = False
    # Persist "sent up to" marks before sending past them (exactly once across restarts
    # and rollovers; the Elasticsearch sink with deterministic ids turns it on).
    mark_sent: bool = False
    # `shipper tail` filters
    file_filter: Callable[[FileCursor], bool] | None = None
    line_filter: re.Pattern[bytes] | None = None
    # level detection, routing, rate limits, redaction (shipper.controls.line_controls)
    controls: Controls | None = None


class Pipeline:
    """Runs the stages until stopped (or, with `once`, until every file is read)."""

    def __init__(
        self,
        options: PipelineOptions,
        sink_factory: Callable[[Callable[[Batch], None]], Sink],
        store: CheckpointStore,
        metadata: MetadataSource,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        fs: FileSystem = REAL,
    ) -> None:
        self.options = options
        self.store = store
        self.metadata = metadata
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.tailer = Tailer(options.tail, store, clock=clock, fs=fs)
        self.tracker = AckTracker(store, on_release=self._on_release)
        self.sink = sink_factory(self._on_ack)
        self.batches = Batcher(
            options.batch_max_docs, options.batch_max_bytes, options.batch_max_delay, clock
        )
        self.writer = CheckpointWriter(store, options.checkpoint_interval)
        self.outbox = Outbox(
            self._needs_sent_marks,
            self._mark_read,
            self.writer.write_now,
            lambda batch: self.sink.send(batch),
        )
        self.files = FileStage(
            options.decoder,
            metadata,
            self.sink.encoder,
            self.tracker,
            self.batches,
            store,
            self.metrics,
            clock,
            options.file_filter,
            options.line_filter,
            options.controls,
        )
        self._stopping = False
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_beat = time.monotonic()
        self._next_housekeeping = 0.0
        self._last_wake = 0.0
        self._next_expire = 0.0
        self.finished_once = False
        self._reconfigure: tuple[PipelineOptions, Any, asyncio.Future[None]] | None = None

    # ---- control ---------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to stop reading, deliver what is in flight and commit (thread-safe)."""
        self._stopping = True
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def reconfigure(
        self, options: PipelineOptions, sink_settings: Any = None
    ) -> asyncio.Future[None]:
        """Take new options (a config reload) at the next safe point of the loop, between
        passes; the future is done once they apply. `sink_settings` go to the sink's own
        `reconfigure` (the Elasticsearch sink: its config section)."""
        assert self._loop is not None and self._wake is not None, "the pipeline is not running"
        done = self._loop.create_future()
        if self._reconfigure is not None:  # superseded before it applied
            self._reconfigure[2].set_result(None)
        self._reconfigure = (options, sink_settings, done)
        self._wake.set()
        return done

    def _apply_reconfigure(self) -> None:
        assert self._reconfigure is not None
        options, sink_settings, done = self._reconfigure
        self._reconfigure = None
        try:
            self.apply_options(options, sink_settings)
        except Exception as exc:  # the sink refused (credentials unreadable): nothing changed
            done.set_exception(exc)
            return
        done.set_result(None)

    def apply_options(self, options: PipelineOptions, sink_settings: Any = None) -> None:
        """Between passes: nothing is half-read or half-encoded, so every stage takes its
        new settings whole; what is in flight (held events, batches, unacknowledged
        segments) stays and is delivered. The sink goes first: if it refuses, nothing
        changes."""
        reconfigure_sink = getattr(self.sink, "reconfigure", None)
        if sink_settings is not None and reconfigure_sink is not None:
            reconfigure_sink(sink_settings)
        old = self.options
        # Fixed for the process: what `shipper tail` set, and how sent marks are kept.
        options = dataclasses.replace(
            options,
            once=old.once,
            mark_sent=old.mark_sent,
            file_filter=old.file_filter,
            line_filter=old.line_filter,
        )
        self.options = options
        self.tailer.reconfigure(options.tail)
        self.files.reconfigure(options.decoder, self.sink.encoder)
        self.files.set_controls(options.controls)  # levels, limits, redaction
        b = self.batches
        b.max_docs, b.max_bytes = options.batch_max_docs, options.batch_max_bytes
        b.max_delay = options.batch_max_delay
        self.writer.interval = options.checkpoint_interval

    def alive(self, stall: float = 60.0) -> bool:
        """The loop has turned recently (for /healthz)."""
        return time.monotonic() - self._last_beat < stall

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        loop = self._loop
        wake = self._wake
        self.tailer.wakeup = lambda: loop.call_soon_threadsafe(wake.set)
        await self.sink.start()
        self.tailer.start()
        if self.store.directory is not None:
            self.writer.start()
        try:
            await self._loop_until_stopped()
        finally:
            await self._shutdown()

    async def _loop_until_stopped(self) -> None:
        opts = self.options
        while not self._stopping:
            if self._reconfigure is not None:
                self._apply_reconfigure()
            now = self.clock()
            self._last_beat = time.monotonic()
            read = self.poll(now)
            while self.batch_due(now):
                await self._dispatch()
            if now >= self._next_housekeeping:
                fatal = self.sink.fatal()
                if fatal is not None:
                    raise fatal
                self.tick(now)
            if opts.once:
                if not self.finished_once and read == 0 and self._once_complete():
                    self.finish_once(now)
                    continue
                if self.finished_once and self.tracker.idle() and not self.batches.pending():
                    return  # everything read has been delivered
            if read and self.room() > 0:
                await asyncio.sleep(0)
                continue
            await self._sleep(now)

    # ---- one pass, synchronously (the loop above, and tests that drive it by hand) ----------

    def room(self) -> int:
        """Bytes that may still be read before the buffer budget is spent (the tracker
        counts every document from encoding until acknowledgement)."""
        return self.options.buffer_max_bytes - self.tracker.in_flight_bytes

    def poll(self, now: float) -> int:
        """Bring the picture of the files up to date and, if the budget allows, read one
        pass of chunks and encode them into the batch; return the chunks read."""
        room = self.room()
        items = self.tailer.read(min(self.options.read_bytes, room) if room > 0 else 0)
        if items:
            self.files.process(items, now)
        return sum(1 for item in items if type(item) is Chunk)

    def batch_due(self, now: float) -> bool:
        # --once with everything read: the last batch goes now, not after `max_delay`. A
        # full buffer sends the open batch at once only when nothing is at the sink: else
        # an acknowledgement frees room and the batch fills on (a part-full request at
        # every pause made two workers' halves of the buffer a third more requests).
        return self.batches.due(now, self.finished_once or (self.room() <= 0 and self._unsent()))

    def _unsent(self) -> bool:
        """Everything read and not acknowledged is still in the batcher (none at the sink)."""
        return self.tracker.in_flight_bytes <= self.batches.held_bytes()

    def take_batch(self) -> Batch:
        """Hand over the oldest full batch, else the open one (acknowledge with `acknowledge`)."""
        return self.batches.take()

    def acknowledge(self, batch: Batch) -> None:
        self._on_ack(batch)

    async def _sleep(self, now: float) -> None:
        assert self._wake is not None
        deadline = min(self._next_housekeeping, self.tailer.next_wakeup())
        paused = self.room() <= 0
        if paused:  # reading paused: the picture is still kept up to date
            deadline = min(self._next_housekeeping, self.tailer.next_discovery())
        batch_due = self.batches.deadline()
        if batch_due is not None:
            deadline = min(deadline, batch_due)
        timeout = max(deadline - now, 0.0)
        if timeout <= 0:
            await asyncio.sleep(0)
            return
        # Data trickling in (a write every few milliseconds) is read in passes at most
        # every WAKE_INTERVAL: each pass has a fixed cost, and a wake-up per write made a
        # slow writer as expensive as a fast one. A backlog comes here only when reading
        # is paused on a full buffer (the loop reads on while a pass finds data), and then
        # waits for acknowledgements alone: the one that frees room wakes it at once (with
        # the pause, a backlog stalled for it at every batch: 2.7x the time at 4 MiB).
        gap = min(self._last_wake + WAKE_INTERVAL - time.monotonic(), timeout)
        if gap > 0 and not self._stopping and not paused:
            await asyncio.sleep(gap)
            timeout -= gap
        # Cleared after waking, not before waiting: a wake-up that raced with this pass
        # then costs one extra pass instead of a missed notification.
        if timeout > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()
        self._last_wake = time.monotonic()

    # ---- delivery ------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        batch = self.take_batch()
        if batch.parts:
            await self.outbox.put(batch)

    def _mark_read(self) -> None:
        # Everything read so far is marked as possibly sent, durably, before any of it is.
        self.store.mark_sent(self.tracker.read_ends())

    def _needs_sent_marks(self, batch: Batch) -> bool:
        """The batch reaches past a file's durable "sent up to" mark."""
        return (
            self.options.mark_sent
            and self.store.directory is not None
            and self.store.unmarked([(seg.key, seg.end) for seg, _, _ in batch.parts])
        )

    async def _dispatch_all(self) -> None:
        while self.batches.pending():
            await self._dispatch()
        await self.outbox.flush()

    def _on_ack(self, batch: Batch) -> None:
        wall = time.time()
        ack = self.tracker.ack
        delay = self.metrics.delay
        for segment, docs, size in batch.parts:
            ack(segment, docs, size)
            if segment.oldest:
                delay.observe(max(wall - segment.oldest, 0.0), docs)

    def _on_release(self, size: int) -> None:
        if self._wake is not None:
            self._wake.set()

    # ---- periodic work -------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Periodic work: expired partial and multiline events, waits for metadata."""
        self._next_housekeeping = now + 0.25
        self.files.tick(now)
        if now >= self._next_expire:
            self._next_expire = now + 3600
            self.store.expire(time.time())

    def update_gauges(self) -> None:
        """Refresh gauges and the counters kept by other parts, when scraped."""
        gauges.update(self.metrics, self.tailer, self.tracker, self.store, self.files, self.sink)

    # ---- ending ----------------------------------------------------------------------------

    async def _read_deleted(self, deadline: float) -> None:
        assert self._wake is not None
        while time.monotonic() < deadline and not self.sink.fatal():
            now = self.clock()
            read = self.poll(now)
            while self.batch_due(now):
                await self._dispatch()
            idle = not read and self.room() > 0 and not self.tailer.has_ready()
            if idle and not self.tailer.read_deleted_first():
                return  # every deleted file read to its end
            if read and self.room() > 0:
                await asyncio.sleep(0)
                continue
            with contextlib.suppress(TimeoutError):  # an acknowledgement frees room
                await asyncio.wait_for(self._wake.wait(), min(0.25, deadline - time.monotonic()))
            self._wake.clear()

    def _once_complete(self) -> bool:
        if self.files.waiting:
            return False
        return self.tailer.all_read()

    def finish_once(self, now: float) -> None:
        """--once: every file is read to its end; ship what decoders hold, then stop."""
        self.files.flush_all(now)
        self.finished_once = True

    async def _shutdown(self) -> None:
        """Deliver what is in flight within the grace period and commit checkpoints.

        Deleted files still held open are read first, within half the grace: after the
        process their text is gone (a rolling update while shipper is behind would lose
        it); everything else stays on disk for the next start."""
        began = time.monotonic()
        grace = self.options.shutdown_grace
        try:
            if self.tailer.read_deleted_first():
                await self._read_deleted(began + grace / 2)
            await self._dispatch_all()
            left = max(grace - (time.monotonic() - began), 0.0)
            drained = await self.sink.drain(left)
            if not drained:
                log.warning(
                    "shutdown grace period over with documents unacknowledged; they will be "
                    "read and sent again on the next start",
                    extra={"in_flight_bytes": self.tracker.in_flight_bytes},
                )
        finally:
            self.files.throttle.report(self.clock(), force=True)
            self.tailer.stop()
            self.metadata.stop()
            self.outbox.cancel()  # only if the grace ran out: what it held is read again
            await self.sink.close()
            if self.store.directory is not None:
                await self.writer.stop()
            self.store.close()
