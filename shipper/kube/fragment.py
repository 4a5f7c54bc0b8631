"""The per-container part of every document, serialised once and reused for each line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from parsers.filename import ContainerRef
from shipper.limits import LimitOverride


def file_name_fields(ref: ContainerRef | None, node: str) -> dict[str, Any]:
    """Document fields known from the file name alone (before or without the API)."""
    doc: dict[str, Any] = {}
    if ref is not None:
        pod: dict[str, Any] = {"name": ref.pod}
        if ref.pod_uid:
            pod["uid"] = ref.pod_uid
        kube: dict[str, Any] = {
            "pod": pod,
            "namespace": ref.namespace,
            "container": {"name": ref.container},
        }
        if node:
            kube["node"] = {"name": node}
        doc["kubernetes"] = kube
        if ref.container_id:
            doc["container"] = {"id": ref.container_id}
    if node:
        doc["host"] = {"name": node}
    return doc


def serialise(fields: dict[str, Any]) -> bytes:
    """`"a":..., "b":...` (an object's members without braces), ready to splice."""
    if not fields:
        return b""
    return orjson.dumps(fields)[1:-1]


@dataclass(slots=True)
class MetadataHandle:
    """A file's view of its container's metadata; the source swaps `fragment` on changes.

    `version` goes up on every change so a file's encoder knows to take the new fragment.
    `resolved` is False while the pod is still unknown to the source and lines may wait.
    The hints (`excluded` ... `rate_limit`) are the pod's shipper.io/* annotations for this
    container (shipper.kube.pods.Hints); `hint_problems` the ones that were ignored.
    """

    fragment: bytes
    version: int = 0
    resolved: bool = True
    excluded: bool = False
    parser: str = ""
    multiline: str = ""
    dataset: str = ""
    rate_limit: LimitOverride | None = None
    hint_problems: tuple[str, ...] = ()
    wait_until: float = 0.0

    def update(self, fragment: bytes, changed: bool = False) -> None:
        """A new fragment (or, `changed`, new hints): files take it with their next chunk."""
        if changed or fragment != self.fragment:
            self.fragment = fragment
            self.version += 1


class FileNameMetadata:
    """Metadata from file names only (Kubernetes enrichment off, or `shipper tail`)."""

    def __init__(self, node: str = "") -> None:
        self.node = node

    def handle(self, ref: ContainerRef | None, now: float) -> MetadataHandle:
        return MetadataHandle(serialise(file_name_fields(ref, self.node)))

    def refresh(self, now: float) -> None:
        return None

    def release(self, ref: ContainerRef | None, handle: MetadataHandle) -> None:
        return None

    def stop(self) -> None:
        return None
