"""Label and annotation keys made safe for Elasticsearch: the one place this is decided.

Elasticsearch reads a dot in a field name as an object path, so the labels `app` and
`app.kubernetes.io/name` would ask `app` to be a keyword and an object at once and one of
the two documents would be rejected. Dots become underscores (as Filebeat does, so Kibana
users find `kubernetes.labels.app_kubernetes_io/name` where they expect it); the index
template maps everything under labels and annotations as keywords.
"""

from __future__ import annotations


def safe_key(key: str) -> str:
    """`app.kubernetes.io/name` -> `app_kubernetes_io/name`."""
    return key.replace(".", "_")


def safe_map(values: dict[str, str] | None) -> dict[str, str]:
    """Keys made safe; when two keys collide, the one sorting first wins (stable)."""
    out: dict[str, str] = {}
    for key in sorted(values or {}):
        out.setdefault(safe_key(key), str(values[key]))  # type: ignore[index]
    return out
