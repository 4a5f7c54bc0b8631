"""docs/benchmarks.md from a run's results.

Each table is a section headed by a `<!-- section: KEY; COMMAND -->` comment. A run that
measured only some (`--only`) rewrites those and keeps the others as they were, naming
the command that measured them; the hand-written analysis below `MARKER` is kept too.
The side by side with Fluent Bit is kept likewise from a run that had no binary; where
there is none to keep, the section says that Fluent Bit was not measured.
"""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import fluentbit, workers

MARKER = "<!-- analysis: kept by the harness when it rewrites the tables -->"
SECTION = re.compile(r"^<!-- section: (?P<key>[\w-]+); (?P<command>.*) -->$", re.M)
ORDER = (
    "parse",
    "throughput",
    "fluent-bit",
    "elasticsearch",
    "workers",
    "memory",
    "delay",
    "storm",
    "uncertain",
)


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


def write(results: dict[str, Any], output: Path) -> None:
    """Rewrite `output`: this run's sections, earlier ones it did not measure, the analysis."""
    old = output.read_text() if output.exists() else ""
    analysis = old[old.index(MARKER) :] if MARKER in old else ""
    earlier = _sections(old[: old.index(MARKER)] if MARKER in old else old)
    fresh = {key: render(results) for key, render in RENDER.items() if key in results}
    if results.get("fluent-bit") or "fluent-bit" not in earlier:
        fresh["fluent-bit"] = fluentbit.report(results.get("fluent-bit"))  # or "not measured"
    body: list[str] = []
    kept: dict[str, list[str]] = {}
    for key in ORDER:
        if key in fresh:
            body += [f"<!-- section: {key}; {results['command']} -->", *fresh[key]]
        elif key in earlier:
            command, text = earlier[key]
            body += [f"<!-- section: {key}; {command} -->", text.rstrip("\n"), ""]
            kept.setdefault(command, []).append(key)
    head = [
        "# Benchmarks",
        "",
        f"Machine: {results['machine']}.",
        f"Command: `{results['command']}` (`make bench` runs `python -m bench`).",
    ]
    for command, keys in kept.items():
        head.append(f"Kept from an earlier run (`{command}`): {', '.join(keys)}.")
    output.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join([*head, "", *body]) + "\n"
    output.write_text(text + ("\n" + analysis if analysis else ""))


def _sections(text: str) -> dict[str, tuple[str, str]]:
    """{key: (command, text)} of the sections of an earlier report."""
    marks = list(SECTION.finditer(text))
    out = {}
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        out[mark["key"]] = (mark["command"], text[mark.end() + 1 : end])
    return out


def _parse(r: dict[str, Any]) -> list[str]:
    p = r["parse"]
    return [
        "## Parsing alone (in process)",
        "",
        f"- CRI decode: {p['parse_lines_per_cpu_second']:,.0f} lines per CPU-second",
        f"- decode + document encode: {p['parse_and_encode_lines_per_cpu_second']:,.0f}",
        "",
    ]


def _throughput(title: str, rows: list[dict[str, Any]]) -> list[str]:
    out = [
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
    for row in rows:
        out.append(
            f"| {row['case']} | {row['lines']:,} | {row['cpu_s']:.2f} | "
            f"{row['startup_cpu_s']:.2f} | {row['lines_per_cpu_s']:,.0f} | "
            f"{row['lines_per_cpu_s_net']:,.0f} | {row['mib_per_cpu_s']:.1f} | "
            f"{row['wall_s']:.1f} | {row['peak_rss_mib']:.0f} |"
        )
    out.append("")
    return out


def _memory(r: dict[str, Any]) -> list[str]:
    out = [
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
    return out


def _delay(r: dict[str, Any]) -> list[str]:
    out = [
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
    return out


def _storm(r: dict[str, Any]) -> list[str]:
    row = r["storm"]
    return [
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


def _uncertain(r: dict[str, Any]) -> list[str]:
    u = r["uncertain"]
    out = [
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
    return out


RENDER: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "parse": _parse,
    "throughput": lambda r: _throughput(
        "Throughput into an instant `_bulk` endpoint (`bench/endpoint.py`)", r["throughput"]
    ),
    "elasticsearch": lambda r: _throughput(
        "Throughput into a real local Elasticsearch (one node, same machine)", r["elasticsearch"]
    ),
    "workers": lambda r: workers.report(r["workers"]),
    "memory": _memory,
    "delay": _delay,
    "storm": _storm,
    "uncertain": _uncertain,
}
