"""Data stream names: which stream a container's documents go to, as names Elasticsearch accepts.

The naming scheme is `<type>-<dataset>-<namespace>` (ECS `data_stream.*`); `event.dataset`
equals `data_stream.dataset`. With per-namespace routing the namespace part becomes the
pod's Kubernetes namespace; with the `shipper.io/dataset` annotation the dataset part
becomes `<configured dataset>.<annotation>`, so every routed stream stays under the
patterns of shipper's own index template (`logs-kubernetes-*`, `logs-kubernetes.*-*`)
instead of claiming the cluster's whole `logs-*-*`.

Values are made valid the way Elasticsearch's reroute processor does it: lower case, each
forbidden character (and `-`, which separates the parts) replaced by `_`, at most 100
bytes a part. Kubernetes namespace names are `[a-z0-9-]`, so distinct namespaces always
get distinct streams.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    from shipper.config.controls import Routing

NAME_RULE = (
    'lower case, without \\ / * ? " < > | , # : or spaces, not starting with - _ + or .ds-, '
    "not . or .., at most 255 bytes"
)
MAX_NAME_BYTES = 255
MAX_PART_BYTES = 100  # dataset and namespace, per the data stream naming scheme
_FORBIDDEN = re.compile(r'[\\/*?"<>|,#: ]')
# What a dataset or namespace part may hold after sanitising: a safe subset of the rule.
_PART_UNSAFE = re.compile(r"[^a-z0-9_.]")


def index_name_problem(name: str) -> str | None:
    """Why Elasticsearch would refuse `name` for an index or data stream, or None."""
    if not name:
        return "empty"
    if name != name.lower():
        return "not lower case"
    bad = _FORBIDDEN.search(name)
    if bad is not None:
        return f"contains {bad.group()!r}"
    if name.startswith(("-", "_", "+")):
        return f"starts with {name[0]!r}"
    if name.startswith(".ds-"):
        return "starts with .ds- (reserved for backing indices)"
    if name in (".", ".."):
        return f"is {name!r}"
    if len(name.encode()) > MAX_NAME_BYTES:
        return f"{len(name.encode())} bytes long"
    return None


@dataclass(frozen=True, slots=True)
class DataStream:
    """One target stream and the document fields that name it."""

    type: str
    dataset: str
    namespace: str
    name: str = field(init=False)
    # `"data_stream":{...},"event":{"dataset":...}`, ready to splice into a document.
    fields: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", f"{self.type}-{self.dataset}-{self.namespace}")
        doc = {
            "data_stream": {
                "type": self.type,
                "dataset": self.dataset,
                "namespace": self.namespace,
            },
            "event": {"dataset": self.dataset},
        }
        object.__setattr__(self, "fields", orjson.dumps(doc)[1:-1])


def parse_data_stream(name: str) -> DataStream | None:
    """`logs-kubernetes-default` as its three parts; None when the name does not fit the scheme."""
    parts = name.split("-")
    if len(parts) != 3 or not all(parts) or index_name_problem(name):
        return None
    type_, dataset, namespace = parts
    if len(dataset.encode()) > MAX_PART_BYTES or len(namespace.encode()) > MAX_PART_BYTES:
        return None
    return DataStream(type_, dataset, namespace)


def namespace_part(namespace: str, limit: int = MAX_PART_BYTES) -> str:
    """A Kubernetes namespace as the namespace part of a stream name (`kube-system` ->
    `kube_system`); "" when nothing usable is left."""
    return _part(namespace, limit)


def dataset_part(value: str, limit: int = MAX_PART_BYTES) -> str:
    """An annotation's dataset as (the tail of) a dataset part; "" when nothing usable is left."""
    return _part(value, limit).strip("._")


def _part(value: str, limit: int) -> str:
    text = _PART_UNSAFE.sub("_", value.strip().lower())
    return text[: max(limit, 0)]


class Router:
    """The stream for each container: fixed, per namespace, and/or by annotated dataset."""

    def __init__(
        self, base: DataStream, per_namespace: bool = False, dataset_annotation: bool = False
    ) -> None:
        self.base = base
        self.per_namespace = per_namespace
        self.dataset_annotation = dataset_annotation
        self._targets: dict[tuple[str, str], DataStream] = {}

    @classmethod
    def from_config(cls, data_stream: str, routing: Routing) -> Router | None:
        """The router of a config; None when the data stream name does not fit the scheme
        (`validate()` refuses that when routing is on)."""
        base = parse_data_stream(data_stream)
        if base is None:
            return None
        return cls(base, routing.per_namespace, routing.dataset_annotation)

    def target(self, namespace: str, dataset: str = "") -> DataStream:
        """Where a container of `namespace` whose pod asks for `dataset` writes."""
        key = (namespace if self.per_namespace else "", dataset if self.dataset_annotation else "")
        found = self._targets.get(key)
        if found is None:
            found = self._targets[key] = self._make(*key)
        return found

    def _make(self, namespace: str, dataset: str) -> DataStream:
        base = self.base
        # The namespace first (it keeps streams apart), then the dataset's tail in what is
        # left, so the whole name stays within bounds whatever the configured parts.
        room = MAX_NAME_BYTES - len(base.type.encode()) - len(base.dataset.encode()) - 2
        part = base.namespace
        if namespace:
            part = namespace_part(namespace, min(room, MAX_PART_BYTES)) or base.namespace
        name = base.dataset
        if dataset:
            room = min(MAX_PART_BYTES - len(name.encode()), room - len(part)) - 1
            tail = dataset_part(dataset, room)
            if tail:
                name = f"{base.dataset}.{tail}"
        if (name, part) == (base.dataset, base.namespace):
            return base
        return DataStream(base.type, name, part)

    def patterns(self) -> list[str]:
        """Index patterns an index template must cover for every stream this router names."""
        base = self.base
        namespace = "*" if self.per_namespace else base.namespace
        out = [f"{base.type}-{base.dataset}-{namespace}"]
        if self.dataset_annotation:
            out.append(f"{base.type}-{base.dataset}.*-{namespace}")
        return out
