"""Fault injection against real processes and a real Elasticsearch.

Every test writes numbered lines ("seq N"), breaks something while shipper runs, and then
counts what Elasticsearch holds: every number exactly once, nothing else. CI runs the short
version; SHIPPER_CHAOS=full runs the sizes of the issue (500k lines killed every few
seconds, a minutes-long outage, a minute of rotation storm): `make chaos`.
"""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import pytest

from tests.harness.elasticsearch import EsTestClient
from tests.support import (
    KubeletDir,
    ShipperProcess,
    assert_exactly_once,
    cri,
    es_config,
    seqs,
    stream_name,
    wait_for,
    wait_for_all,
    write_lines,
)

pytestmark = [pytest.mark.chaos, pytest.mark.elasticsearch]

FULL = os.environ.get("SHIPPER_CHAOS") == "full"


def scale(short: int, full: int) -> int:
    return full if FULL else short


class Writer(threading.Thread):
    """Writes numbered lines to some containers in rounds, rotating each container's log
    every `rotate_every` lines the way the kubelet does (rename, gzip older rotations)."""

    def __init__(
        self,
        dirs: list[KubeletDir],
        total: int,
        per_round: int,
        rotate_every: int,
        pace: float = 0.0,
        first: int = 0,
    ) -> None:
        super().__init__(daemon=True)
        self.dirs = dirs
        self.total = first + total
        self.per_round = per_round
        self.rotate_every = rotate_every
        self.pace = pace
        self.written = first
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            since_rotation = [0] * len(self.dirs)
            next_round = time.monotonic()
            while self.written < self.total:
                for i, k in enumerate(self.dirs):
                    count = min(self.per_round, self.total - self.written)
                    if count <= 0:
                        break
                    write_lines(k, self.written, count)
                    self.written += count
                    since_rotation[i] += count
                    if since_rotation[i] >= self.rotate_every:
                        k.rotate()
                        since_rotation[i] = 0
                if self.pace:
                    next_round += self.pace
                    pause = next_round - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)  # the workload's rate, not a wait for a condition
        except BaseException as exc:  # surfaced by finish()
            self.error = exc

    def finish(self, timeout: float = 600) -> int:
        self.join(timeout)
        assert not self.is_alive(), "writer did not finish"
        if self.error is not None:
            raise self.error
        return self.written


def first_lines(dirs: list[KubeletDir], client: EsTestClient, ds: str) -> int:
    """Write line i to directory i and wait until all are indexed: shipper has done its
    first scan (rotations older than that are history it does not read) and follows every
    file. Returns the number of lines written (the next sequence number)."""
    for i, k in enumerate(dirs):
        write_lines(k, i, 1)
    wait_for(lambda: client.count(ds) >= len(dirs), 120, "the first line of every file")
    return len(dirs)


def test_sigkill_every_few_seconds_during_a_run_with_rotations(tmp_path, es_url, es_client):
    total = scale(100_000, 500_000)
    ds = stream_name()
    dirs = [KubeletDir(tmp_path, pod=f"kill-{i}") for i in range(4)]
    # 400 lines a round: 4k lines/s (short, ~25 s) or 10k lines/s (full, ~50 s).
    config = es_config(tmp_path, es_url, ds)
    first = ShipperProcess(tmp_path, config).start()
    writer = Writer(
        dirs,
        total,
        per_round=100,
        rotate_every=scale(5_000, 25_000),
        pace=scale(100, 40) / 1000,
        first=first_lines(dirs, es_client, ds),
    )
    first.kill()
    rng = random.Random(7)
    kills = 1
    writer.start()
    while writer.is_alive():
        shipper = ShipperProcess(tmp_path, config).start()
        before = es_client.count(ds)
        step = rng.randint(2_000, 12_000)
        # Killed once it has made some progress: every few seconds at these rates.
        wait_for(
            lambda b=before, s=step: es_client.count(ds) >= b + s or not writer.is_alive(),
            300,
            "progress before the next kill",
        )
        shipper.kill()
        kills += 1
    written = writer.finish()
    final = ShipperProcess(tmp_path, config).start()
    wait_for_all(es_client, ds, range(written), 600)
    final.metrics_port()  # up and running (its predecessors may have shipped everything)
    assert final.stop() == 0
    assert kills >= scale(5, 20), f"only {kills} kills"
    assert_exactly_once(seqs(es_client, ds), range(written))
    print(f"{written} lines, {kills} SIGKILLs, {sum(d.rotations for d in dirs)} rotations")


def test_elasticsearch_killed_and_restarted_twice(tmp_path, es_server_factory):
    server = es_server_factory()
    client = EsTestClient(server.url)
    ds = stream_name()
    dirs = [KubeletDir(tmp_path, pod=f"es-{i}") for i in range(4)]
    total = scale(150_000, 600_000)
    config = es_config(tmp_path, server.url, ds, buffer={"max_bytes": "16MiB"})
    shipper = ShipperProcess(tmp_path, config).start()
    first = first_lines(dirs, client, ds)
    writer = Writer(dirs, total, per_round=100, rotate_every=20_000, pace=0.04, first=first)
    writer.start()  # 10k lines/s
    for outage in range(2):
        target = (outage + 1) * total // 3
        wait_for(lambda t=target: client.count(ds) >= t // 2, 300, "documents flowing")
        server.kill()
        down_at = writer.written
        wait_for(
            lambda d=down_at: writer.written >= min(d + total // 10, writer.total),
            300,
            "writing while down",
        )
        wait_for(lambda: shipper.metrics().get("shipper_sink_up", 1) == 0, 120, "sink seen down")
        shipper.sample_rss()
        server.start()
    written = writer.finish()
    wait_for_all(client, ds, range(written), 600)
    shipper.sample_rss()
    assert shipper.stop() == 0
    assert_exactly_once(seqs(client, ds), range(written))
    print(f"{written} lines, peak RSS {shipper.peak_rss_kib / 1024:.1f} MiB")
    assert shipper.peak_rss_kib < 200 * 1024


def test_rotation_storm_100_files_every_100ms(tmp_path, es_url, es_client):
    seconds = scale(10, 60)
    ds = stream_name()
    dirs = [KubeletDir(tmp_path, pod=f"storm-{i}") for i in range(100)]
    # 10 lines per file per 100 ms round, then every file rotates: 10k lines/s in total.
    shipper = ShipperProcess(tmp_path, es_config(tmp_path, es_url, ds)).start()
    first = first_lines(dirs, es_client, ds)
    writer = Writer(dirs, seconds * 10_000, per_round=10, rotate_every=10, pace=0.1, first=first)
    writer.start()
    written = writer.finish()
    wait_for_all(es_client, ds, range(written), 600)
    metrics = shipper.metrics()
    assert shipper.stop() == 0
    assert_exactly_once(seqs(es_client, ds), range(written))
    rotations = sum(d.rotations for d in dirs)
    read = metrics["shipper_lines_read_total"]
    again = metrics.get("shipper_documents_duplicate_total", 0)
    print(f"{written} lines, {rotations} rotations; {read:.0f} read, {again:.0f} answered 409")


def test_rotations_under_two_naming_schemes_through_a_sigkill_and_an_outage(
    tmp_path, es_server_factory
):
    """Rotation by rename every 100-300 ms (older rotations compressed, the plain copy
    removed), half the containers under kubelet names and half under numbered ones;
    shipper SIGKILLed once; Elasticsearch down long enough that reading pauses on a full
    buffer while the rotations go on. Every line exactly once, nothing given up."""
    server = es_server_factory()
    client = EsTestClient(server.url)
    ds = stream_name()
    n = scale(20, 60)
    dirs = [
        KubeletDir(tmp_path, pod=f"names-{i}", naming="kubelet" if i % 2 else "numeric")
        for i in range(n)
    ]
    config = es_config(tmp_path, server.url, ds, buffer={"max_bytes": "1MiB"})
    shipper = ShipperProcess(tmp_path, config).start()
    first = first_lines(dirs, client, ds)
    rng = random.Random(11)
    writers = [
        Writer(
            [k],
            scale(6_000, 9_000),
            per_round=10,
            rotate_every=rng.choice((10, 20, 30)),
            pace=0.1,
            first=first + i * 10_000,
        )
        for i, k in enumerate(dirs)
    ]
    for w in writers:
        w.start()
    wait_for(lambda: client.count(ds) >= first + 5 * n * 100, 300, "lines flowing")
    shipper.kill()
    shipper = ShipperProcess(tmp_path, config).start()
    wait_for(lambda: shipper.metrics().get("shipper_sink_up", 0) == 1, 120, "shipper back")
    server.kill()
    down = time.monotonic()
    wait_for(
        lambda: shipper.metrics().get("shipper_in_flight_bytes", 0) >= 1 << 20,
        120,
        "reading paused on a full buffer",
    )
    wait_for(lambda: time.monotonic() - down >= 30, 60, "an outage of 30 s")
    server.start()
    written = [w.finish() for w in writers]
    expected = list(range(first)) + [
        s for i, w in enumerate(writers) for s in range(first + i * 10_000, written[i])
    ]
    wait_for_all(client, ds, expected, 900)
    metrics = shipper.metrics()
    assert shipper.stop() == 0
    assert_exactly_once(seqs(client, ds), expected)
    given_up = {k: v for k, v in metrics.items() if k.startswith("shipper_bytes_given_up")}
    assert sum(given_up.values()) == 0, given_up  # nothing was removed before it was read
    rotations = sum(d.rotations for d in dirs)
    print(f"{len(expected)} lines, {rotations} rotations under two naming schemes")


def test_bad_input_is_flagged_or_dead_lettered_never_lost(tmp_path, es_url, es_client):
    ds = stream_name()
    dead = f"shipper-dl-{ds[5:17]}"
    good = KubeletDir(tmp_path, pod="bad-cri")
    docker = KubeletDir(tmp_path, pod="bad-docker", container_id="d0cce7" + "1" * 58)
    lines: list[bytes] = []
    expected_good: list[int] = []
    rng = random.Random(3)
    for seq in range(2_000):
        kind = seq % 10
        if kind == 1:
            lines.append(b"not a cri line at all seq %d\n" % seq)
        elif kind == 3:
            lines.append(bytes(rng.randrange(256) for _ in range(80)).replace(b"\n", b"") + b"\n")
        elif kind == 5:
            lines.append(cri(seq, text="caf\xe9 invalid utf-8 seq").replace(b"\xc3\xa9", b"\xe9"))
        elif kind == 7:
            lines.append(b"1969-07-20T20:17:40Z stdout F rejected date seq %d\n" % seq)
        else:
            lines.append(cri(seq, text=f"seq {seq}"))
            expected_good.append(seq)
    lines.insert(1000, cri(10**9, text="y" * (10 << 20) + " seq 1000000000"))
    good.write(b"".join(lines))
    docker_lines = [
        b'{"log":"seq 1\\n","stream":"stdout","time":"2024-03-01T10:00:00.000000001Z"}\n',
        b'{"log":"broken json seq 2\n',
        b'{"log":"bytes \xff\xfe seq 3\\n","stream":"stdout","time":"2024-03-01T10:00:00Z"}\n',
        b"\x00\x01\x02 binary garbage\n",
        b'{"log":"seq 5\\n","stream":"stdout","time":"2024-03-01T10:00:01Z"}\n',
    ]
    docker.write(b"".join(docker_lines))
    config = es_config(tmp_path, es_url, ds)
    config["elasticsearch"]["dead_letter_index"] = dead
    shipper = ShipperProcess(tmp_path, config, once=True).start()
    assert shipper.wait(600) == 0, shipper.logs()[-3000:]
    summary = shipper.summary()
    written = len(lines) + len(docker_lines)
    indexed = es_client.count(ds)
    letters = es_client.count(dead)
    assert indexed + letters == written, (indexed, letters, written, summary)
    assert letters == 200  # the pre-1970 timestamps: date_nanos refuses them
    flagged = es_client.count(ds, {"exists": {"field": "log.flags"}})
    assert flagged >= 200 + 200 + 1  # unparsable, binary, the 10 MB line at least
    big = es_client.search(ds, {"query": {"term": {"log.flags": "truncated"}}, "size": 1})
    assert big["hits"]["hits"], "the 10 MB line was not kept (truncated)"
    good_seqs = [
        int(m.split()[-1])
        for m in (
            h["_source"]["message"]
            for h in es_client.search(
                ds,
                {
                    "size": 10_000,
                    "query": {"bool": {"must_not": {"exists": {"field": "log.flags"}}}},
                    "_source": ["message"],
                },
            )["hits"]["hits"]
        )
        if m.startswith("seq ")
    ]
    assert set(expected_good) <= set(good_seqs)
    print(f"{written} lines: {indexed} indexed ({flagged} flagged), {letters} dead letters")


def test_long_outage_at_speed_memory_flat_and_reading_resumes(tmp_path, es_server_factory):
    outage = scale(45, 300)
    server = es_server_factory()
    client = EsTestClient(server.url)
    ds = stream_name()
    dirs = [KubeletDir(tmp_path, pod=f"long-{i}") for i in range(8)]
    config = es_config(tmp_path, server.url, ds, buffer={"max_bytes": "16MiB"})
    shipper = ShipperProcess(tmp_path, config).start()
    first = first_lines(dirs, client, ds)
    rate = 20_000
    writer = Writer(
        dirs, rate * (outage + 10), per_round=50, rotate_every=50_000, pace=0.02, first=first
    )
    writer.start()
    server.stop()
    down = time.monotonic()
    samples: list[tuple[float, int]] = []

    def outage_over() -> bool:
        samples.append((time.monotonic() - down, _rss_now(shipper)))
        return time.monotonic() - down >= outage

    wait_for(outage_over, outage + 60, "the outage to last")
    server.start()
    up = time.monotonic()
    count_at_up = client.count(ds)
    wait_for(lambda: client.count(ds) > count_at_up, 120, "indexing to resume")
    resumed = time.monotonic() - up
    written = writer.finish(900)
    wait_for_all(client, ds, range(written), 900)
    assert shipper.stop() == 0
    assert_exactly_once(seqs(client, ds), range(written))
    early = max(rss for t, rss in samples if t <= 15)
    late = max(rss for t, rss in samples if t >= outage - 15)
    print(
        f"{written} lines; RSS {early / 1024:.1f} MiB 15 s into a {outage} s outage, "
        f"{late / 1024:.1f} MiB at its end; indexing resumed {resumed:.1f} s after recovery"
    )
    assert late - early < 32 * 1024, "memory grew during the outage"


def _rss_now(shipper: ShipperProcess) -> int:
    assert shipper.proc is not None
    try:
        for line in Path(f"/proc/{shipper.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
