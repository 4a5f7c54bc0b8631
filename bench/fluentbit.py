"""Fluent Bit side by side with shipper: the same trees, the same instant endpoint.

Given a Fluent Bit binary (`python -m bench --fluent-bit PATH`; none is built or shipped
here), each workload is delivered by `shipper run --once` and by Fluent Bit in turn,
shipper, Fluent Bit, shipper, ... three times each, and the median of each is reported.

Fluent Bit is configured as a Kubernetes DaemonSet usually is: tail input over the same
`var/log/containers/*.log` links with `multiline.parser cri, docker`, `Read_from_Head on`
and a fresh DB file; for the enriched rows the kubernetes filter, fed from a preload cache
(`Kube_Meta_Preload_Cache_Dir`: one `<namespace>_<pod>.meta` Pod object per pod, as
filter_kubernetes reads it) written from the same pods file shipper reads; es output with
`Generate_ID On`, `Write_Operation create`, `Suppress_Type_Name On`, over HTTP. Fluent Bit
sends no `filter_path`, so the endpoint answers it in full, as Elasticsearch would
(`Buffer_Size False` so that it reads the whole answer instead of failing on a truncated
one). It does not exit on its own: its CPU (user + system of every thread, from /proc) is
read as soon as the endpoint has counted every line, then it is stopped.

Fairness: neither side parses JSON or joins stack traces here. The pods file both get is
the tree's without its `shipper.io/*` annotations (shipper's parser and multiline hints:
Fluent Bit does no such work), and every document must reach the endpoint once from each.
"""

from __future__ import annotations

import signal
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench.processes import config, cpu_seconds, get_json, peak_rss_kib, run_once

CASES = (  # (tree, label, enriched)
    ("mixed", "mixed workload, enrichment on for both", True),
    ("mixed", "mixed workload, enrichment off for both", False),
    ("cri250", "250-byte CRI lines, enrichment on for both", True),
    ("cri250", "250-byte CRI lines, enrichment off for both", False),
)
RUNS = 3


def version(binary: Path) -> str:
    """`Fluent Bit v5.1.1`: the first line `--version` prints."""
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
    return (out.stdout or out.stderr).splitlines()[0].strip()


def build_flags(binary: Path, given: str | None) -> str:
    """The cmake flags the binary was built with: `given` (text, or a file holding it), else
    a `cmake-flags.txt` beside the binary or up to three directories above it."""
    if given:
        path = Path(given).expanduser()
        return path.read_text().strip() if path.is_file() else given
    for directory in list(binary.resolve().parents)[:4]:
        if (directory / "cmake-flags.txt").is_file():
            return (directory / "cmake-flags.txt").read_text().strip()
    return "not recorded (no cmake-flags.txt beside the binary; pass --fluent-bit-flags)"


def without_hints(pods_file: Path, out: Path) -> Path:
    """The pods file without `shipper.io/*` annotations."""
    pods = orjson.loads(pods_file.read_bytes())
    for item in pods["items"]:
        meta = item["metadata"]
        meta["annotations"] = {
            k: v for k, v in meta.get("annotations", {}).items() if not k.startswith("shipper.io/")
        }
    out.write_bytes(orjson.dumps(pods))
    return out


def preload_cache(pods_file: Path, directory: Path) -> Path:
    """filter_kubernetes' preload cache: each Pod object of the list as `<ns>_<pod>.meta`."""
    directory.mkdir(parents=True, exist_ok=True)
    for item in orjson.loads(pods_file.read_bytes())["items"]:
        meta = item["metadata"]
        (directory / f"{meta['namespace']}_{meta['name']}.meta").write_bytes(orjson.dumps(item))
    return directory


def fb_config(work: Path, root: Path, url: str, cache: Path | None) -> Path:
    """A classic-format Fluent Bit config for one run (a fresh DB file each time)."""
    stamp = time.monotonic_ns()
    links = root / "var/log/containers"
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sections = [
        ["SERVICE", "Flush 1", "Log_Level warn", "HTTP_Server Off"],
        [
            "INPUT",
            "Name tail",
            "Tag kube.*",
            f"Path {links}/*.log",
            "multiline.parser cri, docker",
            "Read_from_Head On",
            f"DB {work / f'fb-{stamp}.db'}",
        ],
    ]
    if cache is not None:
        # The tag is `kube.` and the link's path with dots for slashes.
        prefix = "kube." + str(links).lstrip("/").replace("/", ".") + "."
        sections.append(
            [
                "FILTER",
                "Name kubernetes",
                "Match kube.*",
                f"Kube_Tag_Prefix {prefix}",
                f"Kube_Meta_Preload_Cache_Dir {cache}",
            ]
        )
    sections.append(
        [
            "OUTPUT",
            "Name es",
            "Match *",
            f"Host {host}",
            f"Port {port}",
            "Generate_ID On",
            "Write_Operation create",
            "Suppress_Type_Name On",
            "Buffer_Size False",
        ]
    )
    text = "\n".join(f"[{s[0]}]\n" + "".join(f"    {kv}\n" for kv in s[1:]) for s in sections)
    path = work / f"fluent-bit-{stamp}.conf"
    path.write_text(text)
    return path


def run_fluent_bit(
    binary: Path, cfg: Path, url: str, lines: int, timeout: float = 900
) -> dict[str, Any]:
    """Run Fluent Bit until the endpoint has counted `lines` documents; its CPU seconds up to
    then, wall seconds, peak RSS MiB and the endpoint's last sample document."""
    get_json(url + "/_bench/reset", "POST")
    log = cfg.with_suffix(".log")
    with open(log, "wb") as err:
        began = time.monotonic()
        proc = subprocess.Popen([str(binary), "-c", str(cfg)], stdout=err, stderr=err)
    try:
        deadline = began + timeout
        while (stats := get_json(url + "/_bench/stats")) is None or stats["documents"] < lines:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:]
                got = stats["documents"] if stats else "?"
                raise SystemExit(f"fluent-bit delivered {got} of {lines} lines ({cfg}):\n{tail}")
            time.sleep(0.05)
        cpu, wall, rss = cpu_seconds(proc.pid), time.monotonic() - began, peak_rss_kib(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    stats = get_json(url + "/_bench/stats")
    if stats["documents"] != lines:
        raise SystemExit(f"fluent-bit delivered {stats['documents']} documents for {lines} lines")
    return {
        "cpu_s": cpu,
        "wall_s": wall,
        "peak_rss_mib": rss / 1024,
        "bulk_bytes": stats["bytes"],
        "sample": stats["sample"],
    }


def run_shipper(work: Path, root: Path, url: str, pods: Path | None, lines: int) -> dict[str, Any]:
    get_json(url + "/_bench/reset", "POST")
    globs = [str(root / "var/log/containers/*.log")]
    cpu, wall, rss = run_once(config(work, globs, url, str(pods) if pods else None))
    stats = get_json(url + "/_bench/stats")
    if stats["documents"] != lines:
        raise SystemExit(f"shipper delivered {stats['documents']} documents for {lines} lines")
    return {"cpu_s": cpu, "wall_s": wall, "peak_rss_mib": rss / 1024, "bulk_bytes": stats["bytes"]}


def measure(
    work: Path,
    tree: Callable[[str], tuple[Path, dict[str, Any]]],
    url: str,
    binary: Path,
    flags: str | None = None,
) -> dict[str, Any]:
    """Every case of CASES, interleaved runs, the median of RUNS each."""
    binary = binary.expanduser().resolve()
    rows = []
    for name, label, enriched in CASES:
        root, made = tree(name)
        lines = made["records"]
        pods = cache = None
        if enriched:
            pods = without_hints(Path(made["pods_file"]), work / f"pods-{name}-no-hints.json")
            cache = preload_cache(pods, work / f"fb-meta-{name}")
        runs: dict[str, list[dict[str, Any]]] = {"shipper": [], "fluent-bit": []}
        for _ in range(RUNS):
            runs["shipper"].append(run_shipper(work, root, url, pods, lines))
            cfg = fb_config(work, root, url, cache)
            runs["fluent-bit"].append(run_fluent_bit(binary, cfg, url, lines))
            sample = runs["fluent-bit"][-1].pop("sample") or {}
            if ("kubernetes" in sample) != enriched:
                raise SystemExit(f"fluent-bit enrichment is not {enriched} ({cfg}): {sample}")
        row: dict[str, Any] = {"case": label, "lines": lines}
        for who, results in runs.items():
            cpu = statistics.median(r["cpu_s"] for r in results)
            row[who] = {
                "cpu_s": cpu,
                "cpu_s_runs": [r["cpu_s"] for r in results],
                "wall_s": statistics.median(r["wall_s"] for r in results),
                "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in results),
                "bulk_bytes_per_line": statistics.median(r["bulk_bytes"] for r in results) / lines,
                "lines_per_cpu_s": lines / cpu,
            }
        row["ratio"] = row["shipper"]["lines_per_cpu_s"] / row["fluent-bit"]["lines_per_cpu_s"]
        rows.append(row)
        print(row, flush=True)
    return {"version": version(binary), "flags": build_flags(binary, flags), "rows": rows}


def report(r: dict[str, Any] | None) -> list[str]:
    """The "Side by side with Fluent Bit" section; says so when Fluent Bit was not measured."""
    out = ["## Side by side with Fluent Bit (instant endpoint)", ""]
    if not r:
        return [
            *out,
            "**Fluent Bit was not measured in this run** (no `--fluent-bit PATH` given). "
            "`bench/fluentbit.py` says how it is run.",
            "",
        ]
    out += [
        f"{r['version']}, built with `{r['flags']}`.",
        "",
        "Both over the same tree into the same endpoint: `shipper run --once` with the pods "
        "file, Fluent Bit's tail input (`multiline.parser cri, docker`) and, when enriched, "
        "its kubernetes filter from a preload cache of the same pods, es output with "
        "`Generate_ID` and `Write_Operation create`. Neither parses JSON or joins stack "
        "traces (the pods carry no `shipper.io/*` hints). CPU = user + system of the whole "
        "process, start-up included, until every line had reached the endpoint. Runs "
        f"interleaved, median of {RUNS}. `bench/fluentbit.py`.",
        "",
        "| workload | lines | shipper lines/CPU-s | Fluent Bit lines/CPU-s | ratio "
        "| shipper CPU s | Fluent Bit CPU s | `_bulk` bytes a line, shipper / Fluent Bit "
        "| peak RSS MiB, shipper / Fluent Bit |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in r["rows"]:
        s, f = row["shipper"], row["fluent-bit"]
        out.append(
            f"| {row['case']} | {row['lines']:,} | {s['lines_per_cpu_s']:,.0f} | "
            f"{f['lines_per_cpu_s']:,.0f} | {row['ratio']:.2f} | {s['cpu_s']:.2f} | "
            f"{f['cpu_s']:.2f} | {s['bulk_bytes_per_line']:.0f} / {f['bulk_bytes_per_line']:.0f} | "
            f"{s['peak_rss_mib']:.0f} / {f['peak_rss_mib']:.0f} |"
        )
    out.append("")
    return out
