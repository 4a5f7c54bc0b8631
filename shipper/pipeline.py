"""The one place that knows every stage: tail -> decode -> enrich -> encode -> sink -> commit.

One asyncio loop runs it. Each pass reads a batch of chunks (whole lines, one chunk per
file in turn), decodes and encodes them into the current bulk batch, and hands full or old
batches to the sink. Reading pauses while the bytes read but not yet acknowledged exceed
the buffer budget, so memory stays bounded however slow the sink is: the files on disk
are the buffer. Offsets are committed only through the acknowledgement tracker.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import dataclasses
import logging
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from parsers.decoder import DecoderOptions, FileDecoder
from parsers.events import LogEvent
from parsers.filename import ContainerRef
from parsers.multiline import BUILTIN as MULTILINE_RULES
from shipper.checkpoint import AckTracker, CheckpointStore, Segment
from shipper.document import DocumentEncoder, EncodeStats, utc_now_rfc3339
from shipper.kube.fragment import MetadataHandle
from shipper.observe import Metrics
from shipper.sinks.base import Batch, Sink
from shipper.tail.reader import Chunk, FileCursor
from shipper.tail.tailer import Finished, Item, Restarted, Tailer, TailOptions

WAKE_INTERVAL = 0.05  # seconds between read passes when data trickles in

log = logging.getLogger(__name__)


class MetadataSource(Protocol):
    def handle(self, ref: ContainerRef | None, now: float) -> MetadataHandle: ...

    def refresh(self, now: float) -> None: ...


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
    parser: str = ""
    waiting: list[Item] = field(default_factory=list)


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
    ) -> None:
        self.options = options
        self.store = store
        self.metadata = metadata
        self.metrics = metrics or Metrics()
        self.clock = clock
        tail_options = options.tail
        self.tailer = Tailer(tail_options, store, on_open=self._on_open, clock=clock)
        self.tracker = AckTracker(store, on_release=self._on_release)
        self.sink = sink_factory(self._on_ack)
        self._batch = Batch()
        self._full: deque[Batch] = deque()
        self._stopping = False
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._holding: set[FileCursor] = set()
        self._waiting: set[FileCursor] = set()
        self._save_lock = asyncio.Lock()
        self._last_beat = time.monotonic()
        self._next_housekeeping = 0.0
        self._last_wake = 0.0
        self._next_expire = 0.0
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
                await self._maybe_save()
            if opts.once:
                if not self.finished_once and read == 0 and self._once_complete():
                    self.finish_once(now)
                    continue
                if self.finished_once and self.tracker.idle() and not self._full:
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
        """Read one pass of chunks (if the budget allows) and encode them into the batch."""
        room = self.room()
        if room <= 0:
            return 0
        items = self.tailer.read(min(self.options.read_bytes, room))
        if items:
            self._process(items, now)
        return len(items)

    def batch_due(self, now: float) -> bool:
        """A batch is full, or the open one is old enough, or the budget is spent."""
        batch = self._batch
        return bool(self._full) or (
            bool(batch.parts)
            and (now - batch.created >= self.options.batch_max_delay or self.room() <= 0)
        )

    def take_batch(self) -> Batch:
        """Hand over the oldest full batch, else the open one (acknowledge with `acknowledge`)."""
        if self._full:
            return self._full.popleft()
        batch, self._batch = self._batch, Batch()
        return batch

    def acknowledge(self, batch: Batch) -> None:
        self._on_ack(batch)

    async def _sleep(self, now: float) -> None:
        assert self._wake is not None
        deadline = self._next_housekeeping
        if self.room() > 0:  # when the budget is spent, only an acknowledgement wakes us
            deadline = min(deadline, self.tailer.next_wakeup())
        if self._batch.entries:
            deadline = min(deadline, self._batch.created + self.options.batch_max_delay)
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

    def save_checkpoints(self, only_if_urgent: bool = False) -> None:
        """Write the store now (blocking)."""
        if self.store.urgent or not only_if_urgent:
            self.store.save()

    # ---- the path of a chunk -----------------------------------------------------------

    def _on_open(self, cursor: FileCursor) -> None:
        now = self.clock()
        handle = self.metadata.handle(cursor.ref, now)
        encoder = self.sink.encoder(cursor.path, handle.fragment, cursor.id_prefix)
        encoder.stats = self.encode_stats
        encoder.parse_json = handle.parser == "json"
        ctx = FileContext(FileDecoder(self.options.decoder), encoder, handle, handle.version)
        self._apply_multiline_hint(ctx)
        if self.options.file_filter is not None and not self.options.file_filter(cursor):
            ctx.skip = True
        cursor.context = ctx

    def _apply_multiline_hint(self, ctx: FileContext) -> None:
        """A pod's shipper.io/multiline hint, possibly known only after the file opened."""
        rule = MULTILINE_RULES.get(ctx.handle.multiline)
        options = ctx.decoder.options
        if rule is not None and options.multiline is not rule:
            ctx.decoder.options = dataclasses.replace(options, multiline=rule)

    def _process(self, items: list[Item], now: float) -> None:
        now_ts = utc_now_rfc3339()
        metrics = self.metrics
        for item in items:
            if type(item) is Chunk:
                cursor = item.cursor
                ctx: FileContext = cursor.context
                handle = ctx.handle
                if ctx.waiting or (not handle.resolved and now < handle.wait_until):
                    ctx.waiting.append(item)
                    self._waiting.add(cursor)
                    continue
                self._chunk(item, ctx, now, now_ts)
            elif type(item) is Finished:
                ctx = item.cursor.context
                if ctx is None:
                    continue
                self._release_waiting(item.cursor, now, now_ts)
                if not item.cursor.needs_key:  # else its text was handed on by Restarted
                    events = ctx.decoder.flush_all(now)
                    self._emit(
                        item.cursor,
                        ctx,
                        events,
                        item.cursor.offset,
                        item.cursor.key,
                        item.cursor.id_prefix,
                        now_ts,
                    )
                self._holding.discard(item.cursor)
                metrics.bytes_truncated.inc(ctx.decoder.dropped_bytes + item.cursor.dropped_bytes)
                release = getattr(self.metadata, "release", None)
                if release is not None:
                    release(item.cursor.ref, ctx.handle)
                item.cursor.context = None
            elif type(item) is Restarted:
                ctx = item.cursor.context
                self._release_waiting(item.cursor, now, now_ts)
                events = ctx.decoder.flush_all(now)
                self._emit(item.cursor, ctx, events, item.end, item.key, item.id_prefix, now_ts)

    def _chunk(self, chunk: Chunk, ctx: FileContext, now: float, now_ts: bytes) -> None:
        decoder = ctx.decoder
        if chunk.long:
            events = decoder.feed_long_line(chunk.offset, chunk.data, now)
            self.metrics.lines_read.inc(1)
        else:
            events = decoder.feed(chunk.offset, chunk.data, now)
            self.metrics.lines_read.inc(chunk.data.count(b"\n"))
        self.metrics.bytes_read.inc(len(chunk.data))
        pending = decoder.pending_start()
        cursor = chunk.cursor
        if pending is None:
            end = chunk.end
            self._holding.discard(cursor)
        else:
            end = min(pending, chunk.end)
            self._holding.add(cursor)
        self._emit(cursor, ctx, events, end, chunk.key, chunk.id_prefix, now_ts)

    def _emit(
        self,
        cursor: FileCursor,
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
        segment = self.tracker.open(key, end, docs, size, cursor.path, cursor.dev, cursor.ino)
        if docs:
            segment.oldest = _epoch(events[0].time)
            segment.uncertain = self.store.resent(key, events[0].offset)
            self._add(segment, entries, size)
            self.metrics.events.inc(docs)
            if not handle.resolved:
                self.metrics.metadata_missing.inc(docs)

    def _add(self, segment: Segment, entries: list[bytes], size: int) -> None:
        """Put a segment's entries into batches of at most batch_max_docs/_bytes."""
        opts = self.options
        batch = self._batch
        if not batch.entries:
            batch.created = self.clock()
        if (
            len(batch.entries) + len(entries) < opts.batch_max_docs
            and batch.size + size < opts.batch_max_bytes
        ):
            batch.entries += entries
            batch.add(segment, len(entries), size)
            return
        start = 0
        while start < len(entries):
            room_docs = opts.batch_max_docs - len(batch.entries)
            room_bytes = opts.batch_max_bytes - batch.size
            end, taken = start, 0
            while end < len(entries) and end - start < room_docs:
                n = len(entries[end])
                if taken + n > room_bytes and (end > start or batch.entries):
                    break
                taken += n
                end += 1
            if end > start:
                batch.entries += entries[start:end]
                batch.add(segment, end - start, taken)
                start = end
            if (
                start < len(entries)
                or len(batch.entries) >= opts.batch_max_docs
                or (batch.size >= opts.batch_max_bytes)
            ):
                self._full.append(batch)
                batch = self._batch = Batch(created=self.clock())

    def _release_waiting(self, cursor: FileCursor, now: float, now_ts: bytes) -> None:
        ctx: FileContext = cursor.context
        if ctx is None or not ctx.waiting:
            return
        waiting, ctx.waiting = ctx.waiting, []
        self._waiting.discard(cursor)
        for chunk in waiting:
            assert isinstance(chunk, Chunk)
            self._chunk(chunk, ctx, now, now_ts)

    # ---- delivery ------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        batch = self.take_batch()
        if batch.parts:
            if self._needs_sent_marks(batch):
                await self._write_sent_marks()
            await self.sink.send(batch)

    def _needs_sent_marks(self, batch: Batch) -> bool:
        """The batch reaches past a file's durable "sent up to" mark."""
        return (
            self.options.mark_sent
            and self.store.directory is not None
            and self.store.unmarked([(seg.key, seg.end) for seg, _, _ in batch.parts])
        )

    async def _write_sent_marks(self) -> None:
        """Mark everything read so far as possibly sent, durably, before sending any of it
        (one write covers every batch already encoded). A write that fails is logged and
        the batch sent anyway: delivery goes on, the exactly-once guarantee is weaker."""
        self.store.mark_sent(self.tracker.read_ends())
        await self._save_checkpoints(background=True)

    async def _dispatch_all(self) -> None:
        while self._full or self._batch.parts:
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
            ctx: FileContext | None = cursor.context
            if ctx is None:
                self._holding.discard(cursor)
                continue
            if ctx.waiting:
                continue
            events = ctx.decoder.flush_expired(now)
            if events:
                pending = ctx.decoder.pending_start()
                end = cursor.offset if pending is None else min(pending, cursor.offset)
                if pending is None:
                    self._holding.discard(cursor)
                self._emit(cursor, ctx, events, end, cursor.key, cursor.id_prefix, now_ts)
        self.metadata.refresh(now)
        for cursor in list(self._waiting):
            ctx = cursor.context
            if ctx is None or ctx.handle.resolved or now >= ctx.handle.wait_until:
                self._release_waiting(cursor, now, now_ts)
        if now >= self._next_expire:
            self._next_expire = now + 3600
            self.store.expire(time.time())

    async def _maybe_save(self) -> None:
        if (
            self.store.dirty
            and not self._save_lock.locked()
            and (
                self.store.urgent
                or time.time() - self.store.last_save >= self.options.checkpoint_interval
            )
        ):
            await self._save_checkpoints(background=True)

    async def _save_checkpoints(self, background: bool) -> None:
        async with self._save_lock:  # one write at a time: they share a temporary file
            data = self.store.snapshot()
            try:
                if background:
                    await asyncio.to_thread(self.store.write, data)
                else:
                    self.store.write(data)
            except OSError as exc:
                self.store.dirty = True
                log.error("cannot write checkpoints", extra={"error": str(exc)})

    def update_gauges(self) -> None:
        """Refresh gauges that are cheap to compute only when scraped."""
        m = self.metrics
        cursors = self.tailer.cursors
        m.files_followed.set(len(cursors))
        m.files_open.set(sum(1 for c in cursors if c.is_open))
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
        m.rotations.values[()] = stats.rotations
        for reason, nbytes in stats.given_up_bytes.items():
            m.bytes_given_up.values[(reason,)] = nbytes
        m.up.set(1.0 if self.sink.ready() else 0.0)
        for flag, count in self.encode_stats.flags.items():
            m.events_flagged.values[(flag,)] = count
        m.truncations.values[()] = stats.truncations

    # ---- ending ----------------------------------------------------------------------------

    def _once_complete(self) -> bool:
        if self._waiting:
            return False
        return self.tailer.all_read()

    def finish_once(self, now: float) -> None:
        """--once: every file is read to its end; ship what decoders hold, then stop."""
        now_ts = utc_now_rfc3339()
        for cursor in self.tailer.cursors:
            ctx: FileContext | None = cursor.context
            if ctx is None:
                continue
            events = ctx.decoder.flush_all(now)
            self._emit(cursor, ctx, events, cursor.offset, cursor.key, cursor.id_prefix, now_ts)
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
            stop_metadata = getattr(self.metadata, "stop", None)
            if stop_metadata is not None:
                stop_metadata()
            await self.sink.close()
            if self.store.directory is not None:
                await self._save_checkpoints(background=False)
            self.store.close()


def _epoch(ts: bytes | None) -> float:
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
