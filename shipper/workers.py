"""`workers: N`: a supervisor and N worker processes, each owning a share of the files.

A Python process uses one core; a node that logs more than one core can read takes
several processes. Worker `i` follows the directories its share holds (shipper.shares),
with its own checkpoint store (shipper.stores), so checkpoints and document ids stay per
file and a worker restarted after a crash re-reads nothing another one has. The whole
keeps the budgets of one shipper: each worker gets `1/N` of `buffer.max_bytes` and of
`elasticsearch.bulk.concurrency`. The supervisor forks the first workers before its own
event loop runs (they start with everything imported, shipper.serve), starts a worker
that dies again as `shipper run --worker i/N`, with a backoff, serves the one monitoring
endpoint (metrics summed over the workers; healthy and ready when every worker is), and
passes SIGTERM, SIGINT and SIGHUP on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from shipper.checkpoint import CheckpointStore
from shipper.config import Config
from shipper.observe import Counter, Gauge, MonitorServer, num, parse_exposition
from shipper.shares import plan_shares, write_plan
from shipper.stores import distribute, worker_dir
from shipper.tail.discovery import expand

log = logging.getLogger(__name__)

FATAL = (1, 2)  # a worker that exits so says retrying cannot help (runtime, config error)
MIN = {"shipper_sink_up", "shipper_sink_hosts_up"}  # summed, these would say nothing
MAX = {
    "shipper_checkpoint_age_seconds",
    "shipper_sink_blocked",
    "shipper_config_last_reload_timestamp_seconds",
}


def worker_config(cfg: Config, worker: int, workers: int) -> Config:
    """Worker `worker`'s config: its store, its share of the budgets, metrics on a port of
    its own on loopback (the supervisor serves `metrics.listen`)."""
    es = cfg.elasticsearch
    return dataclasses.replace(
        cfg,
        checkpoint=dataclasses.replace(
            cfg.checkpoint, path=str(worker_dir(Path(cfg.checkpoint.path), worker))
        ),
        buffer=dataclasses.replace(
            cfg.buffer, max_bytes=max(cfg.buffer.max_bytes // workers, 65536)
        ),
        elasticsearch=dataclasses.replace(
            es,
            bulk=dataclasses.replace(es.bulk, concurrency=max(es.bulk.concurrency // workers, 1)),
        ),
        metrics=dataclasses.replace(cfg.metrics, listen="127.0.0.1:0"),
    )


def directory_sizes(cfg: Config) -> dict[str, int]:
    """The bytes of the files the globs match now, by the directory they are written in
    (what the shares are balanced by)."""
    sizes: dict[str, int] = {}
    for found in expand(list(cfg.inputs.paths), list(cfg.inputs.exclude)).values():
        scope = os.path.dirname(found.real)
        sizes[scope] = sizes.get(scope, 0) + found.size
    return sizes


def report(fd: int, port: int) -> None:
    """A worker tells the supervisor where its metrics are (then the pipe is closed)."""
    with os.fdopen(fd, "wb") as pipe:
        pipe.write(orjson.dumps({"port": port, "pid": os.getpid()}) + b"\n")


@dataclasses.dataclass
class Worker:
    index: int
    pid: int = 0  # 0: not running
    report_fd: int = -1  # where it says which port its metrics are on
    port: int = 0
    restarts: int = 0
    done: bool = False


Serve = Callable[[int, int], int]  # worker index, report fd -> exit code (a forked child)


class Supervisor:
    def __init__(self, cfg: Config, config_path: str, once: bool, serve: Serve | None) -> None:
        self.cfg, self.config_path, self.once = cfg, config_path, once
        self.serve = serve  # None: every worker is a fresh process
        self.n = cfg.workers
        self.workers = [Worker(i) for i in range(self.n)]
        self.stopping = False
        self.exit_code = 0
        self.restarts = Counter("shipper_worker_restarts_total", "Worker processes restarted.")
        self.running = Gauge("shipper_workers", "Worker processes running.")
        self._root: CheckpointStore | None = None

    def main(self, pending: list[int]) -> int:
        """Plan the shares, start the workers, watch them until they are done; the exit
        code (`pending`: signals that came while starting, honoured once watching)."""
        self._root = CheckpointStore.open(Path(self.cfg.checkpoint.path))  # held: one at a time
        try:
            assert self._root.directory is not None
            plan = plan_shares(directory_sizes(self.cfg), self.n)
            write_plan(self._root.directory, self.n, plan)  # before any worker reads it
            distribute(self._root, self.n, plan)
            self.stopping = bool(pending)  # a SIGTERM while starting: nothing to run
            # Forked only while this process has one thread and no event loop.
            fork = self.serve is not None and threading.active_count() == 1
            for w in self.workers:
                if not self.stopping:
                    self._start(w, fork)
            return asyncio.run(self._watch())
        finally:
            self._root.close()

    def _start(self, w: Worker, fork: bool) -> None:
        read_fd, write_fd = os.pipe()
        if fork:
            assert self.serve is not None
            pid = os.fork()
            if pid == 0:  # the worker: it never returns into the supervisor's code
                code = 1
                try:
                    os.close(read_fd)
                    for other in self.workers:
                        if other.report_fd >= 0:
                            os.close(other.report_fd)
                    assert self._root is not None
                    self._root.close()  # its descriptor only: the lock is the supervisor's
                    code = self.serve(w.index, write_fd)
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
        else:
            args = [sys.executable, "-m", "shipper", "run", "--config", self.config_path]
            args += ["--worker", f"{w.index}/{self.n}", "--report-fd", str(write_fd)]
            if self.once:
                args.append("--once")
            os.set_inheritable(write_fd, True)
            pid = os.posix_spawn(sys.executable, args, os.environ)
        os.close(write_fd)
        w.pid, w.report_fd = pid, read_fd
        self._count_running()

    def _count_running(self) -> None:
        self.running.set(sum(1 for x in self.workers if x.pid))

    async def _watch(self) -> int:
        monitor = None
        if self.cfg.metrics.listen:
            monitor = MonitorServer(self.render, self.healthy, self.ready)
            await monitor.start(self.cfg.metrics.listen)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self.forward, signal.SIGHUP)
        if self.stopping:
            self.stop()
        try:
            await asyncio.gather(*(self._keep(w) for w in self.workers))
        finally:
            if monitor is not None:
                await monitor.stop()
        return self.exit_code

    def stop(self) -> None:
        self.stopping = True
        self.forward(signal.SIGTERM)

    def forward(self, sig: int) -> None:
        for w in self.workers:
            if w.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.pid, sig)

    async def _keep(self, w: Worker) -> None:
        """Watch worker `w` until it is done (stopped, or --once finished), starting it
        again after a crash with a backoff (1 s doubling to 30 s, reset by 60 s of running)."""
        backoff = 1.0
        while w.pid and not w.done:
            started = time.monotonic()
            code = await self._wait(w)
            if self.stopping or (self.once and code == 0):
                w.done = True
            elif code in FATAL:
                log.error("a worker failed; stopping", extra={"worker": w.index, "code": code})
                self.exit_code = max(self.exit_code, code)
                self.stop()
            else:
                w.restarts += 1
                self.restarts.inc()
                if time.monotonic() - started > 60:
                    backoff = 1.0
                log.warning(
                    "a worker exited; starting it again",
                    extra={"worker": w.index, "code": code, "in_seconds": backoff},
                )
                await asyncio.sleep(backoff)  # a restart pace, not a wait for a condition
                backoff = min(backoff * 2, 30.0)
                if not self.stopping:
                    self._start(w, fork=False)

    async def _wait(self, w: Worker) -> int:
        """Worker `w`'s exit code once it has exited (killed by a signal: 128 + its number)."""
        fd, loop, readable = w.report_fd, asyncio.get_running_loop(), asyncio.Event()
        loop.add_reader(fd, readable.set)  # here, not in the reader: it may never take a step
        reader = asyncio.create_task(self._read_report(w, fd, readable))
        try:
            status = await exited(w.pid)
        finally:
            reader.cancel()  # it waits at an await, so it touches `fd` no more
            self._close_report(w, fd)
            w.pid, w.port = 0, 0
            self._count_running()
        code = os.waitstatus_to_exitcode(status)
        return code if code >= 0 else 128 - code

    async def _read_report(self, w: Worker, fd: int, readable: asyncio.Event) -> None:
        # Cancelled, it leaves the pipe to `_wait`, which has closed it: by the time the
        # cancellation runs here, a restarted worker's pipe may have the same number.
        data = b""
        while not data.endswith(b"\n"):
            await readable.wait()
            readable.clear()
            chunk = os.read(fd, 4096)
            if not chunk:
                break  # it ended before it reported
            data += chunk
        self._close_report(w, fd)
        with contextlib.suppress(ValueError, KeyError):
            w.port = int(orjson.loads(data)["port"])

    @staticmethod
    def _close_report(w: Worker, fd: int) -> None:
        """Close worker `w`'s report pipe `fd` once, whichever of the reader and the exit is
        first."""
        if w.report_fd == fd:
            asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)
            w.report_fd = -1

    # ---- the one monitoring endpoint ---------------------------------------------------

    async def _ask(self, w: Worker, path: str) -> tuple[int, bytes]:
        if not w.port:
            return 0, b""
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", w.port), 5)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: worker\r\n\r\n".encode())
            raw = await asyncio.wait_for(reader.read(), 10)
            writer.close()
        except (OSError, TimeoutError):
            return 0, b""
        head, _, body = raw.partition(b"\r\n\r\n")
        try:
            return int(head.split(b" ", 2)[1]), body
        except (IndexError, ValueError):
            return 0, b""

    async def healthy(self) -> bool:
        answers = await asyncio.gather(*(self._ask(w, "/healthz") for w in self.workers))
        return all(status == 200 for status, _ in answers)

    async def ready(self) -> bool:
        answers = await asyncio.gather(*(self._ask(w, "/readyz") for w in self.workers))
        return all(status == 200 for status, _ in answers)

    async def render(self) -> bytes:
        answers = await asyncio.gather(*(self._ask(w, "/metrics") for w in self.workers))
        texts = [body.decode() for status, body in answers if status == 200]
        own = (
            f"# HELP {self.restarts.name} {self.restarts.help}\n# TYPE {self.restarts.name} "
            f"counter\n{self.restarts.name} {num(self.restarts.total())}\n"
            f"# HELP {self.running.name} {self.running.help}\n# TYPE {self.running.name} "
            f"gauge\n{self.running.name} {num(self.running.get())}\n"
        )
        return (merge_expositions(texts) + own).encode()


async def exited(pid: int) -> int:
    """Wait for child `pid` to exit (its pidfd turns readable) and reap it: its status."""
    fd = os.pidfd_open(pid)
    loop = asyncio.get_running_loop()
    readable = asyncio.Event()
    loop.add_reader(fd, readable.set)
    try:
        await readable.wait()
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    return os.waitpid(pid, 0)[1]


def merge_expositions(texts: list[str]) -> str:
    """Several workers' metrics as one: counters, histograms and most gauges summed, the
    few gauges a sum would misstate taken at their minimum or maximum."""
    values: dict[str, float] = {}
    for text in texts:
        for series, value in parse_exposition(text).items():
            name = series.partition("{")[0]
            if series not in values:
                values[series] = value
            elif name in MIN:
                values[series] = min(values[series], value)
            elif name in MAX:
                values[series] = max(values[series], value)
            else:
                values[series] += value
    by_metric: dict[str, list[str]] = {}
    for series in values:  # in the order they first appeared: histogram buckets stay sorted
        name = series.partition("{")[0]
        for suffix in ("_bucket", "_sum", "_count"):
            name = name.removesuffix(suffix) if name.endswith(suffix) else name
        by_metric.setdefault(name, []).append(series)
    out = []
    for text in texts[:1]:  # the first worker's HELP and TYPE lines, in its order
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                name = line.split(" ")[2]
                out.append(line)
                out += [f"{s} {num(values[s])}" for s in by_metric.pop(name, [])]
            elif line.startswith("#"):
                out.append(line)
    for rest in by_metric.values():  # series the first worker did not have at all
        out += [f"{s} {num(values[s])}" for s in rest]
    return "\n".join(out) + "\n" if out else ""
