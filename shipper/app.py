"""Assembling a pipeline from configuration: the library behind `shipper run` and `tail`."""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import re
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from parsers.decoder import DecoderOptions
from shipper.checkpoint import CheckpointStore
from shipper.config import Config, multiline_rule, validate
from shipper.controls import line_controls, template_patterns
from shipper.files import MetadataSource
from shipper.kube.fragment import FileNameMetadata
from shipper.observe import Metrics, MonitorServer
from shipper.pipeline import Pipeline, PipelineOptions
from shipper.reload import Reloader
from shipper.shares import Share
from shipper.sinks.base import Batch, Sink
from shipper.sinks.stdout import StreamSink
from shipper.stores import absorb_workers
from shipper.tail.options import TailOptions
from shipper.tail.reader import FileCursor

log = logging.getLogger(__name__)

NO_SHARE = Share()  # one process: every directory


def tail_options(cfg: Config, once: bool = False, share: Share = NO_SHARE) -> TailOptions:
    i = cfg.inputs
    return TailOptions(
        paths=tuple(i.paths),
        exclude=tuple(i.exclude),
        read_from=i.read_from,
        chunk_bytes=i.chunk_bytes,
        max_line_bytes=max(2 * cfg.parsing.max_event_bytes, cfg.parsing.max_event_bytes + 65536),
        max_open_files=i.max_open_files,
        rotate_wait=0.0 if once else i.rotate_wait,
        deleted_max_seconds=i.deleted_files.max_seconds,
        deleted_max_files=i.deleted_files.max_open,
        rescan_interval=float("inf") if once else i.rescan_interval,
        idle_poll_max=i.idle_poll,
        watch=i.watch and not once,
        share=share,
    )


def decoder_options(cfg: Config) -> DecoderOptions:
    p = cfg.parsing
    return DecoderOptions(
        max_event_bytes=p.max_event_bytes,
        partial_timeout=p.partial_timeout,
        multiline=multiline_rule(p.multiline),
        multiline_timeout=p.multiline.timeout,
    )


def pipeline_options(cfg: Config, once: bool = False, share: Share = NO_SHARE) -> PipelineOptions:
    b = cfg.elasticsearch.bulk
    return PipelineOptions(
        tail=tail_options(cfg, once, share),
        decoder=decoder_options(cfg),
        batch_max_bytes=b.max_bytes,
        batch_max_docs=b.max_docs,
        batch_max_delay=b.max_delay,
        buffer_max_bytes=cfg.buffer.max_bytes,
        checkpoint_interval=cfg.checkpoint.interval,
        shutdown_grace=cfg.shutdown.grace,
        once=once,
        mark_sent=bool(cfg.elasticsearch.hosts) and cfg.elasticsearch.deterministic_ids,
        controls=line_controls(cfg),
    )


def metadata_source(cfg: Config, metrics: Metrics) -> MetadataSource:
    """Kubernetes metadata per the config (API watch, pods file), or file names only."""
    k = cfg.kubernetes
    if k.pods_file or k.enabled:
        from shipper.kube.source import kube_source

        return kube_source(cfg, metrics)
    return FileNameMetadata(k.node_name)


def sink_factory(
    cfg: Config, metrics: Metrics, stream: BinaryIO | None = None
) -> Callable[[Callable[[Batch], None]], Sink]:
    if cfg.elasticsearch.hosts:
        from shipper.sinks.elasticsearch import ElasticsearchSink

        patterns = template_patterns(cfg)
        return lambda ack: ElasticsearchSink(cfg.elasticsearch, ack, metrics, patterns=patterns)

    def make(ack: Callable[[Batch], None]) -> Sink:
        def counted(batch: Batch) -> None:
            metrics.documents_written.inc(len(batch.entries))
            ack(batch)

        return StreamSink(counted, stream)

    return make


def build_pipeline(
    cfg: Config,
    once: bool = False,
    stream: BinaryIO | None = None,
    metrics: Metrics | None = None,
    share: Share = NO_SHARE,
) -> Pipeline:
    """The daemon's pipeline: checkpoints in `checkpoint.path`, sink per `elasticsearch`
    (`share`: this worker of several, whose config says where its own store is)."""
    metrics = metrics or Metrics()
    store = CheckpointStore.open(Path(cfg.checkpoint.path), cfg.checkpoint.forget_after)
    try:
        if share.workers == 1:
            absorb_workers(store)  # the workers of an earlier run with `workers: N`
        return Pipeline(
            pipeline_options(cfg, once, share),
            sink_factory(cfg, metrics, stream),
            store,
            metadata_source(cfg, metrics),
            metrics,
        )
    except BaseException:
        store.close()
        raise


@dataclass
class RunResult:
    pipeline: Pipeline
    monitor_port: int = 0
    reloader: Reloader | None = None


async def run_daemon(
    cfg: Config,
    once: bool = False,
    stream: BinaryIO | None = None,
    on_start: Callable[[RunResult], None] | None = None,
    validated: bool = False,
    share: Share = NO_SHARE,
    config_path: str | None = None,
    transform: Callable[[Config], Config] | None = None,
) -> RunResult:
    """`shipper run`: until SIGTERM/SIGINT (or, with `once`, until every file is read).

    The config is validated first (ConfigError naming the key) unless the caller did.
    With `config_path`, the file is reloaded on SIGHUP and when its content changes
    (`transform`: what the caller did to the loaded config, e.g. a worker's share).
    """
    if not validated:
        validate(cfg)
    pipeline = build_pipeline(cfg, once, stream, share=share)
    result = RunResult(pipeline)
    reloader = None
    if config_path is not None and not once:
        reloader = config_reloader(pipeline, cfg, config_path, share, transform)
        result.reloader = reloader
    monitor = None
    if cfg.metrics.listen:

        def render() -> bytes:
            pipeline.update_gauges()
            return pipeline.metrics.render()

        monitor = MonitorServer(render, pipeline.alive, pipeline.sink.ready)
        await monitor.start(cfg.metrics.listen)
        result.monitor_port = monitor.port
    _install_signals(pipeline, reloader)
    if on_start is not None:
        on_start(result)
    try:
        if reloader is not None:
            reloader.start()
        await pipeline.run()
    finally:
        if reloader is not None:
            await reloader.stop()
        if monitor is not None:
            await monitor.stop()
        pipeline.update_gauges()
        log.info("shipper stopped", extra=summary(pipeline.metrics))
    return result


def summary(m: Metrics) -> dict[str, int]:
    """What a run did, for its last log line (backfills with --once read it)."""
    return {
        "lines_read": int(m.lines_read.total()),
        "documents": int(m.events.total()),
        "documents_indexed": int(m.documents_indexed.total()),
        "documents_duplicate": int(m.documents_duplicate.total()),
        "documents_written": int(m.documents_written.total()),
        "dead_letters": int(m.dead_letters.total()),
        "lines_given_up": int(m.lines_given_up.total()),
        "bytes_given_up": int(m.bytes_given_up.total()),
        "events_excluded": int(m.excluded.total()),
        "events_throttled": int(m.events_throttled.total()),
    }


def config_reloader(
    pipeline: Pipeline,
    cfg: Config,
    path: str,
    share: Share = NO_SHARE,
    transform: Callable[[Config], Config] | None = None,
) -> Reloader:
    """Reloads `path` into the running pipeline through the same construction as at start
    (`pipeline_options`, the sink's own connect)."""

    def apply(new: Config, sink: bool) -> asyncio.Future[None]:
        logging.getLogger().setLevel(new.logging.level.upper())
        return pipeline.reconfigure(
            pipeline_options(new, False, share), new.elasticsearch if sink else None
        )

    return Reloader(path, cfg, apply, pipeline.metrics, transform or (lambda c: c))


def _install_signals(pipeline: Pipeline, reloader: Reloader | None = None) -> None:
    loop = asyncio.get_running_loop()
    handlers: list[tuple[int, Callable[[], None]]] = [
        (signal.SIGTERM, pipeline.stop),
        (signal.SIGINT, pipeline.stop),
    ]
    if reloader is not None:
        handlers.append((signal.SIGHUP, reloader.request))
    else:
        handlers.append((signal.SIGHUP, _no_reload))
    for sig, handler in handlers:
        try:
            loop.add_signal_handler(sig, handler)
        except (NotImplementedError, RuntimeError):
            pass  # not the main thread (tests); they call pipeline.stop themselves


def _no_reload() -> None:
    log.warning("SIGHUP: no config file to reload (started without --config, or --once)")


@dataclass(frozen=True)
class TailFilters:
    namespace: str = "*"
    pod: str = "*"
    container: str = "*"
    grep: str = ""


def tail_pipeline(
    paths: list[str],
    follow: bool,
    read_from: str,
    filters: TailFilters,
    sink_factory: Callable[[Callable[[Batch], None]], Sink],
    metadata: MetadataSource,
    decoder: DecoderOptions | None = None,
) -> Pipeline:
    """`shipper tail`: the daemon's reading and parsing, no checkpoints written."""

    def wanted(cursor: FileCursor) -> bool:
        ref = cursor.ref
        if ref is None:  # not a container log: shown only when no container filter is set
            return filters.namespace == filters.pod == filters.container == "*"
        return (
            fnmatch.fnmatchcase(ref.namespace, filters.namespace)
            and fnmatch.fnmatchcase(ref.pod, filters.pod)
            and fnmatch.fnmatchcase(ref.container, filters.container)
        )

    options = PipelineOptions(
        tail=TailOptions(
            paths=tuple(resolve_tail_paths(paths)),
            read_from=read_from,
            rotate_wait=5.0 if follow else 0.0,
            rescan_interval=1.0 if follow else float("inf"),
            idle_poll_max=0.25,  # at a terminal, a quiet pod's next line shows at once
            watch=follow,
        ),
        decoder=decoder or DecoderOptions(),
        batch_max_delay=0.05,
        once=not follow,
        file_filter=wanted,
        line_filter=re.compile(filters.grep.encode()) if filters.grep else None,
        shutdown_grace=5.0,
    )
    return Pipeline(options, sink_factory, CheckpointStore(), metadata)


def resolve_tail_paths(paths: list[str]) -> list[str]:
    """A file stays, a directory becomes its *.log files, anything else is a glob."""
    out = []
    for path in paths or ["/var/log/containers"]:
        p = Path(path)
        if p.is_dir():
            out.append(str(p / "*.log"))
        else:
            out.append(path)
    return out
