"""deploy/helm/shipper and the alert rules, checked by the real tools: `helm lint`,
`helm template` (against the kustomize bundle as `kubectl kustomize` renders it), and
`promtool check rules` / `promtool test rules`."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.harness.kube import ensure_node_binaries
from tests.harness.tools import ensure_helm, ensure_promtool
from tests.node.install import CHART, render_chart

pytestmark = pytest.mark.deploy

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KUBE_VERSION = "1.34"


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for doc in docs:
        assert doc["kind"] not in out, f"two {doc['kind']}s"
        out[doc["kind"]] = doc
    return out


def kustomize_bundle() -> dict[str, dict[str, Any]]:
    kubectl = ensure_node_binaries()["kubectl"]
    out = subprocess.run(
        [str(kubectl), "kustomize", str(DEPLOY / "kubernetes")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return by_kind([d for d in yaml.safe_load_all(out) if d])


def test_helm_lint_is_clean() -> None:
    result = subprocess.run(
        [str(ensure_helm()), "lint", "--strict", str(CHART)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_chart_renders_valid_manifests_with_every_option_on() -> None:
    docs = render_chart(
        {
            "service": {"enabled": True},
            "serviceMonitor": {"enabled": True},
            "podMonitor": {"enabled": True},
            "prometheusRule": {"enabled": True},
            "dashboard": {"enabled": True},
        }
    )
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "ConfigMap",
            "DaemonSet",
            "Service",
            "ServiceMonitor",
            "PodMonitor",
            "PrometheusRule",
        ]
    )
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com"):
            continue  # not in the Kubernetes schemas
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_monitoring_and_dashboard_are_off_by_default_and_are_the_shipped_files() -> None:
    kinds = [d["kind"] for d in render_chart()]
    assert sorted(kinds) == sorted(
        ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet"]
    )
    on = render_chart({"prometheusRule": {"enabled": True}, "dashboard": {"enabled": True}})
    [rule] = [d for d in on if d["kind"] == "PrometheusRule"]
    alerts = yaml.safe_load((DEPLOY / "prometheus/alerts.yaml").read_text())
    assert rule["spec"]["groups"] == alerts["groups"]
    [dashboard] = [
        d for d in on if d["kind"] == "ConfigMap" and "dashboard" in d["metadata"]["name"]
    ]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = (DEPLOY / "grafana/shipper-dashboard.json").read_text()
    assert dashboard["data"]["shipper-dashboard.json"].strip() == shipped.strip()
    # the chart's copies are the files users load by hand
    assert (CHART / "files/alerts.yaml").read_text() == (
        DEPLOY / "prometheus/alerts.yaml"
    ).read_text()
    assert (CHART / "files/shipper-dashboard.json").read_text() == shipped


def _pod(ds: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(ds["spec"]["template"]["spec"])
    [container] = spec["containers"]
    container.pop("image")
    container.pop("imagePullPolicy", None)
    return spec


def test_chart_and_kustomize_bundle_install_the_same_pod_rbac_and_config() -> None:
    chart = by_kind(render_chart())
    bundle = kustomize_bundle()
    # the same container (command, env, ports, probes, resources, securityContext,
    # mounts) and pod (volumes, tolerations, service account, grace, security)
    chart_pod, bundle_pod = _pod(chart["DaemonSet"]), _pod(bundle["DaemonSet"])
    chart_mounts = {m["name"]: m for m in chart_pod["containers"][0].pop("volumeMounts")}
    bundle_mounts = {m["name"]: m for m in bundle_pod["containers"][0].pop("volumeMounts")}
    assert chart_mounts == bundle_mounts
    chart_volumes = {v["name"]: v for v in chart_pod.pop("volumes")}
    bundle_volumes = {v["name"]: v for v in bundle_pod.pop("volumes")}
    assert chart_volumes == bundle_volumes
    assert chart_pod == bundle_pod
    assert (
        chart["DaemonSet"]["spec"]["updateStrategy"]
        == bundle["DaemonSet"]["spec"]["updateStrategy"]
    )
    # the same permissions, bound to the pod's service account
    assert chart["ClusterRole"]["rules"] == bundle["ClusterRole"]["rules"]
    assert chart["ClusterRoleBinding"]["subjects"] == bundle["ClusterRoleBinding"]["subjects"]
    assert chart["ServiceAccount"]["metadata"]["name"] == chart_pod["serviceAccountName"]
    # the same configuration, once parsed
    chart_config = yaml.safe_load(chart["ConfigMap"]["data"]["config.yaml"])
    bundle_config = yaml.safe_load(bundle["ConfigMap"]["data"]["config.yaml"])
    assert chart_config == bundle_config
    # prometheus annotations alike; no config checksum: the config is reloaded live
    chart_annotations = chart["DaemonSet"]["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/config" not in chart_annotations
    assert chart_annotations == bundle["DaemonSet"]["spec"]["template"]["metadata"]["annotations"]


def check_config(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return subprocess.run(
        # --config-only: outside the cluster its Secret and service account are not there
        ["shipper", "check-config", "--config-only", str(path)],
        capture_output=True,
        text=True,
        env={"NODE_NAME": "node-1", "PATH": str(Path(__import__("sys").executable).parent)},
    )


def test_rendered_config_passes_check_config_and_a_bad_one_does_not(tmp_path: Path) -> None:
    [cm] = [d for d in render_chart() if d["kind"] == "ConfigMap"]
    result = check_config(cm["data"]["config.yaml"], tmp_path)
    assert result.returncode == 0, result.stderr
    custom = render_chart(
        {"config": {"elasticsearch": {"bulk": {"concurrency": 4}}, "inputs": {"read_from": "end"}}}
    )
    [cm] = [d for d in custom if d["kind"] == "ConfigMap"]
    assert check_config(cm["data"]["config.yaml"], tmp_path).returncode == 0
    bad = render_chart({"config": {"elasticsearch": {"bulk": {"concurrency": 1000}}}})
    [cm] = [d for d in bad if d["kind"] == "ConfigMap"]
    result = check_config(cm["data"]["config.yaml"], tmp_path)
    assert result.returncode == 2 and "elasticsearch.bulk.concurrency" in result.stderr


def test_with_roll_on_config_change_a_config_change_changes_the_checksum() -> None:
    def checksum(values: dict[str, Any]) -> str:
        [ds] = [
            d
            for d in render_chart({"rollOnConfigChange": True, **values})
            if d["kind"] == "DaemonSet"
        ]
        return ds["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    assert checksum({}) == checksum({})
    assert checksum({}) != checksum({"config": {"buffer": {"max_bytes": "32MiB"}}})


def test_the_config_is_mounted_as_a_directory_so_configmap_updates_reach_it() -> None:
    for ds in (by_kind(render_chart())["DaemonSet"], kustomize_bundle()["DaemonSet"]):
        [container] = ds["spec"]["template"]["spec"]["containers"]
        [mount] = [m for m in container["volumeMounts"] if m["name"] == "config"]
        assert "subPath" not in mount, "a subPath mount never sees ConfigMap updates"
        assert container["args"] == ["run", "--config", f"{mount['mountPath']}/config.yaml"]


def test_operator_values_reach_the_daemonset() -> None:
    values = {
        "image": {"repository": "registry.example/shipper", "digest": "sha256:" + "a" * 64},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "logs"}],
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "pool", "operator": "In", "values": ["a"]}]}]}}},
        "priorityClassName": "system-node-critical",
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "20%"}},
        "podAnnotations": {"team": "obs"},
        "podLabels": {"cost-centre": "42"},
        "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
        "extraVolumes": [{"name": "extra", "emptyDir": {}}],
        "extraVolumeMounts": [{"name": "extra", "mountPath": "/extra"}],
        "checkpointHostPath": "/data/shipper",
        "resources": {"limits": {"memory": "1Gi"}},
        "existingSecret": "my-es",
    }  # fmt: skip
    [ds] = [d for d in render_chart(values) if d["kind"] == "DaemonSet"]
    kubernetes_validate.validate(ds, KUBE_VERSION, strict=True)
    pod = ds["spec"]["template"]
    spec = pod["spec"]
    [c] = spec["containers"]
    assert c["image"] == "registry.example/shipper@sha256:" + "a" * 64
    assert spec["tolerations"] == values["tolerations"]
    assert spec["nodeSelector"] == values["nodeSelector"]
    assert spec["affinity"] == values["affinity"]
    assert spec["priorityClassName"] == "system-node-critical"
    assert ds["spec"]["updateStrategy"] == values["updateStrategy"]
    assert pod["metadata"]["annotations"]["team"] == "obs"
    assert pod["metadata"]["labels"]["cost-centre"] == "42"
    assert {"name": "HTTPS_PROXY", "value": "http://proxy:3128"} in c["env"]
    assert {"name": "extra", "mountPath": "/extra"} in c["volumeMounts"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["extra"] == {"name": "extra", "emptyDir": {}}
    assert volumes["checkpoints"]["hostPath"]["path"] == "/data/shipper"
    assert volumes["secrets"]["secret"]["secretName"] == "my-es"
    assert c["resources"]["limits"] == {"memory": "1Gi"}  # requests: the defaults
    secret_env = [e for e in c["env"] if "secretKeyRef" in e.get("valueFrom", {})]
    assert {e["valueFrom"]["secretKeyRef"]["name"] for e in secret_env} == {"my-es"}
    # shipper's own logs stay excluded under another release name and namespace
    other = render_chart(None, release="logs", namespace="obs")
    [cm] = [d for d in other if d["kind"] == "ConfigMap"]
    config = yaml.safe_load(cm["data"]["config.yaml"])
    assert config["inputs"]["exclude"] == ["/var/log/containers/logs-shipper-*_obs_*.log"]


def test_alert_rules_pass_promtool_check() -> None:
    result = subprocess.run(
        [str(ensure_promtool()), "check", "rules", str(DEPLOY / "prometheus/alerts.yaml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout


def test_each_alert_fires_when_it_should_and_not_otherwise() -> None:
    tests = DEPLOY / "prometheus/alerts_test.yaml"
    result = subprocess.run(
        [str(ensure_promtool()), "test", "rules", str(tests)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    spec = yaml.safe_load(tests.read_text())
    rules = yaml.safe_load((DEPLOY / "prometheus/alerts.yaml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    cases = [c for t in spec["tests"] for c in t["alert_rule_test"]]
    fired = {c["alertname"] for c in cases if c["exp_alerts"]}
    quiet = {c["alertname"] for c in cases if not c["exp_alerts"]}
    assert fired == alerts and quiet == alerts, (alerts - fired, alerts - quiet)
