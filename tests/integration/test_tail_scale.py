"""Volume: a writer faster than the reader across rotations, and a thousand files at once."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from tests.support import Driver, KubeletDir, cri


def test_150k_lines_with_rotation_every_25k_and_a_slow_reader_lose_and_repeat_nothing(tmp_path):
    k = KubeletDir(tmp_path)
    d = Driver(
        [str(tmp_path / "containers" / "*.log")],
        checkpoint_dir=tmp_path / "cp",
        read_bytes=16 * 1024,
        tail={"chunk_bytes": 16 * 1024},
    )
    total, per_write, rotate_every = 150_000, 1_000, 25_000
    max_backlog = 0
    for start in range(0, total, per_write):
        k.write(b"".join(cri(i) for i in range(start, start + per_write)))
        if (start + per_write) % rotate_every == 0:
            k.rotate()  # older rotations are gzip-compressed and their plain copy deleted
        d.step(max_passes=2)  # about 700 lines a round: slower than the writer
        max_backlog = max(max_backlog, start + per_write - len(d.delivered))
    assert max_backlog > 2 * rotate_every  # the reader really fell behind by rotations
    assert len(list(k.directory.glob("0.log.*.gz"))) >= 4
    d.step()
    d.step()
    counts = Counter(d.messages())
    assert len(counts) == total, f"{total - len(counts)} lines lost"
    assert max(counts.values()) == 1, "a line was delivered twice"


def test_a_thousand_files_within_the_descriptor_cap(tmp_path):
    dirs = [KubeletDir(tmp_path, pod=f"p{i:04d}") for i in range(1000)]
    for i, k in enumerate(dirs):
        k.write(cri(i * 10) + cri(i * 10 + 1))
    d = Driver(
        [str(tmp_path / "containers" / "*.log")],
        checkpoint_dir=tmp_path / "cp",
        tail={"max_open_files": 100},
    )
    peak = 0
    for _ in range(40):
        d.step(max_passes=5)
        peak = max(peak, open_log_files(tmp_path))
    for i, k in enumerate(dirs):
        k.write(cri(i * 10 + 2))
    d.tailer.rescan(d.now)
    d.step()
    assert 50 < peak <= 100  # the cap was reached, never passed
    assert Counter(d.messages()) == Counter(
        f"line {i * 10 + j}" for i in range(1000) for j in range(3)
    )


def open_log_files(under: Path) -> int:
    """Descriptors of this process open on *.log files below `under`, as the kernel sees
    them (servers started by other tests keep their own logs open)."""
    fd_dir = f"/proc/{os.getpid()}/fd"
    prefix = str(under) + os.sep
    count = 0
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
            count += target.startswith(prefix) and target.endswith(".log")
        except FileNotFoundError:
            pass  # the descriptor listdir itself used
    return count
