"""The benchmark harness: measures shipper and writes docs/benchmarks.md.

    python -m bench [--lines N] [--only NAME ...] [--output docs/benchmarks.md]

Every figure comes from a real `shipper run` process:

- throughput: `shipper run --once` over a generated tree, CPU time of the process from the
  kernel (user + system), into bench.endpoint answering `_bulk` instantly, and into a real
  local Elasticsearch; start-up (imports, template calls) measured on an empty tree and
  reported apart;
- memory: peak RSS (VmHWM) following 10 and 1,000 files, and idle CPU once caught up;
- delay: lines written at a fixed rate, each stamped with the time of writing; the delay to
  the answer of Elasticsearch's `_bulk` (the acknowledgement) is recorded per document by
  bench.endpoint in forward mode; the CPU shipper used at that rate is read from /proc.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import yaml

from bench import loadgen, uncertain, workers
from bench.parse import run as parse_bench
from shipper.observe import scrape
from tests.harness.elasticsearch import ElasticsearchServer, free_port

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")
MARKER = "<!-- analysis: kept by the harness when it rewrites the tables -->"


# ---- processes ------------------------------------------------------------------------


@contextmanager
def endpoint(forward: str | None = None) -> Iterator[str]:
    """bench.endpoint in its own process; yields its URL."""
    port = free_port()
    args = [sys.executable, "-m", "bench.endpoint", "--port", str(port)]
    if forward:
        args += ["--forward", forward]
    proc = subprocess.Popen(args, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: _get(url + "/_bench/stats") is not None, 30, "bench endpoint")
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


def _get(url: str, method: str = "GET") -> Any:
    try:
        request = urllib.request.Request(url, method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            return orjson.loads(response.read())
    except OSError:
        return None


def _wait(predicate: Any, timeout: float, what: str) -> Any:
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
    usage = _run([sys.executable, "-m", "shipper", "run", "--once", "--config", str(cfg)])
    return usage.ru_utime + usage.ru_stime, time.monotonic() - began, usage.ru_maxrss


def _run(args: list[str]) -> Any:
    """Run a child to its end; its resource usage (fails unless it exited 0)."""
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:4])} exited {proc.returncode}")
    return usage


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


# ---- measurements -----------------------------------------------------------------------


def throughput(
    work: Path, tree: dict[str, Any], root: Path, url: str, label: str, enrich: bool, **es: Any
) -> dict[str, Any]:
    globs = [str(root / "var/log/containers/*.log")]
    pods = tree["pods_file"] if enrich else None
    empty = [str(work / "nothing-here/*.log")]
    startup, _, _ = run_once(config(work, empty, url, pods, **es))
    best: tuple[float, float, int] | None = None
    for _ in range(2):  # the better of two runs: the machine has other work now and then
        result = run_once(config(work, globs, url, pods, **es))
        if best is None or result[0] < best[0]:
            best = result
    assert best is not None
    cpu, wall, rss = best
    lines = tree["records"]
    return {
        "case": label,
        "lines": lines,
        "cpu_s": cpu,
        "startup_cpu_s": startup,
        "lines_per_cpu_s": lines / cpu,
        "lines_per_cpu_s_net": lines / max(cpu - startup, 1e-9),
        "mib_per_cpu_s": tree["bytes"] / max(cpu - startup, 1e-9) / (1 << 20),
        "wall_s": wall,
        "peak_rss_mib": rss / 1024,
    }


def floor(tree: dict[str, Any], root: Path, url: str) -> dict[str, Any]:
    """bench.floor over the same files: what the least Python can do costs per line."""
    files = sorted(str(p) for p in (root / "var/log/pods").rglob("*.log"))
    startup = _cpu_of([sys.executable, "-m", "bench.floor", url])
    cpu = min(_cpu_of([sys.executable, "-m", "bench.floor", url, *files]) for _ in range(2))
    lines = tree["records"]
    return {
        "case": "floor: bare Python loop (bench/floor.py), 250-byte CRI lines",
        "lines": lines,
        "cpu_s": cpu,
        "startup_cpu_s": startup,
        "lines_per_cpu_s": lines / cpu,
        "lines_per_cpu_s_net": lines / max(cpu - startup, 1e-9),
        "mib_per_cpu_s": tree["bytes"] / max(cpu - startup, 1e-9) / (1 << 20),
        "wall_s": 0.0,
        "peak_rss_mib": 0.0,
    }


def _cpu_of(args: list[str]) -> float:
    usage = _run(args)
    return usage.ru_utime + usage.ru_stime


def memory(work: Path, files: int, url: str) -> dict[str, Any]:
    root = work / f"files-{files}"
    tree = loadgen.mixed_tree(root, lines=files * 200, pods=files)
    cfg = config(work, [str(root / "var/log/containers/*.log")], url, tree["pods_file"])
    with daemon(cfg, work) as (proc, log):

        def shipped() -> bool:  # every line read and every document acknowledged
            m = metrics(proc, log)
            return (
                m.get("shipper_lines_read_total", 0) >= tree["records"]
                and m.get("shipper_in_flight_bytes", 1) == 0
            )

        _wait(shipped, 600, f"{files} files shipped")
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(20)  # idle: caught up, nothing new written
        idle = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
        rss = peak_rss_kib(proc.pid)
        followed = metrics(proc, log).get("shipper_files_followed", 0)
    return {
        "files": files,
        "followed": followed,
        "records": tree["records"],
        "peak_rss_mib": rss / 1024,
        "idle_cores": idle,
    }


def live_files(root: Path, pod: str, count: int) -> list[Path]:
    """`count` empty container logs in a kubelet layout under `root` (pods `<pod>-<i>`),
    each with its /var/log/containers-style link in `root/containers`."""
    lives = []
    for i in range(count):
        directory = root / "pods" / f"bench_{pod}-{i}_uid{i}" / "app"
        directory.mkdir(parents=True, exist_ok=True)
        live = directory / "0.log"
        live.touch()
        link = root / "containers" / f"{pod}-{i}_bench_app-{i:064x}.log"
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(live, link)
        lives.append(live)
    return lives


def delay(work: Path, rate: int, es_url: str, seconds: float) -> dict[str, Any]:
    root = work / f"rate-{rate}"
    files = live_files(root, "rate", 10)
    with endpoint(forward=es_url) as url:
        cfg = config(work, [str(root / "containers/*.log")], url, None)
        with daemon(cfg, work) as (proc, log):
            _wait(lambda: metrics(proc, log).get("shipper_sink_up") == 1, 120, "sink ready")
            writer = loadgen.RateWriter(files, rate)
            writer.run(2)  # warm-up, not counted
            _wait(lambda: _get(url + "/_bench/stats")["documents"] >= writer.written, 60, "warm")
            _get(url + "/_bench/reset", "POST")
            cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
            before = writer.written
            writer.run(seconds)
            _wait(
                lambda: _get(url + "/_bench/stats")["documents"] >= writer.written - before,
                120,
                "all lines acknowledged",
            )
            cores = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
            stats = _get(url + "/_bench/stats")
    delays = sorted(stats["delays"])
    return {
        "rate": rate,
        "lines": len(delays),
        "p50_s": delays[len(delays) // 2],
        "p99_s": delays[int(len(delays) * 0.99)],
        "max_s": delays[-1],
        "cores": cores,
    }


def storm(work: Path, url: str, seconds: float) -> dict[str, Any]:
    """100 files rotating every 100 ms at 10k lines/s in total (the chaos suite's storm)."""
    root = work / "storm"
    shutil.rmtree(root, ignore_errors=True)
    lives = live_files(root, "storm", 100)
    cfg = config(work, [str(root / "containers/*.log")], url, None)
    with daemon(cfg, work) as (proc, log):
        _wait(lambda: metrics(proc, log).get("shipper_sink_up") == 1, 120, "sink ready")
        _get(url + "/_bench/reset", "POST")
        writer = loadgen.StormWriter(lives)
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        writer.run(seconds)
        written_at = time.monotonic()
        _wait(
            lambda: (
                metrics(proc, log).get("shipper_lines_read_total", 0) >= writer.written
                and metrics(proc, log).get("shipper_in_flight_bytes", 1) == 0
            ),
            600,
            "every storm line shipped",
        )
        done = time.monotonic()
        cores = (cpu_seconds(proc.pid) - cpu0) / (done - t0)
        rss = peak_rss_kib(proc.pid)
        m = metrics(proc, log)
    return {
        "seconds": seconds,
        "lines": writer.written,
        "rotations": writer.rotations,
        "read": m.get("shipper_lines_read_total", 0),
        "cores": cores,
        "behind_s": done - written_at,
        "peak_rss_mib": rss / 1024,
    }


# ---- report -------------------------------------------------------------------------------


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // (1 << 20)
    return (
        f"{model}, {os.cpu_count()} cores, {mem} GiB; {platform.system()} "
        f"{platform.release()}; Python {platform.python_version()}"
    )


def tree_bytes(root: Path) -> int:
    return sum(f.stat().st_size for f in (root / "var/log/pods").rglob("*.log*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of a delay run")
    parser.add_argument(
        "--only",
        nargs="*",
        default=[
            "parse",
            "throughput",
            "workers",
            "elasticsearch",
            "memory",
            "delay",
            "storm",
            "uncertain",
        ],
    )
    parser.add_argument("--output", type=Path, default=ROOT / "docs/benchmarks.md")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="shipper-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python -m bench", *sys.argv[1:]])
    results: dict[str, Any] = {"machine": machine(), "command": command}

    if "parse" in args.only:
        results["parse"] = parse_bench()
        print("parse", results["parse"], flush=True)

    trees: dict[str, tuple[Path, dict[str, Any]]] = {}

    def tree(name: str) -> tuple[Path, dict[str, Any]]:
        if name not in trees:
            root = work / f"tree-{name}"
            shutil.rmtree(root, ignore_errors=True)
            made = (
                loadgen.cri_tree(root, args.lines)
                if name == "cri250"
                else loadgen.mixed_tree(root, args.lines)
            )
            made["bytes"] = tree_bytes(root)
            trees[name] = (root, made)
        return trees[name]

    cases = [
        ("cri250", "250-byte CRI lines, enriched", True, {}),
        ("mixed", "mixed workload, enriched", True, {}),
        ("mixed", "mixed workload, enriched, gzip", True, {"bulk": {"gzip": True}}),
        ("mixed", "mixed workload, no enrichment", False, {}),
    ]
    if "throughput" in args.only:
        rows = []
        with endpoint() as url:
            for name, label, enrich, es in cases:
                root, made = tree(name)
                rows.append(throughput(work, made, root, url, label, enrich, **es))
                print(rows[-1], flush=True)
            root, made = tree("cri250")
            rows.append(floor(made, root, url))
            print(rows[-1], flush=True)
        results["throughput"] = rows

    if "workers" in args.only:
        with endpoint() as url:
            root, made = tree("mixed")
            results["workers"] = workers.measure(work, made, root, url, run_once, config)
        print(results["workers"], flush=True)

    if {"elasticsearch", "delay", "uncertain"} & set(args.only):
        with elasticsearch() as es_url:
            if "elasticsearch" in args.only:
                rows = []
                for name, label, enrich, es in cases[:2]:
                    root, made = tree(name)
                    rows.append(throughput(work, made, root, es_url, label, enrich, **es))
                    print(rows[-1], flush=True)
                results["elasticsearch"] = rows
            if "delay" in args.only:
                results["delay"] = [delay(work, r, es_url, args.seconds) for r in (1_000, 10_000)]
                print(results["delay"], flush=True)
            if "uncertain" in args.only:
                results["uncertain"] = uncertain.measure(
                    work, es_url, run_once, config, lines=min(args.lines, 200_000)
                )
                print(results["uncertain"], flush=True)

    if "memory" in args.only:
        with endpoint() as url:
            results["memory"] = [memory(work, n, url) for n in (10, 1_000)]
        print(results["memory"], flush=True)

    if "storm" in args.only:
        with endpoint() as url:
            results["storm"] = storm(work, url, 60.0)
        print(results["storm"], flush=True)

    (work / "results.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    kept = ""
    if args.output.exists():  # the hand-written analysis below the marker is kept
        old = args.output.read_text()
        if MARKER in old:
            kept = old[old.index(MARKER) :]
    args.output.write_text(report(results) + ("\n" + kept if kept else ""))
    print(f"wrote {args.output} (raw figures in {work / 'results.json'})")


def report(r: dict[str, Any]) -> str:
    out = [
        "# Benchmarks",
        "",
        f"Machine: {r['machine']}.",
        f"Command: `{r['command']}` (`make bench` runs `python -m bench`).",
        "",
    ]
    if "parse" in r:
        p = r["parse"]
        out += [
            "## Parsing alone (in process)",
            "",
            f"- CRI decode: {p['parse_lines_per_cpu_second']:,.0f} lines per CPU-second",
            f"- decode + document encode: {p['parse_and_encode_lines_per_cpu_second']:,.0f}",
            "",
        ]
    for key, title in (
        ("throughput", "Throughput into an instant `_bulk` endpoint (`bench/endpoint.py`)"),
        ("elasticsearch", "Throughput into a real local Elasticsearch (one node, same machine)"),
    ):
        if key not in r:
            continue
        out += [
            f"## {title}",
            "",
            "`shipper run --once` over the whole tree; CPU = user + system time of the shipper "
            "process; *net* leaves out start-up (imports, template calls), measured on an empty "
            "tree.",
            "",
            "| workload | lines | CPU s | start-up CPU s | lines/CPU-s | lines/CPU-s net "
            "| MiB/CPU-s net | wall s | peak RSS MiB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in r[key]:
            out.append(
                f"| {row['case']} | {row['lines']:,} | {row['cpu_s']:.2f} | "
                f"{row['startup_cpu_s']:.2f} | {row['lines_per_cpu_s']:,.0f} | "
                f"{row['lines_per_cpu_s_net']:,.0f} | {row['mib_per_cpu_s']:.1f} | "
                f"{row['wall_s']:.1f} | {row['peak_rss_mib']:.0f} |"
            )
        out.append("")
    if "workers" in r:
        out += workers.report(r["workers"])
    if "memory" in r:
        out += [
            "## Memory and idle cost",
            "",
            "| files followed | records | peak RSS MiB | idle CPU (cores) |",
            "|---:|---:|---:|---:|",
        ]
        for row in r["memory"]:
            out.append(
                f"| {row['files']:,} | {row['records']:,} | {row['peak_rss_mib']:.1f} | "
                f"{row['idle_cores']:.4f} |"
            )
        out.append("")
    if "delay" in r:
        out += [
            "## Delay from line written to acknowledged (real Elasticsearch)",
            "",
            "| rate (lines/s) | lines measured | p50 s | p99 s | max s | CPU (cores) |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for row in r["delay"]:
            out.append(
                f"| {row['rate']:,} | {row['lines']:,} | {row['p50_s']:.3f} | "
                f"{row['p99_s']:.3f} | {row['max_s']:.3f} | {row['cores']:.3f} |"
            )
        out.append("")
    if "storm" in r:
        row = r["storm"]
        out += [
            "## Rotation storm (instant endpoint)",
            "",
            "100 files, each rotated every 100 ms after 10 lines (rename, previous rotation "
            "gzip-compressed, all rotations kept), 10k lines/s in total. *Behind* is how long "
            "after the last line was written every line had been shipped.",
            "",
            "| seconds | lines | rotations | lines read | CPU (cores) | behind s | peak RSS MiB |",
            "|---:|---:|---:|---:|---:|---:|---:|",
            f"| {row['seconds']:.0f} | {row['lines']:,} | {row['rotations']:,} | "
            f"{row['read']:,.0f} | {row['cores']:.3f} | {row['behind_s']:.1f} | "
            f"{row['peak_rss_mib']:.1f} |",
            "",
        ]
    if "uncertain" in r:
        u = r["uncertain"]
        out += [
            f"## A restart with {u['mib']} MiB in flight (real Elasticsearch)",
            "",
            'The committed offsets moved back by that much below the "sent up to" marks, as '
            "after a SIGKILL: *lookup* checks every re-read document against the whole data "
            "stream before writing (what shipper does); *409 only* sends them blind (right "
            "only while no rollover happened); *none found*: into a data stream without them, "
            "so everything is written after the lookup. CPU of shipper, wall of the whole run "
            "(start-up included). `bench/uncertain.py`.",
            "",
            "| re-send | MiB re-read | CPU s | wall s |",
            "|---|---:|---:|---:|",
        ]
        for label, row in u["rows"].items():
            out.append(
                f"| {label} | {row['resent_mib']:.1f} | {row['cpu_s']:.2f} | {row['wall_s']:.1f} |"
            )
        out.append("")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
