"""Realistic container logs for the benchmarks.

`mixed_tree` writes a kubelet tree of many pods in both runtime formats: plain access-log
lines, JSON application logs and Java stack traces, lines around 250 bytes on average,
with the `kubectl get pods -o json` dump that enrichment reads. `cri_tree` writes the
uniform case the targets name: 250-byte CRI lines. `RateWriter` appends timestamped lines
to live files at a fixed rate (for the delay measurements); `StormWriter` rotates many
files many times a second.

    python -m bench.loadgen DIR [--lines N] [--pods N]
"""

from __future__ import annotations

import argparse
import gzip
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.parse import cri_block
from shipper.samples import Container, write_tree


def mixed_containers(pods: int) -> list[Container]:
    """`pods` pods over a few namespaces; 1 in 2 plain, 3 in 10 JSON, 1 in 5 Java; 1 in 5
    on the docker json-file runtime (spread over the kinds), the rest CRI.

    The parser and multiline hints are annotations in the pods file; `bench.fluentbit`
    strips them for its side-by-side runs, as Fluent Bit does no such work."""
    out = []
    for i in range(pods):
        kind = (
            "plain",
            "json",
            "plain",
            "java",
            "json",
            "plain",
            "plain",
            "java",
            "json",
            "plain",
        )[i % 10]
        namespace = ("shop", "payments", "search", "batch")[i % 4]
        app = f"{kind}-svc{i % 7}"
        annotations = {"shipper.io/parser": "json"} if kind == "json" else {}
        if kind == "java":
            annotations = {"shipper.io/multiline": "java"}
        out.append(
            Container(
                namespace,
                f"{app}-5f8d7c9b4-{i:05d}",
                app,
                "docker" if i % 5 == i // 5 % 5 else "cri",
                kind,
                annotations=annotations,
                labels={
                    "app.kubernetes.io/name": app,
                    "app.kubernetes.io/part-of": namespace,
                    "pod-template-hash": "5f8d7c9b4",
                },
                owner=("ReplicaSet", f"{app}-5f8d7c9b4"),
            )
        )
    return out


def mixed_tree(root: Path, lines: int, pods: int = 50) -> dict[str, Any]:
    """About `lines` records (stack traces add a few) spread over `pods` pods."""
    return write_tree(
        root,
        lines_per_container=max(1, lines // pods),
        containers=mixed_containers(pods),
        words=(12, 36),
    )


def cri_tree(root: Path, lines: int, pods: int = 10) -> dict[str, Any]:
    """250-byte CRI lines: the uniform case, with a pods file for enrichment."""
    containers = [
        Container(
            "shop",
            f"web-5f8d7c9b4-{i:05d}",
            "web",
            "cri",
            "plain",
            labels={"app.kubernetes.io/name": "web", "pod-template-hash": "5f8d7c9b4"},
            owner=("ReplicaSet", "web-5f8d7c9b4"),
        )
        for i in range(pods)
    ]
    manifest = write_tree(root, lines_per_container=1, containers=containers)
    block = cri_block(lines // pods)
    for c in manifest["containers"]:
        (root / "var/log/pods" / c.pod_dir / c.name / "0.log").write_bytes(block)
    manifest["records"] = block.count(b"\n") * pods
    return manifest


class RateWriter:
    """Appends CRI lines stamped with the time of writing to `files`, `rate` lines a second
    in total, in 100 ticks a second. Each line carries a sequence number."""

    def __init__(self, files: list[Path], rate: int, length: int = 250) -> None:
        self.files = files
        self.rate = rate
        self.length = length
        self.written = 0

    def run(self, seconds: float) -> int:
        handles = [open(f, "ab", buffering=0) for f in self.files]  # noqa: SIM115
        try:
            start = time.monotonic()
            tick = 0
            while (now := time.monotonic()) - start < seconds:
                due = int((now - start) * self.rate)
                if due > self.written:
                    self._write(handles, due - self.written)
                tick += 1
                next_tick = start + tick / 100
                pause = next_tick - time.monotonic()
                if pause > 0:
                    time.sleep(pause)  # the generator's pace
        finally:
            for h in handles:
                h.close()
        return self.written

    def _write(self, handles: list[Any], count: int) -> None:
        per_file: list[list[bytes]] = [[] for _ in handles]
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"
        head = f"{stamp} stdout F ".encode()
        for _ in range(count):
            seq = self.written
            self.written += 1
            text = f"seq {seq} GET /api/v1/orders 200 latency_ms=12 user=42 cache miss ".encode()
            pad = max(0, self.length - 1 - len(head) - len(text))
            per_file[seq % len(handles)].append(head + text + b"x" * pad + b"\n")
        for handle, lines in zip(handles, per_file, strict=True):
            if lines:
                handle.write(b"".join(lines))


class StormWriter:
    """`files` kubelet-style container logs, each getting `per_round` lines every
    `pace` seconds and then rotated the way the kubelet and containerd do it: renamed to
    `0.log.<stamp>`, a new empty `0.log`, the previous rotation gzip-compressed (written to
    `.tmp`, renamed to `.gz`, the plain one removed). Old rotations are kept."""

    def __init__(self, lives: list[Path], per_round: int = 10, pace: float = 0.1) -> None:
        self.lives = lives
        self.per_round = per_round
        self.pace = pace
        self.written = 0
        self.rotations = 0
        self._plain: list[Path | None] = [None] * len(lives)
        self._count = [0] * len(lives)

    def run(self, seconds: float) -> int:
        start = time.monotonic()
        rounds = 0
        while time.monotonic() - start < seconds:
            for i, live in enumerate(self.lives):
                self._round(i, live)
            rounds += 1
            pause = start + rounds * self.pace - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # the generator's pace
        return self.written

    def _round(self, i: int, live: Path) -> None:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"
        lines = []
        for _ in range(self.per_round):
            lines.append(f"{stamp} stdout F storm seq {self.written} GET /healthz 200\n".encode())
            self.written += 1
        with open(live, "ab") as fh:
            fh.write(b"".join(lines))
        self.rotations += 1
        self._count[i] += 1
        # The kubelet's stamp is YYYYMMDD-HHMMSS; a counter in its place keeps names unique.
        rotated = live.with_name(f"0.log.20240301-{self._count[i]:06d}")
        os.rename(live, rotated)
        live.touch()
        previous, self._plain[i] = self._plain[i], rotated
        if previous is not None:
            tmp = previous.with_name(previous.name + ".tmp")
            with open(previous, "rb") as src, gzip.open(tmp, "wb") as dst:
                dst.write(src.read())
            os.rename(tmp, previous.with_name(previous.name + ".gz"))
            previous.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description="write a benchmark log tree")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--lines", type=int, default=500_000)
    parser.add_argument("--pods", type=int, default=50)
    args = parser.parse_args()
    manifest = mixed_tree(args.directory, args.lines, args.pods)
    total = sum(
        f.stat().st_size for f in (args.directory / "var/log/pods").rglob("*.log") if f.is_file()
    )
    print(
        f"{manifest['records']} records, {total / manifest['records']:.0f} bytes a line on "
        f"average, pods file {manifest['pods_file']}"
    )


if __name__ == "__main__":
    main()
