"""Installing shipper onto the test node as a user would: `helm install` of
deploy/helm/shipper, or `kubectl apply -k` of a test overlay on deploy/kubernetes.

What the test adds to the shipped bundle, and why (nothing else differs):
- the image: the one built from deploy/Dockerfile, already in the node's containerd;
- KUBERNETES_SERVICE_HOST/PORT: there is no kube-proxy, so the `kubernetes` Service IP
  leads nowhere; the apiserver itself listens on the node's bridge address;
- the kubelet's podLogsDir, mounted read-only at its own path (the /var/log/containers
  links point there; the kubelet's default /var/log/pods would be under /var/log);
- the checkpoint host directory inside the node's work directory;
- the Secret `shipper-elasticsearch` as the README creates it: the URL pods reach (a TLS
  proxy with basic auth in front of the test Elasticsearch), user, password and CA.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.harness.node.cluster import NODE_IP, KubeNode
from tests.harness.tools import ensure_helm

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "shipper"
BUNDLE = REPO / "deploy" / "kubernetes"
NS = "logging"
DATA_STREAM = "logs-kubernetes-default"


def secret(es: Any) -> dict[str, Any]:
    """The Secret of the README's install: URL, user, password and CA."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "shipper-elasticsearch", "namespace": NS},
        "stringData": {
            "url": es.pod_url,
            "username": es.username,
            "password": es.password,
            "ca.crt": es.ca,
        },
    }


def api_env(node: KubeNode) -> list[dict[str, str]]:
    assert node.api is not None
    return [
        {"name": "KUBERNETES_SERVICE_HOST", "value": NODE_IP},
        {"name": "KUBERNETES_SERVICE_PORT", "value": str(node.api.port)},
    ]


def checkpoint_dir(node: KubeNode, name: str) -> Path:
    return node.workdir / "shipper-checkpoints" / name


def helm(node: KubeNode, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert node.api is not None
    result = subprocess.run(
        [str(ensure_helm()), f"--kubeconfig={node.api.kubeconfig_path}", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HELM_CACHE_HOME": str(node.workdir / "helm" / "cache"),
             "HELM_CONFIG_HOME": str(node.workdir / "helm" / "config"),
             "HELM_DATA_HOME": str(node.workdir / "helm" / "data")},
    )  # fmt: skip
    if check and result.returncode != 0:
        raise RuntimeError(f"helm {' '.join(args)}: {result.stderr.strip()}")
    return result


def helm_values(node: KubeNode, checkpoints: Path, config: dict[str, Any] | None = None) -> dict:
    repository, tag = node.shipper_image.rsplit(":", 1)
    values: dict[str, Any] = {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "extraEnv": api_env(node),
        "logHostPaths": {"podlogs": str(node.logs_dir)},
        "checkpointHostPath": str(checkpoints),
    }
    if config:
        values["config"] = config
    return values


def helm_install(
    node: KubeNode, es: Any, name: str = "helm", config: dict[str, Any] | None = None
) -> None:
    node.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}])
    node.apply([secret(es)])
    values = node.workdir / f"values-{name}.yaml"
    values.write_text(yaml.safe_dump(helm_values(node, checkpoint_dir(node, name), config)))
    helm(node, "install", "shipper", str(CHART), "-n", NS, "-f", str(values))


def helm_uninstall(node: KubeNode) -> None:
    helm(node, "uninstall", "shipper", "-n", NS, "--wait", "--timeout", "120s")


def kustomize_overlay(node: KubeNode, where: Path, es: Any) -> Path:
    """A test overlay on deploy/kubernetes (the bundle itself is referenced, not copied)."""
    where.mkdir(parents=True, exist_ok=True)
    repository, tag = node.shipper_image.rsplit(":", 1)
    patch = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "shipper", "namespace": NS},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "shipper",
                            "imagePullPolicy": "Never",
                            "env": api_env(node),
                            "volumeMounts": [
                                {
                                    "name": "podlogs",
                                    "mountPath": str(node.logs_dir),
                                    "readOnly": True,
                                }
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "podlogs", "hostPath": {"path": str(node.logs_dir)}},
                        {
                            "name": "checkpoints",
                            "hostPath": {
                                "path": str(checkpoint_dir(node, "kustomize")),
                                "type": "DirectoryOrCreate",
                            },
                        },
                    ],
                }
            }
        },
    }
    (where / "daemonset-patch.yaml").write_text(yaml.safe_dump(patch))
    (where / "secret.yaml").write_text(yaml.safe_dump(secret(es)))
    (where / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(BUNDLE, where), "secret.yaml"],
                "images": [
                    {"name": "ghcr.io/shipper/shipper", "newName": repository, "newTag": tag}
                ],
                "patches": [{"path": "daemonset-patch.yaml"}],
            }
        )
    )
    return where


def shipper_pods(node: KubeNode) -> list[dict[str, Any]]:
    pods = node.get("pods", "-n", NS, "-l", "app.kubernetes.io/name=shipper")["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def ready_pod(node: KubeNode) -> dict[str, Any] | None:
    """The shipper pod once it is Running and Ready."""
    for pod in shipper_pods(node):
        status = pod.get("status", {})
        ready = any(
            c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
        )
        if status.get("phase") == "Running" and ready:
            return pod
    return None


def describe(node: KubeNode) -> str:
    """What to show when shipper does not come up: pods, events, its log."""
    out = [node.kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout]
    out.append(node.kubectl("-n", NS, "get", "events", check=False).stdout[-3000:])
    for pod in shipper_pods(node):
        name = pod["metadata"]["name"]
        out.append(node.kubectl("-n", NS, "logs", name, "--tail=40", check=False).stdout)
    return "\n".join(out)


def render_chart(
    values: dict[str, Any] | None = None, release: str = "shipper", namespace: str = NS
) -> list[dict[str, Any]]:
    """`helm template shipper deploy/helm/shipper -n logging` as documents."""
    command = [str(ensure_helm()), "template", release, str(CHART), "-n", namespace]
    if values is not None:
        command += ["--values", "-"]
    result = subprocess.run(
        command, input=json.dumps(values) if values else None, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise AssertionError(f"helm template: {result.stderr}")
    return [d for d in yaml.safe_load_all(result.stdout) if d]
