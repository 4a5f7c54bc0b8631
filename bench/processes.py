"""The processes a benchmark runs and what it reads from them: the instant endpoint, a local
Elasticsearch, `shipper run` (a config per run, `--once` to its end or as a daemon), and a
child's CPU time and peak RSS from the kernel."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import yaml

from shipper.observe import scrape
from tests.harness.elasticsearch import ElasticsearchServer, free_port

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


NATIVE_SOURCE = ROOT / "bench" / "endpoint_go"
NATIVE_BINARY = Path.home() / ".cache" / "shipper" / "bench" / "endpoint"


def native_endpoint() -> Path:
    """bench/endpoint_go built with the machine's Go (standard library only; rebuilt when
    its source is newer than the binary)."""
    sources = [*NATIVE_SOURCE.glob("*.go"), NATIVE_SOURCE / "go.mod"]
    newest = max(p.stat().st_mtime for p in sources)
    if NATIVE_BINARY.exists() and NATIVE_BINARY.stat().st_mtime >= newest:
        return NATIVE_BINARY
    go = shutil.which("go")
    if go is None:
        raise SystemExit("the native endpoint (bench/endpoint_go) needs Go; none on PATH")
    NATIVE_BINARY.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([go, "build", "-o", str(NATIVE_BINARY), "."], cwd=NATIVE_SOURCE, check=True)
    return NATIVE_BINARY


@contextmanager
def endpoint(forward: str | None = None, native: bool = False) -> Iterator[str]:
    """bench.endpoint in its own process (`native`: its Go twin, bench/endpoint_go, which
    takes a third of its CPU); yields its URL."""
    port = free_port()
    args = [sys.executable, "-m", "bench.endpoint", "--port", str(port)]
    if forward:
        args += ["--forward", forward]
    if native:
        assert forward is None, "the native endpoint only answers"
        args = [str(native_endpoint()), "-port", str(port)]
    proc = subprocess.Popen(args, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: get_json(url + "/_bench/stats") is not None, 30, "bench endpoint")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def elasticsearch() -> Iterator[str]:
    workdir = Path(tempfile.mkdtemp(prefix="shipper-bench-es-"))
    server = ElasticsearchServer(workdir, heap="1g")
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def get_json(url: str, method: str = "GET") -> Any:
    try:
        request = urllib.request.Request(url, method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            return orjson.loads(response.read())
    except OSError:
        return None


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def config(work: Path, globs: list[str], url: str, pods_file: str | None, **elastic: Any) -> Path:
    checkpoint = work / f"cp-{time.monotonic_ns()}"
    cfg: dict[str, Any] = {
        "inputs": {"paths": globs},
        "checkpoint": {"path": str(checkpoint)},
        "kubernetes": {"enabled": pods_file is not None, "node_name": "node-1"},
        # A fresh data stream per run: a second run into the same one would only meet 409s.
        "elasticsearch": {
            "hosts": [url],
            "data_stream": f"logs-bench{time.monotonic_ns()}-default",
            **elastic,
        },
        "metrics": {"listen": "127.0.0.1:0"},
        "logging": {"level": "warning"},
    }
    if pods_file:
        cfg["kubernetes"]["pods_file"] = pods_file
    path = work / f"bench-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_once(cfg: Path) -> tuple[float, float, int]:
    """(CPU seconds, wall seconds, peak RSS KiB) of `shipper run --once`."""
    began = time.monotonic()
    args = [sys.executable, "-m", "shipper", "run", "--once", "--config", str(cfg)]
    usage, peak = run_child(args)
    return usage.ru_utime + usage.ru_stime, time.monotonic() - began, peak


def run_child(args: list[str]) -> tuple[Any, int]:
    """Run a child to its end (fails unless it exited 0); its resource usage and its peak
    RSS in KiB.

    The peak is the child's own VmHWM, read every 20 ms while it runs (so growth in its
    last 20 ms can be missed): `ru_maxrss` would not do, as Linux counts in it the memory
    of the parent at the fork (this harness process, with its trees and results)."""
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL)
    peak = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        peak = max(peak, peak_rss_kib(proc.pid))  # a zombie has no VmHWM: 0
        time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:4])} exited {proc.returncode}")
    return usage, peak


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def metrics(proc: subprocess.Popen[bytes], log: Path) -> dict[str, float]:
    port = None
    for line in log.read_text().splitlines():
        if "monitoring endpoint listening" in line:
            port = int(orjson.loads(line)["address"].rsplit(":", 1)[1])
    if port is None:
        return {}
    return scrape(f"127.0.0.1:{port}")


@contextmanager
def daemon(cfg: Path, work: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    log = work / f"shipper-{time.monotonic_ns()}.log"
    text = cfg.read_text().replace("level: warning", "level: info")
    cfg.write_text(text)
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shipper", "run", "--config", str(cfg)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            yield proc, log
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
