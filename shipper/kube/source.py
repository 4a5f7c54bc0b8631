"""Kubernetes metadata for the pipeline: from the API (node-scoped watch) or a pods file."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

from parsers.filename import ContainerRef
from shipper.config import Config, ConfigError
from shipper.config.validate import check_kubernetes
from shipper.kube.api import KubeApi, from_kubeconfig, in_cluster
from shipper.kube.cache import PodCache
from shipper.kube.fragment import MetadataHandle
from shipper.kube.podsfile import read_pods_file
from shipper.kube.watch import Event, ResourceWatch
from shipper.observe import Metrics

log = logging.getLogger(__name__)


class KubeMetadata:
    """MetadataSource backed by a PodCache; watch threads queue, `refresh` applies."""

    def __init__(self, cache: PodCache, metrics: Metrics | None = None) -> None:
        self.cache = cache
        self.metrics = metrics
        self._events: deque[tuple[str, list[Event]]] = deque()
        self._lock = threading.Lock()
        self.watches: list[ResourceWatch] = []
        self._next_expire = 0.0

    def handle(self, ref: ContainerRef | None, now: float) -> MetadataHandle:
        self.refresh(now)
        return self.cache.handle(ref, now)

    def release(self, ref: ContainerRef | None, handle: MetadataHandle) -> None:
        self.cache.release(ref, handle)

    def refresh(self, now: float) -> None:
        """Apply what the watch threads received (on the event loop)."""
        while True:
            with self._lock:
                if not self._events:
                    break
                resource, events = self._events.popleft()
            wall = time.time()
            for kind, obj in events:
                if resource == "pods":
                    if kind == "LIST":
                        self.cache.replace_pods(obj.get("items") or [], wall)
                        self.cache.listed(now)
                    elif kind == "DELETED":
                        self.cache.delete_pod(obj, wall)
                    else:
                        self.cache.put_pod(obj)
                elif kind == "LIST":
                    self.cache.replace_namespaces(obj.get("items") or [])
                elif kind == "DELETED":
                    self.cache.delete_namespace(obj)
                else:
                    self.cache.put_namespace(obj)
        if now >= self._next_expire:
            self._next_expire = now + 10
            self.cache.expire(time.time())

    def queue(self, resource: str) -> Any:
        def emit(events: list[Event]) -> None:
            with self._lock:
                self._events.append((resource, events))

        return emit

    def start_watches(self, api: Any, node: str) -> None:
        selector = f"spec.nodeName={node}" if node else ""
        self.cache.namespaces_pending = True
        self.watches = [
            ResourceWatch(api, "/api/v1/pods", self.queue("pods"), selector, "pods"),
            ResourceWatch(api, "/api/v1/namespaces", self.queue("namespaces"), "", "namespaces"),
        ]
        for watch in self.watches:
            watch.start()

    def stop(self) -> None:
        for watch in self.watches:
            watch.signal_stop()
        for watch in self.watches:
            watch.join()

    def load_file(self, path: str) -> None:
        """A `kubectl get pods -A -o json` dump (a List, a single Pod, or NDJSON of pods)."""
        self.cache.replace_pods(read_pods_file(path, self.cache.node), time.time())
        # Pods from a file are all there is: lines never wait for metadata.
        self.cache.wait_for_metadata = 0.0


def kube_source(cfg: Config, metrics: Metrics) -> KubeMetadata:
    """The daemon's metadata source per the `kubernetes` config section."""
    k = cfg.kubernetes
    cache = PodCache(
        node=k.node_name,
        annotation_globs=list(k.annotations),
        wait_for_metadata=k.wait_for_metadata,
        deleted_pod_grace=k.deleted_pod_grace,
    )
    source = KubeMetadata(cache, metrics)
    if k.pods_file:
        try:
            source.load_file(k.pods_file)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"kubernetes.pods_file: cannot read {k.pods_file!r}: {exc}") from None
        return source
    check_kubernetes(k)  # validate() did it for `shipper run`; library callers get it here
    source.start_watches(api_client(k.kubeconfig), k.node_name)
    return source


def tail_source(pods_file: str | None, kubeconfig: str | None, node: str) -> KubeMetadata:
    """`shipper tail --pods FILE` or `--kubeconfig FILE [--node NAME]`."""
    cache = PodCache(node=node, wait_for_metadata=2.0 if kubeconfig else 0.0)
    source = KubeMetadata(cache)
    if pods_file:
        source.load_file(pods_file)
    elif kubeconfig:
        source.start_watches(api_client(kubeconfig), node)
    return source


def api_client(kubeconfig: str) -> KubeApi:
    """The API from a kubeconfig, or the pod's service account (in-cluster)."""
    return from_kubeconfig(kubeconfig) if kubeconfig else in_cluster()
