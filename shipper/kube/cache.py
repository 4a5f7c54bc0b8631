"""Pods and namespaces as last seen, and the metadata handles of the files that use them.

Everything here runs on the pipeline's event loop: watch threads only queue events, and
`apply` takes them in. A file asks for a handle once, when it is opened; later changes
(labels, a pod arriving late) update that same handle, so the per-line cost of
enrichment is one version check per chunk.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from parsers.filename import ContainerRef
from shipper.kube.fragment import MetadataHandle, file_name_fields, serialise
from shipper.kube.pods import container_fields, hints

log = logging.getLogger(__name__)

PodKey = tuple[str, str]  # namespace, name


@dataclass(slots=True)
class _Pod:
    obj: dict[str, Any]
    deleted_at: float | None = None


@dataclass(slots=True)
class _Use:
    """A file's handle and what it needs: which container, which pod incarnation."""

    handle: MetadataHandle
    ref: ContainerRef


# Before the pod watch's first list, a pod is unknown only because nothing has been listed
# yet (a busy node or apiserver can take seconds): its lines wait up to this long, and
# `wait_for_metadata` at most once the list has come.
FIRST_LIST_WAIT = 30.0


@dataclass
class PodCache:
    node: str
    annotation_globs: list[str] = field(default_factory=list)
    wait_for_metadata: float = 2.0
    deleted_pod_grace: float = 300.0
    pods: dict[PodKey, _Pod] = field(default_factory=dict)
    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)
    _uses: dict[PodKey, list[_Use]] = field(default_factory=dict)
    synced: bool = False
    # True from the start of an API watch until the first namespace list: a pod known
    # before its namespace keeps its lines waiting (bounded) for the namespace labels.
    namespaces_pending: bool = False

    # ---- files ---------------------------------------------------------------------------

    def handle(self, ref: ContainerRef | None, now: float) -> MetadataHandle:
        """The metadata for a file; unresolved (lines wait a little) if the pod is unknown."""
        if ref is None:
            return MetadataHandle(serialise(file_name_fields(None, self.node)))
        handle = MetadataHandle(serialise(file_name_fields(ref, self.node)))
        handle.resolved = False
        wait = self.wait_for_metadata
        handle.wait_until = now + (max(wait, FIRST_LIST_WAIT) if wait and not self.synced else wait)
        use = _Use(handle, ref)
        key = (ref.namespace, ref.pod)
        self._uses.setdefault(key, []).append(use)
        pod = self.pods.get(key)
        if pod is not None and _same_incarnation(pod.obj, ref):
            self._fill(use, pod.obj)
        return handle

    def release(self, ref: ContainerRef | None, handle: MetadataHandle) -> None:
        """A file is done with its handle."""
        if ref is None:
            return
        uses = self._uses.get((ref.namespace, ref.pod))
        if uses:
            uses[:] = [u for u in uses if u.handle is not handle]

    # ---- events ------------------------------------------------------------------------

    def replace_pods(self, items: Iterable[dict[str, Any]], now: float) -> None:
        """A fresh list: anything not in it is treated as deleted now."""
        seen = set()
        for obj in items:
            key = _key(obj)
            seen.add(key)
            self.put_pod(obj)
        for key, pod in self.pods.items():
            if key not in seen and pod.deleted_at is None:
                pod.deleted_at = now
        self.synced = True

    def put_pod(self, obj: dict[str, Any]) -> None:
        key = _key(obj)
        self.pods[key] = _Pod(obj)
        for use in self._uses.get(key, ()):
            if _same_incarnation(obj, use.ref):
                self._fill(use, obj)

    def delete_pod(self, obj: dict[str, Any], now: float) -> None:
        """Kept for the grace period: the last lines of a pod often come after its deletion."""
        key = _key(obj)
        self.pods[key] = _Pod(obj, deleted_at=now)
        for use in self._uses.get(key, ()):
            if _same_incarnation(obj, use.ref) and not use.handle.resolved:
                self._fill(use, obj)

    def listed(self, now: float) -> None:
        """A pod list has been applied: the lines of pods it did not name wait
        `wait_for_metadata` more at most (their watch event may still come)."""
        bound = now + self.wait_for_metadata
        for uses in self._uses.values():
            for use in uses:
                if not use.handle.resolved and use.handle.wait_until > bound:
                    use.handle.wait_until = bound

    def replace_namespaces(self, items: Iterable[dict[str, Any]]) -> None:
        self.namespaces = {}
        self.namespaces_pending = False
        for obj in items:
            self.put_namespace(obj)
        for key, uses in self._uses.items():  # pods of namespaces not in the list
            pod = self.pods.get(key)
            for use in uses:
                if not use.handle.resolved and pod and _same_incarnation(pod.obj, use.ref):
                    self._fill(use, pod.obj)

    def put_namespace(self, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        name = meta.get("name", "")
        labels = dict(meta.get("labels") or {})
        if self.namespaces.get(name) == labels:
            return
        self.namespaces[name] = labels
        for key, uses in self._uses.items():
            if key[0] == name:
                pod = self.pods.get(key)
                for use in uses:
                    if pod is not None and _same_incarnation(pod.obj, use.ref):
                        self._fill(use, pod.obj)

    def delete_namespace(self, obj: dict[str, Any]) -> None:
        name = (obj.get("metadata") or {}).get("name", "")
        self.namespaces.pop(name, None)

    def expire(self, now: float) -> None:
        """Forget pods deleted longer ago than the grace period."""
        gone = [
            k
            for k, p in self.pods.items()
            if p.deleted_at is not None and now - p.deleted_at > self.deleted_pod_grace
        ]
        for key in gone:
            del self.pods[key]
            uses = self._uses.get(key)
            if uses is not None and not uses:
                del self._uses[key]

    # ---- building fragments --------------------------------------------------------------

    def _fill(self, use: _Use, obj: dict[str, Any]) -> None:
        ref = use.ref
        fields = container_fields(
            obj,
            ref.container,
            self.namespaces.get(ref.namespace),
            self.annotation_globs,
            self.node,
        )
        if ref.container_id and "id" not in fields.get("container", {}):
            fields.setdefault("container", {})["id"] = ref.container_id
        hint = hints(obj, ref.container)
        handle = use.handle
        # A changed hint (a rate-limit or dataset annotation on a running pod) is a change
        # too, even when the fragment stays the same.
        hinted = (hint.excluded, hint.parser, hint.multiline, hint.dataset, hint.rate_limit)
        known = (handle.excluded, handle.parser, handle.multiline, handle.dataset)
        changed = hinted != (*known, handle.rate_limit)
        handle.excluded = hint.excluded
        handle.parser = hint.parser
        handle.multiline = hint.multiline
        handle.dataset = hint.dataset
        handle.rate_limit = hint.rate_limit
        if hint.problems and hint.problems != handle.hint_problems:
            log.warning(
                "pod annotation ignored",
                extra={"pod": f"{ref.namespace}/{ref.pod}", "problems": list(hint.problems)},
            )
        handle.hint_problems = hint.problems
        handle.resolved = not self.namespaces_pending or ref.namespace in self.namespaces
        handle.update(serialise(fields), changed)


def _key(obj: dict[str, Any]) -> PodKey:
    meta = obj.get("metadata") or {}
    return meta.get("namespace", ""), meta.get("name", "")


def _same_incarnation(obj: dict[str, Any], ref: ContainerRef) -> bool:
    """A pod re-created under the same name (StatefulSet) has a new uid."""
    if not ref.pod_uid:
        return True
    return (obj.get("metadata") or {}).get("uid") == ref.pod_uid
