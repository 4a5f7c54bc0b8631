"""The benchmark harness: measures shipper and writes docs/benchmarks.md.

    python -m bench [--lines N] [--only NAME ...] [--fluent-bit PATH] [--output FILE]

Every figure comes from a real `shipper run` process:

- throughput: `shipper run --once` over a generated tree, CPU time of the process from the
  kernel (user + system), into bench.endpoint answering `_bulk` instantly, and into a real
  local Elasticsearch; start-up (imports, template calls) measured on an empty tree and
  reported apart;
- side by side with Fluent Bit (`--fluent-bit PATH`, bench.fluentbit): the same trees and
  endpoint, interleaved runs, lines per CPU-second of each and their ratio;
- memory: peak RSS (VmHWM) following 10 and 1,000 files, and idle CPU once caught up;
- delay: lines written at a fixed rate, each stamped with the time of writing; the delay to
  the answer of Elasticsearch's `_bulk` (the acknowledgement) is recorded per document by
  bench.endpoint in forward mode; the CPU shipper used at that rate is read from /proc.

A run of only some (`--only fluent-bit`) rewrites their tables and keeps the others.
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import site
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench import fluentbit, loadgen, report, uncertain, workers
from bench.parse import run as parse_bench
from bench.processes import (
    ROOT,
    config,
    cpu_seconds,
    daemon,
    elasticsearch,
    endpoint,
    get_json,
    metrics,
    peak_rss_kib,
    run_child,
    run_once,
    wait_for,
)

SECTIONS = (
    "parse",
    "throughput",
    "fluent-bit",
    "workers",
    "elasticsearch",
    "memory",
    "delay",
    "storm",
    "uncertain",
)


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
    usage, _ = run_child(args)
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

        wait_for(shipped, 600, f"{files} files shipped")
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
    each with its /var/log/containers-style link in `root/containers`; whatever an earlier
    run left under `root` (the same `--work`) goes first."""
    shutil.rmtree(root, ignore_errors=True)
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
            wait_for(lambda: metrics(proc, log).get("shipper_sink_up") == 1, 120, "sink ready")
            writer = loadgen.RateWriter(files, rate)
            writer.run(2)  # warm-up, not counted
            wait_for(
                lambda: get_json(url + "/_bench/stats")["documents"] >= writer.written, 60, "warm"
            )
            get_json(url + "/_bench/reset", "POST")
            cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
            before = writer.written
            writer.run(seconds)
            wait_for(
                lambda: get_json(url + "/_bench/stats")["documents"] >= writer.written - before,
                120,
                "all lines acknowledged",
            )
            cores = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
            stats = get_json(url + "/_bench/stats")
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
    lives = live_files(root, "storm", 100)
    cfg = config(work, [str(root / "containers/*.log")], url, None)
    with daemon(cfg, work) as (proc, log):
        wait_for(lambda: metrics(proc, log).get("shipper_sink_up") == 1, 120, "sink ready")
        get_json(url + "/_bench/reset", "POST")
        writer = loadgen.StormWriter(lives)
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        writer.run(seconds)
        written_at = time.monotonic()
        wait_for(
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


def tree_bytes(root: Path) -> int:
    """Bytes of every container log (and rotation) under `root`."""
    return sum(f.stat().st_size for f in (root / "var/log/pods").rglob("*.log*") if f.is_file())


def compile_bytecode() -> None:
    """Bytecode for shipper and everything it imports, as an installed package has it (pip
    compiles it, and so the image does). Without it, under PYTHONDONTWRITEBYTECODE (set in
    this workplace's shells, and in the image for what it adds at run time), every run
    would compile its sources again and count that as start-up CPU."""
    for path in (ROOT / "shipper", ROOT / "parsers", *site.getsitepackages()):
        compileall.compile_dir(path, quiet=1, workers=0)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of a delay run")
    parser.add_argument(
        "--only",
        nargs="*",
        default=list(SECTIONS),
        choices=SECTIONS,
        metavar="SECTION",
        help=f"what to measure (default: all): {', '.join(SECTIONS)}",
    )
    parser.add_argument(
        "--fluent-bit",
        type=Path,
        default=None,
        metavar="PATH",
        help="a Fluent Bit binary to measure side by side (none: the report says so)",
    )
    parser.add_argument(
        "--fluent-bit-flags",
        default=None,
        help="how that binary was built (text or a file; default: a cmake-flags.txt near it)",
    )
    parser.add_argument("--output", type=Path, default=ROOT / "docs/benchmarks.md")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    if args.fluent_bit is not None and not os.access(args.fluent_bit.expanduser(), os.X_OK):
        parser.error(f"--fluent-bit {args.fluent_bit}: not an executable file")
    compile_bytecode()
    work = args.work or Path(tempfile.mkdtemp(prefix="shipper-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python -m bench", *sys.argv[1:]])
    results: dict[str, Any] = {"machine": report.machine(), "command": command}

    if "parse" in args.only:
        results["parse"] = parse_bench()
        print("parse", results["parse"], flush=True)

    trees: dict[str, tuple[Path, dict[str, Any]]] = {}

    def tree(name: str) -> tuple[Path, dict[str, Any]]:
        if name not in trees:
            root = work / f"tree-{name}"
            shutil.rmtree(root, ignore_errors=True)
            if name == "cri250":
                made = loadgen.cri_tree(root, args.lines)
            else:  # "mixed", or "mixed4": four times the lines (the workers' backlog)
                made = loadgen.mixed_tree(root, args.lines * (4 if name == "mixed4" else 1))
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

    if "fluent-bit" in args.only:
        if args.fluent_bit is None:
            print("fluent-bit: not measured (no --fluent-bit PATH given)", flush=True)
        else:
            with endpoint() as url:
                results["fluent-bit"] = fluentbit.measure(
                    work, tree, url, args.fluent_bit, args.fluent_bit_flags
                )

    if "workers" in args.only:
        with endpoint(native=True) as url:
            root, made = tree("mixed4")
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
    report.write(results, args.output)
    print(f"wrote {args.output} (raw figures in {work / 'results.json'})")


if __name__ == "__main__":
    main()
