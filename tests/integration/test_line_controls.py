"""The controls on the path of a line, through the real pipeline over real files: routing
per file, service fields from the pod, rate limits (exact counts, checkpoints, fairness)."""

from __future__ import annotations

import copy
from typing import Any

import orjson

from shipper.config import parse_config
from shipper.controls import line_controls
from shipper.kube.cache import PodCache
from shipper.kube.source import KubeMetadata
from tests.support import Driver, KubeletDir, cri, pod_object, write_lines


def metadata(*pods: dict[str, Any]) -> KubeMetadata:
    source = KubeMetadata(PodCache(node="node-1", wait_for_metadata=0.0))
    source.cache.replace_pods(list(pods), 0.0)
    return source


def delivered(driver: Driver) -> list[tuple[dict, dict]]:
    """(action, document) of everything delivered, in order."""
    return [(a, doc) for a, (_, doc) in zip(driver.actions, driver.delivered, strict=True)]


def controls(text: str):
    return line_controls(parse_config(text))


def test_each_file_writes_to_its_namespace_stream_with_its_pods_service(tmp_path):
    system = KubeletDir(tmp_path, namespace="kube-system", pod="dns-7d9f-abcde")
    web = KubeletDir(tmp_path, namespace="web", pod="shop-0")
    plain = KubeletDir(tmp_path, namespace="default", pod="lonely")
    for k in (system, web, plain):
        write_lines(k, 0, 3, text="INFO line")
    pods = metadata(
        pod_object(
            "kube-system",
            "dns-7d9f-abcde",
            labels={"pod-template-hash": "7d9f"},
            owner=("ReplicaSet", "coredns-7d9f"),
        ),
        pod_object(
            "web",
            "shop-0",
            labels={"app.kubernetes.io/name": "shop", "app.kubernetes.io/version": "2.1"},
            annotations={"shipper.io/dataset": "Nginx"},
            owner=("StatefulSet", "shop"),
        ),
        pod_object("default", "lonely", labels={"app": "lonely-app"}),
    )
    driver = Driver(
        [str(tmp_path / "containers/*.log")],
        controls=controls("routing:\n  per_namespace: true\n  dataset_annotation: true\n"),
        metadata=pods,
    )
    driver.step()
    docs = delivered(driver)
    assert len(docs) == 9
    by_pod = {d["kubernetes"]["pod"]["name"]: (a, d) for a, d in docs}
    action, doc = by_pod["dns-7d9f-abcde"]
    assert action["_index"] == "logs-kubernetes-kube_system"
    assert doc["data_stream"] == {
        "type": "logs",
        "dataset": "kubernetes",
        "namespace": "kube_system",
    }
    assert doc["event"]["dataset"] == "kubernetes"
    assert doc["service"] == {"name": "coredns"}  # the Deployment behind the ReplicaSet
    assert doc["log"]["level"] == "info"
    action, doc = by_pod["shop-0"]
    assert action["_index"] == "logs-kubernetes.nginx-web"
    assert doc["data_stream"]["dataset"] == doc["event"]["dataset"] == "kubernetes.nginx"
    assert doc["service"] == {"name": "shop", "version": "2.1"}
    action, doc = by_pod["lonely"]
    assert "_index" not in action  # the configured stream: the request's default target
    assert doc["data_stream"]["namespace"] == "default"
    assert doc["service"] == {"name": "lonely-app"}


def test_a_hint_changed_on_a_running_pod_applies_to_the_next_lines(tmp_path):
    k = KubeletDir(tmp_path, namespace="web", pod="api")
    original = pod_object("web", "api")
    pods = metadata(original)
    driver = Driver(
        [str(tmp_path / "containers/*.log")],
        controls=controls("routing:\n  dataset_annotation: true\n"),
        metadata=pods,
    )
    write_lines(k, 0, 5)
    driver.step()
    annotated = copy.deepcopy(original)
    annotated["metadata"]["annotations"] = {
        "shipper.io/dataset": "api",
        "shipper.io/rate-limit": "lines_per_second=1,burst_lines=2",
    }
    pods.cache.put_pod(annotated)  # only hints changed: the fragment is the same
    write_lines(k, 5, 20)
    driver.step()
    docs = delivered(driver)
    assert [a.get("_index") for a, _ in docs[:5]] == [None] * 5
    later = docs[5:]
    assert {a["_index"] for a, _ in later} == {"logs-kubernetes.api-default"}
    throttled = driver.metrics.events_throttled.get("web")
    assert len(later) + throttled == 20 and throttled >= 15


def test_a_throttled_container_loses_exactly_the_counted_lines_and_still_commits(tmp_path):
    noisy = KubeletDir(tmp_path, namespace="noisy", pod="flood")
    quiet = KubeletDir(tmp_path, namespace="calm", pod="quiet")
    write_lines(noisy, 0, 5_000, text="noise")
    write_lines(quiet, 0, 50, text="calm")
    limits = "limits:\n  namespaces:\n    noisy:\n      lines_per_second: 100\n"
    driver = Driver(
        [str(tmp_path / "containers/*.log")],
        checkpoint_dir=tmp_path / "cp",
        controls=controls(limits),
    )
    driver.step()
    docs = delivered(driver)
    noise = [d for _, d in docs if d["message"].startswith("noise")]
    calm = [d for _, d in docs if d["message"].startswith("calm")]
    throttled = driver.metrics.events_throttled.get("noisy")
    assert len(calm) == 50 and driver.metrics.events_throttled.get("calm") == 0
    assert throttled > 0 and len(noise) + throttled == 5_000
    kept = [int(d["message"].split()[1]) for d in noise]
    assert kept == sorted(kept) and kept[:100] == list(range(100))  # the burst, in order
    dropped = set(range(5_000)) - set(kept)
    assert driver.metrics.bytes_throttled.get("noisy") == sum(len(f"noise {i}") for i in dropped)
    driver.restart()  # the dropped lines' offsets were committed: nothing is read again
    assert driver.step() == 0


def test_a_flooding_container_does_not_delay_a_quiet_ones_line_by_more_than_a_batch(tmp_path):
    flood = KubeletDir(tmp_path, namespace="noisy", pod="flood")
    quiet = KubeletDir(tmp_path, namespace="calm", pod="quiet")
    write_lines(flood, 0, 100_000, text="flood")  # ~6 MB: many passes of reading
    driver = Driver(
        [str(tmp_path / "containers/*.log")],
        read_bytes=256 * 1024,
        tail={"chunk_bytes": 64 * 1024},
        controls=controls("limits:\n  namespaces:\n    noisy:\n      lines_per_second: 10\n"),
    )
    p = driver.pipeline
    assert p is not None
    order: list[str] = []

    def one_pass() -> None:
        driver.now += 0.01
        p.poll(driver.now)
        p.tick(driver.now)
        while (batch := p.take_batch()).parts:
            order.extend(orjson.loads(e.split(b"\n")[1])["message"] for e in batch.entries)
            p.acknowledge(batch)

    one_pass()
    one_pass()
    read_before = driver.metrics.lines_read.total()
    assert read_before < 100_000  # the flood is still being read
    quiet.write(b"2024-03-01T10:00:00.000000000Z stdout F the quiet line\n")
    passes = 0
    while "the quiet line" not in order:
        one_pass()
        passes += 1
        assert passes <= 2, "the quiet line waited behind the flood"
    flood_read_meanwhile = driver.metrics.lines_read.total() - read_before - 1
    # At most the one pass in which the quiet file's change was found, plus its own turn:
    # less than one bulk batch (10,000 documents) of the flooder's lines.
    assert flood_read_meanwhile < 10_000
    assert driver.metrics.lines_read.total() < 100_001  # and the flood was not read to its end
    while driver.metrics.lines_read.total() < 100_001:
        one_pass()
    flood_docs = sum(1 for m in order if m.startswith("flood"))
    assert flood_docs + driver.metrics.events_throttled.get("noisy") == 100_000


def test_a_multiline_hint_that_comes_with_late_metadata_joins_the_lines_that_waited(tmp_path):
    """Lines read before their pod's watch event wait for it; the hint it brings
    (`shipper.io/multiline: java`) applies to those lines too, not from the next chunk."""
    k = KubeletDir(tmp_path, namespace="shop", pod="orders-0")
    trace = [
        "java.lang.IllegalStateException: boom",
        "\tat com.example.Worker.step0(Worker.java:10)",
        "\tat com.example.Worker.step1(Worker.java:11)",
        "\t... 3 more",
        "after the trace",
    ]
    k.write(b"".join(cri(i, text=t) for i, t in enumerate(trace)))
    pods = KubeMetadata(PodCache(node="node-1", wait_for_metadata=3600.0))
    pods.cache.replace_pods([], 0.0)  # listed, without the pod (its event is late)
    driver = Driver([str(tmp_path / "containers/*.log")], metadata=pods)
    driver.step()
    assert driver.delivered == []  # waiting for the pod
    pods.cache.put_pod(pod_object("shop", "orders-0", annotations={"shipper.io/multiline": "java"}))
    driver.step()
    docs = [d for _, d in delivered(driver)]
    assert [d["message"] for d in docs[:1]] == ["\n".join(trace[:4])]
    assert "multiline" in docs[0]["log"]["flags"]
    assert docs[0]["kubernetes"]["pod"]["name"] == "orders-0"
