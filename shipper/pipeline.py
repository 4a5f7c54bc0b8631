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
from typing import Protocol

from parsers.decoder import DecoderOptions, FileDecoder
from parsers.events import LogEvent
from parsers.filename import ContainerRef
from parsers.multiline import BUILTIN as MULTILINE_RULES
from shipper.acks import AckTracker
from shipper.batching import Batcher
from shipper.checkpoint import CheckpointStore, CheckpointWriter
from shipper.document import DocumentEncoder, EncodeStats, epoch_seconds, utc_now_rfc3339
from shipper.kube.fragment import MetadataHandle
from shipper.observe import Metrics
from shipper.sinks.base import Batch, Sink
from shipper.tail.fs import REAL, FileSystem
from shipper.tail.items import Finished, Item, Restarted
from shipper.tail.options import TailOptions
from shipper.tail.reader import Chunk, FileCursor
from shipper.tail.tailer import Tailer

WAKE_INTERVAL = 0.05  # seconds between read passes when data trickles in

log = logging.getLogger(__name__)


class MetadataSource(Protocol):
    def handle(self, ref: ContainerRef | None, now: float) -> MetadataHandle: ...

    def refresh(self, now: float) -> None: ...

    def release(self, ref: ContainerRef | None, handle: MetadataHandle) -> None:
        """A file that used `handle` ended."""
        ...

    def stop(self) -> None: ...


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


@dataclass(slots=True)
class FileContext:
    """The pipeline's state for one file."""

    decoder: FileDecoder
    encoder: DocumentEncoder
    handle: MetadataHandle
    version: int
    skip: bool = False
    waiting: list[Chunk] = field(default_factory=list)


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
        self._contexts: dict[FileCursor, FileContext] = {}
        self._holding: set[FileCursor] = set()  # files whose decoder holds an event
        self._waiting: set[FileCursor] = set()  # files whose lines wait for metadata
        self._stopping = False
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_beat = time.monotonic()
        self._next_housekeeping = 0.0
        self._last_wake = 0.0
        self._next_expire = 0.0
        self.decoder_dropped = 0  # bytes cut by decoders (size caps, multiline joiner)
        self.finished_once = False
        self.encode_stats = EncodeStats()

    # ---- control ---------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to stop reading, deliver what is in flight and commit (thread-safe)."""
        self._stopping = True
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

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
            self._process(items, now)
        return sum(1 for item in items if type(item) is Chunk)

    def batch_due(self, now: float) -> bool:
        return self.batches.due(now, self.room() <= 0)

    def take_batch(self) -> Batch:
        """Hand over the oldest full batch, else the open one (acknowledge with `acknowledge`)."""
        return self.batches.take()

    def acknowledge(self, batch: Batch) -> None:
        self._on_ack(batch)

    async def _sleep(self, now: float) -> None:
        assert self._wake is not None
        deadline = min(self._next_housekeeping, self.tailer.next_wakeup())
        if self.room() <= 0:  # reading paused: the picture is still kept up to date
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
        # slow writer as expensive as a fast one. A backlog never comes here (the loop
        # reads on while a pass finds data), so this only adds latency, never slowness.
        gap = min(self._last_wake + WAKE_INTERVAL - time.monotonic(), timeout)
        if gap > 0 and not self._stopping:
            await asyncio.sleep(gap)
            timeout -= gap
        # Cleared after waking, not before waiting: a wake-up that raced with this pass
        # then costs one extra pass instead of a missed notification.
        if timeout > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()
        self._last_wake = time.monotonic()

    # ---- the path of a chunk -----------------------------------------------------------

    def _context(self, cursor: FileCursor) -> FileContext:
        """A file's decoder and encoder, made when its first chunk arrives."""
        ctx = self._contexts.get(cursor)
        if ctx is not None:
            return ctx
        handle = self.metadata.handle(cursor.ref, self.clock())
        encoder = self.sink.encoder(cursor.path, handle.fragment, cursor.id_prefix)
        encoder.stats = self.encode_stats
        encoder.parse_json = handle.parser == "json"
        ctx = FileContext(FileDecoder(self.options.decoder), encoder, handle, handle.version)
        self._apply_multiline_hint(ctx)
        if self.options.file_filter is not None and not self.options.file_filter(cursor):
            ctx.skip = True
        self._contexts[cursor] = ctx
        return ctx

    def _apply_multiline_hint(self, ctx: FileContext) -> None:
        """A pod's shipper.io/multiline hint, possibly known only after the file opened."""
        rule = MULTILINE_RULES.get(ctx.handle.multiline)
        options = ctx.decoder.options
        if rule is not None and options.multiline is not rule:
            ctx.decoder.options = dataclasses.replace(options, multiline=rule)

    def _process(self, items: list[Item], now: float) -> None:
        now_ts = utc_now_rfc3339()
        for item in items:
            if type(item) is Chunk:
                ctx = self._context(item.cursor)
                handle = ctx.handle
                if ctx.waiting or (not handle.resolved and now < handle.wait_until):
                    ctx.waiting.append(item)
                    self._waiting.add(item.cursor)
                    continue
                self._chunk(item, ctx, now, now_ts)
                continue
            cursor = item.cursor
            ctx = self._contexts.get(cursor)
            if ctx is None:
                continue  # nothing was read from it
            self._release_waiting(cursor, ctx, now, now_ts)
            if type(item) is Restarted:
                events = self._flush(ctx, ctx.decoder.flush_all(now))
                self._emit(ctx, events, item.end, item.key, item.id_prefix, now_ts)
            elif type(item) is Finished:
                if cursor.key:  # else its text was handed on by Restarted
                    events = self._flush(ctx, ctx.decoder.flush_all(now))
                    self._emit(ctx, events, cursor.offset, cursor.key, cursor.id_prefix, now_ts)
                self._holding.discard(cursor)
                self.metadata.release(cursor.ref, ctx.handle)
                del self._contexts[cursor]

    def _flush(self, ctx: FileContext, events: list[LogEvent]) -> list[LogEvent]:
        self.decoder_dropped += ctx.decoder.take_dropped()
        return events

    def _chunk(self, chunk: Chunk, ctx: FileContext, now: float, now_ts: bytes) -> None:
        decoder = ctx.decoder
        if chunk.long:
            events = decoder.feed_long_line(chunk.offset, chunk.data, now)
            self.metrics.lines_read.inc(1)
        else:
            events = decoder.feed(chunk.offset, chunk.data, now)
            self.metrics.lines_read.inc(chunk.data.count(b"\n"))
        if decoder.dropped_bytes:
            self.decoder_dropped += decoder.take_dropped()
        self.metrics.bytes_read.inc(len(chunk.data))
        pending = decoder.pending_start()
        cursor = chunk.cursor
        if pending is None:
            end = chunk.end
            self._holding.discard(cursor)
        else:
            end = min(pending, chunk.end)
            self._holding.add(cursor)
        self._emit(ctx, events, end, chunk.key, chunk.id_prefix, now_ts)

    def _emit(
        self,
        ctx: FileContext,
        events: list[LogEvent],
        end: int,
        key: str,
        id_prefix: bytes,
        now_ts: bytes,
    ) -> None:
        encoder = ctx.encoder
        handle = ctx.handle
        if handle.version != ctx.version:
            encoder.set_metadata(handle.fragment)
            ctx.version = handle.version
            encoder.parse_json = handle.parser == "json"
            self._apply_multiline_hint(ctx)
        if encoder.id_prefix is not None and encoder.id_prefix != id_prefix:
            encoder.id_prefix = id_prefix
        if ctx.skip:
            events = []
        elif handle.excluded:
            self.metrics.excluded.inc(len(events))
            events = []
        elif self.options.line_filter is not None:
            search = self.options.line_filter.search
            events = [e for e in events if search(e.message)]
        entries: list[bytes] = []
        size = encoder.encode(events, now_ts, entries)
        docs = len(entries)
        segment = self.tracker.open(key, end, docs, size)
        if docs:
            segment.oldest = epoch_seconds(events[0].time)
            segment.uncertain = self.store.resent(key, events[0].offset)
            self.batches.add(segment, entries, size)
            self.metrics.events.inc(docs)
            if not handle.resolved:
                self.metrics.metadata_missing.inc(docs)

    def _release_waiting(
        self, cursor: FileCursor, ctx: FileContext, now: float, now_ts: bytes
    ) -> None:
        if not ctx.waiting:
            return
        waiting, ctx.waiting = ctx.waiting, []
        self._waiting.discard(cursor)
        for chunk in waiting:
            self._chunk(chunk, ctx, now, now_ts)

    # ---- delivery ------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        batch = self.take_batch()
        if batch.parts:
            if self._needs_sent_marks(batch):
                # Everything read so far is marked as possibly sent, durably, before any of
                # it is: one write covers every batch already encoded.
                self.store.mark_sent(self.tracker.read_ends())
                await self.writer.write_now()
            await self.sink.send(batch)

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
        now_ts = utc_now_rfc3339()
        for cursor in list(self._holding):
            ctx = self._contexts.get(cursor)
            if ctx is None:
                self._holding.discard(cursor)
                continue
            if ctx.waiting:
                continue
            events = self._flush(ctx, ctx.decoder.flush_expired(now))
            if events:
                pending = ctx.decoder.pending_start()
                end = cursor.offset if pending is None else min(pending, cursor.offset)
                if pending is None:
                    self._holding.discard(cursor)
                self._emit(ctx, events, end, cursor.key, cursor.id_prefix, now_ts)
        self.metadata.refresh(now)
        for cursor in list(self._waiting):
            ctx = self._contexts.get(cursor)
            if ctx is None:
                self._waiting.discard(cursor)
            elif ctx.handle.resolved or now >= ctx.handle.wait_until:
                self._release_waiting(cursor, ctx, now, now_ts)
        if now >= self._next_expire:
            self._next_expire = now + 3600
            self.store.expire(time.time())

    def update_gauges(self) -> None:
        """Refresh gauges and the counters kept by other parts, when scraped."""
        m = self.metrics
        cursors = self.tailer.cursors
        m.files_followed.set(len(cursors))
        m.files_open.set(self.tailer.open_files())
        m.in_flight.set(self.tracker.in_flight_bytes)
        lag = 0
        for cursor in cursors:
            size = cursor.stat_size()
            entry = self.store.get(cursor.key)
            committed = entry.offset if entry is not None else 0
            if size is not None:
                lag += max(size - committed, 0)
        m.lag.set(lag)
        last = self.store.last_save
        m.checkpoint_age.set(time.time() - last if last else 0.0)
        stats = self.tailer.stats
        m.rotations.set_total(stats.rotations)
        m.truncations.set_total(stats.truncations)
        m.bytes_truncated.set_total(stats.truncated_bytes + self.decoder_dropped)
        for reason, nbytes in stats.given_up_bytes.items():
            m.bytes_given_up.set_total(nbytes, reason)
        for flag, count in self.encode_stats.flags.items():
            m.events_flagged.set_total(count, flag)
        m.up.set(1.0 if self.sink.ready() else 0.0)

    # ---- ending ----------------------------------------------------------------------------

    def _once_complete(self) -> bool:
        if self._waiting:
            return False
        return self.tailer.all_read()

    def finish_once(self, now: float) -> None:
        """--once: every file is read to its end; ship what decoders hold, then stop."""
        now_ts = utc_now_rfc3339()
        for cursor, ctx in list(self._contexts.items()):
            events = self._flush(ctx, ctx.decoder.flush_all(now))
            self._emit(ctx, events, cursor.offset, cursor.key, cursor.id_prefix, now_ts)
        self.finished_once = True

    async def _shutdown(self) -> None:
        """Deliver what is in flight within the grace period and commit checkpoints."""
        try:
            await self._dispatch_all()
            drained = await self.sink.drain(self.options.shutdown_grace)
            if not drained:
                log.warning(
                    "shutdown grace period over with documents unacknowledged; they will be "
                    "read and sent again on the next start",
                    extra={"in_flight_bytes": self.tracker.in_flight_bytes},
                )
        finally:
            self.tailer.stop()
            self.metadata.stop()
            await self.sink.close()
            if self.store.directory is not None:
                await self.writer.stop()
            self.store.close()
