"""Reload under load: `shipper run` into the real Elasticsearch while files are written at a
steady rate, its config replaced as a ConfigMap update does (a `..data` symlink swap) and
by a file renamed over it, then by an invalid one. Nothing lost or duplicated, each change
visible in what is indexed, the same process throughout."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import (
    KubeletDir,
    ShipperProcess,
    assert_exactly_once,
    cri,
    es_config,
    seqs,
    stream_name,
    wait_for,
)

pytestmark = pytest.mark.elasticsearch

# Each pod's sequence numbers in their own range, so one query tells them apart.
RANGES = {"keep": 0, "noisy": 100_000_000, "second": 200_000_000}
PER_TICK = {"keep": 250, "noisy": 150, "second": 100}  # lines per 50 ms: 10k lines/s
TICK = 0.05


def configmap_update(root: Path, text: str, stamp: str) -> None:
    """What the kubelet does to a ConfigMap volume: the files in a new timestamped
    directory, `..data_tmp -> it` renamed over `..data`, the old directory deleted."""
    new = root / f"..{stamp}"
    new.mkdir()
    (new / "config.yaml").write_text(text)
    old = os.readlink(root / "..data") if (root / "..data").is_symlink() else None
    os.symlink(new.name, root / "..data_tmp")
    os.rename(root / "..data_tmp", root / "..data")
    if not (root / "config.yaml").is_symlink():
        os.symlink("..data/config.yaml", root / "config.yaml")
    if old is not None:
        (root / old / "config.yaml").unlink()
        (root / old).rmdir()


def rename_over(path: Path, text: str) -> None:
    tmp = path.with_name(".config.yaml.new")
    tmp.write_text(text)
    os.rename(tmp, path)


class Writer:
    """Writes each pod's lines at a fixed rate (paced by a schedule, counted exactly)."""

    def __init__(self, dirs: dict[str, KubeletDir]) -> None:
        self.dirs = dirs
        self.written = dict.fromkeys(dirs, 0)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        due = time.monotonic()
        while not self.stopping.is_set():
            with self.lock:
                for name, k in self.dirs.items():
                    start = RANGES[name] + self.written[name]
                    n = PER_TICK[name]
                    k.write(b"".join(cri(i, text=f"{name} {i}") for i in range(start, start + n)))
                    self.written[name] += n
            due += TICK
            self.stopping.wait(max(due - time.monotonic(), 0))

    def count(self, name: str) -> int:
        with self.lock:
            return self.written[name]

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()


def by_pod(values: list[int]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {name: [] for name in RANGES}
    for v in values:
        name = max((n for n, base in RANGES.items() if v >= base), key=lambda n: RANGES[n])
        out[name].append(v - RANGES[name])
    return out


def test_config_replaced_under_load_applies_live_and_loses_nothing(tmp_path, es_url, es_client):
    ds = stream_name()
    # the second pod in a namespace of its own: the first reload limits that namespace
    dirs = {
        name: KubeletDir(tmp_path, pod=name, namespace="slow" if name == "second" else "ns")
        for name in RANGES
    }
    base: dict[str, Any] = es_config(tmp_path, es_url, ds)
    base["buffer"] = {"max_bytes": "4MiB"}  # lines in flight at each reload
    cm = tmp_path / "configmap"
    cm.mkdir()
    configmap_update(cm, yaml.safe_dump(base), "2026_12_01_10_00_00.000000001")
    shipper = ShipperProcess(tmp_path, base)
    shipper.config_path = cm / "config.yaml"
    writer = Writer(dirs)
    shipper.start()
    pid = shipper.proc.pid
    writer.thread.start()

    def reloads(result: str) -> float:
        return shipper.metrics().get(f'shipper_config_reloads_total{{result="{result}"}}', 0)

    wait_for(lambda: es_client.count(ds) >= 20_000, 300, "20000 documents before the reload")

    def throttled() -> float:
        return shipper.metrics().get('shipper_events_throttled_total{namespace="slow"}', 0)

    # 1. A ConfigMap update: the noisy pod excluded, a bulk setting changed, the second
    # pod's namespace limited to 500 lines a second (it writes 2,000).
    first = {**base, "inputs": {**base["inputs"], "exclude": ["noisy_*"]}}
    first["elasticsearch"] = {**base["elasticsearch"], "bulk": {"max_delay": "100ms"}}
    first["limits"] = {"namespaces": {"slow": {"lines_per_second": 500}}}
    assert throttled() == 0
    second_before = es_client.count(ds, {"match": {"message": "second"}})
    configmap_update(cm, yaml.safe_dump(first), "2026_12_01_10_05_00.000000002")
    wait_for(lambda: reloads("applied") == 1, 60, "the ConfigMap update applied")
    noisy_at_reload = writer.count("noisy")  # every noisy line shipped was written before
    wait_for(lambda: throttled() > 0, 60, "the new rate limit dropping the second pod's lines")
    wait_for(lambda: es_client.count(ds) >= 60_000, 300, "documents after the first reload")

    # 2. A new file renamed over the path: the second pod excluded too.
    second = {**first, "inputs": {**first["inputs"], "exclude": ["noisy_*", "second_*"]}}
    rename_over(cm / "config.yaml", yaml.safe_dump(second))
    wait_for(lambda: reloads("applied") == 2, 60, "the renamed-over file applied")
    second_at_reload = writer.count("second")

    # 3. An invalid replacement (without the excludes): refused, the running config stays.
    invalid = {**base, "elasticsearch": {**base["elasticsearch"], "bulk": {"concurrency": 1000}}}
    rename_over(cm / "config.yaml", yaml.safe_dump(invalid))
    wait_for(lambda: reloads("refused") == 1, 60, "the invalid config refused")
    shipper.proc.send_signal(signal.SIGHUP)  # reads the (still invalid) file again, now
    wait_for(lambda: reloads("refused") == 2, 60, "SIGHUP: the invalid config refused again")
    keep_at_refusal = writer.count("keep")
    wait_for(
        lambda: es_client.count(ds, {"match": {"message": "keep"}}) >= keep_at_refusal,
        300,
        "the keep pod's lines shipped on after the refusal",
    )
    writer.stop()
    written = dict(writer.written)
    wait_for(
        lambda: es_client.count(ds, {"match": {"message": "keep"}}) >= written["keep"],
        300,
        "every line of the pod still included",
    )
    assert shipper.running() and shipper.proc.pid == pid, "no restart"
    metrics = shipper.metrics()
    assert shipper.stop() == 0

    got = by_pod(seqs(es_client, ds))
    assert_exactly_once(got["keep"], range(written["keep"]))
    # Excluded pods: what was read before their reload, once each, and nothing after it.
    assert len(got["noisy"]) == len(set(got["noisy"])) > 0
    assert max(got["noisy"]) < noisy_at_reload < written["noisy"]
    assert sorted(got["noisy"]) == list(range(len(got["noisy"]))), "a prefix, no gaps"
    # The second pod: what was indexed before its limit came, then lines under the limit
    # (the others dropped, counted), nothing after its exclusion.
    assert len(got["second"]) == len(set(got["second"])) > second_before
    assert max(got["second"]) < second_at_reload < written["second"]
    assert set(range(second_before)) <= set(got["second"]), "a prefix before the limit"
    assert len(got["second"]) < max(got["second"]) + 1, "lines dropped under the limit"
    dropped = metrics.get('shipper_events_throttled_total{namespace="slow"}', 0)
    assert len(got["second"]) + dropped <= second_at_reload
    assert metrics.get("shipper_documents_duplicate_total", 0) == 0

    records = shipper.log_records()
    applied = [r for r in records if r.get("message", "").startswith("config reloaded")]
    assert len(applied) == 2, "one line per reload"
    assert applied[0]["changed"] == [
        "inputs.exclude",
        "elasticsearch.bulk.max_delay",
        "limits.namespaces",
    ]
    assert applied[1]["changed"] == ["inputs.exclude"]
    refusals = [r for r in records if r.get("message", "").startswith("config reload refused")]
    assert [r["trigger"] for r in refusals] == ["file", "sighup"]
    refused = refusals[0]
    assert "elasticsearch.bulk.concurrency" in refused["error"]
    assert "at most 64" in refused["error"]
    print(f"written {written}; indexed keep {len(got['keep'])}, noisy {len(got['noisy'])}, ")
    print(f"second {len(got['second'])}; reload lines: {applied} {refused}")
