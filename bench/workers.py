"""What a second worker buys on a CPU-bound backlog: lines per wall-second, 1 vs 2 workers.

`shipper run --once` over the same tree into the instant endpoint with `workers: 1` and
`workers: 2`, interleaved, the median of five each. CPU is the whole (the supervisor and
its workers: a waited-for child's time counts in its parent's). A second worker can only
help as far as a second core is free, and the endpoint runs on the same two cores: it is
the Go twin of bench/endpoint.py (bench/endpoint_go, a third of its CPU), and the backlog
is four times the other rows' lines, so the start of three processes weighs less.

Two rates per run: over the whole run (process start to exit), and while delivering (the
endpoint's first to its last `_bulk` answer), which leaves out the start that one worker
and two have alike (the interpreter, imports, the config, the first batch: 0.3 s).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import yaml

from bench.processes import get_json

PAIRS = 5  # one run with each, in turn; the VM's neighbours move a run by up to 20%


def measure(
    work: Path, tree: dict[str, Any], root: Path, url: str, run_once: Any, config: Any
) -> dict[str, Any]:
    globs = [str(root / "var/log/containers/*.log")]
    lines = tree["records"]
    runs: dict[int, list[tuple[float, float, float]]] = {1: [], 2: []}
    documents = None  # every run delivers the same (a stack trace is one document)
    for _ in range(PAIRS):
        for workers in (1, 2):
            cfg = config(work, globs, url, tree["pods_file"])
            data = yaml.safe_load(cfg.read_text())
            data["workers"] = workers
            cfg.write_text(yaml.safe_dump(data))
            get_json(url + "/_bench/reset", "POST")
            cpu, wall, _ = run_once(cfg)
            stats = get_json(url + "/_bench/stats")
            documents = documents or stats["documents"]
            if stats["documents"] != documents or not documents:
                raise SystemExit(
                    f"workers: {workers}: {stats['documents']} documents, not {documents}"
                )
            runs[workers].append((cpu, wall, stats["last_at"] - stats["first_at"]))
    rows = {
        n: {
            "workers": n,
            "lines": lines,
            "wall_s": statistics.median(w for _, w, _ in r),
            "cpu_s": statistics.median(c for c, _, _ in r),
            "delivering_s": statistics.median(d for _, _, d in r),
        }
        for n, r in runs.items()
    }
    for row in rows.values():
        row["lines_per_wall_s"] = lines / row["wall_s"]
        row["lines_per_delivering_s"] = lines / row["delivering_s"]
    return {
        "rows": list(rows.values()),
        "speedup": rows[2]["lines_per_wall_s"] / rows[1]["lines_per_wall_s"],
        "speedup_delivering": rows[2]["lines_per_delivering_s"] / rows[1]["lines_per_delivering_s"],
        # each pair's own ratio (its one-worker wall over its two-worker wall): the spread
        "pair_speedups": [one[1] / two[1] for one, two in zip(runs[1], runs[2], strict=True)],
    }


def report(r: dict[str, Any]) -> list[str]:
    out = [
        "## More than one core: `workers: 2` (instant endpoint)",
        "",
        "`shipper run --once` over the mixed workload (four times the lines of the rows "
        "above), enriched, into the Go instant endpoint (bench/endpoint_go), median of five "
        "interleaved runs; CPU of the supervisor and its workers together; delivering: from "
        "the endpoint's first `_bulk` answer to its last. `bench/workers.py`.",
        "",
        "| workers | lines | wall s | lines per wall-second | delivering s | lines per "
        "delivering second | CPU s |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in r["rows"]:
        delivering = row.get("delivering_s")
        rate = f"{row['lines_per_delivering_s']:,.0f}" if delivering else "—"
        out.append(
            f"| {row['workers']} | {row['lines']:,} | {row['wall_s']:.1f} | "
            f"{row['lines_per_wall_s']:,.0f} | {f'{delivering:.2f}' if delivering else '—'} | "
            f"{rate} | {row['cpu_s']:.2f} |"
        )
    out += [
        "",
        f"Two workers deliver {r['speedup']:.2f} times the lines per wall-second of one over "
        "the whole run"
        + (
            f", {r['speedup_delivering']:.2f} times while delivering."
            if "speedup_delivering" in r
            else "."
        ),
    ]
    pairs = r.get("pair_speedups")
    if pairs:
        out.append(
            f"Each pair on its own (one worker's wall over two workers' next to it): "
            f"{min(pairs):.2f} to {max(pairs):.2f} times, the spread of this VM."
        )
    out.append("")
    return out
