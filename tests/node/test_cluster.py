"""The node harness itself: a pod runs, its log is the kubelet's, and nothing stays behind.

Runs before the shipper tests (file order) with a node of its own, stopped before the
session's node starts (one node per machine at a time).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness.node import host, images
from tests.harness.node.cluster import NODE_NAME, KubeNode
from tests.support import wait_for

pytestmark = pytest.mark.node


def test_node_runs_a_pod_and_leaves_the_host_as_it_found_it(tmp_path: Path) -> None:
    node = KubeNode(tmp_path / "node")
    before = host.HostSnapshot.take()
    node.start()
    try:
        node.apply(
            [
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": "hello", "namespace": "default"},
                    "spec": {
                        "containers": [
                            {
                                "name": "writer",
                                "image": images.WRITER_IMAGE,
                                "imagePullPolicy": "Never",
                                "args": ["-rate", "100", "-lines", "50", "-pod", "hello"],
                            }
                        ]
                    },
                }
            ]
        )

        def ended() -> str:
            out = node.kubectl("logs", "hello", check=False).stdout
            return out if "END 50" in out else ""

        logs = wait_for(ended, 120, "the pod's 50 lines and END in `kubectl logs`")
        assert logs.splitlines()[0] == "hello 00000000 short " + "x" * 50
        assert len(logs.splitlines()) == 51
        # The kubelet's own files: podLogsDir in the work directory, links in the one
        # place the kubelet knows, pointing at them.
        [log] = list(node.logs_dir.glob("default_hello_*/writer/0.log"))
        assert oct(log.stat().st_mode & 0o777) == "0o640"
        [link] = list(host.CONTAINER_LINKS.glob("hello_default_writer-*.log"))
        assert link.resolve() == log
        node_obj = node.get("node", NODE_NAME)
        assert node_obj["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd")
        assert json.loads(node.kubectl("version", "-o", "json").stdout)["serverVersion"]
    finally:
        node.stop()
    assert node.residue() == []
    after = host.HostSnapshot.take()
    assert after.mounts == before.mounts
    assert after.links == before.links
    assert after.iptables == before.iptables
    assert after.sysctls == before.sysctls
    assert after.pod_logs == before.pod_logs
    assert after.container_links == before.container_links
    assert not any(p.exists() for p in host.cgroup_dirs())


@pytest.mark.kube
def test_apiserver_only_harness_still_works_beside_the_node(kube_apiserver) -> None:
    """The apiserver-only tests' server (loopback, static tokens, no kubelet) is unchanged."""
    status, body = kube_apiserver.get("/api/v1/namespaces/default")
    assert status == 200, body
    assert kube_apiserver.url.startswith("https://127.0.0.1:")
    status, _ = kube_apiserver.get("/api/v1/nodes", token=kube_apiserver.shipper_token)
    assert status == 403
