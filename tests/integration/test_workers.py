"""`workers: 2` against the real Elasticsearch: two processes share the files, one of them
is SIGKILLed mid-run and started again by the supervisor, and every line is there once."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from shipper.shares import PLAN_FILE, Share, read_plan
from tests.support import (
    KubeletDir,
    ShipperProcess,
    assert_exactly_once,
    es_config,
    seqs,
    stream_name,
    wait_for,
    write_lines,
)

pytestmark = pytest.mark.elasticsearch


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def test_a_worker_killed_mid_run_is_started_again_and_nothing_is_lost_or_doubled(
    tmp_path, es_url, es_client
):
    ds = stream_name()
    dirs = [KubeletDir(tmp_path, pod=f"w-{i}") for i in range(8)]
    config = es_config(tmp_path, es_url, ds, buffer={"max_bytes": "1MiB"})
    config["workers"] = 2
    shipper = ShipperProcess(tmp_path, config).start()
    checkpoints = Path(config["checkpoint"]["path"])
    wait_for(lambda: (checkpoints / PLAN_FILE).exists(), 60, "the shares planned")
    share = Share(0, 2, read_plan(checkpoints, 2))
    owners = [share.owner(str(k.directory)) for k in dirs]
    assert sorted(owners) == [0] * 4 + [1] * 4, "the empty directories are spread evenly"
    written = 0
    for round_ in range(20):
        for i, k in enumerate(dirs):
            write_lines(k, i * 1_000_000 + round_ * 500, 500)
            written += 500
        if round_ == 5:
            k.rotate()
    wait_for(lambda: es_client.count(ds) >= written // 4, 300, "documents flowing")
    assert shipper.proc is not None
    workers = wait_for(lambda: len(children(shipper.proc.pid)) == 2 and children(shipper.proc.pid))
    # The first workers are forks of the supervisor (they start with its imports); one
    # started again is a fresh `shipper run --worker i/2`.
    assert all(cmdline(w) == cmdline(shipper.proc.pid) for w in workers)
    os.kill(workers[0], signal.SIGKILL)
    for round_ in range(20, 30):
        for i, k in enumerate(dirs):
            write_lines(k, i * 1_000_000 + round_ * 500, 500)
            written += 500
    wait_for(lambda: es_client.count(ds) >= written, 600, f"{written} documents")
    metrics = wait_for(
        lambda: (m := shipper.metrics()).get("shipper_worker_restarts_total", 0) >= 1 and m,
        120,
        "the restart counted",
    )
    assert metrics["shipper_workers"] == 2
    [again] = [w for w in children(shipper.proc.pid) if w not in workers]
    assert "--worker" in cmdline(again)
    assert shipper.stop() == 0
    expected = [i * 1_000_000 + s for i in range(len(dirs)) for s in range(30 * 500)]
    assert_exactly_once(seqs(es_client, ds), expected)
    pids = {r.get("worker") for r in shipper.log_records() if r.get("message") == "shipper stopped"}
    assert pids == {"0/2", "1/2"}  # both workers stopped cleanly at the end
