"""From a Pod object (API JSON or `kubectl get pods -o json`) to document fields."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any

from shipper.kube.keys import safe_map
from shipper.limits import LimitOverride, parse_rate_limit

# A CronJob names its Jobs <cronjob>-<scheduled time in minutes since the epoch>.
_CRONJOB_JOB = re.compile(r"(?P<cronjob>.+)-\d{8,}")

HINT_PREFIX = "shipper.io/"
WORKLOAD_KINDS = {
    "Deployment": "deployment",
    "ReplicaSet": "replicaset",
    "StatefulSet": "statefulset",
    "DaemonSet": "daemonset",
    "Job": "job",
    "CronJob": "cronjob",
}


# Which owner names the service when the pod's labels do not: the outermost workload.
SERVICE_OWNERS = ("deployment", "statefulset", "daemonset", "cronjob", "job", "replicaset")


@dataclass(frozen=True, slots=True)
class Hints:
    """What a pod's shipper.io/* annotations ask for one of its containers.

    `problems` names the annotations whose values could not be used (they are ignored),
    e.g. `shipper.io/rate-limit-api: 'lines=5': expected ...`.
    """

    excluded: bool = False
    parser: str = ""
    multiline: str = ""
    dataset: str = ""
    rate_limit: LimitOverride | None = None
    problems: tuple[str, ...] = ()


def hints(pod: dict[str, Any], container: str) -> Hints:
    """`shipper.io/exclude`, `parser`, `multiline`, `dataset` and `rate-limit`, each also
    for one container with a `-<container>` suffix (`shipper.io/parser-api`), which wins."""
    ann = (pod.get("metadata") or {}).get("annotations") or {}

    def key(name: str) -> str:
        own = f"{HINT_PREFIX}{name}-{container}"
        return own if own in ann else f"{HINT_PREFIX}{name}"

    def get(name: str) -> str:
        return str(ann.get(key(name), ""))

    problems = []
    rate_limit = None
    if get("rate-limit").strip():
        try:
            rate_limit = parse_rate_limit(get("rate-limit"))
        except ValueError as exc:
            problems.append(f"{key('rate-limit')}: {exc}")
    return Hints(
        excluded=get("exclude").strip().lower() == "true",
        parser=get("parser").strip().lower(),
        multiline=get("multiline").strip().lower(),
        dataset=get("dataset").strip(),
        rate_limit=rate_limit,
        problems=tuple(problems),
    )


def service(labels: dict[str, str], owners: dict[str, dict[str, str]]) -> dict[str, str]:
    """ECS `service.*`: `app.kubernetes.io/name`, else the `app` label, else the owning
    workload's name; `service.version` from `app.kubernetes.io/version`."""
    name = labels.get("app.kubernetes.io/name") or labels.get("app")
    if not name:
        name = next((owners[k]["name"] for k in SERVICE_OWNERS if k in owners), "")
    out = {"name": str(name)} if name else {}
    version = labels.get("app.kubernetes.io/version")
    if version:
        out["version"] = str(version)
    return out


def workload(pod: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The owning workload, following ReplicaSet -> Deployment and Job -> CronJob by name.

    Only pods and namespaces may be read (least privilege), so the second hop uses the
    names controllers give: a ReplicaSet is `<deployment>-<pod-template-hash>`, a Job of a
    CronJob `<cronjob>-<minutes since epoch>`.
    """
    meta = pod.get("metadata") or {}
    owners = meta.get("ownerReferences") or []
    owner = next((o for o in owners if o.get("controller")), owners[0] if owners else None)
    if not owner:
        return {}
    kind, name = owner.get("kind", ""), owner.get("name", "")
    field = WORKLOAD_KINDS.get(kind)
    if field is None or not name:
        return {}
    out = {field: {"name": name}}
    if kind == "ReplicaSet":
        hash_ = (meta.get("labels") or {}).get("pod-template-hash")
        if hash_ and name.endswith(f"-{hash_}"):
            out["deployment"] = {"name": name[: -len(hash_) - 1]}
    elif kind == "Job":
        m = _CRONJOB_JOB.fullmatch(name)
        if m:
            out["cronjob"] = {"name": m["cronjob"]}
    return out


def container_fields(
    pod: dict[str, Any],
    container: str,
    namespace_labels: dict[str, str] | None,
    annotation_globs: list[str],
    node: str,
) -> dict[str, Any]:
    """Every document field the API knows for one container of a pod."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    pod_fields: dict[str, Any] = {"name": meta.get("name", ""), "uid": meta.get("uid", "")}
    if status.get("podIP"):
        pod_fields["ip"] = status["podIP"]
    node_name = spec.get("nodeName") or node
    kube: dict[str, Any] = {"pod": pod_fields, "namespace": meta.get("namespace", "")}
    if node_name:
        kube["node"] = {"name": node_name}
    image = next(
        (
            c.get("image")
            for c in spec.get("containers", []) + spec.get("initContainers", [])
            if c.get("name") == container
        ),
        None,
    )
    kube["container"] = {"name": container}
    container_doc: dict[str, Any] = {}
    statuses = (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or [])
    state = next((s for s in statuses if s.get("name") == container), None)
    if state is not None:
        image = state.get("image") or image
        runtime, _, cid = (state.get("containerID") or "").partition("://")
        if cid:
            container_doc["id"] = cid
            container_doc["runtime"] = runtime
    if image:
        container_doc["image"] = {"name": image}
    raw_labels = meta.get("labels") or {}
    labels = safe_map(raw_labels)
    if labels:
        kube["labels"] = labels
    if namespace_labels:
        kube["namespace_labels"] = safe_map(namespace_labels)
    annotations = {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if any(fnmatch.fnmatchcase(k, g) for g in annotation_globs)
    }
    if annotations:
        kube["annotations"] = safe_map(annotations)
    owners = workload(pod)
    kube.update(owners)
    doc: dict[str, Any] = {"kubernetes": kube}
    if container_doc:
        doc["container"] = container_doc
    service_doc = service(raw_labels, owners)
    if service_doc:
        doc["service"] = service_doc
    if node_name:
        doc["host"] = {"name": node_name}
    return doc


def container_names(pod: dict[str, Any]) -> list[str]:
    spec = pod.get("spec") or {}
    return [
        c.get("name", "")
        for c in spec.get("containers", [])
        + spec.get("initContainers", [])
        + spec.get("ephemeralContainers", [])
    ]
