"""The per-file stage of the path of a line: decode, enrich, encode.

Each followed file has a context (its decoder, its encoder, its metadata handle, its
target stream and rate limiter), made when its first chunk arrives and dropped when the
file ends; the contexts live in a map kept here, owned by the pipeline. What depends on
the config (level detection, routing, limits, redaction) comes in one `Controls`; a file
takes its part once, and again only when its pod's metadata or the controls change.
Chunks of a pod whose metadata is not known yet wait (bounded by
`kubernetes.wait_for_metadata`); decoders holding an unfinished partial or multiline
event are flushed when it expires. Every chunk becomes a segment of the acknowledgement
tracker (its documents, maybe none: lines over a rate limit are dropped and counted, the
offsets still committed) and its documents go into batches.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from parsers.decoder import DecoderOptions, FileDecoder, Row, events_of
from parsers.events import LogEvent
from parsers.filename import ContainerRef
from parsers.multiline import BUILTIN as MULTILINE_RULES
from shipper.acks import AckTracker
from shipper.batching import Batcher
from shipper.checkpoint import CheckpointStore
from shipper.controls import ContainerKey, Controls, Throttle
from shipper.document import DocumentEncoder, EncodeStats, epoch_seconds, utc_now_rfc3339
from shipper.kube.fragment import MetadataHandle
from shipper.limits import ContainerLimiter
from shipper.observe import Metrics
from shipper.tail.items import Finished, Item, Restarted
from shipper.tail.reader import Chunk, FileCursor


class MetadataSource(Protocol):
    def handle(self, ref: ContainerRef | None, now: float) -> MetadataHandle: ...

    def refresh(self, now: float) -> None: ...

    def release(self, ref: ContainerRef | None, handle: MetadataHandle) -> None:
        """A file that used `handle` ended."""
        ...

    def stop(self) -> None: ...


EncoderFactory = Callable[[str, bytes, bytes], DocumentEncoder]  # path, metadata, id prefix


@dataclass(slots=True)
class FileContext:
    """The state of one file in this stage."""

    decoder: FileDecoder
    encoder: DocumentEncoder
    handle: MetadataHandle
    version: int
    container: ContainerKey
    settings: int = 0  # FileStage.settings when this context was (re)built
    controls: Controls | None = None  # the controls its stream and limiter came from
    limiter: ContainerLimiter | None = None
    skip: bool = False
    waiting: list[Chunk] = field(default_factory=list)


class FileStage:
    def __init__(
        self,
        decoder_options: DecoderOptions,
        metadata: MetadataSource,
        make_encoder: EncoderFactory,
        tracker: AckTracker,
        batches: Batcher,
        store: CheckpointStore,
        metrics: Metrics,
        clock: Callable[[], float],
        file_filter: Callable[[FileCursor], bool] | None = None,
        line_filter: re.Pattern[bytes] | None = None,
        controls: Controls | None = None,
    ) -> None:
        self.decoder_options = decoder_options
        self.metadata = metadata
        self.make_encoder = make_encoder
        self.tracker, self.batches, self.store = tracker, batches, store
        self.metrics = metrics
        self.clock = clock
        self.file_filter, self.line_filter = file_filter, line_filter
        self.contexts: dict[FileCursor, FileContext] = {}
        self.holding: set[FileCursor] = set()  # files whose decoder holds an event
        self.waiting: set[FileCursor] = set()  # files whose lines wait for metadata
        self.decoder_dropped = 0  # bytes cut by decoders (size caps, multiline joiner)
        self.encode_stats = EncodeStats()
        self.controls = controls or Controls()
        self.throttle = Throttle(metrics)
        self.settings = 0  # bumped by `reconfigure`

    def set_controls(self, controls: Controls | None) -> None:
        """New controls (a reload): each file takes them with its next chunk."""
        self.controls = controls or Controls()

    # ---- reload: the per-file settings built from Config ---------------------------------

    def reconfigure(self, decoder_options: DecoderOptions, make_encoder: EncoderFactory) -> None:
        """New per-file settings (a config reload): each file's context is rebuilt from
        them at its next chunk, keeping what its decoder holds (a partial line, a joined
        event), so nothing in flight is cut or lost."""
        self.decoder_options, self.make_encoder = decoder_options, make_encoder
        self.settings += 1

    def _rebuild(self, cursor: FileCursor, ctx: FileContext) -> None:
        """A context made under older settings takes the current ones."""
        ctx.settings = self.settings
        ctx.decoder.set_options(_hinted(self.decoder_options, ctx.handle))
        old = ctx.encoder
        encoder = self.make_encoder(cursor.path, ctx.handle.fragment, cursor.id_prefix)
        encoder.stats, encoder.parse_json = old.stats, old.parse_json
        if old.id_prefix is not None and encoder.id_prefix is not None:
            encoder.id_prefix = old.id_prefix  # as `_emit` keeps it (Restarted texts)
        ctx.encoder = encoder
        self._apply_controls(ctx, self.clock())  # the new encoder's stream, level, redactor

    # ---- contexts ------------------------------------------------------------------------

    def _context(self, cursor: FileCursor) -> FileContext:
        """A file's decoder and encoder, made when its first chunk arrives."""
        ctx = self.contexts.get(cursor)
        if ctx is not None:
            if ctx.settings != self.settings:
                self._rebuild(cursor, ctx)
            return ctx
        handle = self.metadata.handle(cursor.ref, self.clock())
        encoder = self.make_encoder(cursor.path, handle.fragment, cursor.id_prefix)
        encoder.stats = self.encode_stats
        encoder.parse_json = handle.parser == "json"
        ref = cursor.ref
        container = (ref.namespace, ref.pod, ref.container) if ref is not None else ("", "", "")
        decoder = FileDecoder(self.decoder_options)
        ctx = FileContext(decoder, encoder, handle, handle.version, container, self.settings)
        self._apply_multiline_hint(ctx)
        self._apply_controls(ctx, self.clock())
        if self.file_filter is not None and not self.file_filter(cursor):
            ctx.skip = True
        self.contexts[cursor] = ctx
        return ctx

    def _apply_multiline_hint(self, ctx: FileContext) -> None:
        """A pod's shipper.io/multiline hint, possibly known only after the file opened."""
        options = ctx.decoder.options
        hinted = _hinted(options, ctx.handle)
        if hinted is not options:
            ctx.decoder.options = hinted

    def _apply_controls(self, ctx: FileContext, now: float) -> None:
        """The file's part of the controls: its stream (fields, `_index`), its limiter."""
        controls = ctx.controls = self.controls
        encoder, handle = ctx.encoder, ctx.handle
        namespace = ctx.container[0]
        encoder.level = controls.level
        encoder.redactor = controls.redactor
        stream = controls.stream(namespace, handle)
        encoder.set_stream(stream.fields if stream else b"", controls.index_name(stream))
        limit = controls.limit(namespace, handle)
        ctx.limiter = self.throttle.acquire(ctx.container, limit, now, ctx.limiter)

    def process(self, items: list[Item], now: float) -> None:
        """Decode, enrich and encode a pass of items into segments and batches."""
        now_ts = utc_now_rfc3339()
        for item in items:
            if type(item) is Chunk:
                ctx = self._context(item.cursor)
                handle = ctx.handle
                if ctx.waiting or (not handle.resolved and now < handle.wait_until):
                    ctx.waiting.append(item)
                    self.waiting.add(item.cursor)
                    continue
                self._chunk(item, ctx, now, now_ts)
                continue
            cursor = item.cursor
            ctx = self.contexts.get(cursor)
            if ctx is None:
                continue  # nothing was read from it
            self._release_waiting(cursor, ctx, now, now_ts)
            if type(item) is Restarted:
                events = self._flush(ctx, ctx.decoder.flush_all(now))
                self._emit(ctx, events, item.end, item.key, item.id_prefix, now, now_ts)
            elif type(item) is Finished:
                if cursor.key:  # else its text was handed on by Restarted
                    events = self._flush(ctx, ctx.decoder.flush_all(now))
                    self._emit(
                        ctx, events, cursor.offset, cursor.key, cursor.id_prefix, now, now_ts
                    )
                self.holding.discard(cursor)
                self.metadata.release(cursor.ref, ctx.handle)
                if ctx.limiter is not None:
                    self.throttle.release(ctx.container, ctx.limiter)
                del self.contexts[cursor]

    def _flush(self, ctx: FileContext, events: list[LogEvent]) -> list[LogEvent]:
        self.decoder_dropped += ctx.decoder.take_dropped()
        return events

    def _chunk(self, chunk: Chunk, ctx: FileContext, now: float, now_ts: bytes) -> None:
        self._refresh(ctx, now)  # a hint that came with the metadata applies to this chunk
        decoder = ctx.decoder
        if chunk.long:
            events = decoder.feed_long_line(chunk.offset, chunk.data, now)
            self.metrics.lines_read.inc(1)
        else:
            rows = decoder.rows(chunk.offset, chunk.data)
            if rows and self._takes_rows(ctx):
                self._rows(ctx, chunk, rows, now_ts)
                return
            if rows is not None:
                events = events_of(rows)
            else:
                events = decoder.feed_lines(chunk.offset, chunk.data, now)
            self.metrics.lines_read.inc(chunk.data.count(b"\n"))
        if decoder.dropped_bytes:
            self.decoder_dropped += decoder.take_dropped()
        self.metrics.bytes_read.inc(len(chunk.data))
        pending = decoder.pending_start()
        cursor = chunk.cursor
        if pending is None:
            end = chunk.end
            self.holding.discard(cursor)
        else:
            end = min(pending, chunk.end)
            self.holding.add(cursor)
        self._emit(ctx, events, end, chunk.key, chunk.id_prefix, now, now_ts)

    def _takes_rows(self, ctx: FileContext) -> bool:
        """Whether the file's lines go straight from rows to documents: every line is
        shipped as it is (no filter, no rate limit, not excluded) and the encoder takes
        rows."""
        return (
            ctx.limiter is None
            and self.line_filter is None
            and not ctx.skip
            and not ctx.handle.excluded
            and ctx.encoder.takes_rows()
        )

    def _rows(self, ctx: FileContext, chunk: Chunk, rows: list[Row], now_ts: bytes) -> None:
        """`_chunk` of a block of common lines (nothing held, nothing dropped): documents
        made from rows, as `_emit` would make them from their events."""
        self.metrics.lines_read.inc(len(rows))
        self.metrics.bytes_read.inc(len(chunk.data))
        self.holding.discard(chunk.cursor)
        _take_id_prefix(ctx.encoder, chunk.id_prefix)
        entries: list[bytes] = []
        size = ctx.encoder.encode_rows(rows, now_ts, entries)
        first = rows[0]
        self._segment(ctx, chunk.key, chunk.end, entries, size, first[0], first[3])

    def _emit(
        self,
        ctx: FileContext,
        events: list[LogEvent],
        end: int,
        key: str,
        id_prefix: bytes,
        now: float,
        now_ts: bytes,
    ) -> None:
        self._refresh(ctx, now)
        encoder = ctx.encoder
        handle = ctx.handle
        _take_id_prefix(encoder, id_prefix)
        if ctx.skip:
            events = []
        elif handle.excluded:
            self.metrics.excluded.inc(len(events))
            events = []
        elif self.line_filter is not None:
            search = self.line_filter.search
            events = [e for e in events if search(e.message)]
        limiter = ctx.limiter
        if limiter is not None and events:
            kept = limiter.keep(events, now)
            if kept is not events:
                dropped = len(events) - len(kept)
                size = sum(len(e.message) for e in events) - sum(len(e.message) for e in kept)
                self.throttle.dropped(ctx.container, dropped, size, now)
                events = list(kept)
        entries: list[bytes] = []
        size = encoder.encode(events, now_ts, entries)
        if events:
            self._segment(ctx, key, end, entries, size, events[0].time, events[0].offset)
        else:
            self._segment(ctx, key, end, entries, size, None, 0)

    def _segment(
        self,
        ctx: FileContext,
        key: str,
        end: int,
        entries: list[bytes],
        size: int,
        first_time: bytes | None,
        first_offset: int,
    ) -> None:
        """The tracker's segment of a chunk (up to `end`) and its documents in batches."""
        docs = len(entries)
        segment = self.tracker.open(key, end, docs, size)
        if docs:
            segment.oldest = epoch_seconds(first_time)
            segment.uncertain = self.store.resent(key, first_offset)
            self.batches.add(segment, entries, size)
            self.metrics.events.inc(docs)
            if not ctx.handle.resolved:
                self.metrics.metadata_missing.inc(docs)

    def _refresh(self, ctx: FileContext, now: float) -> None:
        """The file's metadata or the controls changed: its encoder, its decoder's multiline
        rule, its stream and limiter follow, before any more of it is decoded."""
        handle = ctx.handle
        if handle.version != ctx.version:
            ctx.encoder.set_metadata(handle.fragment)
            ctx.version = handle.version
            ctx.encoder.parse_json = handle.parser == "json"
            self._apply_multiline_hint(ctx)
            self._apply_controls(ctx, now)  # the dataset or rate-limit hint may be new
        elif ctx.controls is not self.controls:
            self._apply_controls(ctx, now)

    def _release_waiting(
        self, cursor: FileCursor, ctx: FileContext, now: float, now_ts: bytes
    ) -> None:
        if not ctx.waiting:
            return
        waiting, ctx.waiting = ctx.waiting, []
        self.waiting.discard(cursor)
        for chunk in waiting:
            self._chunk(chunk, ctx, now, now_ts)

    def tick(self, now: float) -> None:
        """Expired partial and multiline events; lines waiting for metadata that came (or
        waited long enough)."""
        now_ts = utc_now_rfc3339()
        for cursor in list(self.holding):
            ctx = self.contexts.get(cursor)
            if ctx is None:
                self.holding.discard(cursor)
                continue
            if ctx.waiting or not cursor.caught_up():
                # An event waits for its continuation only while that could have been
                # read: a file not read to its end (reading paused on a full buffer, a
                # backlog) holds on, or a joined trace or a long line would be cut.
                continue
            events = self._flush(ctx, ctx.decoder.flush_expired(now))
            if events:
                pending = ctx.decoder.pending_start()
                end = cursor.offset if pending is None else min(pending, cursor.offset)
                if pending is None:
                    self.holding.discard(cursor)
                self._emit(ctx, events, end, cursor.key, cursor.id_prefix, now, now_ts)
        self.metadata.refresh(now)
        self.throttle.report(now)
        for cursor in list(self.waiting):
            ctx = self.contexts.get(cursor)
            if ctx is None:
                self.waiting.discard(cursor)
            elif ctx.handle.resolved or now >= ctx.handle.wait_until:
                self._release_waiting(cursor, ctx, now, now_ts)

    def flush_all(self, now: float) -> None:
        """--once: every file is read to its end; ship what decoders hold."""
        now_ts = utc_now_rfc3339()
        for cursor, ctx in list(self.contexts.items()):
            events = self._flush(ctx, ctx.decoder.flush_all(now))
            self._emit(ctx, events, cursor.offset, cursor.key, cursor.id_prefix, now, now_ts)
        self.throttle.report(now, force=True)


def _take_id_prefix(encoder: DocumentEncoder, id_prefix: bytes) -> None:
    """Ids from the prefix the chunk or item came with (a restarted file's text keeps its
    old prefix), when the encoder makes ids at all."""
    if encoder.id_prefix is not None and encoder.id_prefix != id_prefix:
        encoder.id_prefix = id_prefix


def _hinted(options: DecoderOptions, handle: MetadataHandle) -> DecoderOptions:
    """`options` with the pod's shipper.io/multiline rule, if it names one (the same
    object when it names none or that one already)."""
    rule = MULTILINE_RULES.get(handle.multiline)
    if rule is None or options.multiline is rule:
        return options
    return dataclasses.replace(options, multiline=rule)
