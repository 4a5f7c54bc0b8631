"""Index templates: the mapping shipper's documents and dead letters are indexed with.

Versioned: installing skips a template whose installed version is the same or newer, so
several shippers starting at once (a DaemonSet rollout) do not fight over it. One mapping
for both engines, but for the free-form `json` field: `flattened` on Elasticsearch,
`flat_object` on OpenSearch (which has no `flattened`); and only Elasticsearch 9.1+ gets
the failure store.
"""

from __future__ import annotations

import re
from typing import Any

# 2: one dynamic template per path (OpenSearch takes no path lists); 3: log.level,
# service.*, data_stream.*, event.dataset
TEMPLATE_VERSION = 3


def template_name(target: str) -> str:
    """One template per target, so shippers writing to different targets do not collide."""
    base = re.sub(r"%[A-Za-z]", "", target).strip("-._")
    return "shipper-" + re.sub(r"[^a-z0-9_.-]+", "-", base.lower())


_KEYWORD = {"type": "keyword", "ignore_above": 1024}


def _keywords(*names: str) -> dict[str, Any]:
    return {name: _KEYWORD for name in names}


def _names(*owners: str) -> dict[str, Any]:
    return {owner: {"properties": {"name": _KEYWORD}} for owner in owners}


def document_mappings(engine: str = "elasticsearch") -> dict[str, Any]:
    """ECS-style mappings of shipper's documents (see ARCHITECTURE.md, Documents)."""
    free_form = (
        {"type": "flat_object"}
        if engine == "opensearch"
        else {"type": "flattened", "ignore_above": 1024}
    )
    return {
        # Unknown fields stay in _source without growing the mapping; labels, annotations
        # and parsed JSON have their own rules below.
        "dynamic": False,
        "dynamic_templates": [
            {f"{path}_as_keywords": {"path_match": f"kubernetes.{path}.*", "mapping": _KEYWORD}}
            for path in ("labels", "namespace_labels", "annotations")
        ],
        "properties": {
            "@timestamp": {"type": "date_nanos"},
            "message": {"type": "text"},
            "stream": _KEYWORD,
            "log": {
                "properties": {
                    "offset": {"type": "long"},
                    "flags": _KEYWORD,
                    "level": _KEYWORD,
                    "file": {"properties": {"path": _KEYWORD}},
                }
            },
            "host": {"properties": {"name": _KEYWORD}},
            "service": {"properties": _keywords("name", "version")},
            # keyword, not constant_keyword as in the stack's logs-*-* template: the same
            # on OpenSearch, and a document whose value differs from its index's first
            # (a reroute, a reindex) is still indexed instead of rejected.
            "data_stream": {"properties": _keywords("type", "dataset", "namespace")},
            "event": {"properties": _keywords("dataset")},
            "container": {
                "properties": {
                    **_keywords("id", "runtime"),
                    "image": {"properties": {"name": _KEYWORD}},
                }
            },
            "kubernetes": {
                "properties": {
                    "namespace": _KEYWORD,
                    "pod": {
                        "properties": {
                            **_keywords("name", "uid"),
                            "ip": {"type": "ip", "ignore_malformed": True},
                        }
                    },
                    "node": {"properties": {"name": _KEYWORD}},
                    "container": {
                        "properties": {
                            **_keywords("name", "id"),
                            "image": {"properties": {"name": _KEYWORD}},
                        }
                    },
                    **_names(
                        "deployment", "replicaset", "statefulset", "daemonset", "job", "cronjob"
                    ),
                    # Keys arrive with dots replaced (shipper.kube.keys): "app" and
                    # "app.kubernetes.io/name" become siblings, never object vs. keyword.
                    "labels": {"type": "object", "dynamic": True},
                    "namespace_labels": {"type": "object", "dynamic": True},
                    "annotations": {"type": "object", "dynamic": True},
                }
            },
            # `shipper.io/parser: json`: whatever the application logged, kept searchable
            # as one field so that two applications' types can never conflict.
            "json": free_form,
        },
    }


def document_template(
    patterns: list[str],
    data_stream: bool,
    failure_store: bool,
    ilm_policy: str = "",
    engine: str = "elasticsearch",
) -> dict[str, Any]:
    settings: dict[str, Any] = {"mapping": {"total_fields": {"limit": 2000}}}
    if ilm_policy:
        settings["lifecycle"] = {"name": ilm_policy}
    template: dict[str, Any] = {
        "settings": {"index": settings},
        "mappings": document_mappings(engine),
    }
    if failure_store:
        template["data_stream_options"] = {"failure_store": {"enabled": True}}
    body: dict[str, Any] = {
        "index_patterns": patterns,
        "priority": 200,  # above the stack's built-in logs-*-* template (100)
        "version": TEMPLATE_VERSION,
        "_meta": {"managed_by": "shipper", "description": "Kubernetes container logs"},
        "template": template,
    }
    if data_stream:
        body["data_stream"] = {}
    return body


def dead_letter_template(index: str) -> dict[str, Any]:
    """Dead letters: everything as plain strings, nothing that could be rejected again."""
    unindexed = {"type": "text", "index": False}
    return {
        "index_patterns": [index],
        "priority": 200,
        "version": TEMPLATE_VERSION,
        "_meta": {"managed_by": "shipper", "description": "documents Elasticsearch rejected"},
        "template": {
            "mappings": {
                "dynamic": False,
                "properties": {
                    "@timestamp": {"type": "date"},
                    "error": {"properties": {"type": _KEYWORD, "reason": {"type": "text"}}},
                    "status": {"type": "integer"},
                    "intended_target": _KEYWORD,
                    "document_id": _KEYWORD,
                    "message": {"type": "text"},
                    "document": unindexed,
                    "log": {"properties": {"file": {"properties": {"path": _KEYWORD}}}},
                    "kubernetes": {
                        "properties": {
                            "namespace": _KEYWORD,
                            "pod": {"properties": {"name": _KEYWORD}},
                            "container": {"properties": {"name": _KEYWORD}},
                        }
                    },
                },
            }
        },
    }


def target_patterns(data_stream: str, index: str) -> list[str]:
    """Index patterns a template must match for the configured target."""
    if index:
        return [_strftime_to_glob(index)]
    return [data_stream]


def _strftime_to_glob(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        if pattern[i] == "%" and i + 1 < len(pattern):
            if not out or out[-1] != "*":
                out.append("*")
            i += 2
        else:
            out.append(pattern[i])
            i += 1
    return "".join(out)


def ilm_policy() -> dict[str, Any]:
    """A starting point for retention: roll over daily or at 50 GB, delete after 30 days."""
    return {
        "policy": {
            "_meta": {"managed_by": "shipper"},
            "phases": {
                "hot": {
                    "actions": {"rollover": {"max_age": "1d", "max_primary_shard_size": "50gb"}}
                },
                "delete": {"min_age": "30d", "actions": {"delete": {}}},
            },
        }
    }


def write_assets(directory: str) -> None:
    """deploy/elasticsearch: the template for the default target and the ILM policy."""
    import json
    from pathlib import Path

    out = Path(directory)
    template = document_template(
        ["logs-kubernetes-default"],
        data_stream=True,
        failure_store=True,
        ilm_policy="shipper-logs",
    )
    (out / "index-template.json").write_text(json.dumps(template, indent=2) + "\n")
    (out / "ilm-policy.json").write_text(json.dumps(ilm_policy(), indent=2) + "\n")
    (out / "dead-letter-template.json").write_text(
        json.dumps(dead_letter_template("shipper-dead-letter"), indent=2) + "\n"
    )


if __name__ == "__main__":
    import sys

    write_assets(sys.argv[1] if len(sys.argv) > 1 else "deploy/elasticsearch")
