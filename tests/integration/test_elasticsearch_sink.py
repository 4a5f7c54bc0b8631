"""The Elasticsearch sink against a real Elasticsearch: counts, outages, 429, 413, dead letters."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import orjson
import pytest

from shipper.samples import Container, write_tree
from tests.harness.elasticsearch import EsTestClient
from tests.support import (
    KubeletDir,
    ShipperProcess,
    cri,
    es_config,
    seqs,
    shipper_config,
    stream_name,
    wait_for,
    write_lines,
)

pytestmark = pytest.mark.elasticsearch


def run_once(tmp: Path, config: dict, timeout: float = 600) -> ShipperProcess:
    proc = ShipperProcess(tmp, config, once=True).start()
    code = proc.wait(timeout)
    assert code == 0, proc.logs()[-3000:]
    return proc


def test_100k_lines_become_100k_documents_with_fields_and_are_searchable(
    tmp_path, es_url, es_client
):
    ds = stream_name()
    containers = [
        Container("payments", f"api-{i}", "api", "cri" if i % 2 else "docker", "json")
        for i in range(4)
    ]
    manifest = write_tree(tmp_path / "tree", lines_per_container=25_000, containers=containers)
    assert manifest["records"] == 100_000
    config = shipper_config(
        [str(tmp_path / "tree/var/log/containers/*.log")],
        tmp_path / "cp",
        es_url,
        kubernetes={"enabled": True, "pods_file": manifest["pods_file"], "node_name": "node-1"},
    )
    config["elasticsearch"]["data_stream"] = ds
    run_once(tmp_path, config)
    assert es_client.count(ds) == 100_000
    hit = es_client.search(
        ds,
        {
            "size": 1,
            "query": {
                "bool": {
                    "filter": [
                        {"term": {"kubernetes.namespace": "payments"}},
                        {"match": {"message": "payment"}},
                    ]
                }
            },
        },
    )["hits"]
    assert hit["total"]["value"] > 1000
    doc = hit["hits"][0]["_source"]
    assert doc["kubernetes"]["pod"]["name"].startswith("api-")
    assert doc["kubernetes"]["container"]["name"] == "api"
    assert doc["container"]["id"] and doc["log"]["file"]["path"].endswith(".log")
    assert doc["@timestamp"].startswith("2024-03-01T10:")
    mapping = es_client.request("GET", f"/{ds}/_mapping")[1]
    props = next(iter(mapping.values()))["mappings"]["properties"]
    assert props["@timestamp"]["type"] == "date_nanos"
    assert props["message"]["type"] == "text"
    assert props["kubernetes"]["properties"]["namespace"]["type"] == "keyword"
    nanos = es_client.search(
        ds,
        {
            "size": 1,
            "query": {"match_all": {}},
            "docvalue_fields": [
                {"field": "@timestamp", "format": "strict_date_optional_time_nanos"}
            ],
        },
    )
    first = nanos["hits"]["hits"][0]
    written = first["_source"]["@timestamp"]  # e.g. 2024-03-01T10:00:00.123456780Z
    stamp = first["fields"]["@timestamp"][0]  # Elasticsearch drops trailing zeros
    assert len(written.split(".")[1]) == 10  # nine digits and the Z
    assert stamp.rstrip("Z").ljust(len(written) - 1, "0") == written.rstrip("Z")


def test_second_run_and_lost_checkpoints_create_no_duplicates(tmp_path, es_url, es_client):
    ds = stream_name()
    k = KubeletDir(tmp_path)
    write_lines(k, 0, 5_000)
    config = shipper_config([str(tmp_path / "containers/*.log")], tmp_path / "cp", es_url)
    config["elasticsearch"]["data_stream"] = ds
    assert run_once(tmp_path, config).summary()["documents_indexed"] == 5_000
    second = run_once(tmp_path, config)
    assert es_client.count(ds) == 5_000
    assert second.summary()["lines_read"] == 0  # resumed at the end: nothing sent again
    # A crash before the checkpoint was written: everything is sent again.
    for path in (tmp_path / "cp").iterdir():
        if path.name.startswith("checkpoints"):
            path.unlink()
    third = ShipperProcess(tmp_path, config).start()
    wait_for(
        lambda: third.metrics().get("shipper_documents_duplicate_total", 0) >= 5_000,
        120,
        "5000 duplicates answered 409",
    )
    assert third.metrics().get("shipper_documents_indexed_total", 0) == 0
    assert third.stop() == 0
    assert sorted(seqs(es_client, ds)) == list(range(5_000))


def test_elasticsearch_down_for_60s_mid_run_every_line_arrives_once_in_bounded_memory(
    tmp_path, es_server_factory
):
    server = es_server_factory()
    client = EsTestClient(server.url)
    ds = stream_name()
    k = KubeletDir(tmp_path)
    config = es_config(tmp_path, server.url, ds, buffer={"max_bytes": "8MiB"})
    shipper = ShipperProcess(tmp_path, config).start()
    written = 0

    def write_for(seconds: float, rate: int) -> None:
        nonlocal written
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            write_lines(k, written, rate // 10)
            written += rate // 10
            shipper.sample_rss()
            time.sleep(0.1)  # the writer's pace (a workload, not a wait for a condition)

    write_for(5, 5_000)
    wait_for(lambda: client.count(ds) > 0, 60, "first documents")
    server.stop()
    write_for(60, 5_000)  # one minute of writing with Elasticsearch down
    rss_outage = shipper.sample_rss()
    server.start()
    write_for(5, 5_000)
    wait_for(lambda: client.count(ds) >= written, 300, f"{written} documents")
    assert shipper.stop() == 0
    got = seqs(client, ds)
    assert len(got) == written and sorted(got) == list(range(written))
    print(
        f"peak RSS {shipper.peak_rss_kib / 1024:.1f} MiB (outage {rss_outage / 1024:.1f} MiB)"
        f" for {written} lines with an 8 MiB buffer"
    )
    assert shipper.peak_rss_kib < 200 * 1024


def test_429_from_a_one_slot_write_queue_is_retried_and_nothing_is_lost(
    tmp_path, es_server_factory
):
    server = es_server_factory(
        settings={"thread_pool.write.size": 1, "thread_pool.write.queue_size": 1}
    )
    client = EsTestClient(server.url)
    ds = stream_name()
    dirs = [KubeletDir(tmp_path, pod=f"p{i}") for i in range(8)]
    for i, k in enumerate(dirs):
        write_lines(k, i * 100_000, 4_000)
    config = shipper_config([str(tmp_path / "containers/*.log")], tmp_path / "cp", server.url)
    config["elasticsearch"].update(
        data_stream=ds, bulk={"max_docs": 200, "concurrency": 8, "max_delay": "50ms"}
    )
    shipper = ShipperProcess(tmp_path, config).start()
    wait_for(lambda: client.count(ds) >= 32_000, 300, "32000 documents")
    metrics = shipper.metrics()
    assert shipper.stop() == 0
    retried_429 = sum(
        v for k, v in metrics.items() if k.startswith("shipper_retries_total") and "429" in k
    )
    assert retried_429 > 0, "no 429 was provoked"
    got = seqs(client, ds)
    assert sorted(got) == sorted(i * 100_000 + j for i in range(8) for j in range(4_000))


def test_rejected_document_goes_to_dead_letters_with_its_reason_and_the_rest_indexes(
    tmp_path, es_url, es_client
):
    ds = stream_name()
    dead = f"shipper-dl-{uuid.uuid4().hex[:8]}"
    k = KubeletDir(tmp_path)
    bad = b"1969-07-20T20:17:40Z stdout F seq 1000\n"  # before 1970: date_nanos refuses it
    k.write(
        b"".join(cri(i, text=f"seq {i}") for i in range(5))
        + bad
        + b"".join(cri(i, text=f"seq {i}") for i in range(5, 10))
    )
    config = shipper_config([str(tmp_path / "containers/*.log")], tmp_path / "cp", es_url)
    config["elasticsearch"].update(data_stream=ds, dead_letter_index=dead)
    proc = run_once(tmp_path, config)
    assert sorted(seqs(es_client, ds)) == list(range(10))
    letters = es_client.search(dead, {"query": {"match_all": {}}})["hits"]["hits"]
    if not letters:  # Elasticsearch with a failure store keeps it there instead
        letters = es_client.search(f"{ds}::failures", {"query": {"match_all": {}}})["hits"]["hits"]
        assert letters and "1969" in orjson.dumps(letters[0]["_source"]).decode()
        return
    letter = letters[0]["_source"]
    assert letter["message"] == "seq 1000"
    assert letter["intended_target"] == ds
    assert letter["error"]["type"] in ("document_parsing_exception", "mapper_parsing_exception")
    assert "@timestamp" in letter["error"]["reason"] or "1969" in letter["error"]["reason"]
    assert orjson.loads(letter["document"])["@timestamp"] == "1969-07-20T20:17:40Z"
    assert "written to dead letters" in proc.logs()


def test_dotted_and_plain_labels_on_different_pods_index_side_by_side(tmp_path, es_url, es_client):
    ds = stream_name()
    containers = [
        Container("shop", "plain-0", "app", "cri", "plain", labels={"app": "web"}),
        Container(
            "shop",
            "dotted-0",
            "app",
            "cri",
            "plain",
            labels={"app.kubernetes.io/name": "web", "app.kubernetes.io/part-of": "shop"},
        ),
    ]
    manifest = write_tree(tmp_path / "tree", lines_per_container=50, containers=containers)
    config = shipper_config(
        [str(tmp_path / "tree/var/log/containers/*.log")],
        tmp_path / "cp",
        es_url,
        kubernetes={"enabled": True, "pods_file": manifest["pods_file"], "node_name": "node-1"},
    )
    config["elasticsearch"]["data_stream"] = ds
    proc = run_once(tmp_path, config)
    assert es_client.count(ds) == manifest["records"]
    assert "dead letters" not in proc.logs()
    found = es_client.count(ds, {"term": {"kubernetes.labels.app_kubernetes_io/name": "web"}})
    assert found == manifest["per_container"]["shop/dotted-0/app"]
    assert (
        es_client.count(ds, {"term": {"kubernetes.labels.app": "web"}})
        == (manifest["per_container"]["shop/plain-0/app"])
    )


def test_batch_larger_than_max_content_length_is_split_not_retried_forever(
    tmp_path, es_server_factory
):
    server = es_server_factory(settings={"http.max_content_length": "1mb"})
    client = EsTestClient(server.url)
    ds = stream_name()
    k = KubeletDir(tmp_path)
    k.write(b"".join(cri(i, text=f"{'x' * 900} seq {i}") for i in range(6_000)))
    config = shipper_config([str(tmp_path / "containers/*.log")], tmp_path / "cp", server.url)
    config["elasticsearch"].update(data_stream=ds, bulk={"max_bytes": "8MiB", "max_docs": 100000})
    shipper = ShipperProcess(tmp_path, config).start()
    wait_for(lambda: client.count(ds) >= 6_000, 300, "6000 documents")
    metrics = shipper.metrics()
    assert shipper.stop() == 0
    assert metrics.get('shipper_bulk_requests_total{outcome="split"}', 0) > 0
    assert sorted(seqs(client, ds)) == list(range(6_000))


def test_auto_ids_when_deterministic_ids_are_off(tmp_path, es_url, es_client):
    ds = stream_name()
    k = KubeletDir(tmp_path)
    write_lines(k, 0, 100)
    config = shipper_config([str(tmp_path / "containers/*.log")], tmp_path / "cp", es_url)
    config["elasticsearch"].update(data_stream=ds, deterministic_ids=False)
    run_once(tmp_path, config)
    assert es_client.count(ds) == 100
    hit = es_client.search(ds, {"size": 1})["hits"]["hits"][0]
    assert len(hit["_id"]) == 20  # Elasticsearch's own id, not file and offset


def test_date_based_indices_instead_of_a_data_stream(tmp_path, es_url, es_client):
    prefix = f"logs-dated{uuid.uuid4().hex[:6]}"
    k = KubeletDir(tmp_path)
    write_lines(k, 0, 10)
    config = shipper_config([str(tmp_path / "containers/*.log")], tmp_path / "cp", es_url)
    config["elasticsearch"].update(index=f"{prefix}-%Y.%m.%d")
    run_once(tmp_path, config)
    assert es_client.count(f"{prefix}-2024.03.01") == 10
