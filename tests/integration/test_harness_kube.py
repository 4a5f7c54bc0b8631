"""The kube-apiserver harness itself: auth, RBAC, field selectors, audit, restart, 410."""

from __future__ import annotations

import uuid

import pytest
from kubernetes import client

from tests.harness.kube import (
    SHIPPER_USER,
    create_namespace,
    create_pod,
    delete_pod_now,
    grant_shipper_read,
)
from tests.support import wait_for

pytestmark = pytest.mark.kube


def test_admin_creates_namespaces_and_bound_pods(kube_apiserver):
    api = kube_apiserver.api_client()
    ns = f"h-{uuid.uuid4().hex[:8]}"
    create_namespace(api, ns, {"team": "a"})
    pod = create_pod(api, ns, "p1", "node-a", labels={"app": "x"}, owner=("ReplicaSet", "x-1"))
    assert pod["spec"]["nodeName"] == "node-a"
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"
    delete_pod_now(api, ns, "p1")
    core = client.CoreV1Api(api)
    wait_for(lambda: not core.list_namespaced_pod(ns).items, 30, "the pod to be gone")


def test_field_selector_returns_only_one_nodes_pods(kube_apiserver):
    api = kube_apiserver.api_client()
    ns = f"h-{uuid.uuid4().hex[:8]}"
    create_namespace(api, ns)
    create_pod(api, ns, "on-a", "node-a")
    create_pod(api, ns, "on-b", "node-b")
    core = client.CoreV1Api(api)
    pods = core.list_namespaced_pod(ns, field_selector="spec.nodeName=node-a").items
    assert [p.metadata.name for p in pods] == ["on-a"]


def test_shipper_user_needs_rbac_and_its_requests_are_audited(kube_private):
    server = kube_private()
    status, _ = server.get("/api/v1/pods", token=server.shipper_token)
    assert status == 403
    grant_shipper_read(server.api_client())
    wait_for(
        lambda: server.get("/api/v1/pods", token=server.shipper_token)[0] == 200,
        30,
        "RBAC to apply",
    )
    assert server.get("/api/v1/secrets", token=server.shipper_token)[0] == 403
    counts = wait_for(
        lambda: server.request_counts(SHIPPER_USER)[("list", "pods")] >= 2, 30, "audit events"
    )
    assert counts
    assert server.request_counts(SHIPPER_USER)[("list", "secrets")] == 1


def test_restart_keeps_pods_and_an_old_resource_version_gets_410(kube_private):
    server = kube_private()
    api = server.api_client()
    create_namespace(api, "r")
    create_pod(api, "r", "keep", "node-a")
    core = client.CoreV1Api(api)
    old = core.list_namespaced_pod("r").metadata.resource_version
    for i in range(5):
        create_pod(api, "r", f"more-{i}", "node-a")
    server.stop_apiserver()
    server.compact_etcd()
    server.start_apiserver()
    api = server.api_client()
    assert "keep" in [p.metadata.name for p in client.CoreV1Api(api).list_namespaced_pod("r").items]
    status, body = server.get(
        f"/api/v1/namespaces/r/pods?watch=true&resourceVersion={old}&timeoutSeconds=1"
    )
    assert status == 410 or b'"code":410' in body, body[:300]
