"""Kubernetes metadata from a real kube-apiserver, while real files are read."""

from __future__ import annotations

import hashlib
import itertools
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.harness.kube import (
    SHIPPER_USER,
    KubeApiServer,
    create_namespace,
    create_pod,
    delete_pod_now,
    grant_shipper_read,
    patch_pod_labels,
    set_pod_status,
)
from tests.support import KubeletDir, ShipperProcess, cri, shipper_config, wait_for

pytestmark = pytest.mark.kube

_seq = itertools.count(1)


class Node:
    """A node's log tree whose pods live in a real apiserver, and a shipper following it."""

    def __init__(self, tmp: Path, server: KubeApiServer, **kube: Any) -> None:
        self.tmp = tmp
        self.server = server
        self.api = server.api_client()
        self.name = f"node-{uuid.uuid4().hex[:8]}"
        self.ns = f"ns-{uuid.uuid4().hex[:8]}"
        create_namespace(self.api, self.ns, {"team": "payments"})
        self.dirs: dict[str, KubeletDir] = {}
        config = shipper_config(
            [str(tmp / "containers/*.log")],
            tmp / "cp",
            kubernetes={
                "enabled": True,
                "node_name": self.name,
                "kubeconfig": str(server.kubeconfig_for(server.shipper_token, "shipper")),
                "wait_for_metadata": "5s",
                **kube,
            },
            elasticsearch={"bulk": {"max_delay": "50ms"}},
            inputs={"paths": [str(tmp / "containers/*.log")], "rescan_interval": "200ms"},
        )
        self.shipper = ShipperProcess(tmp, config)

    def pod(
        self,
        name: str,
        labels: dict[str, str] | None = None,
        owner: tuple[str, str] | None = ("ReplicaSet", "web-7d4b9c6f5d"),
    ) -> KubeletDir:
        labels = dict(labels or {"app": "web"})
        if owner is not None and owner[0] == "ReplicaSet":  # as the Deployment controller does
            labels["pod-template-hash"] = owner[1].rsplit("-", 1)[1]
        pod = create_pod(self.api, self.ns, name, self.name, labels=labels, owner=owner)
        cid = hashlib.sha256(name.encode()).hexdigest()
        set_pod_status(self.api, self.ns, name, "10.1.2.3", {"app": f"containerd://{cid}"})
        k = KubeletDir(self.tmp, self.ns, name, "app", cid, uid=pod["metadata"]["uid"])
        self.dirs[name] = k
        return k

    def docs(self) -> list[dict[str, Any]]:
        out = self.shipper.out_path.read_bytes() if self.shipper.out_path.exists() else b""
        return [orjson.loads(x) for x in out.splitlines() if x.endswith(b"}")]

    def docs_with(self, text: str) -> list[dict[str, Any]]:
        return [d for d in self.docs() if d["message"].startswith(text)]


def write(k: KubeletDir, tag: str, count: int = 5) -> list[str]:
    texts = [f"{tag} {next(_seq)}" for _ in range(count)]
    k.write(b"".join(cri(next(_seq), text=t) for t in texts))
    return texts


def labels_of(doc: dict[str, Any]) -> dict[str, str]:
    labels = dict(doc["kubernetes"].get("labels", {}))
    labels.pop("pod-template-hash", None)
    return labels


def test_records_carry_labels_current_at_the_time_of_the_line_and_survive_deletion(
    tmp_path, kube_apiserver
):
    node = Node(tmp_path, kube_apiserver)
    k = node.pod("web-1", labels={"app": "web", "version": "1"})
    node.shipper.start()
    first = write(k, "first")
    wait_for(lambda: len(node.docs_with("first")) == 5, 60, "the first lines")
    for doc in node.docs_with("first"):
        assert labels_of(doc) == {"app": "web", "version": "1"}
        kube = doc["kubernetes"]
        assert kube["pod"]["uid"] and kube["pod"]["ip"] == "10.1.2.3"
        assert kube["namespace_labels"] == {
            "team": "payments",
            "kubernetes_io/metadata_name": node.ns,
        }
        assert kube["deployment"] == {"name": "web"}
        assert kube["node"] == {"name": node.name}
        assert doc["container"]["runtime"] == "containerd"
    patch_pod_labels(node.api, node.ns, "web-1", {"version": "2"})

    def relabelled() -> bool:  # probe lines until the change has reached shipper
        write(k, "probe", 1)
        return any(labels_of(d).get("version") == "2" for d in node.docs_with("probe"))

    wait_for(relabelled, 60, "the new labels")
    second = write(k, "second")
    last = write(k, "last")
    delete_pod_now(node.api, node.ns, "web-1")  # deleted right after its last lines...
    after = write(k, "after-delete")  # ...and the runtime still flushes a few more
    wait_for(lambda: len(node.docs_with("after-delete")) == 5, 60, "lines after deletion")
    assert node.shipper.stop() == 0
    by_text = {d["message"]: d for d in node.docs()}
    assert all(labels_of(by_text[t])["version"] == "1" for t in first)
    assert all(labels_of(by_text[t])["version"] == "2" for t in second + last + after)
    assert all(by_text[t]["kubernetes"]["pod"]["uid"] for t in after)


def test_200_short_lived_pods_all_enriched_with_one_list_and_one_watch(tmp_path, kube_private):
    server = kube_private()
    grant_shipper_read(server.api_client())
    node = Node(tmp_path, server)
    node.shipper.start()
    wait_for(
        lambda: server.request_counts(SHIPPER_USER)[("watch", "pods")] >= 1,
        60,
        "shipper's pod watch",
    )
    texts: dict[str, list[str]] = {}
    for i in range(200):
        name = f"job-{i}"
        k = node.pod(name, labels={"app": "batch", "run": str(i)}, owner=("Job", f"job-{i}"))
        texts[name] = write(k, f"pod {i} says", 3)
        delete_pod_now(node.api, node.ns, name)
    wait_for(lambda: len(node.docs()) >= 600, 180, "600 lines")
    assert node.shipper.stop() == 0
    docs = node.docs()
    assert len(docs) == 600
    for doc in docs:
        i = doc["message"].split()[1]
        assert labels_of(doc) == {"app": "batch", "run": i}, doc
        assert doc["kubernetes"]["job"] == {"name": f"job-{i}"}
    counts = server.request_counts(SHIPPER_USER)
    assert counts[("list", "pods")] == 1
    assert counts[("watch", "pods")] == 1
    assert counts[("list", "namespaces")] == 1
    assert counts[("watch", "namespaces")] == 1
    assert sum(n for (verb, _), n in counts.items() if verb == "get") == 0


def test_apiserver_restart_and_410_gone_resync_without_missing_a_pod(tmp_path, kube_private):
    server = kube_private()
    grant_shipper_read(server.api_client())
    node = Node(tmp_path, server)
    before = node.pod("before")
    node.shipper.start()
    write(before, "before-restart")
    wait_for(lambda: len(node.docs_with("before-restart")) == 5, 60, "first lines")
    for i in range(20):  # move etcd's revision on, past what shipper's watch has seen
        create_namespace(node.api, f"{node.ns}-filler-{i}")
    server.stop_apiserver()
    server.compact_etcd()
    server.start_apiserver()
    node.api = server.api_client()
    between = node.pod("created-in-between", labels={"app": "new"})
    write(between, "new-pod")
    wait_for(lambda: len(node.docs_with("new-pod")) == 5, 120, "lines of the new pod")
    assert node.shipper.stop() == 0
    assert all(labels_of(d) == {"app": "new"} for d in node.docs_with("new-pod"))
    logs = node.shipper.logs()
    assert "410 Gone" in logs
    assert server.request_counts(SHIPPER_USER)[("list", "pods")] >= 2


def test_apiserver_down_records_flow_with_file_name_metadata_then_enrichment_resumes(
    tmp_path, kube_private
):
    server = kube_private()
    grant_shipper_read(server.api_client())
    node = Node(tmp_path, server, wait_for_metadata="1s")
    known = node.pod("known", labels={"app": "known"})
    node.shipper.start()
    write(known, "warm-up")
    wait_for(lambda: len(node.docs_with("warm-up")) == 5, 60, "first lines")
    server.stop_apiserver()
    write(known, "known-during-outage")
    stranger = KubeletDir(tmp_path, node.ns, "stranger", "app", "ab" * 32, uid="uid-stranger")
    write(stranger, "unknown-during-outage")
    wait_for(
        lambda: len(node.docs_with("unknown-during-outage")) == 5,
        60,
        "lines of an unknown pod, without the API",
    )
    assert all(labels_of(d) == {"app": "known"} for d in node.docs_with("known-during-outage"))
    for doc in node.docs_with("unknown-during-outage"):
        assert doc["kubernetes"]["pod"]["name"] == "stranger"
        assert doc["kubernetes"]["namespace"] == node.ns
        assert "labels" not in doc["kubernetes"]
    server.start_apiserver()
    node.api = server.api_client()
    later = node.pod("later", labels={"app": "later"})

    def enrichment_resumed() -> bool:  # the watch reconnects after its backoff
        write(later, "probe", 1)
        return any(labels_of(d) == {"app": "later"} for d in node.docs_with("probe"))

    wait_for(enrichment_resumed, 120, "enrichment to resume")
    write(later, "after-outage")
    wait_for(lambda: len(node.docs_with("after-outage")) == 5, 120, "lines after the outage")
    metrics = node.shipper.metrics()
    assert node.shipper.stop() == 0
    assert all(labels_of(d) == {"app": "later"} for d in node.docs_with("after-outage"))
    assert metrics["shipper_metadata_missing_total"] >= 5
