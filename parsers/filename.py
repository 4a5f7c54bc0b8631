"""Kubernetes log file names: which pod, namespace and container a file belongs to."""

from __future__ import annotations

import re
from dataclasses import dataclass

# /var/log/containers/<pod>_<namespace>_<container>-<64 hex id>.log
_CONTAINERS = re.compile(
    r"(?P<pod>[a-z0-9][-a-z0-9.]*)_(?P<namespace>[a-z0-9][-a-z0-9]*)"
    r"_(?P<container>[a-z0-9][-a-z0-9]*)-(?P<id>[0-9a-f]{64})\.log"
)
# /var/log/pods/<namespace>_<pod>_<uid>/<container>/<restart>.log[.<rotation suffix>[.gz]]
_PODS = re.compile(
    r"(?:.*/)?(?P<namespace>[a-z0-9][-a-z0-9]*)_(?P<pod>[a-z0-9][-a-z0-9.]*)_(?P<uid>[-0-9a-zA-Z]+)"
    r"/(?P<container>[a-z0-9][-a-z0-9]*)/(?P<restart>\d+)\.log(?P<rotation>\.[^/]+)?"
)


class NotAContainerLog(ValueError):
    """The path is neither a /var/log/containers link name nor a /var/log/pods file."""


@dataclass(frozen=True, slots=True)
class ContainerRef:
    """What a log file's name says about the container that wrote it."""

    namespace: str
    pod: str
    container: str
    container_id: str | None = None
    pod_uid: str | None = None
    restart: int | None = None
    rotated: bool = False


def parse_log_path(path: str) -> ContainerRef:
    """Parse a container log path; raise NotAContainerLog when it fits neither layout."""
    base = path.rsplit("/", 1)[-1]
    m = _CONTAINERS.fullmatch(base)
    if m is not None:
        return ContainerRef(
            namespace=m["namespace"],
            pod=m["pod"],
            container=m["container"],
            container_id=m["id"],
        )
    m = _PODS.fullmatch(path)
    if m is not None:
        return ContainerRef(
            namespace=m["namespace"],
            pod=m["pod"],
            container=m["container"],
            pod_uid=m["uid"],
            restart=int(m["restart"]),
            rotated=m["rotation"] is not None,
        )
    raise NotAContainerLog(
        f"not a container log: {path!r} (expected /var/log/containers/"
        "<pod>_<namespace>_<container>-<64 hex id>.log or /var/log/pods/"
        "<namespace>_<pod>_<uid>/<container>/<n>.log)"
    )


def container_ref(discovered: str, real: str | None = None) -> ContainerRef | None:
    """Combine the discovered name (link) and the file it resolves to; None if neither fits."""
    try:
        ref = parse_log_path(discovered)
    except NotAContainerLog:
        ref = None
    if real is None or real == discovered:
        return ref
    try:
        target = parse_log_path(real)
    except NotAContainerLog:
        return ref
    if ref is None:
        return target
    if target.namespace != ref.namespace or target.pod != ref.pod:
        return ref
    return ContainerRef(
        namespace=ref.namespace,
        pod=ref.pod,
        container=ref.container,
        container_id=ref.container_id or target.container_id,
        pod_uid=target.pod_uid,
        restart=target.restart,
        rotated=target.rotated,
    )
