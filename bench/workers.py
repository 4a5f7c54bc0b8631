"""What a second worker buys on a CPU-bound backlog: lines per wall-second, 1 vs 2 workers.

`shipper run --once` over the same tree into the instant endpoint with `workers: 1` and
`workers: 2`, interleaved, the median of three each. CPU is the whole (the supervisor and
its workers: a waited-for child's time counts in its parent's). A second worker can only
help as far as a second core is free, and the endpoint runs on the same two cores: it is
the Go twin of bench/endpoint.py (bench/endpoint_go, a third of its CPU), and the backlog
is four times the other rows' lines, so the start of three processes weighs less.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import yaml


def measure(
    work: Path, tree: dict[str, Any], root: Path, url: str, run_once: Any, config: Any
) -> dict[str, Any]:
    globs = [str(root / "var/log/containers/*.log")]
    runs: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
    for _ in range(3):
        for workers in (1, 2):
            cfg = config(work, globs, url, tree["pods_file"])
            data = yaml.safe_load(cfg.read_text())
            data["workers"] = workers
            cfg.write_text(yaml.safe_dump(data))
            cpu, wall, _ = run_once(cfg)
            runs[workers].append((cpu, wall))
    lines = tree["records"]
    rows = {
        n: {
            "workers": n,
            "lines": lines,
            "wall_s": statistics.median(w for _, w in r),
            "cpu_s": statistics.median(c for c, _ in r),
        }
        for n, r in runs.items()
    }
    for row in rows.values():
        row["lines_per_wall_s"] = lines / row["wall_s"]
    return {
        "rows": list(rows.values()),
        "speedup": rows[2]["lines_per_wall_s"] / rows[1]["lines_per_wall_s"],
    }


def report(r: dict[str, Any]) -> list[str]:
    out = [
        "## More than one core: `workers: 2` (instant endpoint)",
        "",
        "`shipper run --once` over the mixed workload (four times the lines of the rows "
        "above), enriched, into the Go instant endpoint (bench/endpoint_go), median of three "
        "interleaved runs; CPU of the supervisor and its workers together. `bench/workers.py`.",
        "",
        "| workers | lines | wall s | lines per wall-second | CPU s |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in r["rows"]:
        out.append(
            f"| {row['workers']} | {row['lines']:,} | {row['wall_s']:.1f} | "
            f"{row['lines_per_wall_s']:,.0f} | {row['cpu_s']:.2f} |"
        )
    out += [
        "",
        f"Two workers deliver {r['speedup']:.2f} times the lines per wall-second of one.",
        "",
    ]
    return out
