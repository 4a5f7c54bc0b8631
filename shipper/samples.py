"""Generating kubelet-style log trees: the demo, the tests and the benchmarks use them.

The layout is what a node has: /var/log/pods/<ns>_<pod>_<uid>/<container>/<n>.log written
by the runtime (CRI or docker json-file), and /var/log/containers/<pod>_<ns>_<c>-<id>.log
symlinks to them. A matching `kubectl get pods -A -o json` dump is written beside it.
"""

from __future__ import annotations

import hashlib
import os
import random
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from shipper.logformat import cri_record, docker_record

JAVA_TRACE = (
    "java.lang.IllegalStateException: connection pool exhausted\n"
    "\tat com.example.shop.db.Pool.acquire(Pool.java:142)\n"
    "\tat com.example.shop.api.OrderController.create(OrderController.java:57)\n"
    "\tat java.base/java.lang.Thread.run(Thread.java:1583)\n"
    "Caused by: java.net.SocketTimeoutException: connect timed out\n"
    "\t... 3 more"
)
WORDS = (
    "order",
    "payment",
    "cart",
    "user",
    "session",
    "cache",
    "query",
    "upstream",
    "token",
    "shipment",
    "invoice",
    "retry",
    "timeout",
    "healthy",
    "refused",
    "accepted",
)


@dataclass
class Container:
    namespace: str
    pod: str
    name: str
    fmt: str  # "cri" or "docker"
    kind: str  # "json", "plain", "java"
    annotations: dict[str, str] = field(default_factory=dict)
    uid: str = ""
    container_id: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    owner: tuple[str, str] | None = None  # (kind, name)

    @property
    def link_name(self) -> str:
        return f"{self.pod}_{self.namespace}_{self.name}-{self.container_id}.log"

    @property
    def pod_dir(self) -> str:
        return f"{self.namespace}_{self.pod}_{self.uid}"


DEFAULT_CONTAINERS = [
    Container(
        "shop",
        "web-7d4b9c6f5d-x2x9q",
        "nginx",
        "cri",
        "plain",
        labels={"app": "web", "app.kubernetes.io/name": "web", "tier": "frontend"},
        owner=("ReplicaSet", "web-7d4b9c6f5d"),
    ),
    Container(
        "shop",
        "api-5f8d7c9b4-kq2lm",
        "api",
        "cri",
        "json",
        labels={"app.kubernetes.io/name": "api", "app.kubernetes.io/part-of": "shop"},
        annotations={"shipper.io/parser": "json"},
        owner=("ReplicaSet", "api-5f8d7c9b4"),
    ),
    Container(
        "shop",
        "orders-0",
        "orders",
        "docker",
        "java",
        labels={"app": "orders"},
        annotations={"shipper.io/multiline": "java"},
        owner=("StatefulSet", "orders"),
    ),
    Container(
        "kube-system",
        "coredns-5d78c9869d-abcde",
        "coredns",
        "cri",
        "plain",
        labels={"k8s-app": "kube-dns"},
        owner=("ReplicaSet", "coredns-5d78c9869d"),
    ),
    Container(
        "monitoring",
        "node-exporter-8x7kz",
        "node-exporter",
        "docker",
        "json",
        labels={"app.kubernetes.io/name": "node-exporter"},
        owner=("DaemonSet", "node-exporter"),
    ),
    Container(
        "batch",
        "report-28469120-7vw2p",
        "report",
        "cri",
        "plain",
        labels={"job-name": "report-28469120"},
        owner=("Job", "report-28469120"),
    ),
]


def _message(
    c: Container, i: int, rng: random.Random, words_range: tuple[int, int] = (4, 30)
) -> str:
    words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(*words_range)))
    if c.kind == "json":
        return orjson.dumps(
            {
                "level": rng.choice(["info", "info", "info", "warn", "error"]),
                "msg": words,
                "seq": i,
                "latency_ms": rng.randint(1, 900),
                "path": f"/api/v1/{rng.choice(WORDS)}",
            }
        ).decode()
    if c.kind == "java" and i % 50 == 25:
        return JAVA_TRACE
    return f"{i} {rng.choice(['GET', 'POST', 'PUT'])} /{rng.choice(WORDS)} {words}"


def write_tree(
    root: Path,
    lines_per_container: int = 200,
    containers: list[Container] | None = None,
    node: str = "node-1",
    seed: int = 1,
    start: datetime | None = None,
    words: tuple[int, int] = (4, 30),
) -> dict[str, Any]:
    """Write the tree under `root`; return a manifest of what was written (for checks).

    Multi-line messages (stack traces) are written as one record per line, as runtimes do.
    Returns {"records": total records, "per_container": {...}, "pods_file": path}.
    """
    rng = random.Random(seed)
    containers = [Container(**vars(c)) for c in (containers or DEFAULT_CONTAINERS)]
    pods_dir = root / "var/log/pods"
    links_dir = root / "var/log/containers"
    links_dir.mkdir(parents=True, exist_ok=True)
    t0 = start or datetime(2024, 3, 1, 10, 0, 0, tzinfo=UTC)
    per_container: dict[str, int] = {}
    items = []
    for c in containers:
        c.uid = c.uid or str(uuid.UUID(int=rng.getrandbits(128)))
        c.container_id = c.container_id or hashlib.sha256(f"{c.pod}/{c.name}".encode()).hexdigest()
        directory = pods_dir / c.pod_dir / c.name
        directory.mkdir(parents=True, exist_ok=True)
        out = bytearray()
        records = 0
        for i in range(lines_per_container):
            when = t0 + timedelta(milliseconds=37 * i, microseconds=rng.randint(0, 999))
            stamp = when.strftime("%Y-%m-%dT%H:%M:%S.%f") + f"{rng.randint(0, 999):03d}Z"
            stream = "stderr" if (c.kind == "java" and i % 50 == 25) or i % 17 == 0 else "stdout"
            for line in _message(c, i, rng, words).split("\n"):
                records += 1
                if c.fmt == "cri":
                    out += cri_record(line.encode(), stream, stamp)
                else:
                    out += docker_record(line, stream, stamp)
        (directory / "0.log").write_bytes(bytes(out))
        link = links_dir / c.link_name
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(directory / "0.log", link)
        per_container[f"{c.namespace}/{c.pod}/{c.name}"] = records
        items.append(_pod_json(c, node))
    pods_file = root / "pods.json"
    pods_file.write_bytes(
        orjson.dumps(
            {"apiVersion": "v1", "kind": "List", "items": items}, option=orjson.OPT_INDENT_2
        )
    )
    return {
        "records": sum(per_container.values()),
        "per_container": per_container,
        "pods_file": str(pods_file),
        "containers": containers,
    }


def _pod_json(c: Container, node: str) -> dict[str, Any]:
    labels = dict(c.labels)
    if c.owner is not None and c.owner[0] == "ReplicaSet":
        labels["pod-template-hash"] = c.owner[1].rsplit("-", 1)[1]
    owners = []
    if c.owner is not None:
        owners.append(
            {
                "apiVersion": "apps/v1" if c.owner[0] != "Job" else "batch/v1",
                "kind": c.owner[0],
                "name": c.owner[1],
                "uid": str(uuid.uuid4()),
                "controller": True,
            }
        )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": c.pod,
            "namespace": c.namespace,
            "uid": c.uid,
            "labels": labels,
            "annotations": {"shipper.io/team": "demo", **c.annotations},
            "ownerReferences": owners,
        },
        "spec": {
            "nodeName": node,
            "containers": [{"name": c.name, "image": f"registry.example/{c.name}:1.0"}],
        },
        "status": {
            "phase": "Running",
            "podIP": f"10.244.1.{zlib.crc32(c.pod.encode()) % 200 + 2}",
            "containerStatuses": [
                {
                    "name": c.name,
                    "image": f"registry.example/{c.name}:1.0",
                    "containerID": f"containerd://{c.container_id}",
                    "ready": True,
                    "restartCount": 0,
                }
            ],
        },
    }
