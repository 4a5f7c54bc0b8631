"""`shipper tail` as operators run it: a real process over a real kubelet-style tree."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson

from shipper.samples import write_tree
from tests.support import KubeletDir, cri, wait_for

SHIPPER = [sys.executable, "-m", "shipper"]


def run_tail(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*SHIPPER, "tail", *args], capture_output=True, timeout=120, check=False)


def test_help_works_for_every_command():
    for args in (
        ["--help"],
        ["tail", "--help"],
        ["run", "--help"],
        ["checkpoints", "--help"],
        ["check-config", "--help"],
    ):
        out = subprocess.run([*SHIPPER, *args], capture_output=True, timeout=60, check=True)
        assert b"Usage: " in out.stdout
        assert b"Example" in out.stdout


def test_json_output_over_a_generated_tree_prints_every_record_in_file_order(tmp_path):
    manifest = write_tree(tmp_path, lines_per_container=40)
    result = run_tail("-o", "json", str(tmp_path / "var/log/containers"))
    assert result.returncode == 0, result.stderr
    docs = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert len(docs) == manifest["records"]
    per_file: dict[str, list[int]] = {}
    for doc in docs:
        per_file.setdefault(doc["log"]["file"]["path"], []).append(doc["log"]["offset"])
        assert set(doc) >= {"@timestamp", "message", "stream", "log", "kubernetes", "container"}
        assert doc["@timestamp"].endswith("Z")
    for offsets in per_file.values():
        assert offsets == sorted(offsets)
    assert list(per_file) == sorted(per_file)  # files one after the other, in name order
    counts = Counter(
        f"{d['kubernetes']['namespace']}/{d['kubernetes']['pod']['name']}/"
        f"{d['kubernetes']['container']['name']}"
        for d in docs
    )
    assert counts == Counter(manifest["per_container"])


def test_filters_select_namespace_pod_container_and_grep(tmp_path):
    write_tree(tmp_path, lines_per_container=60)
    logs = str(tmp_path / "var/log/containers")
    result = run_tail("-o", "json", "-n", "shop", "-p", "orders-*", "-g", "Caused by", logs)
    docs = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert docs, result.stderr
    assert {d["kubernetes"]["pod"]["name"] for d in docs} == {"orders-0"}
    assert all("Caused by" in d["message"] for d in docs)
    result = run_tail("-o", "json", "-c", "coredns", logs)
    names = {orjson.loads(x)["kubernetes"]["container"]["name"] for x in result.stdout.splitlines()}
    assert names == {"coredns"}


def test_multiline_option_joins_stack_traces(tmp_path):
    write_tree(tmp_path, lines_per_container=60)
    result = run_tail(
        "-o", "json", "-p", "orders-0", "--multiline", "java", str(tmp_path / "var/log/containers")
    )
    traces = [
        d
        for d in map(orjson.loads, result.stdout.splitlines())
        if "multiline" in d["log"].get("flags", [])
    ]
    assert len(traces) == 1
    assert traces[0]["message"].startswith("java.lang.IllegalStateException")
    assert "\tat com.example.shop.db.Pool.acquire" in traces[0]["message"]


def test_pretty_output_is_one_line_per_record(tmp_path):
    write_tree(tmp_path, lines_per_container=5)
    result = run_tail("-o", "pretty", "-n", "kube-system", str(tmp_path / "var/log/containers"))
    lines = result.stdout.decode().splitlines()
    assert len(lines) == 5
    assert all("kube-system/coredns-5d78c9869d-abcde[coredns]" in line for line in lines)
    assert "\x1b[" not in result.stdout.decode()  # no colour when not on a terminal


def test_bad_grep_is_a_usage_error(tmp_path):
    result = run_tail("--grep", "(", str(tmp_path))
    assert result.returncode == 2
    assert b"--grep" in result.stderr


def test_follow_prints_every_line_once_through_rotations_new_and_vanishing_containers(tmp_path):
    first = KubeletDir(tmp_path, pod="first")
    leaving = KubeletDir(tmp_path, pod="leaving")
    first.write(b"".join(cri(i) for i in range(0, 100)))
    leaving.write(b"".join(cri(i) for i in range(10_000, 10_050)))
    out = open(tmp_path / "out.ndjson", "wb")  # noqa: SIM115 - the process writes to it
    proc = subprocess.Popen(
        [*SHIPPER, "tail", "-f", "-o", "json", str(tmp_path / "containers")],
        stdout=out,
        stderr=subprocess.PIPE,
    )

    def printed() -> list[dict]:
        data = (tmp_path / "out.ndjson").read_bytes()
        return [orjson.loads(x) for x in data.splitlines() if x.endswith(b"}")]

    try:
        wait_for(lambda: len(printed()) == 150, what="the first 150 lines")
        first.write(b"".join(cri(i) for i in range(100, 200)))
        first.rotate()
        first.write(b"".join(cri(i) for i in range(200, 300)))
        leaving.write(b"".join(cri(i) for i in range(10_050, 10_060)))
        leaving.link.unlink()  # its last line is written, then the link goes
        later = KubeletDir(tmp_path, pod="later")
        later.write(b"".join(cri(i) for i in range(20_000, 20_100)))
        first.rotate()
        first.write(b"".join(cri(i) for i in range(300, 350)))
        wait_for(lambda: len(printed()) >= 510, what="all 510 lines")
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
        out.close()
    assert code == 0, proc.stderr.read() if proc.stderr else ""
    counts = Counter(d["message"] for d in printed())
    want = (
        [f"line {i}" for i in range(350)]
        + [f"line {i}" for i in range(10_000, 10_060)]
        + [f"line {i}" for i in range(20_000, 20_100)]
    )
    assert counts == Counter(want)


def test_tail_exits_zero_on_sigterm(tmp_path):
    k = KubeletDir(tmp_path)
    k.write(cri(1))
    proc = subprocess.Popen(
        [*SHIPPER, "tail", "-f", "-o", "json", str(tmp_path / "containers")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert orjson.loads(first)["message"] == "line 1"
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_checkpoints_command_lists_offsets_and_resets(tmp_path):
    tree = tmp_path / "tree"
    write_tree(tree, lines_per_container=10)
    config = tmp_path / "config.yaml"
    config.write_text(
        f"inputs:\n  paths: ['{tree}/var/log/containers/*.log']\n"
        f"checkpoint:\n  path: {tmp_path / 'cp'}\n"
        "kubernetes:\n  enabled: false\nmetrics:\n  listen: ''\n"
    )
    ran = subprocess.run(
        [*SHIPPER, "run", "--once", "--config", str(config)],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    listed = subprocess.run(
        [*SHIPPER, "checkpoints", "--config", str(config)],
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout.decode()
    rows = [line.split() for line in listed.splitlines()[1:]]
    assert len(rows) == 6
    assert all(row[1] == row[2] and row[3] == "0" for row in rows)  # offset == size, no lag
    path = rows[0][0]
    subprocess.run(
        [*SHIPPER, "checkpoints", "--config", str(config), "--reset", path],
        capture_output=True,
        timeout=60,
        check=True,
    )
    listed = subprocess.run(
        [*SHIPPER, "checkpoints", "--config", str(config)],
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout.decode()
    row = next(line.split() for line in listed.splitlines() if line.startswith(path))
    assert row[1] == "0" and row[3] == row[2]
    assert Path(path).exists()
