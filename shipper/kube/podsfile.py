"""A `kubectl get pods -A -o json` dump: the pods of one node, for enrichment without the API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson


def read_pods_file(path: str, node: str = "") -> list[dict[str, Any]]:
    """The pods in a dump (a List, a single Pod, or NDJSON of pods), those of `node` if given.

    Raises OSError when the file cannot be read and ValueError when it is not JSON.
    """
    raw = Path(path).read_bytes()
    try:
        data = orjson.loads(raw)
        items = data.get("items", [data]) if isinstance(data, dict) else data
    except orjson.JSONDecodeError:
        items = [orjson.loads(line) for line in raw.splitlines() if line.strip()]
    if not isinstance(items, list):
        raise ValueError("expected a List of pods, a Pod, or one pod per line")
    pods = [p for p in items if isinstance(p, dict) and p.get("kind", "Pod") == "Pod"]
    if node:
        pods = [p for p in pods if (p.get("spec") or {}).get("nodeName") in (node, None)]
    return pods
