"""deploy/: manifests valid against the Kubernetes schemas, assets in step with the code."""

from __future__ import annotations

import json
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from shipper.config import parse_config, validate
from shipper.observe import Metrics
from shipper.sinks.elasticsearch import templates

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KUBE_VERSION = "1.34"


def manifests() -> list[dict]:
    docs = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def find(kind: str) -> dict:
    [doc] = [d for d in manifests() if d["kind"] == kind]
    return doc


@pytest.mark.parametrize("doc", manifests(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_manifest_validates_against_the_kubernetes_schema(doc):
    kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((DEPLOY / "kubernetes/kustomization.yaml").read_text())
    files = {p.name for p in (DEPLOY / "kubernetes").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_cluster_role_grants_get_list_watch_on_pods_and_namespaces_only():
    role = find("ClusterRole")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["get", "list", "watch"]}
    ]
    binding = find("ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "shipper", "namespace": "logging"}
    ]


def test_configmap_config_passes_check_config():
    config_text = find("ConfigMap")["data"]["config.yaml"]
    cfg = parse_config(config_text, {"NODE_NAME": "node-1"}, source="configmap")
    validate(cfg, environment=False)  # the files and the cluster are the pod's
    assert cfg.kubernetes.node_name == "node-1"
    assert cfg.checkpoint.path == "/var/lib/shipper"
    assert cfg.elasticsearch.tls.verify is True


def test_daemonset_is_what_operators_need():
    ds = find("DaemonSet")
    pod = ds["spec"]["template"]
    spec = pod["spec"]
    [container] = spec["containers"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert (
        mounts["varlog"]["readOnly"] is True and volumes["varlog"]["hostPath"]["path"] == "/var/log"
    )
    assert volumes["checkpoints"]["hostPath"]["path"] == "/var/lib/shipper"
    cfg = parse_config(find("ConfigMap")["data"]["config.yaml"], {"NODE_NAME": "n"})
    assert mounts["checkpoints"]["mountPath"] == cfg.checkpoint.path
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert volumes["secrets"]["secret"]["secretName"] == "shipper-elasticsearch"
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    port = int(cfg.metrics.listen.rsplit(":", 1)[1])
    assert container["ports"][0]["containerPort"] == port
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    assert {"operator": "Exists"} in spec["tolerations"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert spec["terminationGracePeriodSeconds"] > cfg.shutdown.grace


def test_elasticsearch_assets_are_generated_from_the_code(tmp_path):
    templates.write_assets(str(tmp_path))
    for path in tmp_path.iterdir():
        assert (DEPLOY / "elasticsearch" / path.name).read_text() == path.read_text(), (
            "regenerate: python -m shipper.sinks.elasticsearch.templates deploy/elasticsearch"
            f" ({path.name})"
        )


def metric_names() -> set[str]:
    text = Metrics().render().decode()
    return {m for m in re.findall(r"^# TYPE (\S+)", text, re.M)}


def referenced(expr: str) -> set[str]:
    names = set(re.findall(r"\b(shipper_[a-z_]+)", expr))
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


def test_dashboard_and_alerts_use_metrics_that_exist():
    known = metric_names()
    dashboard = json.loads((DEPLOY / "grafana/shipper-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    rules = yaml.safe_load((DEPLOY / "prometheus/alerts.yaml").read_text())
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = set().union(*(referenced(e) for e in exprs))
    assert used and used <= known, used - known
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert {
        "ShipperDown",
        "ShipperLagGrowing",
        "ShipperDeadLetters",
        "ShipperLinesGivenUp",
    } <= alerts


def test_kibana_saved_objects_target_the_default_data_stream():
    objects = [
        json.loads(line)
        for line in (DEPLOY / "kibana/saved-objects.ndjson").read_text().splitlines()
    ]
    [view] = [o for o in objects if o["type"] == "index-pattern"]
    default = parse_config("", {}).elasticsearch.data_stream
    assert re.fullmatch(view["attributes"]["title"].replace("*", ".*"), default)
    assert view["attributes"]["timeFieldName"] == "@timestamp"
    searches = [o for o in objects if o["type"] == "search"]
    assert searches and all(o["references"][0]["id"] == view["id"] for o in searches)
    assert "message" in searches[0]["attributes"]["columns"]


def test_readme_documents_every_metric():
    readme = (DEPLOY.parent / "README.md").read_text()
    missing = [m.name for m in Metrics()._all if f"`{m.name}" not in readme]
    assert not missing, f"metrics missing from the README's table: {missing}"
