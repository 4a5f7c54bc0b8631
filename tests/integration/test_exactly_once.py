"""Exactly once where a 409 alone cannot tell: re-sends after a rollover of the data stream.

A deterministic `_id` with `op_type: create` is refused as a duplicate only by the backing
index that holds the first copy. These tests roll the data stream over between the first
attempt and the re-send (after a SIGKILL, after a request timed out) and count every
document in the real server: each line exactly once, in whichever backing index.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.harness.elasticsearch import EsTestClient
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


def backing_indices(client: EsTestClient, ds: str) -> list[str]:
    status, mapping = client.request("GET", f"/{ds}/_mapping")
    assert status == 200, mapping
    return sorted(mapping)


def rollover(client: EsTestClient, ds: str) -> None:
    status, answer = client.request("POST", f"/{ds}/_rollover")
    assert status == 200 and answer["rolled_over"], answer


def rollover_between_kills(tmp: Path, url: str, client: EsTestClient, per_file: int) -> None:
    """`shipper run --once` SIGKILLed three times with a rollover after each kill, then a
    final run: every line once (the issue's scenario found 43,753 extra copies of 300k)."""
    ds = stream_name()
    dirs = [KubeletDir(tmp, pod=f"roll-{i}") for i in range(4)]
    for i, k in enumerate(dirs):
        write_lines(k, i * per_file, per_file)
    total = 4 * per_file
    # Small requests, several in flight: much sent and not yet committed at each kill.
    config = es_config(tmp, url, ds)
    config["elasticsearch"]["bulk"].update(max_docs=1000, concurrency=4)
    kills = 0
    for _ in range(3):
        before = client.count(ds)
        run = ShipperProcess(tmp, config, once=True).start()
        wait_for(
            lambda b=before, r=run: client.count(ds) >= b + total // 8 or not r.running(),
            300,
            "progress before the kill",
        )
        if run.running():
            run.kill()
            kills += 1
        rollover(client, ds)
    final = ShipperProcess(tmp, config, once=True).start()
    assert final.wait(600) == 0, final.logs()[-3000:]
    assert kills == 3, f"only {kills} kills: the runs finished before they could be killed"
    assert len(backing_indices(client, ds)) == 4
    assert_exactly_once(
        seqs(client, ds), [i * per_file + j for i in range(4) for j in range(per_file)]
    )
    summary = final.summary()
    print(f"{total} lines, {kills} kills, final run: {summary}")


def test_rollover_between_sigkills_gives_exactly_once(tmp_path, es_url, es_client):
    rollover_between_kills(tmp_path, es_url, es_client, per_file=25_000)


def test_bulk_answered_after_its_timeout_and_retried_across_a_rollover_is_indexed_once(
    tmp_path, es_url, es_client, hold_proxy_factory
):
    ds = stream_name()
    proxy = hold_proxy_factory(es_url)
    k = KubeletDir(tmp_path)
    write_lines(k, 0, 3_000)
    config = es_config(tmp_path, proxy.url, ds)
    config["elasticsearch"]["bulk"].update(timeout="2s", max_docs=1000)
    shipper = ShipperProcess(tmp_path, config).start()
    wait_for(lambda: es_client.count(ds) >= 3_000, 120, "the first 3000 documents")
    proxy.hold_next_bulk()  # executed by Elasticsearch, its answer never delivered
    write_lines(k, 3_000, 1_000)
    wait_for(lambda: proxy.held_bulks == 1, 60, "a bulk request held at the proxy")
    wait_for(lambda: es_client.count(ds) >= 4_000, 60, "the held request indexed")
    rollover(es_client, ds)  # the retry's write index is a new one
    # No answer within bulk.timeout: shipper gives the request up as uncertain and retries.
    wait_for(lambda: "unreachable" in shipper.logs(), 60, "the request to time out")
    proxy.release()
    wait_for(
        lambda: (
            shipper.metrics().get('shipper_documents_checked_total{result="found"}', 0) >= 1_000
        ),
        120,
        "the retried documents found in the old backing index",
    )
    write_lines(k, 4_000, 1_000)
    wait_for(lambda: es_client.count(ds) >= 5_000, 120, "5000 documents")
    assert shipper.stop() == 0
    assert len(backing_indices(es_client, ds)) == 2
    assert_exactly_once(seqs(es_client, ds), range(5_000))


def test_write_block_for_20s_is_retried_with_no_dead_letters_and_readiness_tells(
    tmp_path, es_url, es_client
):
    ds = stream_name()
    dead = f"shipper-dl-{ds[5:17]}"
    k = KubeletDir(tmp_path)
    config = es_config(tmp_path, es_url, ds)
    config["elasticsearch"].update(dead_letter_index=dead, unready_after="5s")
    shipper = ShipperProcess(tmp_path, config).start()
    write_lines(k, 0, 1_000)
    wait_for(lambda: es_client.count(ds) >= 1_000, 120, "the first documents")
    port = shipper.metrics_port()
    status, answer = es_client.request("PUT", f"/{ds}/_settings", {"index.blocks.write": True})
    assert status == 200, answer
    blocked_at = time.monotonic()
    written = 1_000
    while time.monotonic() - blocked_at < 20:  # the block lasts 20 s while lines keep coming
        write_lines(k, written, 100)
        written += 100
        time.sleep(0.2)  # the workload's rate, not a wait for a condition
    metrics = shipper.metrics()
    assert metrics.get("shipper_sink_blocked") == 1
    assert metrics.get('shipper_retries_total{reason="cluster_block"}', 0) > 0
    assert http_status(port, "/readyz") == 503  # refused for longer than unready_after
    assert http_status(port, "/healthz") == 200  # the sink is not shipper's health
    status, answer = es_client.request("PUT", f"/{ds}/_settings", {"index.blocks.write": None})
    assert status == 200, answer
    wait_for(lambda: es_client.count(ds) >= written, 120, f"{written} documents")
    wait_for(lambda: http_status(port, "/readyz") == 200, 60, "ready again")
    metrics = shipper.metrics()
    assert shipper.stop() == 0
    assert metrics.get("shipper_sink_blocked") == 0
    assert metrics.get("shipper_dead_letters_total") == 0 and es_client.count(dead) == 0
    assert_exactly_once(seqs(es_client, ds), range(written))
    blocks = [r for r in shipper.log_records() if "cluster block" in str(r.get("message"))]
    assert 1 <= len(blocks) <= 2  # one line per 30 s while blocked, not one per retry


def http_status(port: int, path: str) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
