"""Self-monitoring: Prometheus metrics, /healthz and /readyz, and structured logging."""

from __future__ import annotations

import asyncio
import bisect
import inspect
import logging
import math
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import orjson

log = logging.getLogger(__name__)

LabelValues = tuple[str, ...]
T = TypeVar("T")


@dataclass(slots=True)
class Counter:
    name: str
    help: str
    labels: tuple[str, ...] = ()
    values: dict[LabelValues, float] = field(default_factory=dict)

    def inc(self, amount: float = 1.0, *labels: str) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def set_total(self, value: float, *labels: str) -> None:
        """For a count kept by another part (the tailer's statistics): its value now."""
        self.values[labels] = value

    def get(self, *labels: str) -> float:
        return self.values.get(labels, 0.0)

    def total(self) -> float:
        return sum(self.values.values())


@dataclass(slots=True)
class Gauge:
    name: str
    help: str
    labels: tuple[str, ...] = ()
    values: dict[LabelValues, float] = field(default_factory=dict)
    read: Callable[[], float] | None = None

    def set(self, value: float, *labels: str) -> None:
        self.values[labels] = value

    def get(self, *labels: str) -> float:
        if self.read is not None:
            return self.read()
        return self.values.get(labels, 0.0)


@dataclass(slots=True)
class Histogram:
    name: str
    help: str
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    sum: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float, weight: int = 1) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += weight
        self.sum += value * weight
        self.count += weight


class Metrics:
    """Every metric shipper exposes; names follow shipper_<noun>_<unit>."""

    def __init__(self) -> None:
        self._all: list[Counter | Gauge | Histogram] = []
        c, g = self._counter, self._gauge
        self.lines_read = c("shipper_lines_read_total", "Lines read from log files.")
        self.bytes_read = c("shipper_read_bytes_total", "Bytes read from log files.")
        self.events = c("shipper_events_total", "Events (documents) produced from lines.")
        self.events_flagged = c(
            "shipper_events_flagged_total", "Events carrying a log.flags value.", ("flag",)
        )
        self.documents_indexed = c(
            "shipper_documents_indexed_total", "Documents Elasticsearch confirmed (201)."
        )
        self.documents_duplicate = c(
            "shipper_documents_duplicate_total",
            "Documents answered 409 on create: already indexed by an earlier attempt.",
        )
        self.documents_written = c(
            "shipper_documents_written_total", "Documents written to stdout or a file sink."
        )
        self.bytes_sent = c("shipper_sent_bytes_total", "Request body bytes sent to the sink.")
        self.bulk_requests = c(
            "shipper_bulk_requests_total", "Bulk requests by outcome.", ("outcome",)
        )
        self.retries = c("shipper_retries_total", "Retried requests or documents.", ("reason",))
        self.dead_letters = c(
            "shipper_dead_letters_total", "Documents rejected and written to dead letters."
        )
        self.lines_given_up = c(
            "shipper_lines_given_up_total", "Documents given up, by reason.", ("reason",)
        )
        self.bytes_given_up = c(
            "shipper_bytes_given_up_total",
            "File bytes given up without being read, by reason.",
            ("reason",),
        )
        self.bytes_truncated = c(
            "shipper_truncated_bytes_total", "Bytes cut from over-long events or lines."
        )
        self.excluded = c(
            "shipper_events_excluded_total", "Events dropped by a shipper.io/exclude hint."
        )
        self.events_throttled = c(
            "shipper_events_throttled_total",
            "Events dropped by their container's rate limit (limits.*, shipper.io/rate-limit).",
            ("namespace",),
        )
        self.bytes_throttled = c(
            "shipper_throttled_bytes_total",
            "Message bytes of the events dropped by rate limits.",
            ("namespace",),
        )
        self.rotations = c("shipper_rotations_total", "Rotated files noticed.")
        self.truncations = c("shipper_truncations_total", "Files truncated under the reader.")
        self.metadata_missing = c(
            "shipper_metadata_missing_total",
            "Events shipped with file-name metadata only (pod unknown to the API in time).",
        )
        self.files_followed = g("shipper_files_followed", "Files being followed.")
        self.files_open = g("shipper_files_open", "Open file descriptors for log files.")
        self.in_flight = g("shipper_in_flight_bytes", "Document bytes read but not acknowledged.")
        self.lag = g("shipper_lag_bytes", "Bytes of followed files not yet committed.")
        self.checkpoint_age = g(
            "shipper_checkpoint_age_seconds", "Seconds since checkpoints were last written."
        )
        self.up = g("shipper_sink_up", "1 when the sink is reachable and ready.")
        self.sink_blocked = g(
            "shipper_sink_blocked",
            "1 while the last write was refused by a cluster block (write block, flood stage).",
        )
        self.sink_hosts_up = g(
            "shipper_sink_hosts_up", "Configured sink hosts not currently skipped as dead."
        )
        self.documents_checked = c(
            "shipper_documents_checked_total",
            "Re-sent documents looked up in the whole target first (result: found, absent).",
            ("result",),
        )
        self.config_reloads = c(
            "shipper_config_reloads_total",
            "Config reloads by result (applied, refused: invalid, the running config stays).",
            ("result",),
        )
        self.config_info = g(
            "shipper_config_info", "1, labelled with the running config's hash.", ("hash",)
        )
        self.config_reload_time = g(
            "shipper_config_last_reload_timestamp_seconds",
            "Unix time the running config was loaded (at start, or by the last reload).",
        )
        self.delay = Histogram(
            "shipper_delivery_delay_seconds",
            "Delay from a line's timestamp to its acknowledgement.",
            (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800, 3600),
        )
        self._all.append(self.delay)

    def _counter(self, name: str, help: str, labels: tuple[str, ...] = ()) -> Counter:
        metric = Counter(name, help, labels)
        self._all.append(metric)
        return metric

    def _gauge(self, name: str, help: str, labels: tuple[str, ...] = ()) -> Gauge:
        metric = Gauge(name, help, labels)
        self._all.append(metric)
        return metric

    def render(self) -> bytes:
        """Prometheus text exposition format 0.0.4."""
        out: list[str] = []
        for m in self._all:
            if isinstance(m, Histogram):
                out.append(f"# HELP {m.name} {m.help}\n# TYPE {m.name} histogram")
                running = 0
                for bound, n in zip(m.buckets, m.counts, strict=False):
                    running += n
                    out.append(f'{m.name}_bucket{{le="{num(bound)}"}} {running}')
                out.append(f'{m.name}_bucket{{le="+Inf"}} {m.count}')
                out.append(f"{m.name}_sum {num(m.sum)}\n{m.name}_count {m.count}")
                continue
            kind = "counter" if isinstance(m, Counter) else "gauge"
            out.append(f"# HELP {m.name} {m.help}\n# TYPE {m.name} {kind}")
            if isinstance(m, Gauge) and m.read is not None:
                out.append(f"{m.name} {num(m.read())}")
                continue
            if not m.values and not m.labels:
                out.append(f"{m.name} 0")
            for labels, value in sorted(m.values.items()):
                out.append(f"{m.name}{_labels(m.labels, labels)} {num(value)}")
        return ("\n".join(out) + "\n").encode()


def parse_exposition(text: str) -> dict[str, float]:
    """`render`'s output read back: {'name{labels}': value} (for tests and the bench)."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def scrape(address: str, timeout: float = 10.0) -> dict[str, float]:
    """GET http://<address>/metrics of a running shipper and parse it."""
    import urllib.request

    with urllib.request.urlopen(f"http://{address}/metrics", timeout=timeout) as response:
        return parse_exposition(response.read().decode())


def _labels(names: tuple[str, ...], values: LabelValues) -> str:
    if not names:
        return ""
    pairs = ",".join(
        f'{n}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for n, v in zip(names, values, strict=False)
    )
    return "{" + pairs + "}"


def num(value: float) -> str:
    """A sample value as the exposition format writes it."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


class MonitorServer:
    """GET /metrics, /healthz (the loop is alive) and /readyz (the sink is ready).

    `render`, `healthy` and `ready` may also return awaitables (the supervisor of several
    workers asks the workers)."""

    def __init__(
        self,
        render: Callable[[], bytes | Awaitable[bytes]],
        healthy: Callable[[], bool | Awaitable[bool]],
        ready: Callable[[], bool | Awaitable[bool]],
    ) -> None:
        self.render = render
        self.healthy = healthy
        self.ready = ready
        self._server: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        host = host.strip("[]") or "0.0.0.0"
        self._server = await asyncio.start_server(self._serve, host, int(port))
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("monitoring endpoint listening", extra={"address": f"{host}:{self.port}"})

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            method, path = request.split(b" ", 2)[:2]
            path = path.split(b"?", 1)[0]
            status, body, ctype = await self._route(method, path)
            writer.write(
                b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close"
                b"\r\n\r\n%s" % (status, ctype, len(body), body)
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    async def _route(self, method: bytes, path: bytes) -> tuple[bytes, bytes, bytes]:
        text = b"text/plain; charset=utf-8"
        if method != b"GET":
            return b"405 Method Not Allowed", b"GET only\n", text
        if path == b"/metrics":
            body = await _value(self.render())
            return b"200 OK", body, b"text/plain; version=0.0.4; charset=utf-8"
        if path == b"/healthz":
            ok = await _value(self.healthy())
            return (
                (b"200 OK", b"ok\n", text)
                if ok
                else (b"503 Service Unavailable", b"stalled\n", text)
            )
        if path == b"/readyz":
            ok = await _value(self.ready())
            if ok:
                return b"200 OK", b"ready\n", text
            return b"503 Service Unavailable", b"not ready\n", text
        return b"404 Not Found", b"try /metrics, /healthz or /readyz\n", text


async def _value(value: T | Awaitable[T]) -> T:
    return await value if inspect.isawaitable(value) else value  # type: ignore[return-value]


class _Worker(logging.Filter):
    def __init__(self, worker: str) -> None:
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.worker
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any `extra` fields."""

    _skip = frozenset(
        logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime"}
    )

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in self._skip and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


class TextFormatter(logging.Formatter):
    """Human-readable lines with the `extra` fields appended as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        base = f"{record.levelname.lower():7} {record.getMessage()}"
        extras = [
            f"{k}={v}"
            for k, v in record.__dict__.items()
            if k not in JsonFormatter._skip and not k.startswith("_")
        ]
        text = base + ("  " + " ".join(extras) if extras else "")
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def setup_logging(level: str = "info", fmt: str = "json", worker: str | None = None) -> None:
    """Log to stderr (stdout may carry documents); a worker's lines say which it is."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    if worker is not None:
        handler.addFilter(_Worker(worker))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Client libraries log request details (URLs, sometimes headers) at DEBUG; keep them
    # at WARNING so no credential can reach the log whatever shipper's own level is.
    for noisy in ("urllib3", "kubernetes", "watchdog", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
