"""`shipper run` into the real Elasticsearch with the issue-14 controls: the new fields are
searchable, per-namespace routing creates the streams, a throttled pod's drops are counted
exactly while its quiet neighbour loses nothing, and secrets never reach the index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import (
    KubeletDir,
    ShipperProcess,
    cri,
    es_config,
    pod_object,
    stream_name,
    write_lines,
    write_pods_file,
)

pytestmark = pytest.mark.elasticsearch


def run_once(tmp: Path, config: dict) -> ShipperProcess:
    proc = ShipperProcess(tmp, config, once=True).start()
    code = proc.wait(600)
    assert code == 0, proc.logs()[-3000:]
    return proc


def with_pods(tmp: Path, config: dict, *pods: dict) -> dict:
    config["kubernetes"] = {
        "enabled": True,
        "pods_file": write_pods_file(tmp / "pods.json", list(pods)),
        "node_name": "node-1",
    }
    return config


def test_routed_documents_carry_level_service_and_stream_fields_and_are_found_by_them(
    tmp_path, es_url, es_client
):
    ds = stream_name()  # logs-<unique>-default
    prefix = ds.rsplit("-", 1)[0]
    api = KubeletDir(tmp_path, namespace="team-a", pod="api-5f7c9-xk2p1")
    web = KubeletDir(tmp_path, namespace="team-b", pod="web-0")
    api.write(
        b"".join(cri(i, text=f"2026-12-01 10:00:00,000 ERROR failed {i}") for i in range(30))
        + b"".join(cri(i, text=f'{{"level":"info","msg":"ok {i}"}}') for i in range(30, 100))
    )
    write_lines(web, 0, 50, text="W1201 10:00:00.000000 1 web.go:1] slow")
    config = with_pods(
        tmp_path,
        es_config(tmp_path, es_url, ds, routing={"per_namespace": True}),
        pod_object(
            "team-a",
            "api-5f7c9-xk2p1",
            labels={"pod-template-hash": "5f7c9", "app.kubernetes.io/version": "1.2.3"},
            owner=("ReplicaSet", "api-5f7c9"),
        ),
        pod_object("team-b", "web-0", labels={"app": "web"}, owner=("StatefulSet", "web")),
    )
    run_once(tmp_path, config)
    pattern = f"{prefix}-*"
    # (the test distribution has no _data_stream API: the backing indices name their streams)
    status, mapping = es_client.request("GET", f"/{pattern}/_mapping")
    assert status == 200, mapping
    assert all(index.startswith(".ds-") for index in mapping)
    assert sorted({index[4:].rsplit("-", 2)[0] for index in mapping}) == [
        f"{prefix}-team_a",
        f"{prefix}-team_b",
    ]
    assert es_client.count(f"{prefix}-team_a") == 100
    assert es_client.count(f"{prefix}-team_b") == 50
    assert es_client.count(pattern, {"term": {"log.level": "error"}}) == 30
    assert es_client.count(pattern, {"term": {"log.level": "info"}}) == 70
    assert es_client.count(pattern, {"term": {"log.level": "warn"}}) == 50
    assert es_client.count(pattern, {"term": {"service.name": "api"}}) == 100  # the Deployment
    assert es_client.count(pattern, {"term": {"service.version": "1.2.3"}}) == 100
    assert es_client.count(pattern, {"term": {"service.name": "web"}}) == 50
    assert es_client.count(pattern, {"term": {"data_stream.namespace": "team_b"}}) == 50
    assert es_client.count(pattern, {"term": {"event.dataset": prefix[len("logs-") :]}}) == 150
    hit = es_client.search(f"{prefix}-team_a", {"size": 1})["hits"]["hits"][0]["_source"]
    assert hit["data_stream"] == {
        "type": "logs",
        "dataset": prefix[len("logs-") :],
        "namespace": "team_a",
    }
    mapping = es_client.request("GET", f"/{prefix}-team_b/_mapping")[1]
    props = next(iter(mapping.values()))["mappings"]["properties"]
    assert props["log"]["properties"]["level"]["type"] == "keyword"
    assert props["service"]["properties"]["name"]["type"] == "keyword"
    assert props["data_stream"]["properties"]["namespace"]["type"] == "keyword"


def test_a_throttled_pod_loses_exactly_the_counted_lines_and_its_quiet_neighbour_none(
    tmp_path, es_url, es_client
):
    ds = stream_name()
    noisy = KubeletDir(tmp_path, namespace="shop", pod="noisy")
    quiet = KubeletDir(tmp_path, namespace="shop", pod="quiet")
    write_lines(noisy, 0, 20_000, text="noise")
    write_lines(quiet, 0, 2_000, text="calm")
    config = with_pods(
        tmp_path,
        es_config(tmp_path, es_url, ds),
        pod_object("shop", "noisy", annotations={"shipper.io/rate-limit": "lines_per_second=100"}),
        pod_object("shop", "quiet"),
    )
    proc = run_once(tmp_path, config)
    summary = proc.summary()
    throttled = summary["events_throttled"]
    indexed_noise = es_client.count(ds, {"term": {"kubernetes.pod.name": "noisy"}})
    assert es_client.count(ds, {"term": {"kubernetes.pod.name": "quiet"}}) == 2_000
    assert throttled > 0 and indexed_noise + throttled == 20_000
    assert summary["lines_read"] == 22_000 and summary["documents_indexed"] == 2_000 + indexed_noise
    warnings = [r for r in proc.log_records() if r.get("message", "").startswith("lines over")]
    assert warnings and sum(r["lines"] for r in warnings) == throttled
    assert set().union(*(r["containers"] for r in warnings)) == {"shop/noisy/app"}
    again = run_once(tmp_path, config)  # the dropped lines' offsets were committed
    assert again.summary()["lines_read"] == 0


def test_secrets_are_redacted_before_indexing_and_the_documents_flagged(
    tmp_path, es_url, es_client
):
    ds = stream_name()
    k = KubeletDir(tmp_path, namespace="auth", pod="login")
    k.write(
        cri(0, text="user=ann password=hunter2 accepted")
        + cri(1, text="GET / Authorization: Bearer eyJhbGciOi.payload.sig")
        + cri(2, text='{"event":"login","api_key":"AKIAsecret42","card":"4111 1111 1111 1111"}')
        + cri(3, text="nothing to hide here")
    )
    config = with_pods(
        tmp_path,
        es_config(
            tmp_path,
            es_url,
            ds,
            redaction={"builtin": {"passwords": True, "authorization": True, "credit_cards": True}},
        ),
        pod_object("auth", "login", annotations={"shipper.io/parser": "json"}),
    )
    run_once(tmp_path, config)
    assert es_client.count(ds) == 4
    assert es_client.count(ds, {"term": {"log.flags": "redacted"}}) == 3
    docs = es_client.search(ds, {"size": 10, "sort": [{"log.offset": "asc"}]})["hits"]["hits"]
    stored = json.dumps([d["_source"] for d in docs])
    for secret in ("hunter2", "eyJhbGciOi.payload.sig", "AKIAsecret42", "4111"):
        assert secret not in stored, secret
        assert es_client.count(ds, {"match_phrase": {"message": secret}}) == 0, secret
    messages = [d["_source"]["message"] for d in docs]
    assert messages[0] == "user=ann password=[REDACTED] accepted"
    assert messages[1] == "GET / Authorization: Bearer [REDACTED]"
    assert messages[3] == "nothing to hide here"
    parsed = docs[2]["_source"]["json"]
    assert parsed["api_key"] == "[REDACTED]" and parsed["card"] == "[REDACTED]"
    assert parsed["event"] == "login"
    assert es_client.count(ds, {"term": {"json.event": "login"}}) == 1
